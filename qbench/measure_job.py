"""One measurement job's body: take a GPU, measure the cell, write its shard.

The same code runs in the Snakemake job's own process and in a fork-server child
(qbench.fork_server); `JobRequest` is what the job hands over, plain JSON. Torch is
imported inside `measure`, so the job's side (scripts/measure.py, qbench.fork_client)
can build a request without importing it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import asdict, dataclass

log = logging.getLogger("qbench.measure")

# How the measuring process came to be, recorded in each shard's metadata.
LAUNCH_IN_PROCESS = "in_process"
LAUNCH_FORK_SERVER = "fork_server"


@dataclass(frozen=True)
class JobRequest:
    """Everything a measurement needs from its Snakemake job."""

    cell: dict  # CellConfig.as_dict()
    output: str  # the shard's path
    log: str  # the job's log file
    attempt: int
    threads: int
    lock_dir: str  # GPU locks; replaced by a node-local folder under SLURM
    job_start: float | None = None  # the job process's start, seconds since boot (qbench.startup)
    # config key breakdown: profile this many forwards after the timed loop and write the
    # cell's breakdown table here (None: no breakdown)
    breakdown_output: str | None = None
    breakdown_forwards: int = 1
    # qbench.lanes: the GPU (lane) this job asks for, of how many the run uses at once
    gpu_lane: int = 0
    gpu_lanes: int = 1

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "JobRequest":
        return cls(**d)


def gpu_lock_dir(lock_dir: str) -> str:
    """Under SLURM the job sees only its own GPU, and the working directory may be on a
    shared filesystem without flock(): lock on the node's local disk instead."""
    return "/tmp/qbench-gpu-locks" if os.environ.get("SLURM_JOB_ID") else lock_dir


def measure(job: JobRequest, launch: str) -> int:
    """Measure the cell and write its shard; the exit status for the job (0: written). A
    device mistake is one logged line and status 1; anything unexpected is raised, and
    no shard is written."""
    import torch

    from qbench.compile_env import kernel_settings
    from qbench.config import CellConfig
    from qbench.device import LANE_PATIENCE_S, DeviceError, job_gpu, resolve_device
    from qbench.measure import run_cell
    from qbench.shards import write_shard
    from qbench.startup import own_age, seconds_since
    from qbench.visible_gpus import visible_gpu_entries

    # Job start to here: interpreter, Snakemake's script preamble, imports (torch) or the
    # fork server's hand-over; in a child, the job's start, not the child's, counts.
    startup_s = seconds_since(job.job_start) if job.job_start is not None else own_age()
    log.info("attempt %d (%s)", job.attempt, launch.replace("_", " "))
    cell = CellConfig.from_dict(job.cell)
    torch.set_num_threads(max(1, job.threads))
    breakdown = None
    if job.breakdown_output:
        from qbench.profile_parts import CellBreakdown

        breakdown = CellBreakdown(job.breakdown_forwards)
    # a multi-GPU run: wait for the lane's GPU (qbench.lanes); one GPU at a time: the first free
    lane = {"prefer": job.gpu_lane, "patience_s": LANE_PATIENCE_S if job.gpu_lanes > 1 else 0.0}
    n_visible = len(visible_gpu_entries())  # before job_gpu points CUDA_VISIBLE_DEVICES at one
    with contextlib.ExitStack() as stack:
        index = None
        if cell.device != "cpu" and n_visible:
            # the GPU is taken before CUDA starts, so the job can see that GPU alone (job_gpu)
            index, gpu = stack.enter_context(job_gpu(gpu_lock_dir(job.lock_dir), **lane))
        try:
            device = resolve_device(cell.device)
        except DeviceError as exc:
            log.error("%s", exc)  # the user's mistake: one line, no traceback
            return 1
        if device.type == "cuda":
            if index is None:  # CUDA without /dev/nvidiaN files (a container's own layout)
                index, gpu = stack.enter_context(job_gpu(gpu_lock_dir(job.lock_dir), **lane))
            elif gpu.index != index and torch.cuda.device_count() != 1:
                # pointed at its GPU alone, yet CUDA started before the lock: cuda:0 is another job's GPU
                log.error("CUDA sees %d GPUs after CUDA_VISIBLE_DEVICES was set to GPU %d's entry: something "
                          "started CUDA before the job locked its GPU", torch.cuda.device_count(), index)  # fmt: skip
                return 1
            # the current device too: torch.cuda.graph's capture stream, Triton's and
            # Inductor's launches follow it (on GPU 1 every capture failed without this)
            torch.cuda.set_device(gpu)
            log.info("GPU %d of the %d visible (CUDA_VISIBLE_DEVICES=%s, %s); lane %d of %d", index, n_visible,
                     os.environ.get("CUDA_VISIBLE_DEVICES"), gpu, job.gpu_lane, job.gpu_lanes)  # fmt: skip
            own = job.gpu_lane % max(1, n_visible)
            if job.gpu_lanes > 1 and n_visible > 1 and index != own:
                log.warning("GPU %d stayed busy for %.0f s: this repeat left its lane and runs on GPU %d", own,
                            LANE_PATIENCE_S, index)  # fmt: skip
            table = run_cell(cell, gpu, startup_s, job.attempt, after_timing=breakdown, gpu_index=index)
        else:
            stack.close()  # no GPU used: let another job have it
            table = run_cell(cell, device, startup_s, job.attempt, after_timing=breakdown)
    # the compiler's settings that change the kernels, as the job ran
    metadata = {**(table.schema.metadata or {}), b"qbench.launch": launch.encode(),
                b"qbench.inductor_env": json.dumps(kernel_settings(), sort_keys=True).encode()}  # fmt: skip
    write_shard(table.replace_schema_metadata(metadata), job.output)
    if breakdown is not None:
        write_shard(breakdown.table(table), job.breakdown_output)
    return 0
