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
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import yaml

from qbench import schemes
from qbench.device import resolve_device
from qbench.profile_parts import profile_parts
from qbench.timing import TimingConfig, time_forward
from qbench.workloads import WorkloadConfig, build_model, make_input


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
                         "events": {part: [list(e) for e in events] for part, events in p.top.items()}})  # fmt: skip
            del model, x
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
