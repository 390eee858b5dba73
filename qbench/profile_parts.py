"""A few extra profiled forwards per cell: where a forward's time goes (qbench.breakdown).

After the timed loop, `profile_parts` runs a few more forwards of the same model under
`torch.profiler`, launched as usual (never as a CUDA graph, so that every kernel is an
event of its own), and splits each forward's time into parts (qbench.parts):

- on CUDA, the GPU's kernels, copies and fills: each is classified by its name and by the
  op that launched it (and that op's enclosing ranges); a part's time is the sum of its
  kernels' durations. The forward runs on one stream, so the sum is the GPU's busy time;
  gaps between kernels (launch latency, which the timed CUDA-graph replays do not pay) are
  in no part.
- on the CPU, every op and range: its self time, classified by the outermost aten op it
  ran in (the op the model called: `aten::linear`'s `aten::mm` is the linear's) and the
  ranges around it. The forward's own range holds the host time between ops (Python),
  counted as `other`; the parts then add up to the profiled forward's wall time, the
  profiler's overhead included.

In eager runs each layer holding 8-bit weights runs inside a `qbench::quantized_layer`
range (forward hooks, set for the profiled forwards only), so its casts and dequantizing
multiplies count as quantization though their kernels are plain copies and multiplies.
Compiled layers do not run the hooks (Dynamo does not guard on hooks); Inductor's kernel
names say what they fuse.

The profiler's first forward runs slow on the host, so one more forward is run first and
left out. The profiler drops records when its buffers fill; a forward with fewer events
than the most complete one is left out too, and the count of forwards kept is part of the
result.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from qbench.breakdown import PARTS, cell_rows, cell_table
from qbench.parts import FORWARD, QUANTIZED_LAYER, part_of
from qbench.shards import TIMED_STATUSES

log = logging.getLogger("qbench.breakdown")

FORWARDS = 1  # profiled forwards per cell, by default: every forward runs the same kernels
TOP = 5  # events kept per part, by time, to trace a part to its kernels
# GPU activities that are the forward's work (not the ranges the profiler mirrors on the GPU)
DEVICE_WORK = {"kernel", "concurrent_kernel", "gpu_memcpy", "gpu_memset"}
FLOAT8 = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
EIGHT_BIT = {torch.int8, torch.uint8} | {getattr(torch, n) for n in FLOAT8 if hasattr(torch, n)}


@dataclass
class PartsProfile:
    """Where the profiled forwards' time went, per forward."""

    ms: dict[str, float]  # part -> ms per forward
    events: dict[str, float]  # part -> events per forward
    top: dict[str, list[tuple[str, float, float]]]  # part -> [(name, ms, events) per forward], largest first
    forwards: int  # forwards kept
    requested: int  # forwards profiled
    wall_ms: float  # wall time of one profiled forward (mean of those kept), the profiler's overhead included
    source: str  # "cuda kernels" | "cpu ops"
    dropped: list[int] = field(default_factory=list)  # indices of forwards left out (incomplete records)

    @property
    def total_ms(self) -> float:
        return sum(self.ms.values())


def is_quantized(module: nn.Module) -> bool:
    """A layer that holds 8-bit weights itself (int8 or fp8 tensors, or a tensor subclass as
    torchao's), not through its children."""
    for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
        if t.dtype in EIGHT_BIT or type(t) not in (torch.Tensor, nn.Parameter):
            return True
    return False


@contextlib.contextmanager
def quantized_layer_ranges(model: nn.Module | None):
    """Run every quantized layer's forward inside a QUANTIZED_LAYER range while inside."""
    if model is None:
        yield
        return
    open_ranges: dict[int, list] = defaultdict(list)

    def enter(module, args):
        rf = record_function(QUANTIZED_LAYER)
        rf.__enter__()
        open_ranges[id(module)].append(rf)

    def leave(module, args, output):
        if open_ranges[id(module)]:
            open_ranges[id(module)].pop().__exit__(None, None, None)

    handles = []
    for m in model.modules():
        if is_quantized(m):
            handles += [m.register_forward_pre_hook(enter), m.register_forward_hook(leave)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _chain(evt) -> list:
    """The event and the CPU ranges enclosing it, innermost first."""
    out = []
    while evt is not None:
        out.append(evt)
        evt = evt.cpu_parent
    return out


def _forward_of(chain, forwards: dict[int, int]) -> int | None:
    """Which profiled forward (index) a chain of ranges belongs to, if any."""
    for evt in chain:
        if id(evt) in forwards:
            return forwards[id(evt)]
    return None


def cpu_items(events, forwards: dict[int, int]) -> list[tuple[int, str, float, str]]:
    """(forward, part, self time in µs, name) of every CPU op and range inside a profiled
    forward: classified by the outermost aten op it ran in, the one the model called."""
    items = []
    for evt in events:
        if evt.device_type != DeviceType.CPU or evt.is_async:
            continue
        chain = _chain(evt)
        i = _forward_of(chain, forwards)
        if i is None:
            continue
        names = [e.name for e in chain]
        ops = [n for n in names if n.startswith("aten::")]
        name = ops[-1] if ops else evt.name
        items.append((i, part_of(name, names[1:]), evt.self_cpu_time_total, name))
    return items


def _is_device_work(evt) -> bool:
    kind = getattr(evt, "activity_type", None)
    if kind:
        return kind in DEVICE_WORK
    return evt.device_type == DeviceType.CUDA and not getattr(evt, "is_user_annotation", False)


def cuda_items(events, forwards: dict[int, int], spans: list[tuple[float, float]]) -> list[tuple[int, str, float, str]]:
    """(forward, part, duration in µs, name) of every GPU kernel, copy and fill of a profiled
    forward, classified by its name and the op that launched it (the profiler links them by
    correlation id). A kernel the profiler did not link to its op is put in the forward
    whose time span holds its start (each forward synchronizes before its range ends)."""
    # the ops and ranges by id (runtime calls such as cudaLaunchKernel carry a link of their own)
    cpu = {e.id: e for e in events if e.device_type == DeviceType.CPU and not getattr(e, "linked_correlation_id", 0)}
    items = []
    for evt in events:
        if evt.device_type != DeviceType.CUDA or not _is_device_work(evt):
            continue
        op = cpu.get(getattr(evt, "linked_correlation_id", 0) or -1)
        chain = _chain(op) if op is not None else []
        i = _forward_of(chain, forwards)
        if i is None:
            start = evt.time_range.start
            i = next((k for k, (a, b) in enumerate(spans) if a <= start <= b), None)
        if i is None:
            continue
        us = evt.time_range.end - evt.time_range.start
        items.append((i, part_of(evt.name, [e.name for e in chain]), us, evt.name))
    return items


def profile_parts(
    fn: Callable[[], object],
    device: torch.device,
    forwards: int = FORWARDS,
    model: nn.Module | None = None,
    top: int = TOP,
) -> PartsProfile | None:
    """Run `fn` (one forward) `forwards` times under torch.profiler, each inside a FORWARD
    range, after one more that warms the profiler up and is left out (a session's first
    forward runs slow on the host); split their time into parts. `model`: its quantized
    layers run inside QUANTIZED_LAYER ranges (eager runs). `top`: events kept per part, by
    time. None when the profiler recorded nothing (on a GPU: CUPTI unavailable)."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode(), quantized_layer_ranges(model):
        _sync(device)
        with profile(activities=activities) as prof:
            for _ in range(forwards + 1):
                with record_function(FORWARD):
                    fn()
                    _sync(device)
    events = prof.events()
    ranges = sorted((e for e in events if e.name == FORWARD and e.device_type == DeviceType.CPU),
                    key=lambda e: e.time_range.start)[1:]  # fmt: skip
    index = {id(e): i for i, e in enumerate(ranges)}
    spans = [(e.time_range.start, e.time_range.end) for e in ranges]
    items = cuda_items(events, index, spans) if cuda else cpu_items(events, index)
    per_forward = [[it for it in items if it[0] == i] for i in range(len(ranges))]
    most = max((len(f) for f in per_forward), default=0)
    if most == 0:
        return None
    kept = [i for i, f in enumerate(per_forward) if len(f) == most]
    dropped = [i for i in range(forwards) if i not in kept]
    if dropped:
        log.warning("breakdown: %d of %d profiled forwards had incomplete records; left out", len(dropped), forwards)
    n = len(kept)
    ms, count = defaultdict(float), defaultdict(float)
    by_name = defaultdict(lambda: [0.0, 0])
    for i in kept:
        for _, part, us, name in per_forward[i]:
            ms[part] += us / 1e3 / n
            count[part] += 1 / n
            by_name[(part, name)][0] += us / 1e3 / n
            by_name[(part, name)][1] += 1 / n
    tops = defaultdict(list)
    for (part, name), (t, c) in sorted(by_name.items(), key=lambda kv: -kv[1][0]):
        if len(tops[part]) < top:
            tops[part].append((name, t, c))
    parts = PARTS + sorted(set(ms) - set(PARTS))
    return PartsProfile(
        ms={p: ms[p] for p in parts},
        events={p: count[p] for p in parts},
        top={p: tops[p] for p in parts},
        forwards=n,
        requested=forwards,
        wall_ms=sum(spans[i][1] - spans[i][0] for i in kept) / n / 1e3,
        source="cuda kernels" if cuda else "cpu ops",
        dropped=dropped,
    )


class CellBreakdown:
    """The measurement job's `after_timing` hook (qbench.measure.run_cell): profiles the
    cell's model after its timed loop. `table(shard)` is then the cell's breakdown table
    (qbench.breakdown.CELL_SCHEMA) with the shard's keys; it is empty when the cell was not
    timed (oom, unsupported) or could not be profiled (the reason is logged: profiling is
    an extra, and never costs the cell its timings)."""

    def __init__(self, forwards: int = FORWARDS):
        self.forwards = forwards
        self.profile: PartsProfile | None = None
        # Kineto prints two notes per profiler session on the C stdout, the job's terminal;
        # level 6 silences them (its errors too: no records is detected and logged below).
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")

    def __call__(self, model: nn.Module, x: torch.Tensor, device: torch.device) -> None:
        if self.forwards < 1:  # a repeat past breakdown.repeats: its table stays empty
            log.info("breakdown: not profiled in this repeat (breakdown.repeats)")
            return
        try:
            self.profile = profile_parts(lambda: model(x), device, self.forwards, model)
        except torch.OutOfMemoryError as exc:
            log.warning("breakdown: out of memory in the profiled forwards (%s); this cell has no breakdown",
                        str(exc).splitlines()[0][:200])  # fmt: skip
        except Exception:  # the profiler's own trouble (CUPTI), not the measurement's
            log.warning("breakdown: profiling failed; this cell has no breakdown", exc_info=True)
        else:
            if self.profile is None:
                log.warning("breakdown: the profiler recorded no %s activity (CUPTI unavailable?); this cell has "
                            "no breakdown", device.type)  # fmt: skip
            else:
                p = self.profile
                log.info("breakdown (%s, %d forwards): %s; %.3f ms of %.3f ms wall", p.source, p.forwards,
                         ", ".join(f"{k} {v:.3f} ms" for k, v in p.ms.items()), p.total_ms, p.wall_ms)  # fmt: skip

    def table(self, shard: pa.Table) -> pa.Table:
        row = shard.slice(0, 1).to_pylist()[0]
        if self.profile is None or row["status"] not in TIMED_STATUSES:
            return cell_table([])
        return cell_table(cell_rows(row, self.profile))
