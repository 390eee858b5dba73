"""Tune the W8A8 Triton GEMM's tiles for the shapes the workloads use, on this GPU, and
keep the winners in qbench/triton_configs.json (one entry per GPU name, kind, N x K and M).

Each candidate is timed as CUDA-graph replays of 20 GEMMs (no launch overhead), median of
5 such samples, after a warm-up; candidates that do not compile or do not fit in shared
memory are skipped. Prints every candidate's TFLOP/s and, per shape, the winner against
fp16 cuBLAS (`torch.mm`) and torch's own int8/fp8 GEMMs (`torch._int_mm`,
`torch._scaled_mm`, with their dequantization as the separate op it is there).

    python scripts/tune_triton.py [--shapes llama-1b gemm-4096] [--m 8192 16384 131072] [--json out.json]
        [--budget-s 240]

With --budget-s no candidate starts after that many seconds: a run cut short keeps the
shapes it finished (winners written with --write, rows in --json after every shape). A
device call whose tuning hit its time-out before it finished one shape lost everything
(2026-11-27: the warp-specialised fp8 kernels compile slowly).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from qbench import triton_kernels as tk
from qbench.schemes import FP8_MAX, INT8_MAX, quantize_rows

# (N, K) of every linear layer in the shapes the configs use
SHAPES = {
    "llama-1b": [(3072, 2048), (2048, 2048), (16384, 2048), (2048, 8192)],  # qkv, o, gate|up, down
    "gemm-4096": [(4096, 4096)],
}
# Hopper-shaped candidates (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); GROUP_M 8
CANDIDATES = [
    (128, 256, 128, 8, 3), (128, 256, 128, 8, 4), (128, 256, 64, 8, 4), (128, 256, 64, 8, 5),
    (256, 128, 128, 8, 3), (256, 128, 128, 8, 4), (128, 128, 128, 8, 4), (128, 128, 128, 4, 4),
    (128, 256, 128, 8, 2), (64, 256, 128, 4, 4),
]  # fmt: skip
# each candidate as a pointer-loading kernel and as a persistent TMA one


def graph_ms(fn, reps: int = 10, samples: int = 5) -> float:
    """Median per-call time of `fn`, from CUDA-graph replays of `reps` calls."""
    fn()
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    for _ in range(3):
        g.replay()
    out = []
    for _ in range(samples):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        out.append(s.elapsed_time(e) / reps)
    return statistics.median(out)


def operands(kind: str, m: int, n: int, k: int):
    qdtype, qmax = (torch.int8, INT8_MAX) if kind == "int8" else (torch.float8_e4m3fn, FP8_MAX)
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    w = torch.randn(n, k, device="cuda", dtype=torch.float16) / k**0.5
    a, sa = quantize_rows(x, qmax, qdtype)
    b, sb = quantize_rows(w, qmax, qdtype)
    return x, w, a, sa, b, sb.view(1, -1).contiguous()


def torch_baselines(kind, x, w, a, sa, b, sb) -> dict:
    out = {"fp16_mm": graph_ms(lambda: torch.mm(x, w.t()))}
    if kind == "int8":
        out["torch_int_mm+dequant"] = graph_ms(lambda: (torch._int_mm(a, b.t()).float() * sa * sb).half())
    else:
        out["torch_scaled_mm"] = graph_ms(
            lambda: torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
        )
    return out


def bench_rows(ms: list[int]) -> list[dict]:
    """The fused quantization kernels' effective bandwidth (bytes read + written / time)."""
    rows = []
    for m in ms:
        for name, n_in, n_out, fn in (
            ("rmsnorm_quant", 2048, 2048, lambda x, w: tk.rmsnorm_quant(x, w, 1e-5, torch.int8)),
            ("quantize_rows", 2048, 2048, lambda x, w: tk.quantize_rows(x, torch.int8)),
            ("quantize_rows", 8192, 8192, lambda x, w: tk.quantize_rows(x, torch.int8)),
            ("silu_mul_quant", 16384, 8192, lambda x, w: tk.silu_mul_quant(x, torch.int8)),
        ):
            x = torch.randn(m, n_in, device="cuda", dtype=torch.float16)
            w = torch.ones(n_in, device="cuda", dtype=torch.float16)
            t = graph_ms(lambda: fn(x, w))
            gbs = (m * n_in * 2 + m * n_out + m * 4) / t / 1e6
            rows.append({"kernel": name, "m": m, "n_in": n_in, "ms": t, "GB/s": gbs})
            print(f"{name} M={m} N={n_in}: {t * 1e3:.0f} us, {gbs:.0f} GB/s", flush=True)
            del x, w
    return rows


# the gate|up shapes, also tuned as the SiLU*mul-epilogue GEMM (its tile is 2 x the block)
SWIGLU_SHAPES = {(16384, 2048)}


DEADLINE: list[float] = []  # time.monotonic() after which no candidate starts (--budget-s)


def out_of_time() -> bool:
    return bool(DEADLINE) and time.monotonic() > DEADLINE[0]


def fastest(label: str, candidates, run, rows: list, row: dict) -> tuple[float, dict] | None:
    """Time `run(cfg)` for every candidate config (skipping those that do not compile or
    fit); one row per candidate; returns (ms, cfg) of the fastest, or None, also when the
    budget ran out before every candidate was timed (a partial winner is no winner)."""
    best = None
    for i, cfg in enumerate(candidates):
        if out_of_time():
            print(f"  budget reached: {label}M={row['m']} N={row['n']} K={row['k']} after {i} of {len(candidates)} "
                  "candidates; not tuned", flush=True)  # fmt: skip
            return None
        t0 = time.perf_counter()
        try:
            ms = graph_ms(lambda: run(cfg))
        except Exception as exc:  # out of shared memory, or a compile error: skip it
            print(f"  skip {label}{cfg}: {exc.__class__.__name__}: {str(exc).splitlines()[0][:100]}", flush=True)
            continue
        rows.append({**row, **cfg, "ms": ms, "tflops": 2.0 * row["m"] * row["n"] * row["k"] / ms / 1e9,
                     "tune_s": time.perf_counter() - t0})  # fmt: skip
        print(f"  {label}M={row['m']} N={row['n']} K={row['k']} {cfg}: {rows[-1]['tflops']:.0f} TFLOP/s "
              f"({rows[-1]['tune_s']:.1f} s)", flush=True)  # fmt: skip
        if best is None or ms < best[0]:
            best = (ms, cfg)
    return best


def configs(tmas, block_n: int | None = None, ws=(False,)) -> list[dict]:
    """The candidates as configs, each with and without TMA (the TMA ones with and without
    warp specialization, as `ws` lists); only BLOCK_N == block_n if given."""
    return [
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_warps": nw, "num_stages": ns, "TMA": tma,
         **({"WS": True} if w else {})}
        for tma in tmas
        for w in (ws if tma else (False,))
        for bm, bn, bk, nw, ns in CANDIDATES
        if block_n is None or bn == block_n
    ]  # fmt: skip


def tune_swiglu(kind, m, n, k, a, sa, b, sb, tmas, rows, winners, gpu, ws=(False,)) -> None:
    """The gate|up GEMM with SiLU*mul in its epilogue: only tiles as wide as two
    interleaved blocks fit it; winners go under `NxK/swiglu`."""
    block = tk.DEFAULT_GEMM["BLOCK_N"] // 2
    bi, si = tk.swiglu_interleave(b, block), tk.swiglu_interleave(sb.view(-1), block).view(1, -1)
    best = fastest("swiglu ", configs(tmas, 2 * block, ws),
                   lambda cfg: tk.w8a8_gemm(a, sa, bi, si, config=cfg, swiglu_block=block),
                   rows, {"gpu": gpu, "kind": kind, "variant": "swiglu", "m": m, "n": n, "k": k})  # fmt: skip
    if best is not None:
        winners.setdefault(kind, {}).setdefault(f"{n}x{k}/swiglu", {})[str(m)] = best[1]
        print(f"{kind} M={m} N={n} K={k} swiglu epilogue: triton {2.0 * m * n * k / best[0] / 1e9:.0f} TFLOP/s "
              f"| {best[1]}", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES))
    ap.add_argument("--m", type=int, nargs="+", default=[16384, 131072])
    ap.add_argument("--kinds", nargs="+", default=["int8", "fp8"])
    ap.add_argument("--write", action="store_true", help="merge the winners into qbench/triton_configs.json")
    ap.add_argument("--json", help="write every measurement here")
    ap.add_argument("--tma", nargs="+", type=lambda v: v == "1", default=[False, True], help="1/0: TMA kernel or not")
    ap.add_argument("--rows-only", action="store_true", help="only time the quantization kernels")
    ap.add_argument("--ws", nargs="+", type=lambda v: v == "1", default=[False],
                    help="1/0: the TMA kernel with warp specialization or not (default 0)")
    ap.add_argument("--only-swiglu", action="store_true", help="only tune the SiLU*mul-epilogue GEMM (gate|up)")
    ap.add_argument("--budget-s", type=float, help="start no candidate after this many seconds; keep what finished")
    args = ap.parse_args()
    if args.budget_s:
        DEADLINE.append(time.monotonic() + args.budget_s)
    gpu = torch.cuda.get_device_name()
    print(f"{gpu}, torch {torch.__version__}, cuda {torch.version.cuda}", flush=True)
    rows, winners = [], {}
    if args.rows_only:
        rows, args.kinds = bench_rows([16384, 131072]), []
    shapes = sorted({nk for s in args.shapes for nk in SHAPES[s]})
    if args.only_swiglu:
        shapes = sorted(SWIGLU_SHAPES)
    for kind in args.kinds:
        for n, k in shapes:
            for m in args.m:
                if out_of_time():  # nor the baselines of shapes that will not be tuned
                    continue
                flop = 2.0 * m * n * k
                x, w, a, sa, b, sb = operands(kind, m, n, k)
                if args.only_swiglu:
                    tune_swiglu(kind, m, n, k, a, sa, b, sb, args.tma, rows, winners, gpu, args.ws)
                    continue
                base = torch_baselines(kind, x, w, a, sa, b, sb)
                best = fastest("", configs(args.tma, ws=args.ws), lambda cfg: tk.w8a8_gemm(a, sa, b, sb, config=cfg), rows,
                               {"gpu": gpu, "kind": kind, "m": m, "n": n, "k": k})  # fmt: skip
                if best is None:
                    continue
                winners.setdefault(kind, {}).setdefault(f"{n}x{k}", {})[str(m)] = best[1]
                if (n, k) in SWIGLU_SHAPES:
                    tune_swiglu(kind, m, n, k, a, sa, b, sb, args.tma, rows, winners, gpu, args.ws)
                rows.append({"gpu": gpu, "kind": kind, "m": m, "n": n, "k": k, "winner": best[1], "ms": best[0],
                             **{f"{name}_ms": v for name, v in base.items()}})  # fmt: skip
                fp16 = base["fp16_mm"]
                others = " ".join(f"{name} {flop / v / 1e9:.0f}" for name, v in base.items())
                print(f"{kind} M={m} N={n} K={k}: triton {flop / best[0] / 1e9:.0f} TFLOP/s ({fp16 / best[0]:.2f}x fp16) "
                      f"| {others} TFLOP/s | {best[1]}", flush=True)  # fmt: skip
                del x, w, a, sa, b, sb
                if args.json:  # after every shape: a run cut short keeps its rows
                    json.dump(rows, open(args.json, "w"), indent=1)
    if out_of_time():
        print(f"budget of {args.budget_s:.0f} s reached: the shapes above without a winner line were not tuned", flush=True)
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)
    if args.write:
        table = json.loads(tk.CONFIGS_FILE.read_text()) if tk.CONFIGS_FILE.exists() else {}
        for kind, entries in winners.items():
            for nk, by_m in entries.items():
                table.setdefault(gpu, {}).setdefault(kind, {}).setdefault(nk, {}).update(by_m)
        tk.CONFIGS_FILE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"wrote {tk.CONFIGS_FILE}")
        props = torch.cuda.get_device_properties(0)
        if gpu not in tk.TUNED_HARDWARE:  # tests/test_triton_kernels.py asks for it
            print(f"add {gpu!r}: (({props.major}, {props.minor}), {props.multi_processor_count}) to "
                  "qbench.triton_kernels.TUNED_HARDWARE, so GPUs of the same hardware use these tiles")  # fmt: skip


if __name__ == "__main__":
    main()
