"""Rotary + causal GQA attention of one layer, at llama-1b's shape: torch's path (rotary as
compiled torch ops, then SDPA, as the W8A8 layers run it) against qbench.triton_attention's
one kernel, with several tiles. Prints each one's time per layer and the bandwidth its
compulsory traffic implies (the projection read once, the output written once).

    python scripts/bench_attention.py [--batch 1024 128] [--configs 64x64x4 128x64x8 ...] [--write]

--write keeps the tiles of least total time over the batches in qbench/attention_configs.json,
under this GPU's name and the head size (qbench.triton_attention.attention_config reads it).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from qbench import triton_attention as ta
from qbench.workloads import DecoderLayer, WorkloadConfig, rotary_tables


def time_ms(fn, iters: int = 50, repeats: int = 5) -> float:
    """Median over `repeats` of the mean time of `iters` back-to-back calls, by CUDA events."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / iters)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, nargs="+", default=[1024, 128])
    ap.add_argument("--configs", nargs="+", default=["64x64x4", "128x64x8", "64x32x4", "128x128x4", "128x64x4", "64x64x8"],
                    help="BLOCK_M x BLOCK_N x num_warps of the Triton kernel")  # fmt: skip
    ap.add_argument("--write", action="store_true", help="keep the fastest tiles in qbench/attention_configs.json")
    args = ap.parse_args()
    totals: dict[str, float] = {}
    wl = WorkloadConfig(name="llama-1b", model="llama", seq_len=128, hidden=2048, intermediate=8192, heads=32,
                        kv_heads=8, layers=1)  # fmt: skip
    layer = DecoderLayer(wl).cuda().half()
    heads, kv, d, t = wl.heads, wl.kv_heads, wl.hidden // wl.heads, wl.seq_len
    torch_path = torch.compile(lambda qkv, cos, sin, b: layer.attend(qkv.view(b, t, -1), cos, sin))
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    for b in args.batch:
        g = torch.Generator(device="cuda").manual_seed(b)
        qkv = torch.randn(b * t, (heads + 2 * kv) * d, generator=g, device="cuda").half()
        cos, sin = rotary_tables(t, d, 10000.0, "cuda", torch.float16)
        traffic = qkv.numel() * 2 + b * t * heads * d * 2
        with torch.inference_mode():
            ref = torch_path(qkv, cos, sin, b).reshape(b * t, -1)
            ms = time_ms(lambda qkv=qkv, cos=cos, sin=sin, b=b: torch_path(qkv, cos, sin, b))
            print(f"batch={b} path=torch ms={ms:.4f} GB/s={traffic / ms / 1e6:.0f}", flush=True)
            for spec in args.configs:
                bm, bn, nw = (int(v) for v in spec.split("x"))
                cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": nw, "num_stages": 2}
                out = ta.rotary_attention(qkv, cos, sin, heads, kv, t, config=cfg)
                err = float((out.float() - ref.float()).norm() / ref.float().norm())
                ms = time_ms(
                    lambda qkv=qkv, cos=cos, sin=sin, cfg=cfg: ta.rotary_attention(
                        qkv, cos, sin, heads, kv, t, config=cfg
                    )
                )
                totals[spec] = totals.get(spec, 0.0) + ms
                print(
                    f"batch={b} path=triton:{spec} ms={ms:.4f} GB/s={traffic / ms / 1e6:.0f} rel_diff={err:.2e}",
                    flush=True,
                )

    if args.write and totals:
        best = min(totals, key=totals.get)
        bm, bn, nw = (int(v) for v in best.split("x"))
        table = json.loads(ta.CONFIGS_FILE.read_text()) if ta.CONFIGS_FILE.exists() else {}
        table.setdefault(torch.cuda.get_device_name(), {})[str(d)] = {
            "BLOCK_M": bm,
            "BLOCK_N": bn,
            "num_warps": nw,
            "num_stages": 2,
        }
        ta.CONFIGS_FILE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"wrote {best} for head size {d} to {ta.CONFIGS_FILE}")


if __name__ == "__main__":
    main()
