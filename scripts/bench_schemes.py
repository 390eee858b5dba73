"""Smoke benchmark: every scheme and implementation on one cell, in one process.

Prints latency, speedup over fp16, accuracy and setup time per variant; used to check a
new GPU (or torch) before a full sweep. Not a substitute for the workflow's statistics:
one process, few iterations.

    python scripts/bench_schemes.py --workload llama-1b --batch 128 [--configfile config/config.yaml]
        [--variants fp16:compile w8a8-int8:triton w8a8-fp8:triton:128 ...]   (default: every valid scheme:impl)

A variant is scheme:impl, or scheme:triton:G for the triton impl with act_group_size G (the
down projection's input quantized per token and group of G channels in the SiLU*mul
GEMM's epilogue), or scheme:triton:Gr for the same groups requantized to one scale per
token (dtype key requantize); a trailing f (scheme:triton:f, scheme:triton:128rf) puts the
rotary embeddings in the q|k|v GEMM's epilogue (TritonDecoderLayer.fused_rotary, off by
default: measured slower); a trailing a (scheme:triton:a) runs rotary and attention in
qbench.triton_attention's kernel (TritonDecoderLayer.triton_attention); a trailing c
(scheme:triton:c, :ac) runs the q|k|v projection on cuBLAS (TritonDecoderLayer.cublas_qkv).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics

import torch
import yaml

from qbench.config import CellConfig
from qbench.device import resolve_device
from qbench.measure import run_cell
from qbench.schemes import IMPLS, SCHEMES, DtypeConfig
from qbench.timing import TimingConfig
from qbench.workloads import WorkloadConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", default="config/config.yaml")
    ap.add_argument("--workload", default=None, help="a workload name from the config (default: the first)")
    ap.add_argument("--batch", type=int, nargs="+", default=[128])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--variants", nargs="+", help="scheme:impl[:group] (default: every valid scheme:impl)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    cfg = yaml.safe_load(open(args.configfile))
    name = args.workload or next(iter(cfg["workloads"]))
    wl = WorkloadConfig.from_dict(name, cfg["workloads"][name])
    device = resolve_device(cfg.get("device", "auto"))
    print(f"device {device} {torch.cuda.get_device_name() if device.type == 'cuda' else ''} torch {torch.__version__}")
    # every variant checked before any is timed: a typo in the last one costs no GPU time
    variants = [(v.split(":") + [None])[:3] for v in args.variants] if args.variants else [
        (s, i, None) for s in SCHEMES for i in IMPLS if not DtypeConfig("v", s, i).problems()]  # fmt: skip
    dtypes = []
    for scheme, impl, spec in variants:
        # [G][r][f][a][c]: act_group_size G; r: requantized per token; f: rotary in the
        # q|k|v epilogue; a: the Triton attention; c: the q|k|v projection on cuBLAS
        parts = re.fullmatch(r"(\d*)(r?)(f?)(a?)(c?)", spec or "")
        if not parts:
            raise SystemExit(f"--variants {scheme}:{impl}:{spec}: the third part is [group][r][f][a][c], e.g. 128r, f, a or ac")
        group = int(parts[1]) if parts[1] else None
        dt = DtypeConfig(f"{scheme}-{impl}" + (f"-{spec}" if spec else ""), scheme, impl, act_group_size=group,
                         requantize=bool(parts[2]))  # fmt: skip
        if dt.problems():
            raise SystemExit(f"--variants {scheme}:{impl}:{spec}: " + "; ".join(dt.problems()))
        dtypes.append((dt, spec, *(bool(parts[i]) for i in (3, 4, 5))))
    rows = []
    for batch in args.batch:
        base = {}
        for dt, group, fused_rotary, triton_attention, cublas_qkv in dtypes:
            scheme, impl = dt.scheme, dt.impl
            if impl == "triton":
                from qbench.triton_layers import TritonDecoderLayer

                TritonDecoderLayer.fused_rotary = fused_rotary
                TritonDecoderLayer.triton_attention = triton_attention
                TritonDecoderLayer.cublas_qkv = cublas_qkv
            cell = CellConfig(wl, dt, batch, 0,
                              TimingConfig(warmup=3, min_iterations=args.iterations, max_iterations=args.iterations), 0, cfg.get("device", "auto"))  # fmt: skip
            t = run_cell(cell, device).to_pandas()
            r = t.iloc[0]
            lat = t["latency_ms"].dropna()
            mean = statistics.fmean(lat) if len(lat) else float("nan")
            if impl == "compile" and scheme in ("fp16", "bf16"):
                base[scheme] = mean
            row = {"batch": batch, "scheme": scheme, "impl": impl, "group": group, "status": r["status"], "mean_ms": mean,
                   "min_ms": float(lat.min()) if len(lat) else float("nan"), "rel_error": r["rel_error"],
                   "setup_s": r["setup_s"], "peak_gib": (r["peak_mem_bytes"] or 0) / 2**30,
                   "tflops": r["flops"] / (mean * 1e-3) / 1e12 if len(lat) else float("nan")}  # fmt: skip
            for b in ("fp16", "bf16"):
                row[f"speedup_vs_{b}_compile"] = base[b] / mean if b in base else float("nan")
            rows.append(row)
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
            torch.cuda.empty_cache() if device.type == "cuda" else None
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1, default=str)


if __name__ == "__main__":
    main()
