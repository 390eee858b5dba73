"""rule measure: time one cell in a fresh process and write its shard. With
`measure.fork_server` on (the default) the process is a child of this machine's fork
server (qbench.fork_server), which has torch and its compiler imported already; when the
server cannot be used, the log says why and the cell is measured in this process."""

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from qbench.compile_env import set_defaults as set_compile_env
from qbench.startup import process_start

if TYPE_CHECKING:
    from snakemake.script import snakemake

from qbench.logs import log_to

log_to(snakemake.log[0])

# The compiler's environment (one Inductor cache for the run, no per-process RBLOCK
# benchmark): set before torch is imported, here and so in the fork server.
set_compile_env(snakemake.params.compile_cache)

from qbench.measure_job import LAUNCH_IN_PROCESS, JobRequest, measure  # noqa: E402 (torch-free until measure runs)
from qbench.specs import MeasureConfig  # noqa: E402

try:
    job_start = process_start()  # seconds since boot: the child measures the job's start-up from it
except OSError:  # no /proc: start-up is then measured from the measuring process's own start
    job_start = None
job = JobRequest(
    cell=snakemake.params.cell,
    output=snakemake.output[0],
    log=snakemake.log[0],
    attempt=int(snakemake.resources.get("qbench_attempt", 1)),
    threads=snakemake.threads,
    lock_dir=snakemake.params.lock_dir,
    job_start=job_start,
    # config key breakdown: a few profiled forwards after the timed loop, written beside the shard
    breakdown_output=snakemake.output.breakdown if "breakdown" in snakemake.output.keys() else None,
    breakdown_forwards=snakemake.params.breakdown_forwards,
    gpu_lane=int(snakemake.resources.get("qbench_gpu_lane", 0)),
    gpu_lanes=int(snakemake.resources.get("qbench_gpu_lanes", 1)),
)
log = logging.getLogger("qbench.measure")
settings = MeasureConfig.from_dict(snakemake.config.get("measure") or {})
if settings.fork_server:
    from qbench.fork_client import Unavailable, run_job

    try:
        status = run_job(job.as_dict(), settings.fork_server_idle_s)
    except Unavailable as exc:
        log.warning("fork server not used: %s; measuring in this process", exc)
    else:
        if status > 128:  # a child that failed otherwise has said why in this log
            log.error("the measurement process (fork-server child) was killed by signal %d", status - 128)
        if status != 0:
            Path(job.output).unlink(missing_ok=True)  # no shard from a failed job
            if job.breakdown_output:
                Path(job.breakdown_output).unlink(missing_ok=True)
        sys.exit(min(status, 255))
status = measure(job, LAUNCH_IN_PROCESS)
# Leave without the interpreter's teardown of torch (a second per job on a 2-core VM):
# the shard is written and fsynced, and the log is flushed here.
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(status)
