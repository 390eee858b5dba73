"""The measurement loop, as careful as the harnesses the field trusts (nvbench, triton's
do_bench, torch.utils.benchmark, pyperf).

On CUDA:
- the forward is captured in a CUDA graph when it allows it, and replays are timed, so
  no host launch overhead is in the number; if capture fails the loop times eager
  launches and records why;
- each sample is bracketed by CUDA events recorded on a side stream, and the host waits
  for each sample before the next, so NVML's readings (taken while the sample runs)
  belong to that sample;
- optionally L2 is flushed before each sample (outside the timed region) for cold-cache
  numbers.
Everywhere:
- warm-up runs until both a count and a time are reached (compilation, autotuning,
  allocator growth and clock ramp-up stay out);
- timing stops adaptively: once a minimum count and time are reached, as soon as the
  samples' relative standard deviation or the mean's relative standard error is under
  its target, or at a count or time limit; the reason is recorded.
On the CPU the clock is `time.perf_counter`.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from qbench.specs import TimingConfig  # noqa: F401 (re-exported)


@dataclass
class Samples:
    """What one timed loop produced: one entry per timed iteration, and how it was made."""

    latency_ms: list[float] = field(default_factory=list)
    readings: list[dict] = field(default_factory=list)
    warmup_iterations: int = 0
    warmup_s: float = 0.0
    timed_s: float = 0.0  # wall time of the timed loop, host overhead included
    method: str = "perf_counter"  # cuda_graph | cuda_launch | perf_counter
    note: str | None = None  # why the graph was not used, when it was not
    stop_reason: str = ""
    l2: str = "hot"


def stop_reason(latencies: list[float], elapsed_s: float, cfg: TimingConfig) -> str | None:
    """Why to stop now, or None to go on."""
    n = len(latencies)
    if n >= cfg.max_iterations:
        return "max_iterations"
    if elapsed_s >= cfg.max_time_s and n >= 2:
        return "max_time"
    if n < max(cfg.min_iterations, 2) or elapsed_s < cfg.min_time_s:
        return None
    mean = statistics.fmean(latencies)
    sd = statistics.stdev(latencies)
    if sd / mean <= cfg.target_rsd:
        return "target_rsd"
    if sd / math.sqrt(n) / mean <= cfg.target_rse:
        return "target_rse"
    return None


class L2Flusher:
    """Writes a buffer twice the size of L2 so the next sample starts cold."""

    def __init__(self, device: torch.device):
        size = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 * 2**20) or 50 * 2**20
        self.buf = torch.empty(2 * size // 4, dtype=torch.int32, device=device)

    def __call__(self) -> None:
        self.buf.zero_()


def capture_graph(fn: Callable[[], object], device: torch.device) -> tuple[torch.cuda.CUDAGraph | None, str | None]:
    """Capture `fn` in a CUDA graph; returns (graph, None) or (None, reason). Under
    `device` as the current device: torch.cuda.graph captures on a stream of the current
    device, and a model on another GPU then fails to capture."""
    with torch.cuda.device(device):
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm on a side stream, as capture requires
                fn()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # its own capture stream on `device`: torch.cuda.graph's default one is made
            # once per process, on whichever device was current at the first capture
            with torch.cuda.graph(graph, stream=torch.cuda.Stream(device)):
                fn()
            graph.replay()
            torch.cuda.synchronize(device)
            return graph, None
        except Exception as exc:  # any capture failure: fall back to launches, say why
            torch.cuda.synchronize(device)
            return None, f"CUDA graph capture failed: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(
    fn: Callable[[], object],
    device: torch.device,
    timing: TimingConfig,
    read_sensors: Callable[[], dict] = dict,
    timed_region: contextlib.AbstractContextManager | None = None,
) -> Samples:
    """Warm `fn` up, then time it sample by sample until a stopping rule says enough.
    `timed_region` (e.g. a torch.profiler) is entered around the timed samples only."""
    out = Samples(l2="cold" if timing.flush_l2 and device.type == "cuda" else "hot")
    flush = L2Flusher(device) if out.l2 == "cold" else None
    with torch.inference_mode():
        run = fn
        # With warmup_counts_capture the warm-up's clock starts before the capture: its
        # side-stream forward and its checking replay load the GPU as warm-up forwards
        # do, and count as two.
        t0 = time.perf_counter()
        if device.type == "cuda":
            out.method = "cuda_launch"
            if timing.cuda_graph:
                graph, out.note = capture_graph(fn, device)
                if graph is not None:
                    out.method, run = "cuda_graph", graph.replay
                    out.warmup_iterations = 2 if timing.warmup_counts_capture else 0
            else:
                out.note = "CUDA graphs off (timing.cuda_graph: false)"
        if not timing.warmup_counts_capture:
            t0 = time.perf_counter()
        while out.warmup_iterations < timing.warmup or (time.perf_counter() - t0) * 1e3 < timing.warmup_ms:
            run()
            out.warmup_iterations += 1
            _sync(device)
        out.warmup_s = time.perf_counter() - t0

        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        t1 = time.perf_counter()
        with timed_region if timed_region is not None else contextlib.nullcontext():
            _time_samples(run, device, stream, flush, timing, read_sensors, out)
        out.timed_s = time.perf_counter() - t1
    return out


def _time_samples(run, device, stream, flush, timing, read_sensors, out: Samples) -> None:
    """The timed loop: one sample per call of `run`, until `stop_reason` says enough."""
    timed_gpu_s = 0.0
    while True:
        if device.type == "cuda":
            if flush is not None:
                flush()
            stream.wait_stream(torch.cuda.current_stream(device))
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            with torch.cuda.stream(stream):
                start.record(stream)
                run()
                end.record(stream)
            reading = read_sensors()  # taken while the GPU is still busy with this sample
            end.synchronize()
            torch.cuda.current_stream(device).wait_stream(stream)
            ms = start.elapsed_time(end)
        else:
            t = time.perf_counter()
            run()
            ms = (time.perf_counter() - t) * 1e3
            reading = read_sensors()
        out.latency_ms.append(float(ms))
        out.readings.append(reading)
        timed_gpu_s += ms / 1e3
        reason = stop_reason(out.latency_ms, timed_gpu_s, timing)
        if reason:
            out.stop_reason = reason
            return
