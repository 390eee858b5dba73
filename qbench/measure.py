"""One measurement job: build the model, check it against fp16, time it, return a shard.

The order matters for memory: the fp16 reference output is computed first, then the
reference model is dropped (or, for 16-bit schemes, reused) before the variant runs.
The reference is computed on up to 16 sequences spread evenly over the batch, first and
last included, and compared with the same rows of the variant's full-batch output: every
layer works on each sequence (each token, for a GEMM) independently, so those rows are
what the full batch gives them, and a full-batch eager forward (0.5 s at batch 1024 on an
H100) is saved in every job.
A cell that cannot run becomes a one-row shard with status `oom` or `unsupported`;
anything else unexpected is raised, so the job fails loudly and leaves no shard.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from typing import Callable

import pyarrow as pa
import torch

from qbench import schemes
from qbench.config import CellConfig
from qbench.device import NvmlSampler, is_throttled, provenance, resolve_device
from qbench.shards import SCHEMA_VERSION, make_table
from qbench.timing import time_forward
from qbench.workloads import build_model, flops_per_forward, make_input

log = logging.getLogger("qbench.measure")

REFERENCE_SEQUENCES = 16  # sequences of the batch the accuracy check compares


def reference_rows(wl, rows: int, device: torch.device) -> torch.Tensor:
    """Indices of the input rows (sequences; tokens for a GEMM) the fp16 reference is
    computed on: REFERENCE_SEQUENCES sequences' worth, evenly spread from the first row
    to the last, or all rows of a smaller batch."""
    k = min(rows, REFERENCE_SEQUENCES * (wl.seq_len if wl.model == "gemm" else 1))
    return torch.linspace(0, rows - 1, k, device=device).round().long().unique()


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _since(t0: float, device: torch.device) -> float:
    """Seconds since t0 once the GPU's queued work is done (a set-up part's true cost)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _peak_mem(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return {
        "peak_mem_bytes": int(torch.cuda.max_memory_allocated(device)),
        "peak_reserved_bytes": int(torch.cuda.max_memory_reserved(device)),
    }


def named_modules(names: set[str]) -> list[str]:
    """The module names among `names` that are not Inductor's generated code (whose names
    hold a hash), sorted."""
    return sorted(n for n in names if all(len(part) < 40 for part in n.split(".")))


def log_first_call_imports(names: set[str]) -> None:
    """Which modules the first call imported, Inductor's generated code left out: what the
    fork server could import once for every job instead (qbench.fork_server.PRELOAD_OPTIONAL)."""
    named = named_modules(names)
    if named:
        shown = ", ".join(named[:40]) + (f", … ({len(named) - 40} more)" if len(named) > 40 else "")
        log.info("first call imported %d module(s): %s", len(named), shown)


def run_cell(
    cell: CellConfig,
    device: torch.device | None = None,
    startup_s: float | None = None,
    attempt: int | None = None,
    after_timing: Callable[[torch.nn.Module, torch.Tensor, torch.device], None] | None = None,
    gpu_index: int | None = None,
) -> pa.Table:
    """Measure one (workload, dtype, batch, repeat) and return its shard as a table.
    `startup_s`, the caller's process start-up time, is recorded for the overhead budget.
    `after_timing(model, x, device)` is called once the cell is timed, with the model as
    timed (qbench.profile_parts.CellBreakdown profiles it); not for a cell that was not.
    `gpu_index`, the GPU's position among those the run sees, is recorded in place of the
    device's index when a job sees its GPU alone (qbench.device.job_gpu)."""
    device = device or resolve_device(cell.device)
    torch.manual_seed(cell.seed)
    prov = provenance(device)
    if gpu_index is not None:
        prov["gpu_index"] = gpu_index
    sampler = NvmlSampler(device)
    wl, dt = cell.workload, cell.dtype
    base = {
        "schema_version": SCHEMA_VERSION,
        "workload": wl.name,
        "model": wl.model,
        "dtype": dt.name,
        "scheme": dt.scheme,
        "impl": dt.impl,
        "batch": cell.batch,
        "rep": cell.rep,
        "attempt": attempt,
        "tokens": wl.tokens(cell.batch),
        "tolerance": cell.tolerance,
        "flops": flops_per_forward(wl, cell.batch),
        "max_sm_clock_mhz": sampler.max_sm_clock(),
        "config_hash": cell.config_hash(),
        "seed": cell.seed,
        "startup_s": startup_s,
        **prov,
    }

    def one_row(status: str, detail: str) -> pa.Table:
        log.warning("cell %s/%s/batch=%s/rep=%s: %s (%s)", wl.name, dt.name, cell.batch, cell.rep, status, detail)
        return make_table([{**base, "status": status, "status_detail": detail, **_peak_mem(device)}], cell.as_dict())

    reason = schemes.unsupported_reason(dt.scheme, device, dt.impl)
    if reason:
        return one_row("unsupported", reason)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    t0 = time.perf_counter()
    marks = {}  # where the set-up before the first call goes, for the log: part -> seconds
    try:
        with torch.inference_mode():
            model = build_model(wl, device, torch.float16, cell.seed)
            x16 = make_input(wl, cell.batch, device, torch.float16, cell.seed)
            rows = reference_rows(wl, x16.shape[0], device)
            marks["build"] = _since(t0, device)
            ref = model(x16[rows])
            marks["reference"] = _since(t0, device) - sum(marks.values())
            calib = None
            if dt.smoothquant is not None:  # its own inputs: smoothing must not see the timed batch
                calib = make_input(wl, min(cell.batch, 8), device, torch.float16, cell.seed + 7)
            # casts, or quantizes the fp16 weights in place
            model = schemes.apply_scheme(model, dt.scheme, dt.impl, dt.smoothquant, calib, dt.act_group_size,
                                         dt.requantize)
            x = x16.to(schemes.activation_dtype(dt.scheme, dt.impl))
            del x16, calib
            _free(device)
        if dt.impl != "eager":
            model = schemes.compile_model(model)
        marks["scheme"] = _since(t0, device) - sum(marks.values())
        modules_before = set(sys.modules)
        t1 = time.perf_counter()
        with torch.inference_mode():
            out = model(x)  # compiles, for impl=compile
            rel_error = schemes.relative_error(out[rows], ref)
            del out, ref
        compile_s = time.perf_counter() - t1
        log_first_call_imports(set(sys.modules) - modules_before)
        setup_s = time.perf_counter() - t0
        parts = ", ".join(f"{k} {v:.2f}" for k, v in marks.items())
        log.info("setup %.1f s (%s, first call %.1f s); relative error %.3g (on %d of %d rows)", setup_s, parts,
                 compile_s, rel_error, len(rows), x.shape[0])  # fmt: skip
        samples = time_forward(lambda: model(x), device, cell.timing, sampler.read)
        log.info(
            "%d samples by %s (%s), stopped on %s; mean %.3f ms",
            len(samples.latency_ms), samples.method, samples.note or "-", samples.stop_reason,
            sum(samples.latency_ms) / len(samples.latency_ms),
        )  # fmt: skip
    except torch.OutOfMemoryError as exc:
        model = x = None
        _free(device)
        return one_row("oom", str(exc).splitlines()[0][:300])
    if after_timing is not None:
        after_timing(model, x, device)

    status = "ok" if rel_error <= cell.tolerance else "inaccurate"
    detail = None if status == "ok" else f"relative error {rel_error:.3g} > tolerance {cell.tolerance:.3g}"
    common = {**base, "status": status, "status_detail": detail, "rel_error": rel_error, "setup_s": setup_s,
              "compile_s": compile_s, "warmup_s": samples.warmup_s, "timed_s": samples.timed_s,
              "warmup_iterations": samples.warmup_iterations, "timing_method": samples.method,
              "timing_note": samples.note, "stop_reason": samples.stop_reason, "l2": samples.l2,
              **_peak_mem(device)}  # fmt: skip
    frac = cell.timing.throttle_clock_fraction
    clocks = sorted(r["sm_clock_mhz"] for r in samples.readings if r.get("sm_clock_mhz") is not None)
    steady = clocks[len(clocks) // 2] if clocks else None
    rows = [
        {**common, "iteration": i, "latency_ms": ms, **reading, "throttled": is_throttled(reading, steady, frac)}
        for i, (ms, reading) in enumerate(zip(samples.latency_ms, samples.readings))
    ]
    return make_table(rows, cell.as_dict())
