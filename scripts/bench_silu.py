"""The formulas of silu in the SiLU*mul GEMM epilogue (QBENCH_SILU, see
qbench.triton_kernels._silu_mul) timed against each other in one process, on the gate|up
GEMM with its tuned tiles: per token (fp16 out, as fp8-triton runs it) and quantized per
128-channel group (fp8 out, as fp8-triton-g128 runs it). Also each formula's error
against float64 on the first rows.

    python scripts/bench_silu.py [--m 16384 131072] [--n 16384] [--k 2048] [--kind fp8]

Prints one line per (M, epilogue): TFLOP/s per formula (the median of CUDA-graph replays)
and the relative error of silu(gate) * up (for the quantized one: of codes x scales).
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
import triton

from qbench import triton_kernels as tk
from qbench.schemes import FP8_MAX, INT8_MAX, quantize_rows

GROUP = 128  # the gate/up block, and the quantized epilogue's group
CHECK_ROWS = 1024  # rows of the float64 reference


def tflops(flop: float, fn) -> float:
    ms = statistics.median(triton.testing.do_bench_cudagraph(fn, return_mode="all"))
    return flop / ms / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, nargs="+", default=[16384, 131072])
    ap.add_argument("--n", type=int, default=16384, help="gate|up rows: 2 x the intermediate size")
    ap.add_argument("--k", type=int, default=2048, help="the hidden size")
    ap.add_argument("--kind", choices=["fp8", "int8"], default="fp8")
    args = ap.parse_args()
    qdtype, qmax = (torch.float8_e4m3fn, FP8_MAX) if args.kind == "fp8" else (torch.int8, INT8_MAX)
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, flush=True)
    n, k, i = args.n, args.k, args.n // 2
    g = torch.Generator(device="cuda").manual_seed(0)
    w, sw = quantize_rows(torch.randn(n, k, device="cuda", generator=g).half(), qmax, qdtype)
    wi, swi = tk.swiglu_interleave(w, GROUP), tk.swiglu_interleave(sw.view(-1), GROUP).view(1, -1)
    for m in args.m:
        x = torch.randn(m, k, device="cuda", generator=g).half()
        a, sa = quantize_rows(x, qmax, qdtype)
        del x
        gu = (a[:CHECK_ROWS].double() @ w.double().t()) * sa[:CHECK_ROWS].double() * sw.view(1, -1).double()
        ref = torch.nn.functional.silu(gu[:, :i]) * gu[:, i:]
        for quantized in (False, True):
            cfg = tk.gemm_config(args.kind, m, n, k, a.device, swiglu=True, group=GROUP if quantized else None)

            def run(cfg=cfg, quantized=quantized, a=a, sa=sa):
                return tk.w8a8_gemm(a, sa, wi, swi, swiglu_block=GROUP, quantize_out=quantized, config=cfg)

            row = []
            for name in tk.SILU_MODES:
                os.environ["QBENCH_SILU"] = name
                out = run()
                if quantized:
                    codes, scales = out
                    got = codes[:CHECK_ROWS].double().view(-1, i // GROUP, GROUP) * scales[:, :CHECK_ROWS].t().double()[..., None]
                    got = got.view(-1, i)
                else:
                    got = out[:CHECK_ROWS].double()
                err = float((got - ref).norm() / ref.norm())
                row.append(f"{name}={tflops(2.0 * m * n * k, run):.0f} (err {err:.3e})")
                del out, got
            print(f"M={m} N={n} K={k} {'g128 (fp8 out)' if quantized else 'per token (fp16 out)'}: "
                  + " ".join(row) + " TFLOP/s", flush=True)  # fmt: skip
        del a, sa, gu, ref
        torch.cuda.empty_cache()
    os.environ.pop("QBENCH_SILU", None)


if __name__ == "__main__":
    main()
