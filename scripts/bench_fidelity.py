"""Fidelity benchmark: does the harness's number equal the GPU's work?

For a large GEMM and for the default decoder (fp16 and w8a8, compiled) at batch 128 and
1024, the harness (`qbench.timing.time_forward`, CUDA-graph replays timed with events)
is run under `torch.profiler`; the mean latency it reports is compared with the sum of
the kernel times the profiler recorded over the same forwards, divided by their number.
Goal: within 2%. Needs a CUDA GPU.

    python scripts/bench_fidelity.py [--configfile config/config.yaml] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import yaml
from torch.profiler import ProfilerActivity, profile

from qbench import schemes
from qbench.timing import TimingConfig, time_forward
from qbench.workloads import WorkloadConfig, build_model, make_input


def kernel_times(prof) -> dict:
    """What the profiler saw on the GPU: the number of kernel/copy records, the sum of
    their durations, and the union of their [start, end) intervals (busy time, which
    counts overlapping kernels once), in ms."""
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start
    )
    total = sum(end - start for start, end in spans)
    busy, cur_start, cur_end = 0.0, None, None
    for start, end in spans:
        if cur_end is None or start > cur_end:
            busy += 0.0 if cur_end is None else cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        busy += cur_end - cur_start
    return {"records": len(spans), "sum_ms": total / 1e3, "busy_ms": busy / 1e3}


def measure(name: str, fn, device, iterations: int) -> dict:
    def profiled(n: int):
        timing = TimingConfig(warmup=10, warmup_ms=25, min_iterations=n, max_iterations=n)
        prof = profile(activities=[ProfilerActivity.CUDA])
        # the profiler records the timed samples only: not the capture, not the warm-up
        return time_forward(fn, device, timing, timed_region=prof), kernel_times(prof)

    _, one = profiled(1)  # how many GPU records one forward makes
    s, k = profiled(iterations)
    harness = statistics.fmean(s.latency_ms)
    # On long runs the profiler drops whole forwards' records: count the forwards it kept.
    kept = k["records"] / one["records"]
    busy, total = k["busy_ms"] / kept, k["sum_ms"] / kept
    row = {"case": name, "method": s.method, "iterations": iterations, "records": k["records"],
           "records_per_forward": one["records"], "forwards_in_profile": kept, "harness_ms": harness,
           "kernel_sum_ms": total, "kernel_busy_ms": busy, "diff_sum_pct": 100 * (harness / total - 1),
           "diff_pct": 100 * (harness / busy - 1)}  # fmt: skip
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default="config/config.yaml")
    ap.add_argument("--iterations", type=int, default=5, help="profiled forwards per case (few: the profiler's buffers drop records on long runs)")
    ap.add_argument("--json")
    args = ap.parse_args()
    device = torch.device("cuda")
    cfg = yaml.safe_load(open(args.configfile))
    name, spec = next(iter(cfg["workloads"].items()))
    wl = WorkloadConfig.from_dict(name, spec)
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}", flush=True)
    rows = []
    with torch.inference_mode():
        a = torch.randn(8192, 8192, device=device, dtype=torch.float16)
        b = torch.randn(8192, 8192, device=device, dtype=torch.float16)
        rows.append(measure("gemm 8192^3 fp16", lambda: a @ b, device, args.iterations))
        c = torch.randn(32768, 8192, device=device, dtype=torch.float16)
        rows.append(measure("gemm 32768x8192x8192 fp16", lambda: c @ b, device, args.iterations))
        del a, b, c
    for scheme in ("fp16", "w8a8-int8"):
        for batch in (128, 1024):
            with torch.inference_mode():
                model = schemes.apply_scheme(build_model(wl, device, torch.float16, 0), scheme)
                x = make_input(wl, batch, device, schemes.activation_dtype(scheme), 0)
            model = schemes.compile_model(model)
            rows.append(measure(f"{name} {scheme} compile batch {batch}", lambda: model(x), device, args.iterations))
            del model, x
            torch.cuda.empty_cache()
    worst = max(abs(r["diff_pct"]) for r in rows)
    print(f"worst |harness - kernel busy time| = {worst:.2f}% (goal: within 2%)")
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
