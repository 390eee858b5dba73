"""Breakdown check: which part every kernel of a forward is put in, and does it add up?

For the first workload of a config at one batch size, and each scheme and implementation
asked (default: fp16 and w8a8-int8, eager and compile), builds the model as a measurement
job does, times it with the harness (qbench.timing: CUDA-graph replays on a GPU), profiles
a few more forwards with qbench.profile_parts, and prints the parts per forward next to the
timed latency, then every kernel (GPU) or op (CPU) with its part, its time and its count
per forward. What to look for: `other` should hold only the runtime's copies and fills; on
a GPU the parts' sum should be close to the timed latency (kernel time; graph replays have
small gaps between kernels); eager int8's casts and multiplies should sit in quantization.

    python scripts/bench_breakdown.py [--configfile config/config.yaml] [--batch 128] [--json out.json]
        [--schemes w8a8-fp8 --impls triton [--fused-rotary] [--triton-attention] [--act-group-size 128]]
        [--graph-gaps]

--graph-gaps (GPU) also profiles CUDA-graph replays of the forward, as the harness times
them, and prints where the GPU sits idle between kernels: the replays' span against the
sum of their kernels, and the largest gaps summed by the pair of kernels around them.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import statistics

import torch
import yaml

from qbench import schemes
from qbench.device import resolve_device
from qbench.profile_parts import profile_parts
from qbench.timing import TimingConfig, capture_graph, time_forward
from qbench.workloads import WorkloadConfig, build_model, make_input


def graph_gaps(fn, device: torch.device, replays: int = 5, top: int = 12, width: int = 60) -> dict:
    """Idle time between the kernels of CUDA-graph replays of fn: span, kernel sum, and the
    largest gaps by (kernel before, kernel after), per replay."""
    graph, note = capture_graph(fn, device)
    if graph is None:
        print(f"graph gaps: no graph ({note})", flush=True)
        return {}
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize(device)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            graph.replay()
        torch.cuda.synchronize(device)
    kernels = sorted(
        ((e.time_range.start, e.time_range.end, e.name) for e in prof.events() if e.device_type.name == "CUDA"),
        key=lambda k: k[0],
    )
    if len(kernels) < 2:
        print(f"graph gaps: the profiler saw {len(kernels)} kernels in the replays", flush=True)
        return {}
    span = (kernels[-1][1] - kernels[0][0]) / 1e3 / replays
    busy = sum(end - start for start, end, _ in kernels) / 1e3 / replays
    gaps = collections.defaultdict(lambda: [0.0, 0])
    for (_, end, before), (start, _, after) in itertools.pairwise(kernels):
        if start > end:
            key = (before[:width], after[:width])
            gaps[key][0] += (start - end) / 1e3 / replays
            gaps[key][1] += 1
    print(f"graph replays: {span:.3f} ms span, {busy:.3f} ms in {len(kernels) // replays} kernels, "
          f"{span - busy:.3f} ms idle per forward", flush=True)  # fmt: skip
    worst = sorted(gaps.items(), key=lambda kv: -kv[1][0])[:top]
    for (before, after), (ms, n) in worst:
        print(f"  idle {ms:8.4f} ms {n / replays:6.1f}x  {before}  ->  {after}")
    return {"span_ms": span, "busy_ms": busy, "kernels": len(kernels) // replays,
            "gaps": [[b, a, ms, n / replays] for (b, a), (ms, n) in worst]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default="config/config.yaml")
    ap.add_argument("--batch", type=int, help="batch size (default: the config's first)")
    ap.add_argument("--schemes", default="fp16,w8a8-int8")
    ap.add_argument("--impls", default="eager,compile")
    ap.add_argument("--forwards", type=int, default=3)
    ap.add_argument("--width", type=int, default=150, help="characters of each kernel name printed")
    ap.add_argument("--json", help="write every case's parts and kernels here")
    ap.add_argument("--fused-rotary", action="store_true",
                    help="impl triton: rotary embeddings in the q|k|v GEMM's epilogue (TritonDecoderLayer.fused_rotary)")
    ap.add_argument("--act-group-size", type=int,
                    help="impl triton: the down projection's input quantized per token and group of this many channels")
    ap.add_argument("--graph-gaps", action="store_true", help="also the idle time between kernels of graph replays")
    ap.add_argument("--triton-attention", action="store_true",
                    help="impl triton: rotary and attention in one Triton kernel (TritonDecoderLayer.triton_attention)")
    args = ap.parse_args()
    if args.fused_rotary or args.triton_attention:
        from qbench.triton_layers import TritonDecoderLayer

        TritonDecoderLayer.fused_rotary = args.fused_rotary
        TritonDecoderLayer.triton_attention = args.triton_attention
    cfg = yaml.safe_load(open(args.configfile))
    device = resolve_device(cfg.get("device", "auto"))
    name, spec = next(iter(cfg["workloads"].items()))
    wl = WorkloadConfig.from_dict(name, spec)
    batch = args.batch or cfg["batch_sizes"][0]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{where}, torch {torch.__version__}; {name} at batch {batch}", flush=True)
    rows = []
    for scheme in args.schemes.split(","):
        for impl in args.impls.split(","):
            with torch.inference_mode():
                # the impl's own model, as a measurement job builds it (impl was ignored
                # here before: `--impls triton` profiled the compile path)
                model = schemes.apply_scheme(build_model(wl, device, torch.float16, 0), scheme, impl,
                                             act_group_size=args.act_group_size if impl == "triton" else None)  # fmt: skip
                x = make_input(wl, batch, device, schemes.activation_dtype(scheme, impl), 0)
            if impl != "eager":
                model = schemes.compile_model(model)
            with torch.inference_mode():
                model(x)  # compiles
            timing = TimingConfig(warmup=5, min_iterations=10, max_iterations=10)
            s = time_forward(lambda: model(x), device, timing)
            p = profile_parts(lambda: model(x), device, args.forwards, model, top=100_000)
            gaps = graph_gaps(lambda: model(x), device) if args.graph_gaps and device.type == "cuda" else {}
            timed = statistics.fmean(s.latency_ms)
            parts = ", ".join(f"{k} {v:.3f}" for k, v in p.ms.items())
            print(f"\n{scheme} {impl}: timed {timed:.3f} ms ({s.method}); parts (ms) {parts}; sum {p.total_ms:.3f} ms "
                  f"= {p.total_ms / timed:.1%} of timed; profiled wall {p.wall_ms:.3f} ms; {p.forwards} of "
                  f"{p.requested} forwards kept", flush=True)  # fmt: skip
            for part, events in p.top.items():
                for kernel, ms, count in events:
                    print(f"  {part:12s} {ms:10.4f} ms {count:7.1f}x  {kernel[:args.width]}")
            rows.append({"scheme": scheme, "impl": impl, "batch": batch, "timed_ms": timed, "method": s.method,
                         "parts_ms": p.ms, "sum_ms": p.total_ms, "wall_ms": p.wall_ms, "forwards": p.forwards,
                         "events": {part: [list(e) for e in events] for part, events in p.top.items()},
                         "graph_gaps": gaps})  # fmt: skip
            del model, x
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
