"""The down projection's W8A8 fp8 GEMM for Hopper in Gluon (Triton's explicit dialect),
for activations quantized per token and group of 128 channels (`act_group_size: 128`).

Such an A has a scale per row and K group, so each 128-deep K step's MMA must finish
before its partial sum is scaled into the fp32 accumulator. Triton's compiler then waits
on every wgmma (its one instruction stream has nothing else to do meanwhile): 430-670
TFLOP/s on the H100 against 1170-1350 for the per-token GEMM. Here, as in CUTLASS's
"cooperative" Hopper kernels and DeepSeek's DeepGEMM:
- one producer warp issues the TMA loads into a ring of STAGES shared-memory stages;
- consumer warpgroups share each tile, 64 rows each; while one scales, the others' MMAs
  keep the tensor cores busy.
Two ways to scale (TILES lists the tiles):
- a partial sum per K step, scaled into the fp32 accumulator (DeepGEMM's promotion, exact
  over K): two register sets per output element, so at most 192 x 128 (3 warpgroups),
  1006-1118 TFLOP/s on H100s (docs/results/h100-2026-11-27-session12 and -session14), the
  same to the bit as the Triton kernel's (`w8a8_gemm(..., a_group=128, config=...)`);
- `rescale`: the accumulator itself, in units of the current group's scales, multiplied
  by sa_k / sa_k+1 between K steps, the sum over K the tensor cores' (as in the per-token
  GEMM): one register set, so 128 x 256 (2 warpgroups, the default, TILE) or 256 x 128 (4),
  1084-1125 TFLOP/s at M = 16384, and the decoder 2.6-3.6% faster at batch 128 (session 14).

`w8a8_gemm` routes here when `unavailable` says nothing stands in the way; CPUs and other
GPUs keep Triton's kernel, as does QBENCH_GLUON=0 in the environment; QBENCH_GLUON_TILE
picks another tile (`tile()`).

Gluon has no interpreter: the tests compile this for sm_90 on the CPU
(tests/test_triton_compile.py), and on a GPU tests/test_triton_kernels.py runs it against
Triton's kernel and a float64 reference.
"""

from __future__ import annotations

import os

import torch

try:
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

    # Triton 3.6 names TMA's copies async_copy_global_to_shared / async_copy_shared_to_global,
    # later versions async_load / async_store (the old names raise): whichever this one has
    _tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    _tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global
    _jit, _constexpr_function = gluon.jit, gluon.constexpr_function
except (ImportError, AttributeError):  # pragma: no cover - no Gluon (older triton, or none): Triton's kernel runs
    gluon = None

    def _jit(fn):
        return fn

    _constexpr_function = _jit

GROUP = 128  # the K group the kernel scales by: its BLOCK_K
WG_ROWS = 64  # rows per consumer warpgroup (one wgmma's M)
# (consumers, block_n, rescale) -> the stages that fit in the H100's 227 KiB of shared memory
# (operands and output staging): 192 x 128 tiles take 4 x (3 x 8 + 16) KiB + 3 x 16 KiB,
# 128 x 256 ones 3 x (2 x 8 + 32) KiB + 2 x 32 KiB, 256 x 128 ones 3 x (4 x 8 + 16) + 4 x 16
TILES = {(3, 128, False): 4, (2, 128, False): 6, (3, 128, True): 4, (2, 128, True): 6,
         (2, 256, True): 3, (4, 128, True): 3}  # fmt: skip
# w8a8_gemm's tile, unless QBENCH_GLUON_TILE names another: 128 x 256, rescaled. On two H100s
# (2026-11-27, docs/results/h100-2026-11-27-session14) the decoder at batch 128 took 2.6% and
# 3.6% less time with it than with 192 x 128 (a partial sum per K step); 256 x 128 rescaled, 1.7%
TILE = (2, 256, True)
TILE_ENV = "QBENCH_GLUON_TILE"  # <rows>x<columns>[r], e.g. 128x256r
SA_MODE = 0  # where a K step's row scales come from (_grouped_consumer): 1 and 2 were no faster


def tile() -> tuple[int, int, bool]:
    """(consumers, block_n, rescale) of the tile w8a8_gemm's grouped GEMM runs: QBENCH_GLUON_TILE
    in the environment (192x128, 128x256r, ...: a trailing r rescales), else TILE."""
    text = os.environ.get(TILE_ENV, "").strip()
    if not text:
        return TILE
    rows, _, cols = text.rstrip("r").partition("x")
    choice = (int(rows) // WG_ROWS, int(cols), text.endswith("r")) if rows.isdigit() and cols.isdigit() else None
    if choice not in TILES or int(rows) % WG_ROWS:
        known = ", ".join(f"{c * WG_ROWS}x{n}{'r' if r else ''}" for c, n, r in TILES)
        raise ValueError(f"{TILE_ENV}={text!r}: not a tile of qbench.gluon_gemm (one of {known})")
    return choice


def _sa_layout():
    # the row scales' TMA boxes: 1-D, unswizzled
    return gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=1)


@_constexpr_function
def acc_layout(rows, cols, num_warps):
    # one warpgroup's wgmma accumulator: warps stacked along M, the widest N instruction
    n = 256
    while n > cols or cols % n:
        n -= 8
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, n, 32])


@_jit
def _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M: gl.constexpr):
    # grouped order, as qbench.triton_kernels._grouped_tile: GROUP_M row-blocks share B in L2
    per_group = GROUP_M * num_pid_n
    first_m = (tile // per_group) * GROUP_M
    group_m = gl.minimum(num_pid_m - first_m, GROUP_M)
    return first_m + ((tile % per_group) % group_m), (tile % per_group) // group_m


@_jit
def _producer(a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K, NUM_SMS: gl.constexpr, GROUP_M: gl.constexpr,
              STAGES: gl.constexpr, A_PARTS: gl.constexpr = 1, sa_desc=None, sa_bufs=None, SA_TMA: gl.constexpr = False):  # fmt: skip
    # every K step of the program's tiles into the ring: stage s = i % STAGES waits until
    # its last readers released it (empty, opposite parity: the first pass does not wait),
    # then ready[s] completes when all its bytes landed. A's tile comes in A_PARTS boxes of
    # rows (a TMA box is a power of two: 3 x 64 rows), a_bufs[s * A_PARTS + j]. With
    # SA_TMA, sa_desc (1-D over the scales (K // BLOCK_K, M) of A in groups), each box's row scales
    # of the K step come too, into sa_bufs[s * A_PARTS + j].
    A_ROWS: gl.constexpr = a_desc.block_type.shape[0]
    BLOCK_M: gl.constexpr = A_ROWS * A_PARTS
    BLOCK_K: gl.constexpr = a_desc.block_type.shape[1]
    BLOCK_N: gl.constexpr = b_desc.block_type.shape[0]
    num_pid_m = gl.cdiv(M, BLOCK_M)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    k_tiles = gl.cdiv(K, BLOCK_K)
    if not SA_TMA:
        nbytes: gl.constexpr = A_PARTS * a_desc.block_type.nbytes + b_desc.block_type.nbytes
    else:
        nbytes: gl.constexpr = A_PARTS * (a_desc.block_type.nbytes + sa_desc.block_type.nbytes) + b_desc.block_type.nbytes
    i = 0
    for tile in range(gl.program_id(0), num_pid_m * num_pid_n, NUM_SMS):
        pid_m, pid_n = _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
        for k in range(k_tiles):
            s = i % STAGES
            mbarrier.wait(empty.index(s), ((i // STAGES) & 1) ^ 1)
            mbarrier.expect(ready.index(s), nbytes)
            for j in gl.static_range(A_PARTS):
                _tma_load(a_desc, [pid_m * BLOCK_M + j * A_ROWS, k * BLOCK_K], ready.index(s),
                          a_bufs.index(s * A_PARTS + j))  # fmt: skip
                if SA_TMA:
                    # rows past M read the next group's scales (finite): their A rows are zeros
                    _tma_load(sa_desc, [k * M + pid_m * BLOCK_M + j * A_ROWS], ready.index(s),
                              sa_bufs.index(s * A_PARTS + j))  # fmt: skip
            _tma_load(b_desc, [pid_n * BLOCK_N, k * BLOCK_K], ready.index(s), b_bufs.index(s))
            i += 1


@_jit
def _issue(a_bufs, b_bufs, ready, part, i, STAGES: gl.constexpr, CONSUMERS: gl.constexpr, WHICH: gl.constexpr):
    # the MMA of the program's i-th K step into a fresh partial sum (this consumer's rows of
    # A), once its stage landed
    s = i % STAGES
    mbarrier.wait(ready.index(s), (i // STAGES) & 1)
    return warpgroup_mma(a_bufs.index(s * CONSUMERS + WHICH), b_bufs.index(s).permute((1, 0)), part, use_acc=False,
                         is_async=True)  # fmt: skip


@_jit
def _retire(part, acc, b_bufs, sa, i, STAGES: gl.constexpr):
    # the partial sum of the i-th K step done, scaled by its group's row scales sa into acc
    part = warpgroup_mma_wait(0, deps=(part, b_bufs.index(i % STAGES)))[0]
    return part, acc + part * sa[:, None]


@_jit
def _store(acc, c_desc, c_buf, r_ready, sb_ptr, row0, col0, t, N, HAS_RESIDUAL: gl.constexpr, WHICH: gl.constexpr):
    # the per-channel scales (+ the residual, which TMA brought into the staging buffer
    # during the mainloop), fp16, by TMA
    BN: gl.constexpr = c_desc.block_type.shape[1]
    offs_n = col0 + gl.arange(0, BN, layout=gl.SliceLayout(0, acc.type.layout))
    c = acc * gl.load(sb_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
    if HAS_RESIDUAL:
        mbarrier.wait(r_ready.index(WHICH), t & 1)
        c = c + c_buf.load(acc.type.layout).to(gl.float32)
    else:
        tma.store_wait(0)  # this buffer's previous tile has left it
    c_buf.store(c.to(c_desc.dtype))
    fence_async_shared()
    _tma_store(c_desc, [row0, col0], c_buf)


@_jit
def _grouped_consumer(a_bufs, b_bufs, sa_bufs, c_desc, r_desc, c_bufs, ready, empty, r_ready, sa_ptr, sb_ptr, M, N, K,
                      HAS_RESIDUAL: gl.constexpr, NUM_SMS: gl.constexpr, GROUP_M: gl.constexpr, STAGES: gl.constexpr,
                      CONSUMERS: gl.constexpr, SA_MODE: gl.constexpr, RESCALE: gl.constexpr,
                      WHICH: gl.constexpr):  # fmt: skip
    # rows WHICH * WG_ROWS ... of every tile of the program: each K step's MMA into a
    # fresh partial sum, scaled by its group's row scales (sa (K // BLOCK_K, M)) into the
    # fp32 accumulator while the other warpgroups' MMAs run. (Two partial sums per
    # warpgroup, so that its own next MMA runs meanwhile, were slower on the H100: 594-685
    # TFLOP/s split along N, 451-636 along K, against 1009-1112; docs/W8A8.md.)
    # SA_MODE, where a K step's row scales come from: 0 loaded from global memory while
    # its MMA runs; 1 the same, one K step ahead; 2 by TMA with the operands (sa_bufs).
    # RESCALE: no partial sum. The accumulator holds the sum so far in units of the current
    # group's scales, u = acc / sa_k, and the MMAs add into it: after step k's it is scaled by
    # sa_k / sa_k+1 (by sa_k after the last). Half the registers, so a warpgroup's rows
    # take 256 columns (a 128 x 256 tile reads 10% fewer operand bytes per FLOP than 192 x
    # 128); the sum over K is then the tensor cores' own, as in the per-token GEMM.
    WG_ROWS: gl.constexpr = c_desc.block_type.shape[0]
    BLOCK_N: gl.constexpr = c_desc.block_type.shape[1]
    BLOCK_K: gl.constexpr = a_bufs.type.shape[2]
    layout: gl.constexpr = acc_layout(WG_ROWS, BLOCK_N, gl.num_warps())
    num_pid_m = gl.cdiv(M, CONSUMERS * WG_ROWS)
    num_pid_n = gl.cdiv(N, BLOCK_N)
    k_tiles = K // BLOCK_K
    c_buf = c_bufs.index(WHICH)
    i = 0
    t = 0
    for tile in range(gl.program_id(0), num_pid_m * num_pid_n, NUM_SMS):
        pid_m, pid_n = _tile_coords(tile, num_pid_m, num_pid_n, GROUP_M)
        row0 = pid_m * CONSUMERS * WG_ROWS + WHICH * WG_ROWS
        col0 = pid_n * BLOCK_N
        offs_m = row0 + gl.arange(0, WG_ROWS, layout=gl.SliceLayout(1, layout))
        row_ok = offs_m < M
        if HAS_RESIDUAL:
            # the residual's tile into the staging buffers once the previous tile's stores
            # have left them: in the epilogue it is there, and no registers hold its addresses
            tma.store_wait(0)
            mbarrier.expect(r_ready.index(WHICH), r_desc.block_type.nbytes)
            _tma_load(r_desc, [row0, col0], r_ready.index(WHICH), c_buf)
        acc = gl.zeros((WG_ROWS, BLOCK_N), gl.float32, layout=layout)
        if RESCALE:
            # rows past M: A's rows are zeros, and a scale of 1 keeps them so
            sa = gl.maximum(gl.load(sa_ptr + offs_m, mask=row_ok, other=1.0), 1e-30)
            for k in range(k_tiles):
                s = i % STAGES
                mbarrier.wait(ready.index(s), (i // STAGES) & 1)
                acc = warpgroup_mma(a_bufs.index(s * CONSUMERS + WHICH), b_bufs.index(s).permute((1, 0)), acc,
                                    is_async=True)  # fmt: skip
                # the next group's scales load while the MMA runs (after the last: 1)
                sa_next = gl.load(sa_ptr + (k + 1) * M + offs_m, mask=row_ok & (k + 1 < k_tiles), other=1.0)
                sa_next = gl.maximum(sa_next, 1e-30)
                acc = warpgroup_mma_wait(0, deps=(acc, b_bufs.index(s)))[0]
                mbarrier.arrive(empty.index(s))
                acc = acc * (sa / sa_next)[:, None]
                sa = sa_next
                i += 1
        else:
            # the partial sum lives in the mainloop only: its registers are free in the epilogue
            part = gl.zeros((WG_ROWS, BLOCK_N), gl.float32, layout=layout)
            if SA_MODE == 1:
                sa_next = gl.load(sa_ptr + offs_m, mask=row_ok, other=0.0)
            for k in range(k_tiles):
                part = _issue(a_bufs, b_bufs, ready, part, i, STAGES, CONSUMERS, WHICH)
                if SA_MODE == 0:
                    sa = gl.load(sa_ptr + k * M + offs_m, mask=row_ok, other=0.0)  # while the MMA runs
                elif SA_MODE == 1:
                    sa = sa_next
                    sa_next = gl.load(sa_ptr + (k + 1) * M + offs_m, mask=row_ok & (k + 1 < k_tiles), other=0.0)
                else:
                    sa = sa_bufs.index((i % STAGES) * CONSUMERS + WHICH).load(gl.SliceLayout(1, layout))
                part, acc = _retire(part, acc, b_bufs, sa, i, STAGES)
                mbarrier.arrive(empty.index(i % STAGES))
                i += 1
        _store(acc, c_desc, c_buf, r_ready, sb_ptr, row0, col0, t, N, HAS_RESIDUAL, WHICH)
        t += 1  # noqa: SIM113 (Gluon has no enumerate)
    tma.store_wait(0)


@_jit
def _grouped_gemm_kernel(a_desc, b_desc, c_desc, r_desc, sa_desc, sa_ptr, sb_ptr, M, N, K, HAS_RESIDUAL: gl.constexpr,
                         NUM_SMS: gl.constexpr, GROUP_M: gl.constexpr, STAGES: gl.constexpr, CONSUMERS: gl.constexpr,
                         SA_MODE: gl.constexpr, PRODUCER_REGS: gl.constexpr, CONSUMER_REGS: gl.constexpr,
                         RESCALE: gl.constexpr = False):  # fmt: skip
    # persistent: a producer warp and CONSUMERS (2, 3 or 4) consumer warpgroups sharing each
    # (CONSUMERS * WG_ROWS) x BLOCK_N tile; empty[s] counts every consumer
    a_bufs = gl.allocate_shared_memory(a_desc.dtype, [STAGES * CONSUMERS] + a_desc.block_type.shape, a_desc.layout)
    b_bufs = gl.allocate_shared_memory(b_desc.dtype, [STAGES] + b_desc.block_type.shape, b_desc.layout)
    c_bufs = gl.allocate_shared_memory(c_desc.dtype, [CONSUMERS] + c_desc.block_type.shape, c_desc.layout)
    if SA_MODE == 2:  # the row scales' boxes (3 KiB)
        sa_bufs = gl.allocate_shared_memory(sa_desc.dtype, [STAGES * CONSUMERS] + sa_desc.block_type.shape,
                                            sa_desc.layout)  # fmt: skip
    else:  # unused: 2 warpgroups with 6 stages fill the shared memory without them
        sa_bufs = a_bufs
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    r_ready = gl.allocate_shared_memory(gl.int64, [CONSUMERS, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=CONSUMERS)
    for s in gl.static_range(CONSUMERS):
        mbarrier.init(r_ready.index(s), count=1)
    fence_async_shared()
    # the consumers differ only in WHICH, the last argument (a tuple built once and
    # extended loses its constexprs in Triton 3.6's warp_specialize: spelled out)
    if CONSUMERS == 4:
        gl.warp_specialize(
            [
                (_grouped_consumer, (a_bufs, b_bufs, sa_bufs, c_desc, r_desc, c_bufs, ready, empty, r_ready, sa_ptr, sb_ptr,
                                     M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, SA_MODE, RESCALE, 0)),
                (_grouped_consumer, (a_bufs, b_bufs, sa_bufs, c_desc, r_desc, c_bufs, ready, empty, r_ready, sa_ptr, sb_ptr,
                                     M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, SA_MODE, RESCALE, 1)),
                (_grouped_consumer, (a_bufs, b_bufs, sa_bufs, c_desc, r_desc, c_bufs, ready, empty, r_ready, sa_ptr, sb_ptr,
                                     M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, SA_MODE, RESCALE, 2)),
                (_grouped_consumer, (a_bufs, b_bufs, sa_bufs, c_desc, r_desc, c_bufs, ready, empty, r_ready, sa_ptr, sb_ptr,
                                     M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, SA_MODE, RESCALE, 3)),
                (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K, NUM_SMS, GROUP_M, STAGES, CONSUMERS,
                             sa_desc, sa_bufs, SA_MODE == 2)),
            ],
            [4, 4, 4, 1],
            [CONSUMER_REGS, CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS],
        )  # fmt: skip
    elif CONSUMERS == 3:
        gl.warp_specialize(
            [
                (_grouped_consumer, (a_bufs, b_bufs, sa_bufs, c_desc, r_desc, c_bufs, ready, empty, r_ready, sa_ptr, sb_ptr,
                                     M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, SA_MODE, RESCALE, 0)),
                (_grouped_consumer, (a_bufs, b_bufs, sa_bufs, c_desc, r_desc, c_bufs, ready, empty, r_ready, sa_ptr, sb_ptr,
                                     M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, SA_MODE, RESCALE, 1)),
                (_grouped_consumer, (a_bufs, b_bufs, sa_bufs, c_desc, r_desc, c_bufs, ready, empty, r_ready, sa_ptr, sb_ptr,
                                     M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, SA_MODE, RESCALE, 2)),
                (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K, NUM_SMS, GROUP_M, STAGES, CONSUMERS,
                             sa_desc, sa_bufs, SA_MODE == 2)),
            ],
            [4, 4, 1],
            [CONSUMER_REGS, CONSUMER_REGS, PRODUCER_REGS],
        )  # fmt: skip
    else:
        gl.warp_specialize(
            [
                (_grouped_consumer, (a_bufs, b_bufs, sa_bufs, c_desc, r_desc, c_bufs, ready, empty, r_ready, sa_ptr, sb_ptr,
                                     M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, SA_MODE, RESCALE, 0)),
                (_grouped_consumer, (a_bufs, b_bufs, sa_bufs, c_desc, r_desc, c_bufs, ready, empty, r_ready, sa_ptr, sb_ptr,
                                     M, N, K, HAS_RESIDUAL, NUM_SMS, GROUP_M, STAGES, CONSUMERS, SA_MODE, RESCALE, 1)),
                (_producer, (a_desc, b_desc, a_bufs, b_bufs, ready, empty, M, N, K, NUM_SMS, GROUP_M, STAGES, CONSUMERS,
                             sa_desc, sa_bufs, SA_MODE == 2)),
            ],
            [4, 1],
            [CONSUMER_REGS, PRODUCER_REGS],
        )  # fmt: skip


def _registers(consumers: int) -> tuple[int, int]:
    # (producer, consumer) registers per thread: 65,536 per SM for (consumers + 1) x 128
    # threads (the producer warp's warpgroup is padded to 4 warps). The producer gives up
    # its own for the consumers' accumulators: 64 x 128 fp32 (64 registers) with a partial
    # sum as large, or 64 x 256 rescaled (128). 4 consumers only rescale (64 registers of
    # accumulator each): 112 for the three workers, and Triton gives the default partition
    # (the first consumer) 120; none spills in the mainloop (with 120 for the workers, the
    # default partition got 96 and did)
    return {2: (40, 232), 3: (24, 160), 4: (24, 112)}[consumers]


def unavailable(a: torch.Tensor, w: torch.Tensor, group: int, residual: torch.Tensor | None = None) -> str | None:
    """Why `grouped_gemm` cannot take these operands here (then Triton's kernel does), or None."""
    if os.environ.get("QBENCH_GLUON", "1") == "0":
        return "QBENCH_GLUON=0"
    if gluon is None:
        return "Gluon (triton.experimental.gluon, Triton >= 3.5) is not importable"
    if not a.is_cuda or torch.cuda.get_device_capability(a.device) != (9, 0):
        return "not a Hopper GPU (sm_90)"
    if a.dtype != torch.float8_e4m3fn or w.dtype != a.dtype:
        return f"{a.dtype} operands (the kernel is fp8 e4m3)"
    k, n = a.shape[1], w.shape[0]
    if group != GROUP or k % GROUP or n % 8:
        return f"group {group}, K {k}, N {n}: the kernel takes groups of {GROUP}, N a multiple of 8"
    if not (a.is_contiguous() and w.is_contiguous() and (residual is None or residual.is_contiguous())):
        return "non-contiguous operands"
    return None


def grouped_gemm(
    a: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor,
    residual: torch.Tensor | None = None, consumers: int | None = None, stages: int | None = None, group_m: int = 8,
    sa_mode: int = SA_MODE, block_n: int | None = None, rescale: bool | None = None,
) -> torch.Tensor:  # fmt: skip
    """(a @ w.T) * a_scale * w_scale (+ residual), fp16, as `w8a8_gemm(..., a_group=128)`:
    a (M, K) fp8 e4m3 quantized per row and group of 128 columns, a_scale (K // 128, M)
    fp32, w (N, K) fp8 e4m3 with w_scale (N,) or (1, N) fp32 per channel. The tile:
    consumers x 64 rows by block_n columns, with rescale or not (one of TILES; what is not
    given comes from `tile()`); stages: as many as fit."""
    m, k = a.shape
    n = w.shape[0]
    why = unavailable(a, w, GROUP, residual)
    default = tile()
    consumers = consumers or default[0]
    block_n = block_n or default[1]
    rescale = default[2] if rescale is None else rescale
    shape = (consumers, block_n, bool(rescale))
    if why or tuple(a_scale.shape) != (k // GROUP, m) or shape not in TILES:
        raise ValueError(f"grouped_gemm: {why or ''} a {tuple(a.shape)}, a_scale {tuple(a_scale.shape)} (wants "
                         f"{(k // GROUP, m)}), (consumers, block_n, rescale) {shape} (one of {list(TILES)})")  # fmt: skip
    stages = stages or TILES[shape]
    if rescale:
        sa_mode = 0  # the rescaling loop loads each K step's scales itself, one step ahead
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    c = torch.empty((m, n), device=a.device, dtype=torch.float16)
    lay = gl.NVMMASharedLayout.get_default_for
    a_desc = TensorDescriptor.from_tensor(a, [WG_ROWS, GROUP], lay([WG_ROWS, GROUP], gl.float8e4nv))
    b_desc = TensorDescriptor.from_tensor(w, [block_n, GROUP], lay([block_n, GROUP], gl.float8e4nv))
    # the output's and the residual's boxes: one consumer's rows of a tile
    c_layout = lay([WG_ROWS, block_n], gl.float16)
    c_desc = TensorDescriptor.from_tensor(c, [WG_ROWS, block_n], c_layout)
    sa_flat = a_scale.reshape(-1)
    if sa_mode == 2 and (sa_flat.data_ptr() % 16 or m % 4):
        # a TMA box starts at a 16-byte aligned address, and group g's rows start at g * M
        # scales (M = 193 failed with an illegal instruction): the prefetch instead
        sa_mode = 1
    # (any descriptor where the kernel does not read the scales by TMA)
    sa_desc = TensorDescriptor.from_tensor(sa_flat, [WG_ROWS], _sa_layout()) if sa_mode == 2 else c_desc
    sms = torch.cuda.get_device_properties(a.device).multi_processor_count
    tiles = triton.cdiv(m, consumers * WG_ROWS) * triton.cdiv(n, block_n)
    r_desc = c_desc  # unused without a residual
    if residual is not None:
        r_desc = TensorDescriptor.from_tensor(residual.reshape(m, n), [WG_ROWS, block_n], c_layout)
    producer_regs, consumer_regs = _registers(consumers)
    _grouped_gemm_kernel[(min(sms, tiles),)](
        a_desc, b_desc, c_desc, r_desc, sa_desc, sa_flat, w_scale.reshape(-1), m, n, k,
        HAS_RESIDUAL=residual is not None, NUM_SMS=min(sms, tiles), GROUP_M=group_m, STAGES=stages,
        CONSUMERS=consumers, SA_MODE=sa_mode, PRODUCER_REGS=producer_regs, CONSUMER_REGS=consumer_regs,
        RESCALE=bool(rescale), num_warps=4,
    )  # fmt: skip
    return c


def compile_for_sm90(residual: bool, consumers: int | None = None, stages: int | None = None, sa_mode: int = SA_MODE,
                     block_n: int | None = None, rescale: bool | None = None):  # fmt: skip
    """The kernel compiled for sm_90 without a GPU (tests, and the probe's --compile-only);
    the tile's parts not given are TILE's."""
    consumers, block_n = consumers or TILE[0], block_n or TILE[1]
    rescale = TILE[2] if rescale is None else rescale
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    producer_regs, consumer_regs = _registers(consumers)
    const = {"HAS_RESIDUAL": residual, "NUM_SMS": 132, "GROUP_M": 8, "STAGES": stages or TILES[consumers, block_n, rescale],
             "CONSUMERS": consumers, "SA_MODE": sa_mode, "PRODUCER_REGS": producer_regs, "CONSUMER_REGS": consumer_regs,
             "RESCALE": rescale}  # fmt: skip
    lay = gl.NVMMASharedLayout.get_default_for
    la, lb = lay([WG_ROWS, GROUP], gl.float8e4nv), lay([block_n, GROUP], gl.float8e4nv)
    lc = lay([WG_ROWS, block_n], gl.float16)
    sig = {"a_desc": f"tensordesc<fp8e4nv[{WG_ROWS}, {GROUP}],{la!r}>",
           "b_desc": f"tensordesc<fp8e4nv[{block_n}, {GROUP}],{lb!r}>",
           "c_desc": f"tensordesc<fp16[{WG_ROWS}, {block_n}],{lc!r}>",
           "r_desc": f"tensordesc<fp16[{WG_ROWS}, {block_n}],{lc!r}>",
           "sa_desc": f"tensordesc<fp32[{WG_ROWS}],{_sa_layout()!r}>", "sa_ptr": "*fp32", "sb_ptr": "*fp32"}  # fmt: skip
    fn = _grouped_gemm_kernel
    sig = {name: "constexpr" if name in const else sig.get(name, "i32") for name in fn.arg_names}
    return triton.compile(GluonASTSource(fn, sig, const), target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})
