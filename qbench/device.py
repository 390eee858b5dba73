"""Which device a measurement runs on, the lock that keeps one job per GPU, NVML
readings, and the provenance every shard carries."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import platform
import socket
import subprocess
import time
from pathlib import Path

import torch

from qbench import __version__
from qbench.visible_gpus import visible_gpu_entries


class DeviceError(RuntimeError):
    """The configured device cannot be used here; the message says why."""


def resolve_device(requested: str) -> torch.device:
    """`auto` is CUDA when a GPU is visible, else the CPU; `cuda` without a GPU is an error,
    never a silent fall-back to the CPU."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "config key device is 'cuda' but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
            "use device: auto or device: cpu, or run on a GPU machine"
        )
    if requested not in ("auto", "cuda"):
        raise DeviceError(f"config key device must be auto, cuda or cpu, got {requested!r}")
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


# How long a job of a multi-GPU run waits for its lane's GPU before it takes another one
# (which it logs): lanes keep pace within a job's length, so only a GPU held by something
# else waits this long.
LANE_PATIENCE_S = 120.0


@contextlib.contextmanager
def job_gpu(lock_dir: str | os.PathLike, prefer: int = 0, patience_s: float = 0.0):
    """Take a free GPU for a measurement job and yield its position among the visible
    GPUs, with CUDA pointed at it alone.

    Where CUDA has not started yet in this process and several GPUs are visible, the job
    sets CUDA_VISIBLE_DEVICES to the GPU it locked, so its model is on `cuda:0` whichever
    card it got. Inductor's cache keys contain the device index: a cell compiled on
    cuda:1 missed the cache on cuda:0 and compiled again (4–8 s, seen on 2 × H100), so
    without this every GPU of a run compiled every cell once. The locks are then named by
    the visible entries, which every job of one run shares. Where CUDA has started (or
    one GPU is visible), the lock is by UUID and the job uses `cuda:<index>`.
    Yields (index among the visible GPUs, the torch device to use)."""
    entries = visible_gpu_entries()
    if len(entries) >= 2 and not torch.cuda.is_initialized():
        names = ["visible-" + e for e in entries]
        with gpu_lock(lock_dir, names=names, prefer=prefer, patience_s=patience_s) as index:
            previous = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = entries[index]
            try:
                yield index, torch.device("cuda", 0)
            finally:  # for a caller that goes on (tests); a job's process ends here
                if previous is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = previous
        return
    with gpu_lock(lock_dir, prefer=prefer, patience_s=patience_s) as index:
        yield index, torch.device("cuda", index)


@contextlib.contextmanager
def gpu_lock(
    lock_dir: str | os.PathLike,
    names: list[str] | None = None,
    poll_s: float = 0.2,
    prefer: int = 0,
    patience_s: float = 0.0,
):
    """Hold an exclusive lock on one GPU for the life of the block and yield its index.

    With `--resources gpu=N` up to N jobs run at once; each takes a free GPU, so two
    jobs never share one. `names` identify the visible GPUs (default: their UUIDs, so
    jobs with different CUDA_VISIBLE_DEVICES agree on what a lock means). Blocks until a
    GPU is free. The locks are flock()s, released by the kernel even when a job is killed.

    Free GPUs are tried from `prefer` (mod their count) on; for the first `patience_s`
    seconds only `prefer` is: a job of a multi-GPU run waits for its lane's GPU
    (qbench.lanes), so that the dtypes of a repeat share a card and a difference between
    cards cannot pose as a dtype effect (seen on 2 x H100). After that it takes any.
    """
    if names is None:
        names = [gpu_uuid(i) or f"index{i}" for i in range(torch.cuda.device_count())]
    if not names:
        raise DeviceError("no GPU to lock: torch sees no CUDA device")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    handles = [open(lock_dir / f"{name}.lock", "a+") for name in names]
    t0 = time.monotonic()
    try:
        while True:
            tries = len(handles) if time.monotonic() - t0 >= patience_s else 1
            for i in [(prefer + k) % len(handles) for k in range(tries)]:
                fh = handles[i]
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                try:
                    fh.seek(0)
                    fh.truncate()
                    fh.write(f"{os.getpid()} {socket.gethostname()}\n")
                    fh.flush()
                    yield i
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
                return
            time.sleep(poll_s)  # more jobs than GPUs: wait for one to finish
    finally:
        for fh in handles:
            fh.close()


def _nvml():
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no driver, no library: readings are recorded as missing
        return None


def gpu_uuid(index: int) -> str | None:
    try:
        return str(torch.cuda.get_device_properties(index).uuid)
    except Exception:
        return None


class NvmlSampler:
    """Reads SM clock, memory clock, temperature and power of one GPU. On a CPU, or
    without NVML, every reading is None."""

    def __init__(self, device: torch.device):
        self.nvml = _nvml() if device.type == "cuda" else None
        self.handle = None
        if self.nvml is not None:
            uuid = gpu_uuid(device.index if device.index is not None else torch.cuda.current_device())
            try:
                self.handle = self.nvml.nvmlDeviceGetHandleByUUID(("GPU-" + uuid) if uuid and not uuid.startswith("GPU-") else uuid)
            except Exception:
                try:
                    self.handle = self.nvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
                except Exception:
                    self.handle = None

    def max_sm_clock(self) -> float | None:
        if self.handle is None:
            return None
        try:
            return float(self.nvml.nvmlDeviceGetMaxClockInfo(self.handle, self.nvml.NVML_CLOCK_SM))
        except Exception:
            return None

    def read(self) -> dict:
        out = {"sm_clock_mhz": None, "mem_clock_mhz": None, "temperature_c": None, "power_w": None,
               "clock_event_reasons": None}  # fmt: skip
        if self.handle is None:
            return out
        n, h = self.nvml, self.handle
        for key, fn in (
            ("sm_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
            ("mem_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
            ("temperature_c", lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
            ("power_w", lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0),
        ):
            try:
                out[key] = float(fn())
            except Exception:
                pass
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            try:
                out["clock_event_reasons"] = int(getattr(n, name)(h))
                break
            except Exception:
                continue
        return out


# NVML clock-event reasons that mean the GPU is slowed by something other than its normal
# power management: HW slowdown, SW thermal, HW thermal, HW power brake. The SW power cap
# (0x4) is left out on purpose: a GEMM-heavy load holds an H100 at its 700 W cap in steady
# state, so that is the card's real speed, not a disturbance (it is still recorded).
THROTTLE_REASONS = 0x8 | 0x20 | 0x40 | 0x80


def is_throttled(reading: dict, steady_clock: float | None, clock_fraction: float) -> bool | None:
    """A sample to keep out of the statistics: taken while NVML reported a thermal or
    hardware slowdown, or with the SM clock under `clock_fraction` of `steady_clock`, the
    repeat's median clock (a transient dip). The reference is the repeat's own steady
    state, not the card's maximum: under its 700 W cap an H100 runs dense fp16 GEMMs at
    ~1350 MHz, 68% of its 1980 MHz maximum, in steady state (measured 2026-11-26), and a
    maximum-based rule would discard every fp16 sample while keeping int8's.
    None where nothing was read (CPU, no NVML)."""
    clock, reasons = reading.get("sm_clock_mhz"), reading.get("clock_event_reasons")
    if clock is None and reasons is None:
        return None
    low = clock is not None and steady_clock is not None and clock < clock_fraction * steady_clock
    return bool(low or (reasons is not None and reasons & THROTTLE_REASONS))


def git_commit(path: str | os.PathLike | None = None) -> str:
    """The commit of the checkout that ran the code, with '+dirty' if it had changes.
    QBENCH_GIT_COMMIT overrides it where the code runs from a copy without .git."""
    if os.environ.get("QBENCH_GIT_COMMIT"):
        return os.environ["QBENCH_GIT_COMMIT"]
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(device: torch.device) -> dict:
    """Where and with what a shard was measured."""
    info = {
        "device": device.type,
        "gpu_name": None,
        "gpu_uuid": None,
        "gpu_index": None,
        "driver": None,
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "qbench_version": __version__,
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "cpu": platform.processor() or platform.machine(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started_at": _dt.datetime.now(_dt.timezone.utc),
    }
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        info["gpu_index"] = idx
        info["gpu_name"] = torch.cuda.get_device_name(idx)
        info["gpu_uuid"] = gpu_uuid(idx)
        nv = _nvml()
        if nv is not None:
            try:
                d = nv.nvmlSystemGetDriverVersion()
                info["driver"] = d.decode() if isinstance(d, bytes) else str(d)
            except Exception:
                pass
    return info
