"""rule measure: time one cell in a fresh process and write its shard. With
`measure.fork_server` on (the default) the process is a child of this machine's fork
server (qbench.fork_server), which has torch and its compiler imported already; when the
server cannot be used, the log says why and the cell is measured in this process.

Rule measure runs it as a plain command (`shell:`), its input as arguments, so one
measurement can also be repeated by hand with the command Snakemake printed:

    python scripts/measure.py --request JSON --output SHARD --log LOG [--breakdown-output FILE]
        [--attempt N] [--threads N] [--gpu-lane I] [--gpu-lanes N]

--request is workflow/rules/common.smk's measure_request: the cell, the GPU locks' and
the compile cache's folders, the forwards to profile, the config's measure settings.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's qbench, installed or not

from qbench.compile_env import set_defaults as set_compile_env  # noqa: E402
from qbench.logs import log_to  # noqa: E402
from qbench.startup import process_start  # noqa: E402


def arguments(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--request", required=True, help="the job's input as JSON (common.smk's measure_request)")
    ap.add_argument("--output", required=True, help="the shard to write")
    ap.add_argument("--log", required=True, help="the job's log file")
    ap.add_argument("--breakdown-output", help="where the cell's breakdown table goes (config key breakdown)")
    ap.add_argument("--attempt", type=int, default=1, help="Snakemake's attempt number, recorded in the shard")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gpu-lane", type=int, default=0, help="the GPU this job waits for (qbench.lanes)")
    ap.add_argument("--gpu-lanes", type=int, default=1, help="GPUs the run measures on at once")
    return ap.parse_args(argv)


args = arguments()
log_to(args.log)
request = json.loads(args.request)

# The compiler's environment (one Inductor cache for the run, no per-process RBLOCK
# benchmark): set before torch is imported, here and so in the fork server.
set_compile_env(request["compile_cache"])

from qbench.measure_job import LAUNCH_IN_PROCESS, JobRequest, measure  # noqa: E402 (torch-free until measure runs)
from qbench.specs import MeasureConfig  # noqa: E402

try:
    job_start = process_start()  # seconds since boot: the child measures the job's start-up from it
except OSError:  # no /proc: start-up is then measured from the measuring process's own start
    job_start = None
job = JobRequest(
    cell=request["cell"],
    output=args.output,
    log=args.log,
    attempt=args.attempt,
    threads=args.threads,
    lock_dir=request["lock_dir"],
    job_start=job_start,
    # config key breakdown: a few profiled forwards after the timed loop, written beside the shard
    breakdown_output=args.breakdown_output,
    breakdown_forwards=request.get("breakdown_forwards", 0),
    gpu_lane=args.gpu_lane,
    gpu_lanes=args.gpu_lanes,
)
log = logging.getLogger("qbench.measure")
settings = MeasureConfig.from_dict(request.get("measure") or {})
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
