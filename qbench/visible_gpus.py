"""Which GPUs a process may use, known without asking the driver: CUDA reads
CUDA_VISIBLE_DEVICES once, when it starts, so a job can only be pointed at one GPU before
anything (torch, NVML: on driver 580 nvmlInit starts CUDA's driver too) has started it.
Torch-free, for the fork server's imports as much as for the measurement job."""

from __future__ import annotations

import os


def visible_gpu_entries() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries ("0", "GPU-…"), from
    that variable and the /dev/nvidiaN files alone: no driver call, so CUDA can still be
    pointed at one of them afterwards. Without the variable, "0" … "N-1" for N device
    files; like CUDA, an unparsable entry ends the list."""
    try:
        files = sum(1 for f in os.listdir("/dev") if f.startswith("nvidia") and f[6:].isdigit())
    except OSError:
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(i) for i in range(files)]
    entries = []
    for entry in (e.strip() for e in visible.split(",")):
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        entries.append(entry)
    return entries[:files]
