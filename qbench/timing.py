"""The measurement loop: warm-up, then timed forwards, one sample per forward.

On CUDA each forward is bracketed by CUDA events on the current stream, so the number
is GPU time from the first kernel's start to the last kernel's end; the host waits for
each forward before the next, so NVML's readings, taken while the forward runs, belong
to that forward. On the CPU the clock is `time.perf_counter`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = 5
    iterations: int = 20

    @classmethod
    def from_dict(cls, spec: dict) -> "TimingConfig":
        return cls(**spec)


@dataclass
class Samples:
    """What one timed loop produced: one entry per timed iteration."""

    latency_ms: list[float] = field(default_factory=list)
    readings: list[dict] = field(default_factory=list)
    warmup_s: float = 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(
    fn: Callable[[], object],
    device: torch.device,
    timing: TimingConfig,
    read_sensors: Callable[[], dict] = dict,
) -> Samples:
    """Run `fn` `timing.warmup` times untimed, then `timing.iterations` times timed."""
    out = Samples()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in range(timing.warmup):
            fn()
        _sync(device)
        out.warmup_s = time.perf_counter() - t0
        for _ in range(timing.iterations):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                reading = read_sensors()  # taken while the GPU is still busy with this forward
                end.synchronize()
                ms = start.elapsed_time(end)
            else:
                t = time.perf_counter()
                fn()
                ms = (time.perf_counter() - t) * 1e3
                reading = read_sensors()
            out.latency_ms.append(float(ms))
            out.readings.append(reading)
    return out
