"""Probe: W8A8 fp8 GEMMs (per-token x per-channel scales, fp16 out, optional residual)
written in Gluon, timed against qbench's Triton GEMM and cuBLAS (`torch._scaled_mm`, fast
accumulation) on llama-1b's shapes, each result first checked against the Triton GEMM.

Why (docs/W8A8.md, eleventh session): our Triton GEMMs trail cuBLAS by 6-8% on the o and
gate|up shapes. Triton 3.6 pipelines the loads but neither overlaps a tile's epilogue with
the next tile's MMAs nor lets one warpgroup work while another waits. CUTLASS's Hopper
"ping-pong" kernels do both:
- one producer warp issues the TMA loads into a ring of STAGES buffers;
- two consumer warpgroups each own whole tiles, alternately (local tiles 0, 2, 4, ... and
  1, 3, 5, ...).
Gluon (triton.experimental.gluon, in Triton 3.6) can express that: explicit shared
memory, mbarriers, TMA and wgmma, and gl.warp_specialize.

Run on H100s since 2026-11-27 (docs/results/h100-2026-11-27-session12): correct, and no
faster than the tuned Triton tiles. Its `grouped` variant, the down GEMM for activations
in 128-channel groups, became qbench.gluon_gemm. It compiles with Triton 3.6's Gluon (the
GPU machine's) and 3.9's (CI's), whose TMA calls have other names. Gluon has no
interpreter, and a wrong barrier phase hangs the kernel: each shape's first launch has a
watchdog (--hang-s), and the device scripts kill the process at their limit:

    timeout -s KILL 300 python scripts/gluon_gemm_probe.py [--variant pingpong] [--m 16384 131072] [--stages 5] [--block 128x128x128]
    python scripts/gluon_gemm_probe.py --variant grouped --shapes 3 --block 192x128x128 128x256x128r   # tiles side by side
    RUNS="pingpong grouped:192x128x128:4" bash scripts/device_gluon_bisect.sh   # on the device tool
    python scripts/gluon_gemm_probe.py --compile-only      # no GPU needed

Barrier protocol (ring slot s = i % STAGES of the i-th K step this program loads):
- ready[s] completes when both TMA loads of step i have landed (expect-tx bytes); a
  consumer waits on it with parity (i // STAGES) & 1;
- empty[s] completes when the consumer that read step i has retired its MMA; the producer
  waits on it with the opposite parity, so the first pass through the ring does not wait;
- order[c] completes when the other consumer has passed the last ready wait of its tile: a
  consumer waits on it before its next tile. Without it (the first run on an H100,
  2026-11-27: "unspecified launch failure"), consumer 1 waited on ready phases two or more
  rounds ahead of the barrier, which a parity wait takes for complete.

Variants (--variant): pingpong; ws1 (one consumer warpgroup, the default partition, and
the producer warp); simple (no warp specialization, one tile per program); grouped
(qbench.gluon_gemm, block[0] // 64 consumer warpgroups by block[1] columns; a trailing r
rescales the accumulator between groups; several blocks are timed side by side).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading

import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from qbench import gluon_gemm

# the parts this probe's kernels share with qbench's (TMA's copies by this Triton's names)
from qbench.gluon_gemm import _producer, _tile_coords, _tma_load, _tma_store, acc_layout

# (N, K) of llama-1b's GEMMs: q|k|v, o (+ residual), gate|up, down (+ residual)
SHAPES = [(3072, 2048, False), (2048, 2048, True), (16384, 2048, False), (2048, 8192, True)]


@gluon.jit
def _epilogue(acc, c_desc, c_buf, sa_ptr, sb_ptr, r_ptr, stride_r, pid_m, pid_n, M, N, HAS_RESIDUAL: gl.constexpr):
    # per-token x per-channel scales (+ residual), fp16, through c_buf and a TMA store
    BLOCK_M: gl.constexpr = c_desc.block_type.shape[0]
    BLOCK_N: gl.constexpr = c_desc.block_type.shape[1]
    layout: gl.constexpr = acc.type.layout
    offs_m = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, layout))
    offs_n = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, layout))
    sa = gl.load(sa_ptr + offs_m, mask=offs_m < M, other=0.0)
    sb = gl.load(sb_ptr + offs_n, mask=offs_n < N, other=0.0)
    c = acc * sa[:, None] * sb[None, :]
    if HAS_RESIDUAL:
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        r = gl.load(r_ptr + offs_m.to(gl.int64)[:, None] * stride_r + offs_n[None, :], mask=mask, other=0.0)
        c = c + r.to(gl.float32)
    tma.store_wait(0)  # this buffer's previous tile has left it
    c_buf.store(c.to(c_desc.dtype))
    fence_async_shared()
    _tma_store(c_desc, [pid_m * BLOCK_M, pid_n * BLOCK_N], c_buf)


@gluon.jit
def _consumer(a_desc, b_desc, c_desc, a_bufs, b_bufs, c_bufs, ready, empty, order, sa_ptr, sb_ptr, r_ptr, stride_r, M, N, K,
              HAS_RESIDUAL: gl.constexpr, NUM_SMS: gl.constexpr, GROUP_M: gl.constexpr, STAGES: gl.constexpr,
              CONSUMERS: gl.constexpr, WHICH: gl.constexpr):  # fmt: skip
    # the program's local tiles WHICH, WHICH + CONSUMERS, ...: their MMAs, then their
    # epilogue, staged in c_bufs[WHICH]
    c_buf = c_bufs.index(WHICH)
    BLOCK_M: gl.constexpr = a_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = a_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = b_desc.block_type.shape[0]
    layout: gl.constexpr = acc_layout(BLOCK_M, BLOCK_N, gl.num_warps())
    num_pid_m = gl.cdiv(M, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    k_tiles = gl.cdiv(K, BLOCK_K)
    local = 0
    for tile in range(gl.program_id(0), num_pid_m * num_pid_n, NUM_SMS):
        if local % CONSUMERS == WHICH:
            pid_m, pid_n = _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
            i = local * k_tiles  # the first K step of this tile in the producer's count
            if CONSUMERS == 2:
                # the other consumer's previous tile has passed its last ready wait: only
                # then is this tile's ready phase the next one of each slot (a parity wait
                # cannot tell phase r from r - 2). Tile n of consumer 0 waits for
                # completion n - 1 of order[0] (n = 0: the pre-completed phase, at once),
                # tile n of consumer 1 for completion n of order[1]
                n = local // CONSUMERS
                mbarrier.wait(order.index(WHICH), (n & 1) ^ (1 - WHICH))
            acc = gl.zeros((BLOCK_M, BLOCK_N), gl.float32, layout=layout)
            prev = 0
            for k in range(k_tiles):
                s = i % STAGES
                mbarrier.wait(ready.index(s), (i // STAGES) & 1)
                acc = warpgroup_mma(a_bufs.index(s), b_bufs.index(s).permute((1, 0)), acc, is_async=True)
                # at most this step's MMA in flight: the previous one has read its buffers
                acc = warpgroup_mma_wait(1, deps=(acc, a_bufs.index(s), b_bufs.index(s)))[0]
                mbarrier.arrive(empty.index(prev), pred=k > 0)
                prev = s
                i += 1
            if CONSUMERS == 2:
                mbarrier.arrive(order.index(1 - WHICH))  # the other consumer's next tile may start
            acc = warpgroup_mma_wait(0, deps=(acc,))
            mbarrier.arrive(empty.index(prev))
            _epilogue(acc, c_desc, c_buf, sa_ptr, sb_ptr, r_ptr, stride_r, pid_m, pid_n, M, N, HAS_RESIDUAL)
        local += 1  # noqa: SIM113 (Gluon has no enumerate)
    tma.store_wait(0)


@gluon.jit
def _simple_gemm_kernel(a_desc, b_desc, c_desc, sa_ptr, sb_ptr, r_ptr, stride_r, M, N, K, HAS_RESIDUAL: gl.constexpr,
                        GROUP_M: gl.constexpr, STAGES: gl.constexpr):  # fmt: skip
    # no warp specialization: one tile per program, a TMA ring of STAGES refilled as each
    # MMA retires (the baseline that tells a Gluon fault from a warp-specialization one)
    BLOCK_M: gl.constexpr = a_desc.block_type.shape[0]
    BLOCK_K: gl.constexpr = a_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = b_desc.block_type.shape[0]
    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [STAGES] + a_desc.block_type.shape, a_desc.layout)
    b_bufs = gl.allocate_shared_memory(b_desc.dtype, [STAGES] + b_desc.block_type.shape, b_desc.layout)
    c_buf = gl.allocate_shared_memory(c_desc.dtype, c_desc.block_type.shape, c_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for j in gl.static_range(STAGES):
        mbarrier.init(ready.index(j), count=1)
    fence_async_shared()
    pid_m, pid_n = _tile_coords(gl.program_id(0), gl.cdiv(M, BLOCK_M), gl.cdiv(N, BLOCK_N), GROUP_M)
    k_tiles = gl.cdiv(K, BLOCK_K)
    nbytes: gl.constexpr = a_desc.block_type.nbytes + b_desc.block_type.nbytes
    for i in gl.static_range(STAGES - 1):  # K has at least STAGES - 1 steps here
        mbarrier.expect(ready.index(i), nbytes)
        _tma_load(a_desc, [pid_m * BLOCK_M, i * BLOCK_K], ready.index(i), a_bufs.index(i))
        _tma_load(b_desc, [pid_n * BLOCK_N, i * BLOCK_K], ready.index(i), b_bufs.index(i))
    acc = gl.zeros((BLOCK_M, BLOCK_N), gl.float32, layout=acc_layout(BLOCK_M, BLOCK_N, gl.num_warps()))
    for k in range(k_tiles):
        s = k % STAGES
        mbarrier.wait(ready.index(s), (k // STAGES) & 1)
        acc = warpgroup_mma(a_bufs.index(s), b_bufs.index(s).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(1, deps=(acc, a_bufs.index(s), b_bufs.index(s)))[0]
        # step k - 1's MMA has retired: its slot takes step k + STAGES - 1
        nk = k + STAGES - 1
        if nk < k_tiles:
            ns = nk % STAGES
            mbarrier.expect(ready.index(ns), nbytes)
            _tma_load(a_desc, [pid_m * BLOCK_M, nk * BLOCK_K], ready.index(ns), a_bufs.index(ns))
            _tma_load(b_desc, [pid_n * BLOCK_N, nk * BLOCK_K], ready.index(ns), b_bufs.index(ns))
    acc = warpgroup_mma_wait(0, deps=(acc,))
    _epilogue(acc, c_desc, c_buf, sa_ptr, sb_ptr, r_ptr, stride_r, pid_m, pid_n, M, N, HAS_RESIDUAL)
    tma.store_wait(0)


@gluon.jit
def _ws_gemm_kernel(a_desc, b_desc, c_desc, sa_ptr, sb_ptr, r_ptr, stride_r, M, N, K, HAS_RESIDUAL: gl.constexpr,
                    NUM_SMS: gl.constexpr, GROUP_M: gl.constexpr, STAGES: gl.constexpr, CONSUMERS: gl.constexpr,
                    PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr):  # fmt: skip
    # persistent, warp-specialized: a producer warp and CONSUMERS consumer warpgroups
    # (2: ping-pong; 1: the default partition alone consumes)
    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [STAGES] + a_desc.block_type.shape, a_desc.layout)
    b_bufs = gl.allocate_shared_memory(b_desc.dtype, [STAGES] + b_desc.block_type.shape, b_desc.layout)
    c_bufs = gl.allocate_shared_memory(c_desc.dtype, [CONSUMERS] + c_desc.block_type.shape, c_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    order = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    for s in gl.static_range(2):
        mbarrier.init(order.index(s), count=1)
    fence_async_shared()
    # the consumers differ only in WHICH, the last argument (a tuple built once and
    # extended loses its constexprs in Triton 3.6's warp_specialize: spelled out)
    if CONSUMERS == 2:
        gl.warp_specialize(
            [
                (_consumer, (a_desc, b_desc, c_desc, a_bufs, b_bufs, c_bufs, ready, empty, order, sa_ptr, sb_ptr, r_ptr,
                             stride_r, M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, 0)),
                (_consumer, (a_desc, b_desc, c_desc, a_bufs, b_bufs, c_bufs, ready, empty, order, sa_ptr, sb_ptr, r_ptr,
                             stride_r, M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, 1)),
                (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K, NUM_SMS, GROUP_M, STAGES)),
            ],
            [4, 1],
            [CONSUMER_REGS, PRODUCER_REGS],
        )  # fmt: skip
    else:
        gl.warp_specialize(
            [
                (_consumer, (a_desc, b_desc, c_desc, a_bufs, b_bufs, c_bufs, ready, empty, order, sa_ptr, sb_ptr, r_ptr,
                             stride_r, M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, 0)),
                (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K, NUM_SMS, GROUP_M, STAGES)),
            ],
            [1],
            [PRODUCER_REGS],
        )  # fmt: skip


VARIANTS = ("pingpong", "ws1", "simple", "grouped")


def gemm(a, a_scale, w, w_scale, residual=None, block=(128, 128, 128), stages=5, group_m=8, variant="pingpong", sa_mode=0,
         rescale=False):  # fmt: skip
    """(a @ w.T) * a_scale * w_scale (+ residual), fp16: a (M, K) and w (N, K) fp8 e4m3,
    a_scale (M, 1), w_scale (1, N) fp32, as qbench.triton_kernels.w8a8_gemm. variant: one
    of VARIANTS (ping-pong; one consumer warpgroup and a producer warp; no warp
    specialization; qbench.gluon_gemm's kernel for A in 128-column groups, a_scale
    (K // 128, M), block[0] // 64 consumer warpgroups by block[1] columns, its row scales by
    sa_mode, rescaling its accumulator between groups with rescale)."""
    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    bm, bn, bk = block
    if variant == "grouped":
        return gluon_gemm.grouped_gemm(a, a_scale, w, w_scale, residual, consumers=bm // 64, stages=stages,
                                       group_m=group_m, sa_mode=sa_mode, block_n=bn, rescale=rescale)  # fmt: skip
    m, k = a.shape
    n = w.shape[0]
    c = torch.empty((m, n), device=a.device, dtype=torch.float16)
    lay = gl.NVMMASharedLayout.get_default_for
    a_desc = TensorDescriptor.from_tensor(a, [bm, bk], lay([bm, bk], gl.float8e4nv))
    b_desc = TensorDescriptor.from_tensor(w, [bn, bk], lay([bn, bk], gl.float8e4nv))
    c_desc = TensorDescriptor.from_tensor(c, [bm, bn], lay([bm, bn], gl.float16))
    sms = torch.cuda.get_device_properties(a.device).multi_processor_count
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    r = residual if residual is not None else c
    args = (a_desc, b_desc, c_desc, a_scale.reshape(-1), w_scale.reshape(-1), r, r.stride(0), m, n, k)
    if variant == "simple":
        _simple_gemm_kernel[(tiles,)](*args, HAS_RESIDUAL=residual is not None, GROUP_M=group_m, STAGES=stages,
                                      num_warps=4)  # fmt: skip
    else:
        _ws_gemm_kernel[(min(sms, tiles),)](
            *args, HAS_RESIDUAL=residual is not None, NUM_SMS=min(sms, tiles), GROUP_M=group_m, STAGES=stages,
            CONSUMERS=2 if variant == "pingpong" else 1, PRODUCER_REGS=40, CONSUMER_REGS=232, num_warps=4,
        )  # fmt: skip
    return c


def compile_only(stages: int | None, block: tuple[int, int, int], variant: str, rescale: bool = False) -> None:
    """Compile the kernel for sm_90 without a GPU: prints its shared memory and what the
    PTX holds (wgmma, barrier waits, register counts set per partition)."""
    bm, bn, bk = block
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    fn = _simple_gemm_kernel if variant == "simple" else _ws_gemm_kernel
    for residual in (False, True):
        if variant == "grouped":
            kernel = gluon_gemm.compile_for_sm90(residual, consumers=bm // 64, stages=stages, block_n=bn,
                                                 rescale=rescale)  # fmt: skip
        else:
            const = {"HAS_RESIDUAL": residual, "GROUP_M": 8, "STAGES": stages}
            if variant != "simple":
                const |= {"NUM_SMS": 132, "PRODUCER_REGS": 40, "CONSUMER_REGS": 232,
                          "CONSUMERS": 2 if variant == "pingpong" else 1}  # fmt: skip
            lay = gl.NVMMASharedLayout.get_default_for
            la, lb, lc = lay([bm, bk], gl.float8e4nv), lay([bn, bk], gl.float8e4nv), lay([bm, bn], gl.float16)
            sig = {"a_desc": f"tensordesc<fp8e4nv[{bm}, {bk}],{la!r}>", "b_desc": f"tensordesc<fp8e4nv[{bn}, {bk}],{lb!r}>",
                   "c_desc": f"tensordesc<fp16[{bm}, {bn}],{lc!r}>", "sa_ptr": "*fp32", "sb_ptr": "*fp32", "r_ptr": "*fp16"}  # fmt: skip
            sig = {name: "constexpr" if name in const else sig.get(name, "i32") for name in fn.arg_names}
            kernel = triton.compile(
                GluonASTSource(fn, sig, const), target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}
            )
        ptx = kernel.asm["ptx"]
        print(f"{variant} block={bm}x{bn}x{bk} residual={residual} stages={stages} shared={kernel.metadata.shared} "
              f"wgmma={ptx.count('wgmma.mma_async')} setmaxnreg={ptx.count('setmaxnreg')} "
              f"mbarrier.arrive={ptx.count('mbarrier.arrive')} try_wait={ptx.count('mbarrier.try_wait')}")  # fmt: skip


def tflops(flop: float, fn, *args, **kwargs) -> float:
    """fn(*args, **kwargs) in TFLOP/s: the median of CUDA-graph replays (triton.testing)."""
    ms = statistics.median(triton.testing.do_bench_cudagraph(lambda: fn(*args, **kwargs), return_mode="all"))
    return flop / ms / 1e9


def _hang(where: str, seconds: float) -> None:
    print(f"HANG: {where} did not finish in {seconds} s", flush=True)
    os._exit(3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--m", type=int, nargs="+", default=[16384, 131072])
    ap.add_argument("--stages", type=int, default=None, help="default: 5, grouped: as many as fit")
    ap.add_argument("--block", nargs="+", default=["128x128x128"],
                    help="BLOCK_M x BLOCK_N x BLOCK_K of a tile; grouped: several, each timed, and a trailing r "
                         "rescales the accumulator between groups (192x128x128 256x128x128r)")  # fmt: skip
    ap.add_argument(
        "--hang-s", type=float, default=60.0, help="end the process if the first launch of a shape takes longer"
    )
    ap.add_argument("--variant", choices=VARIANTS, default="pingpong")
    ap.add_argument("--shapes", type=int, nargs="+", default=range(len(SHAPES)), help="indices into SHAPES")
    ap.add_argument("--sa-mode", type=int, nargs="+", default=[gluon_gemm.SA_MODE],
                    help="grouped: where the row scales come from (qbench.gluon_gemm._grouped_consumer), each timed")
    ap.add_argument("--compile-only", action="store_true", help="compile for sm_90 and stop (no GPU needed)")
    args = ap.parse_args()
    # (block, rescale) per tile to time; the first one's block quantizes A's groups
    tiles = [(tuple(int(v) for v in b.rstrip("r").split("x")), b.endswith("r")) for b in args.block]
    if args.variant != "grouped":
        tiles, args.stages = tiles[:1], args.stages or 5
    block = tiles[0][0]
    if args.compile_only:
        for blk, rescale in tiles:
            compile_only(args.stages, blk, args.variant, rescale)
        return
    import torch

    from qbench import triton_kernels as tk
    from qbench.schemes import FP8_MAX, quantize_rows

    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__, flush=True)
    for n, k, residual in (SHAPES[i] for i in args.shapes):
        for m in args.m:
            g = torch.Generator(device="cuda").manual_seed(m + n + k)
            x = torch.randn(m, k, device="cuda", generator=g).half()
            a, sa = quantize_rows(x, FP8_MAX, torch.float8_e4m3fn)
            w, sw = quantize_rows(torch.randn(n, k, device="cuda", generator=g).half(), FP8_MAX, torch.float8_e4m3fn)
            sw = sw.view(1, -1)
            r = torch.randn(m, n, device="cuda", generator=g).half() if residual else None
            a_rows, sa_rows = a, sa
            tri = {}
            if args.variant == "grouped":  # per row and group of BLOCK_K columns, scales (K // BLOCK_K, M)
                gk = block[2]
                a, sg = quantize_rows(x.view(m, k // gk, gk), FP8_MAX, torch.float8_e4m3fn)
                a, sa = a.view(m, k), sg.view(m, k // gk).t().contiguous()
                # Triton's own kernel to compare with: a config given keeps w8a8_gemm off the Gluon one
                tri = {"a_group": gk, "config": tk.gemm_config("fp8", m, n, k, a.device, group=gk)}
            ref = tk.w8a8_gemm(a, sa, w, sw, residual=r, **tri)
            torch.cuda.synchronize()
            # a wrong barrier phase hangs the kernel: say where, and end the process (the
            # driver reclaims the GPU) instead of waiting for the outer time limit
            where = f"M={m} N={n} K={k} residual={residual}"
            dog = threading.Timer(args.hang_s, _hang, (where, args.hang_s))
            dog.daemon = True  # an exception ends the process without waiting for it
            dog.start()
            modes = args.sa_mode if args.variant == "grouped" else [0]
            flop = 2.0 * m * n * k
            row, errs = {}, []
            for (bm, bn, bk), rescale in tiles:
                for mode in modes:
                    kw = {"block": (bm, bn, bk), "stages": args.stages, "variant": args.variant, "sa_mode": mode,
                          "rescale": rescale}  # fmt: skip
                    got = gemm(a, sa, w, sw, r, **kw)
                    torch.cuda.synchronize()
                    errs.append(float((got.float() - ref.float()).norm() / ref.float().norm()))
                    name = args.variant
                    if args.variant == "grouped":
                        name = f"{bm}x{bn}{'r' if rescale else ''}_sa{mode}"
                    row[name] = tflops(flop, gemm, a, sa, w, sw, r, **kw)
            dog.cancel()
            err = max(errs)
            row["triton"] = tflops(flop, tk.w8a8_gemm, a, sa, w, sw, residual=r, **tri)
            if tri:  # the per-token GEMM the grouped one would replace
                row["triton_rows"] = tflops(flop, tk.w8a8_gemm, a_rows, sa_rows, w, sw, residual=r)
            if not residual and not tri:
                row["cublas"] = tflops(flop, torch._scaled_mm, a, w.t(), scale_a=sa, scale_b=sw,
                                       out_dtype=torch.float16, use_fast_accum=True)  # fmt: skip
            print(f"M={m} N={n} K={k} residual={residual} rel_diff_vs_triton={err:.2e} "
                  + " ".join(f"{name}={v:.0f}" for name, v in row.items()) + " TFLOP/s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
