"""Tune the W8A8 Triton GEMM's tiles for the shapes the workloads use, on this GPU, and
keep the winners in qbench/triton_configs.json (one entry per GPU name, kind, N x K and M).

Each candidate is timed as CUDA-graph replays of 10 GEMMs (no launch overhead), median of
5 such samples, after a warm-up; candidates that do not compile or do not fit in shared
memory are skipped. Prints every candidate's TFLOP/s and, per shape, the winner against
fp16 cuBLAS (`torch.mm`) and torch's own int8/fp8 GEMMs (`torch._int_mm` with its
dequantization as the separate op it is there; `torch._scaled_mm` with row-wise scales,
bf16 out, precise and with `use_fast_accum=True`, `torch_scaled_mm_fast`: what torchao and
torch.compile run, the one to beat).

    python scripts/tune_triton.py [--shapes llama-1b gemm-4096] [--m 8192 16384 131072] [--kinds int8 fp8]
        [--tma 0 1] [--ws 0 1] [--tma-store 0 1] [--candidates 0 3 128x256x128x8x3] [--residual]
        [--only-swiglu] [--group 128] [--json out.json] [--write] [--budget-s 240]

Candidates are CANDIDATES (BLOCK_M x BLOCK_N x BLOCK_K x num_warps x num_stages, GROUP_M 8),
or those --candidates names (an index into CANDIDATES or BMxBNxBKxWARPSxSTAGES, any
tile), each as the pointer kernel and the persistent TMA one (--tma), the TMA one also
warp-specialised (--ws 1, config key WS) and with its output and residual written and
read through TMA (--tma-store 1, config key TMA_STORE). Every variant compiles once per
process (seconds each, the warp-specialised ones longer): name few for a short device
call. --residual times the GEMMs that add the residual in the decoder (o and down:
RESIDUAL_SHAPES) with one, as the decoder runs them (the torch baselines add it as the
separate op it is there).

--group G tunes only the GEMMs of per-token groups (a dtype's act_group_size): the SiLU*mul
epilogue that quantizes its tile (gate|up, entry `NxK/swiglu/gG`) and the down GEMM whose A
has a scale per token and G columns, with the residual (entry `NxK/gG`). Without entries
of their own they take their per-token twins'. With --only-swiglu, the first only (on
Hopper in fp8 the down GEMM runs qbench.gluon_gemm's kernel, not these tiles).

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

DEVICE = "cuda"  # where operands are made (tests run the kernels in Triton's interpreter on the CPU)
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

# the GEMMs whose epilogue adds the residual in the decoder (o and down): --residual
RESIDUAL_SHAPES = {(2048, 2048), (2048, 8192)}


def parse_candidates(specs: list[str]) -> list[tuple[int, ...]]:
    """--candidates: each an index into CANDIDATES or BMxBNxBKxWARPSxSTAGES."""
    out = []
    for spec in specs:
        if spec.isdigit():
            if int(spec) >= len(CANDIDATES):
                raise argparse.ArgumentTypeError(f"--candidates: no candidate {spec} (there are {len(CANDIDATES)})")
            out.append(CANDIDATES[int(spec)])
            continue
        fields = spec.lower().split("x")
        if len(fields) != 5 or not all(f.isdigit() for f in fields):
            raise argparse.ArgumentTypeError(f"--candidates: {spec!r} is neither an index nor BMxBNxBKxWARPSxSTAGES")
        out.append(tuple(map(int, fields)))
    return out


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
    x = torch.randn(m, k, device=DEVICE, dtype=torch.float16)
    w = torch.randn(n, k, device=DEVICE, dtype=torch.float16) / k**0.5
    a, sa = quantize_rows(x, qmax, qdtype)
    b, sb = quantize_rows(w, qmax, qdtype)
    return x, w, a, sa, b, sb.view(1, -1).contiguous()


def torch_baselines(kind, x, w, a, sa, b, sb, r=None) -> dict:
    """ms of torch's GEMMs on the same operands; with a residual `r`, each adds it after."""
    add, suffix = (lambda y: y + r, "+residual") if r is not None else (lambda y: y, "")
    out = {"fp16_mm" + suffix: graph_ms(lambda: add(torch.mm(x, w.t())))}
    if kind == "int8":
        out["torch_int_mm+dequant" + suffix] = graph_ms(lambda: add((torch._int_mm(a, b.t()).float() * sa * sb).half()))
    else:
        for name, fast in (("torch_scaled_mm", False), ("torch_scaled_mm_fast", True)):
            out[name + suffix] = graph_ms(
                lambda fast=fast: add(
                    torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16, use_fast_accum=fast)
                )
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
            x = torch.randn(m, n_in, device=DEVICE, dtype=torch.float16)
            w = torch.ones(n_in, device=DEVICE, dtype=torch.float16)
            t = graph_ms(lambda: fn(x, w))
            gbs = (m * n_in * 2 + m * n_out + m * 4) / t / 1e6
            rows.append({"kernel": name, "m": m, "n_in": n_in, "ms": t, "GB/s": gbs})
            print(f"{name} M={m} N={n_in}: {t * 1e3:.0f} us, {gbs:.0f} GB/s", flush=True)
            del x, w
    return rows


# the gate|up shapes, also tuned as the SiLU*mul-epilogue GEMM (its tile is 2 x the block)
SWIGLU_SHAPES = {(16384, 2048)}
# the down projection (K = the intermediate size), whose input per-token groups quantize
DOWN_SHAPE = (2048, 8192)


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


def configs(tmas, block_n: int | None = None, ws=(False,), tma_store=(False,)) -> list[dict]:
    """The candidates as configs, each with and without TMA (the TMA ones with and without
    warp specialization, as `ws` lists, and with and without the TMA-store epilogue, as
    `tma_store` lists); only BLOCK_N == block_n if given. Keys at their default (WS,
    TMA_STORE false) are left out, as in qbench/triton_configs.json."""
    return [
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_warps": nw, "num_stages": ns, "TMA": tma,
         **({"WS": True} if w else {}), **({"TMA_STORE": True} if st else {})}
        for tma in tmas
        for w in (ws if tma else (False,))
        for bm, bn, bk, nw, ns in CANDIDATES
        if block_n is None or bn == block_n
        for st in (tma_store if tma else (False,))  # innermost: a tile with and without, one after the other
    ]  # fmt: skip


def tune_swiglu(kind, m, n, k, a, sa, b, sb, tmas, rows, winners, gpu, ws=(False,), tma_store=(False,)) -> None:
    """The gate|up GEMM with SiLU*mul in its epilogue: only tiles as wide as two
    interleaved blocks fit it; winners go under `NxK/swiglu`."""
    block = tk.DEFAULT_GEMM["BLOCK_N"] // 2
    bi, si = tk.swiglu_interleave(b, block), tk.swiglu_interleave(sb.view(-1), block).view(1, -1)
    best = fastest("swiglu ", configs(tmas, 2 * block, ws, tma_store),
                   lambda cfg: tk.w8a8_gemm(a, sa, bi, si, config=cfg, swiglu_block=block),
                   rows, {"gpu": gpu, "kind": kind, "variant": "swiglu", "m": m, "n": n, "k": k})  # fmt: skip
    if best is not None:
        winners.setdefault(kind, {}).setdefault(f"{n}x{k}/swiglu", {})[str(m)] = best[1]
        print(f"{kind} M={m} N={n} K={k} swiglu epilogue: triton {2.0 * m * n * k / best[0] / 1e9:.0f} TFLOP/s "
              f"| {best[1]}", flush=True)  # fmt: skip


def grouped_operands(kind: str, m: int, k: int, group: int):
    """A (m, k) quantized per row and group of `group` columns: codes (m, k), scales (k // group, m)."""
    qdtype, qmax = (torch.int8, INT8_MAX) if kind == "int8" else (torch.float8_e4m3fn, FP8_MAX)
    a, sa = quantize_rows(torch.randn(m * k // group, group, device=DEVICE, dtype=torch.float16), qmax, qdtype)
    return a.view(m, k), sa.view(m, k // group).t().contiguous()


def tune_grouped(kind, m, group, tmas, rows, winners, gpu, ws=(False,), tma_store=(False,), swiglu_only=False) -> None:
    """The two GEMMs of per-token groups in the decoder: gate|up with SiLU*mul quantizing
    its tile (`NxK/swiglu/gG`), then down with A's group scales and the residual (`NxK/gG`;
    not with swiglu_only: on Hopper in fp8, qbench.gluon_gemm runs it, not these tiles)."""
    for (n, k), swiglu in ((min(SWIGLU_SHAPES), True), *(() if swiglu_only else ((DOWN_SHAPE, False),))):
        if out_of_time():
            return
        row = {"gpu": gpu, "kind": kind, "variant": f"{'swiglu/' if swiglu else ''}g{group}", "m": m, "n": n, "k": k}
        if swiglu:
            _, _, a, sa, b, sb = operands(kind, m, n, k)
            b, sb = tk.swiglu_interleave(b, group), tk.swiglu_interleave(sb.view(-1), group).view(1, -1)
            def run(cfg, a=a, sa=sa, b=b, sb=sb):
                return tk.w8a8_gemm(a, sa, b, sb, config=cfg, swiglu_block=group, quantize_out=True)

            candidates = configs(tmas, 2 * group, ws, tma_store)
        else:
            _, _, _, _, b, sb = operands(kind, 16, n, k)
            a, sa = grouped_operands(kind, m, k, group)
            r = torch.randn(m, n, device=DEVICE, dtype=torch.float16)
            def run(cfg, a=a, sa=sa, b=b, sb=sb, r=r):
                return tk.w8a8_gemm(a, sa, b, sb, residual=r, config=cfg, a_group=group)

            candidates = [c for c in configs(tmas, None, ws, tma_store) if c["BLOCK_K"] <= group]
        best = fastest(f"{row['variant']} ", candidates, run, rows, row)
        if best is not None:
            key = f"{n}x{k}" + ("/swiglu" if swiglu else "") + f"/g{group}"
            winners.setdefault(kind, {}).setdefault(key, {})[str(m)] = best[1]
            print(f"{kind} M={m} N={n} K={k} {row['variant']}: triton {2.0 * m * n * k / best[0] / 1e9:.0f} TFLOP/s "
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
    ap.add_argument(
        "--tma-store",
        nargs="+",
        type=lambda v: v == "1",
        default=[False],
        help="1/0: the TMA kernel storing C (and loading the residual) through TMA or not (default 0)",
    )
    ap.add_argument(
        "--candidates",
        nargs="+",
        metavar="I|BMxBNxBKxWARPSxSTAGES",
        help="time only these candidates: indices into CANDIDATES or tiles such as 128x256x128x8x4",
    )
    ap.add_argument(
        "--residual",
        action="store_true",
        help="time the GEMMs that add the residual in the decoder (RESIDUAL_SHAPES) with one, as it runs them",
    )
    ap.add_argument("--only-swiglu", action="store_true", help="only tune the SiLU*mul-epilogue GEMM (gate|up)")
    ap.add_argument("--group", type=int, help="only tune the GEMMs of per-token groups of this many channels")
    ap.add_argument("--budget-s", type=float, help="start no candidate after this many seconds; keep what finished")
    args = ap.parse_args()
    if args.candidates:
        try:
            CANDIDATES[:] = parse_candidates(args.candidates)
        except argparse.ArgumentTypeError as exc:
            ap.error(str(exc))
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
    for kind in args.kinds if args.group else []:
        for m in args.m:
            tune_grouped(kind, m, args.group, args.tma, rows, winners, gpu, args.ws, args.tma_store, args.only_swiglu)
            if args.json:  # after every M: a run cut short keeps its rows
                with open(args.json, "w") as f:
                    json.dump(rows, f, indent=1)
    for kind in args.kinds if not args.group else []:
        for n, k in shapes:
            for m in args.m:
                if out_of_time():  # nor the baselines of shapes that will not be tuned
                    continue
                flop = 2.0 * m * n * k
                x, w, a, sa, b, sb = operands(kind, m, n, k)
                if args.only_swiglu:
                    tune_swiglu(kind, m, n, k, a, sa, b, sb, args.tma, rows, winners, gpu, args.ws, args.tma_store)
                    continue
                r = None
                shape = {"gpu": gpu, "kind": kind, "m": m, "n": n, "k": k}
                if args.residual and (n, k) in RESIDUAL_SHAPES:
                    r, shape["residual"] = torch.randn(m, n, device=DEVICE, dtype=torch.float16), True
                base = torch_baselines(kind, x, w, a, sa, b, sb, r)
                best = fastest("residual " if r is not None else "", configs(args.tma, ws=args.ws, tma_store=args.tma_store),
                               lambda cfg, r=r: tk.w8a8_gemm(a, sa, b, sb, residual=r, config=cfg), rows, shape)  # fmt: skip
                if best is None:
                    continue
                winners.setdefault(kind, {}).setdefault(f"{n}x{k}", {})[str(m)] = best[1]
                if (n, k) in SWIGLU_SHAPES:
                    tune_swiglu(kind, m, n, k, a, sa, b, sb, args.tma, rows, winners, gpu, args.ws, args.tma_store)
                rows.append({**shape, "winner": best[1], "ms": best[0], **{f"{nm}_ms": v for nm, v in base.items()}})
                fp16 = next(iter(base.values()))  # fp16_mm (+residual)
                others = " ".join(f"{name} {flop / v / 1e9:.0f}" for name, v in base.items())
                print(f"{kind} M={m} N={n} K={k}: triton {flop / best[0] / 1e9:.0f} TFLOP/s ({fp16 / best[0]:.2f}x fp16) "
                      f"| {others} TFLOP/s | {best[1]}", flush=True)  # fmt: skip
                del x, w, a, sa, b, sb, r
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
