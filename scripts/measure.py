"""rule measure: time one cell in this process and write its shard."""

import os
import time
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from snakemake.script import snakemake

from qbench.logs import log_to

log_to(snakemake.log[0])

# Inductor's cache is shared by every job of the run: a repeat reuses what the first
# repeat compiled. Set before torch is imported.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(snakemake.params.compile_cache))

import logging  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

from qbench.config import CellConfig  # noqa: E402
from qbench.device import DeviceError, gpu_lock, resolve_device  # noqa: E402
from qbench.measure import run_cell  # noqa: E402
from qbench.profile_parts import CellBreakdown  # noqa: E402
from qbench.shards import write_shard  # noqa: E402

# Process start to here: interpreter, Snakemake's script preamble, imports (torch).
startup_s = time.time() - psutil.Process().create_time()
attempt = int(snakemake.resources.get("qbench_attempt", 1))
log = logging.getLogger("qbench.measure")
log.info("attempt %d", attempt)
cell = CellConfig.from_dict(snakemake.params.cell)
try:
    device = resolve_device(cell.device)
except DeviceError as exc:
    log.error("%s", exc)  # the user's mistake: one line, no traceback
    sys.exit(1)
torch.set_num_threads(max(1, snakemake.threads))
# Under SLURM the job sees only its own GPU, and the working directory may be on a shared
# filesystem without flock(): lock on the node's local disk instead.
lock_dir = "/tmp/qbench-gpu-locks" if os.environ.get("SLURM_JOB_ID") else snakemake.params.lock_dir
# config key breakdown: a few profiled forwards after the timed loop, written beside the shard
breakdown = CellBreakdown(snakemake.params.breakdown_forwards) if "breakdown" in snakemake.output.keys() else None
if device.type == "cuda":
    with gpu_lock(lock_dir) as index:
        table = run_cell(cell, torch.device("cuda", index), startup_s, attempt, after_timing=breakdown)
else:
    table = run_cell(cell, device, startup_s, attempt, after_timing=breakdown)
write_shard(table, snakemake.output[0])
if breakdown is not None:
    write_shard(breakdown.table(table), snakemake.output.breakdown)
