"""Hand-written Triton kernels for W8A8: the fused path of the `triton` implementation.

Three kernels, each one pass over memory:
- `quantize_rows`: per-token (per-row) symmetric quantization to int8 or fp8 e4m3, with
  an optional RMSNorm in front (`rmsnorm_quant`) or SiLU(gate) * up in front
  (`silu_mul_quant`), so the 16-bit activation that feeds a GEMM is never written to
  memory: it is read once and leaves as 8-bit values and one fp32 scale per row;
- `w8a8_gemm`: int8 x int8 -> int32 (or e4m3 x e4m3 -> fp32) with the dequantization in
  the epilogue (per-token scale x per-output-channel scale), an optional residual added
  there too, and fp16 written directly: no int32 or fp32 intermediate in memory. Its
  persistent variant for Hopper (config key TMA) fetches A and B by TMA, optionally with
  warp specialization (WS) and with C written (and the residual read) by TMA (TMA_STORE).

Kernels are compiled for CUDA tensors; with TRITON_INTERPRET=1 (set before this module
is imported) Triton's interpreter runs them on CPU tensors, so tests and CI check the same
code that runs on the GPU. Nothing touches CUDA at import, so a fork-server may import this.

Tile configurations come from `qbench/triton_configs.json` (made by
`scripts/tune_triton.py` on the GPU and kept in the repository); shapes not in it use
the default of their kind.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import torch

INT8_MAX = 127.0
FP8_MAX = 448.0
CONFIGS_FILE = Path(__file__).with_name("triton_configs.json")
log = logging.getLogger("qbench.triton")
# a sound choice on Hopper for the large-M shapes of a prefill; tuned entries override it
DEFAULT_GEMM = {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 128, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}
# the interpreter is numpy: small tiles keep tests fast
INTERPRET_GEMM = {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4, "num_warps": 4, "num_stages": 1}


def triton_available() -> str | None:
    """Why the Triton kernels cannot run on the GPU here, or None."""
    try:
        import triton  # noqa: F401
    except Exception as exc:  # not installed, or broken
        return f"triton is not importable ({exc.__class__.__name__}: {exc})"
    return None


# Importing triton is cheap and CUDA-free, but keep this module importable (for
# `triton_available`) where triton is missing.
try:
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - triton missing: the kernels are unavailable
    triton = tl = None


def _jit(fn):
    """triton.jit where triton is installed. Triton chooses compiled or interpreted at this
    point, so TRITON_INTERPRET must be set before this module is imported."""
    return fn if triton is None else triton.jit(fn)


# --- kernels ------------------------------------------------------------------------------


@_jit
def _to_grid(x, amax, QMAX: tl.constexpr, IS_INT: tl.constexpr, EXACT: tl.constexpr):
    # x / (amax / QMAX) clamped and rounded onto the int8 or e4m3 grid, still in fp32 (the
    # caller casts); amax broadcasts against x (a row's, or each row's of a tile)
    if EXACT:
        y = tl.minimum(tl.maximum(x / (amax / QMAX), -QMAX), QMAX)  # torch's very operations
    elif IS_INT:
        y = tl.minimum(tl.maximum(x * (QMAX / amax), -QMAX), QMAX)  # a multiply, not a divide per element
    else:
        # no clamp: the caller's cast to e4m3 saturates (cvt.rn.satfinite), the same bits
        # for two instructions fewer per element
        y = x * (QMAX / amax)
    if IS_INT:
        r = tl.floor(y + 0.5)
        y = tl.where((r - y == 0.5) & (r % 2.0 != 0.0), r - 1.0, r)  # ties to even, as torch rounds
    elif EXACT:
        # the interpreter's fp8 cast loses the carry when rounding up to the next power of
        # two: round onto the e4m3 grid first (3 mantissa bits, subnormals share 2^-6's
        # step, ties to even) so the cast is exact. Too many special-function ops per
        # element for the GPU, whose cast rounds to nearest even in hardware.
        a = tl.abs(y)
        step = tl.exp2(tl.floor(tl.log2(tl.maximum(a, 0.015625))) - 3.0)
        t = a / step
        r = tl.floor(t + 0.5)
        r = tl.where((r - t == 0.5) & (r % 2.0 == 1.0), r - 1.0, r)
        y = tl.where(y < 0, -r * step, r * step)
    return y


@_jit
def _quantize_rows_kernel(
    x_ptr, w_ptr, q_ptr, s_ptr, M, N, stride_x, stride_q, eps,
    QMAX: tl.constexpr, MODE: tl.constexpr, IS_INT: tl.constexpr, BLOCK: tl.constexpr, EXACT: tl.constexpr,
):  # fmt: skip
    # MODE 0: quantize x; 1: RMSNorm(x) * w, then quantize; 2: silu(x[:N]) * x[N:2N], then quantize
    # (8-bit codes in groups onto one scale per row: _requantize_groups_kernel)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if MODE == 1:
        var = tl.sum(x * x, axis=0) / N
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        x = x * tl.rsqrt(var + eps) * w
    if MODE == 2:
        up = tl.load(x_ptr + row * stride_x + N + cols, mask=mask, other=0.0).to(tl.float32)
        x = x / (1.0 + tl.exp(-x)) * up
    amax = tl.maximum(tl.max(tl.abs(x), axis=0), 1e-8)
    y = _to_grid(x, amax, QMAX, IS_INT, EXACT).to(q_ptr.dtype.element_ty)
    tl.store(q_ptr + row * stride_q + cols, y, mask=mask)
    tl.store(s_ptr + row, amax / QMAX)


@_jit
def _gemm_epilogue(
    acc, pid_m, pid_n, c_ptr, sa_ptr, sb_ptr, r_ptr, qs_ptr, M, N, stride_cm, stride_cn, stride_rm, stride_rn,
    cos_ptr, sin_ptr, SEQ, N_Q, N_ROT,
    HAS_RESIDUAL: tl.constexpr, SWIGLU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    A_GROUP: tl.constexpr, Q_OUT: tl.constexpr, QMAX: tl.constexpr, IS_INT: tl.constexpr, EXACT: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):  # fmt: skip
    # Both GEMM kernels' epilogue for the (pid_m, pid_n) tile: dequantize by the per-token
    # and per-channel scales, then silu(gate) * up (SWIGLU: B's rows interleaved by
    # `swiglu_interleave`, N // 2 columns out) or + the residual, stored in C's dtype.
    # A_GROUP: A's scales were applied in the mainloop (per group of K), only B's are left.
    # Q_OUT (SWIGLU only): the tile's silu(gate) * up is quantized per row and stored as
    # 8-bit codes, its scales at qs[pid_n, row] (_quantize_tile).
    # HEAD_DIM > 0 (the q|k|v projection): rotary embeddings on the first N_ROT columns,
    # whose heads come in interleaved pairs (_rotary_pairs), and C stored as three dense
    # row-major matrices one after the other: q (M, N_Q), k (M, N_ROT - N_Q), v (M, N - N_ROT).
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    sb = tl.load(sb_ptr + offs_n, mask=offs_n < N, other=0.0)
    if A_GROUP > 0:
        c = acc * sb[None, :]
    else:
        sa = tl.load(sa_ptr + offs_m, mask=offs_m < M, other=0.0)
        c = acc.to(tl.float32) * sa[:, None] * sb[None, :]
    rows = offs_m.to(tl.int64)[:, None]
    if SWIGLU:
        gate, up = tl.split(tl.permute(tl.reshape(c, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
        h = _silu_mul(gate, up, SWIGLU)
        offs_h = pid_n * (BLOCK_N // 2) + tl.arange(0, BLOCK_N // 2)
        mask_h = (offs_m[:, None] < M) & (offs_h[None, :] < N // 2)
        if Q_OUT:
            h = _quantize_tile(h, pid_n, offs_m, qs_ptr, M, QMAX, IS_INT, EXACT, Q_OUT == 2)
        tl.store(c_ptr + rows * stride_cm + offs_h[None, :] * stride_cn, h.to(c_ptr.dtype.element_ty), mask=mask_h)
    elif HEAD_DIM > 0:
        c = _rotary_pairs(c, offs_m, offs_n, cos_ptr, sin_ptr, SEQ, N_ROT, BLOCK_M, BLOCK_N, HEAD_DIM)
        # each section dense, so attention reads q, k and v without a copy
        cols = offs_n[None, :]
        start = tl.where(cols < N_Q, 0, tl.where(cols < N_ROT, N_Q, N_ROT)).to(tl.int64)
        width = tl.where(cols < N_Q, N_Q, tl.where(cols < N_ROT, N_ROT - N_Q, N - N_ROT)).to(tl.int64)
        offs = M.to(tl.int64) * start + rows * width + (cols - start)
        tl.store(c_ptr + offs, c.to(c_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (cols < N))
    else:
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        if HAS_RESIDUAL:
            r = tl.load(r_ptr + rows * stride_rm + offs_n[None, :] * stride_rn, mask=mask, other=0.0)
            c += r.to(tl.float32)
        tl.store(c_ptr + rows * stride_cm + offs_n[None, :] * stride_cn, c.to(c_ptr.dtype.element_ty), mask=mask)


@_jit
def _rotary_pairs(
    c, offs_m, offs_n, cos_ptr, sin_ptr, SEQ, N_ROT,
    BLOCK_M: tl.constexpr, WIDTH: tl.constexpr, HEAD_DIM: tl.constexpr,
):  # fmt: skip
    # Rotary embeddings on a (BLOCK_M, WIDTH) tile of the q|k|v projection, columns
    # offs_n: the first N_ROT columns (q's heads, then k's) hold each head's dimensions
    # in interleaved pairs (j, j + HEAD_DIM/2) (`rotary_interleave` reorders the weight's
    # rows), so a pair is two neighbouring columns, which the accumulator's layout keeps
    # in one thread: the rotation moves no data between threads. Row m is position
    # m % SEQ; cos and sin are (SEQ, HEAD_DIM) tables whose halves are equal. Attention's
    # q.k is the same in any order of a head's dimensions that q and k share.
    x1, x2 = tl.split(tl.reshape(c, (BLOCK_M, WIDTH // 2, 2)))
    first, _ = tl.split(tl.reshape(offs_n, (WIDTH // 2, 2)))  # each pair's first column
    j = (first % HEAD_DIM) // 2  # the pair's frequency
    pos = (offs_m % SEQ).to(tl.int64)[:, None] * HEAD_DIM + j[None, :]
    cos = tl.load(cos_ptr + pos).to(tl.float32)
    sin = tl.load(sin_ptr + pos).to(tl.float32)
    rot = tl.reshape(tl.join(x1 * cos - x2 * sin, x2 * cos + x1 * sin), (BLOCK_M, WIDTH))
    return tl.where(offs_n[None, :] < N_ROT, rot, c)


@_jit
def _silu_mul(gate, up, SWIGLU: tl.constexpr):
    # silu(gate) * up in fp32, by the formula SWIGLU names (SILU_MODES): 1, as torch
    # computes it, gate / (1 + exp(-gate)): two special-function ops per element (ex2,
    # rcp), on a unit that does 16 per SM and clock, the epilogue's bottleneck; 2,
    # gate * (1 + tanh(gate / 2)) / 2 with the hardware's tanh.approx.f32: one such op and
    # a quarter fewer instructions, silu off by at most |gate| * 2^-12. (tanh.approx.f16x2
    # compiles to two ops on sm_90, no fewer.) The interpreter runs 1 only.
    if SWIGLU == 2:
        t = tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [gate * 0.5], dtype=tl.float32, is_pure=True,
                                      pack=1)  # fmt: skip
        return gate * (0.5 + 0.5 * t) * up
    else:
        return gate / (1.0 + tl.exp(-gate)) * up


@_jit
def _quantize_tile(h, pid_n, offs_m, qs_ptr, M, QMAX: tl.constexpr, IS_INT: tl.constexpr, EXACT: tl.constexpr,
                   POW2: tl.constexpr = False):  # fmt: skip
    # A (rows, group) tile of activations onto the 8-bit grid, one scale per row: the
    # per-token quantization of a group of channels, written where the activation is made
    # (the SiLU*mul epilogue), so the 16-bit activation never reaches memory. The scales
    # go to qs (groups, M), group-major: the next GEMM's mainloop reads one group's column
    # of them per K step, contiguous. POW2: each scale is the power of two at or above
    # amax / QMAX, so that rescaling the codes to another such scale (requantize_groups)
    # multiplies by a power of two: exact, where e4m3 does not run out of exponents.
    amax = tl.maximum(tl.max(tl.abs(h), axis=1), 1e-8)
    if POW2:
        bits = (amax / QMAX).to(tl.int32, bitcast=True)
        biased = ((bits >> 23) & 0xFF) + ((bits & 0x7FFFFF) != 0).to(tl.int32)  # the exponent, rounded up
        scale = (biased << 23).to(tl.float32, bitcast=True)
        tl.store(qs_ptr + pid_n.to(tl.int64) * M + offs_m, scale, mask=offs_m < M)
        return _to_grid(h, (scale * QMAX)[:, None], QMAX, IS_INT, EXACT)
    tl.store(qs_ptr + pid_n.to(tl.int64) * M + offs_m, amax / QMAX, mask=offs_m < M)
    return _to_grid(h, amax[:, None], QMAX, IS_INT, EXACT)


@_jit
def _requantize_groups_kernel(
    x_ptr, s_ptr, q_ptr, rs_ptr, M, N, QMAX: tl.constexpr, IS_INT: tl.constexpr, EXACT: tl.constexpr,
    GROUP: tl.constexpr, GROUPS: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # codes x (M, N) with a scale per row and group of GROUP columns, s (N // GROUP, M)
    # group-major, onto one scale per row: the largest of the row's group scales (its
    # value of largest magnitude keeps its code), each group's codes times its scale over
    # that one. A (ROWS, BLOCK_N) block per program, whole groups: vector loads of the
    # codes, one scale load per row and group (GROUPS: N // GROUP rounded up to a power of two)
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * ROWS + tl.arange(0, ROWS)
    row_ok = rows < M
    groups = tl.arange(0, GROUPS)
    every = tl.load(s_ptr + groups[None, :].to(tl.int64) * M + rows[:, None],
                    mask=row_ok[:, None] & (groups[None, :] < N // GROUP), other=0.0)  # fmt: skip
    top = tl.maximum(tl.max(every, axis=1), 1e-30)
    if pid_n == 0:
        tl.store(rs_ptr + rows, top, mask=row_ok)
    NG: tl.constexpr = BLOCK_N // GROUP
    mine = pid_n * NG + tl.arange(0, NG)
    ratio = tl.load(s_ptr + mine[None, :].to(tl.int64) * M + rows[:, None],
                    mask=row_ok[:, None] & (mine[None, :] < N // GROUP), other=0.0)  # fmt: skip
    ratio = ratio / top[:, None]
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs = rows[:, None].to(tl.int64) * N + cols[None, :]
    ok = row_ok[:, None] & (cols[None, :] < N)
    x = tl.load(x_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    y = tl.reshape(tl.reshape(x, (ROWS, NG, GROUP)) * ratio[:, :, None], (ROWS, BLOCK_N))
    # already within the grid's range: the scale of QMAX / QMAX only rounds (and clamps int8)
    tl.store(q_ptr + offs, _to_grid(y, QMAX, QMAX, IS_INT, EXACT).to(q_ptr.dtype.element_ty), mask=ok)


@_jit
def _scaled_dot(a, b, acc, sa_ptr, offs_m, ki, M, IS_INT: tl.constexpr, BLOCK_K: tl.constexpr, A_GROUP: tl.constexpr):
    # acc + a @ b: 8-bit operands, int32 or fp32 sums. A_GROUP: A has a scale per row and
    # group of A_GROUP columns (sa: (K // A_GROUP, M)); each K step's partial sum is scaled
    # by its group's row scales into an fp32 accumulator (BLOCK_K divides A_GROUP)
    # one return, at the end: Triton's code generator goes on past a return inside a
    # constexpr `if` and compiles what follows (an int32 dot into the fp32 accumulator)
    if A_GROUP > 0:
        # int32 offsets: w8a8_gemm checks they fit
        sa = tl.load(sa_ptr + (ki * BLOCK_K) // A_GROUP * M + offs_m, mask=offs_m < M, other=0.0)
        if IS_INT:
            part = tl.dot(a, b, out_dtype=tl.int32).to(tl.float32)
        else:
            part = tl.dot(a, b)
        out = acc + part * sa[:, None]
    elif IS_INT:
        out = tl.dot(a, b, acc, out_dtype=tl.int32)
    else:
        out = tl.dot(a, b, acc)
    return out


@_jit
def _w8a8_gemm_kernel(
    a_ptr, b_ptr, c_ptr, sa_ptr, sb_ptr, r_ptr, qs_ptr, M, N, K,
    stride_am, stride_ak, stride_bn, stride_bk, stride_cm, stride_cn, stride_rm, stride_rn, cos_ptr, sin_ptr, SEQ, N_Q, N_ROT,
    IS_INT: tl.constexpr, HAS_RESIDUAL: tl.constexpr, EVEN_K: tl.constexpr, SWIGLU: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    A_GROUP: tl.constexpr, Q_OUT: tl.constexpr, QMAX: tl.constexpr, EXACT: tl.constexpr, HEAD_DIM: tl.constexpr,
):  # fmt: skip
    # C[m, n] = (sum_k A[m, k] B[n, k]) * sa[m] * sb[n] (+ R[m, n]); B is the (N, K) weight.
    # SWIGLU: B's rows come in blocks of BLOCK_N // 2 gate rows then the matching up rows
    # (`swiglu_interleave`), and C[m, j] = silu(gate) * up, N // 2 columns.
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # grouped order: GROUP_M row-blocks share the B tiles they read while in L2
    per_group = GROUP_M * num_pid_n
    first_m = (pid // per_group) * GROUP_M
    group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % per_group) % group_m)
    pid_n = (pid % per_group) // group_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # rows/cols past the edge read valid memory (wrapped) and are masked at the store
    am = (offs_m % M).to(tl.int64)
    bn = (offs_n % N).to(tl.int64)
    a_ptrs = a_ptr + am[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + bn[None, :] * stride_bn
    if IS_INT and A_GROUP == 0:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            rem = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < rem, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < rem, other=0.0)
        acc = _scaled_dot(a, b, acc, sa_ptr, offs_m, k, M, IS_INT, BLOCK_K, A_GROUP)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    _gemm_epilogue(
        acc, pid_m, pid_n, c_ptr, sa_ptr, sb_ptr, r_ptr, qs_ptr, M, N, stride_cm, stride_cn, stride_rm, stride_rn,
        cos_ptr, sin_ptr, SEQ, N_Q, N_ROT, HAS_RESIDUAL, SWIGLU, BLOCK_M, BLOCK_N, A_GROUP, Q_OUT, QMAX, IS_INT, EXACT,
        HEAD_DIM,
    )  # fmt: skip


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (TRITON_INTERPRET=1 when triton was
    imported): the only way they run on CPU tensors."""
    from triton import knobs

    return bool(knobs.runtime.interpret)


@_jit
def _grouped_tile(tile, num_pid_m, per_group, GROUP_M: tl.constexpr):
    # (pid_m, pid_n) of `tile` in grouped order: GROUP_M row-blocks share the B tiles
    # they read while in L2
    first_m = (tile // per_group) * GROUP_M
    group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    return first_m + ((tile % per_group) % group_m), (tile % per_group) // group_m


@_jit
def _gemm_epilogue_tma(
    acc, pid_m, pid_n, c_desc, sa_ptr, sb_ptr, r_desc, qs_ptr, M, N, k_desc, v_desc, cos_ptr, sin_ptr, SEQ, N_Q, N_ROT,
    HAS_RESIDUAL: tl.constexpr, SWIGLU: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    A_GROUP: tl.constexpr, Q_OUT: tl.constexpr, QMAX: tl.constexpr, IS_INT: tl.constexpr, EXACT: tl.constexpr,
    HEAD_DIM: tl.constexpr,
):  # fmt: skip
    # _gemm_epilogue with C (and R) through tensor descriptors of block [BLOCK_M,
    # BLOCK_N // 2]. A TMA store is asynchronous: the tile drains from shared memory to
    # global while the next tile's mainloop runs, where pointer stores hold the warps
    # until they issue. The descriptors clip what lies past M and N (stores dropped,
    # loads zero), so no masks. The accumulator goes in two column halves (the epilogue
    # subtiling of Triton's persistent-matmul tutorial: each store buffer is half the
    # tile, which leaves shared memory to the mainloop's stages); for SWIGLU the halves
    # are the tile's gate and up blocks (`swiglu_interleave`) and one half-tile is stored.
    # HEAD_DIM > 0 (the q|k|v projection): each half rotated as in _gemm_epilogue, and
    # stored through the descriptor of its section, q (c_desc), k (k_desc) or v (v_desc),
    # each a dense matrix: w8a8_gemm takes this path only where no half spans two sections.
    HALF: tl.constexpr = BLOCK_N // 2
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, HALF)
    sb0 = tl.load(sb_ptr + offs_n, mask=offs_n < N, other=0.0)
    sb1 = tl.load(sb_ptr + HALF + offs_n, mask=HALF + offs_n < N, other=0.0)
    acc0, acc1 = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, HALF)), (0, 2, 1)))
    # the same products, in the same order, as _gemm_epilogue's
    if A_GROUP > 0:
        c0 = acc0 * sb0[None, :]
        c1 = acc1 * sb1[None, :]
    else:
        sa = tl.load(sa_ptr + offs_m, mask=offs_m < M, other=0.0)
        c0 = acc0.to(tl.float32) * sa[:, None] * sb0[None, :]
        c1 = acc1.to(tl.float32) * sa[:, None] * sb1[None, :]
    row = pid_m * BLOCK_M
    if SWIGLU:
        h = _silu_mul(c0, c1, SWIGLU)
        if Q_OUT:
            h = _quantize_tile(h, pid_n, offs_m, qs_ptr, M, QMAX, IS_INT, EXACT, Q_OUT == 2)
        c_desc.store([row, pid_n * HALF], h.to(c_desc.dtype))
    elif HEAD_DIM > 0:
        col = pid_n * BLOCK_N
        c0 = _rotary_pairs(c0, offs_m, offs_n, cos_ptr, sin_ptr, SEQ, N_ROT, BLOCK_M, HALF, HEAD_DIM)
        c1 = _rotary_pairs(c1, offs_m, HALF + offs_n, cos_ptr, sin_ptr, SEQ, N_ROT, BLOCK_M, HALF, HEAD_DIM)
        _store_section(c0.to(c_desc.dtype), row, col, c_desc, k_desc, v_desc, N_Q, N_ROT)
        _store_section(c1.to(c_desc.dtype), row, col + HALF, c_desc, k_desc, v_desc, N_Q, N_ROT)
    else:
        col = pid_n * BLOCK_N
        # each half's residual read just before its add: one half-tile buffer at a time
        if HAS_RESIDUAL:
            c0 += r_desc.load([row, col]).to(tl.float32)
        c_desc.store([row, col], c0.to(c_desc.dtype))
        if HAS_RESIDUAL:
            c1 += r_desc.load([row, col + HALF]).to(tl.float32)
        c_desc.store([row, col + HALF], c1.to(c_desc.dtype))


@_jit
def _store_section(x, row, col, q_desc, k_desc, v_desc, N_Q, N_ROT):
    # a half-tile of the q|k|v projection at (row, col), all of it in one section, into
    # that section's dense matrix
    if col < N_Q:
        q_desc.store([row, col], x)
    elif col < N_ROT:
        k_desc.store([row, col - N_Q], x)
    else:
        v_desc.store([row, col - N_ROT], x)


@_jit
def _w8a8_gemm_tma_kernel(
    a_desc, b_desc, c_desc, r_desc, k_desc, v_desc, c_ptr, sa_ptr, sb_ptr, r_ptr, qs_ptr, M, N, K, stride_cm, stride_cn, stride_rm, stride_rn,
    cos_ptr, sin_ptr, SEQ, N_Q, N_ROT,
    IS_INT: tl.constexpr, HAS_RESIDUAL: tl.constexpr, SWIGLU: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    NUM_SMS: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, FLATTEN: tl.constexpr, TMA_STORE: tl.constexpr,
    A_GROUP: tl.constexpr, Q_OUT: tl.constexpr, QMAX: tl.constexpr, EXACT: tl.constexpr, HEAD_DIM: tl.constexpr,
):  # fmt: skip
    # The same GEMM and epilogue as _w8a8_gemm_kernel, persistent (one program per SM
    # walks the tiles) with A and B tiles fetched by TMA (tensor descriptors; edges read
    # as zeros), so loads overlap the tensor cores better on Hopper. WARP_SPECIALIZE (config
    # key WS) asks Triton to give the loads and the MMAs warps of their own, the
    # producer/consumer split of CUTLASS's Hopper GEMMs; the tile loop is then not
    # flattened (Triton flattens only without it on Hopper).
    # TMA_STORE (config key of the same name): C, and R, go through the descriptors c_desc
    # and r_desc (_gemm_epilogue_tma), else through pointers c_ptr and r_ptr
    # (_gemm_epilogue); the unused pair is None. With HEAD_DIM (rotary), c_desc, k_desc
    # and v_desc are q's, k's and v's dense matrices; otherwise k_desc and v_desc are None.
    start = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    per_group = GROUP_M * num_pid_n
    if TMA_STORE:
        # the epilogue counts tiles on its own, as the tutorial does: a value used both by
        # the next tile's loads and this tile's epilogue keeps the pipeliner from
        # overlapping them
        tile_c = start - NUM_SMS
    for tile in tl.range(start, num_pid_m * num_pid_n, NUM_SMS, flatten=FLATTEN, warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = _grouped_tile(tile, num_pid_m, per_group, GROUP_M)
        if IS_INT and A_GROUP == 0:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        offs_am = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        for ki in range(k_tiles):
            a = a_desc.load([pid_m * BLOCK_M, ki * BLOCK_K])
            b = b_desc.load([pid_n * BLOCK_N, ki * BLOCK_K])
            acc = _scaled_dot(a, b.T, acc, sa_ptr, offs_am, ki, M, IS_INT, BLOCK_K, A_GROUP)
        if TMA_STORE:
            tile_c += NUM_SMS
            pid_mc, pid_nc = _grouped_tile(tile_c, num_pid_m, per_group, GROUP_M)
            _gemm_epilogue_tma(
                acc, pid_mc, pid_nc, c_desc, sa_ptr, sb_ptr, r_desc, qs_ptr, M, N, k_desc, v_desc, cos_ptr, sin_ptr, SEQ,
                N_Q, N_ROT, HAS_RESIDUAL, SWIGLU, BLOCK_M, BLOCK_N, A_GROUP, Q_OUT, QMAX, IS_INT, EXACT, HEAD_DIM,
            )  # fmt: skip
        else:
            _gemm_epilogue(
                acc, pid_m, pid_n, c_ptr, sa_ptr, sb_ptr, r_ptr, qs_ptr, M, N, stride_cm, stride_cn, stride_rm, stride_rn,
                cos_ptr, sin_ptr, SEQ, N_Q, N_ROT, HAS_RESIDUAL, SWIGLU, BLOCK_M, BLOCK_N, A_GROUP, Q_OUT, QMAX, IS_INT,
                EXACT, HEAD_DIM,
            )  # fmt: skip


def _kernel(name: str, on_cpu: bool):
    """The jitted kernel `name`; on CPU tensors only where Triton interprets."""
    if on_cpu and not interpreting():
        raise RuntimeError(
            "the Triton kernels run on CPU tensors only in Triton's interpreter: set TRITON_INTERPRET=1 "
            "before triton and qbench.triton_kernels are first imported"
        )
    return globals()[name]


# --- configs ----------------------------------------------------------------------------


@functools.cache
def _tuned() -> dict:
    return json.loads(CONFIGS_FILE.read_text()) if CONFIGS_FILE.exists() else {}


# The hardware each tuned table was measured on, (compute capability, SMs). A GPU without
# a table of its own uses the table of one with the same capability and SM count: an H200
# is an H100's SM array with more and faster memory, so the same tiles fit in shared memory
# and the same pipelines run (its bandwidth favours them more, not less).
TUNED_HARDWARE = {"NVIDIA H100 80GB HBM3": ((9, 0), 132)}


@functools.cache
def tuned_table(name: str, capability: tuple[int, int], sms: int) -> tuple[str | None, dict]:
    """(the GPU whose tuned table `name` uses, that table): its own, else one of the same
    hardware (TUNED_HARDWARE), else (None, {}) and every shape gets the default."""
    tuned = _tuned()
    if name in tuned:
        return name, tuned[name]
    for other, hardware in TUNED_HARDWARE.items():
        if hardware == (tuple(capability), sms) and other in tuned:
            log.info("no tuned Triton tiles for %s: using those of %s (same capability %d.%d, %d SMs)",
                     name, other, capability[0], capability[1], sms)  # fmt: skip
            return other, tuned[other]
    return None, {}


def gemm_config(
    kind: str, m: int, n: int, k: int, device: torch.device, swiglu: bool = False, group: int | None = None
) -> dict:
    """Tile configuration for an (m, n, k) GEMM of `kind` ('int8' or 'fp8') on `device`:
    the tuned entry for this GPU (or one of the same hardware), kind and (n, k) with the
    nearest power-of-two M, else the default. The SwiGLU-epilogue GEMM has its own
    entries, `NxK/swiglu`; the GEMMs of per-token groups (`group`: the SiLU*mul epilogue
    that quantizes, the GEMM whose A has group scales) `NxK/g128` and `NxK/swiglu/g128`,
    else they take their per-token twin's."""
    if device.type != "cuda":
        return dict(INTERPRET_GEMM)
    props = torch.cuda.get_device_properties(device)
    _, table = tuned_table(torch.cuda.get_device_name(device), (props.major, props.minor), props.multi_processor_count)
    table = table.get(kind, {})
    key = f"{n}x{k}" + ("/swiglu" if swiglu else "")
    entry = (table.get(f"{key}/g{group}") if group else None) or table.get(key)
    if not entry:
        return dict(DEFAULT_GEMM)
    ms = sorted(int(key) for key in entry)
    target = 1 << max(m - 1, 1).bit_length()
    best = min(ms, key=lambda key: abs(key.bit_length() - target.bit_length()))
    return dict(entry[str(best)])


# --- wrappers -----------------------------------------------------------------------------


def _qspec(qdtype: torch.dtype) -> tuple[float, bool]:
    if qdtype == torch.int8:
        return INT8_MAX, True
    return FP8_MAX, False


def _row_launch(x2: torch.Tensor, w, n: int, mode: int, qdtype: torch.dtype, eps: float):
    qmax, is_int = _qspec(qdtype)
    m = x2.shape[0]
    q = torch.empty((m, n), device=x2.device, dtype=qdtype)
    s = torch.empty((m, 1), device=x2.device, dtype=torch.float32)
    block = max(16, 1 << (n - 1).bit_length())
    kernel = _kernel("_quantize_rows_kernel", x2.device.type != "cuda")
    opts = {} if x2.device.type != "cuda" else {"num_warps": 4 if block <= 2048 else 8 if block <= 8192 else 16}
    kernel[(m,)](
        x2, w if w is not None else x2, q, s, m, n, x2.stride(0), q.stride(0), eps,
        QMAX=qmax, MODE=mode, IS_INT=is_int, BLOCK=block, EXACT=x2.device.type != "cuda", **opts,
    )  # fmt: skip
    return q, s


def _rows(x: torch.Tensor) -> torch.Tensor:
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def quantize_rows(x: torch.Tensor, qdtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale) for x viewed as rows: q in `qdtype` (M, K), scale fp32 (M, 1), x ~= q * scale."""
    x2 = _rows(x)
    return _row_launch(x2, None, x2.shape[1], 0, qdtype, 0.0)


def rmsnorm_quant(x: torch.Tensor, weight: torch.Tensor, eps: float, qdtype: torch.dtype):
    """quantize_rows(RMSNorm(x) * weight) in one pass."""
    x2 = _rows(x)
    return _row_launch(x2, weight, x2.shape[1], 1, qdtype, eps)


def silu_mul_quant(gate_up: torch.Tensor, qdtype: torch.dtype):
    """quantize_rows(silu(gate) * up) in one pass, where gate_up = [gate | up] on the last dim."""
    x2 = _rows(gate_up)
    return _row_launch(x2, None, x2.shape[1] // 2, 2, qdtype, 0.0)


def requantize_groups(codes: torch.Tensor, scales: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_rows of codes quantized per row and group of `group` columns (codes (M, K),
    scales (K // group, M), as `w8a8_gemm(..., quantize_out=True)` writes them), in one
    pass over the 8-bit codes: (q (M, K), scale (M, 1)), one scale per row (the largest of
    its groups'), in codes' dtype. The value of largest magnitude keeps its code; the others
    are rounded a second time, which for e4m3 codes whose scales are powers of two
    (`w8a8_gemm(..., pow2_scales=True)`) changes nothing above e4m3's subnormals."""
    m, k = codes.shape
    if k % group or tuple(scales.shape) != (k // group, m) or not codes.is_contiguous():
        raise ValueError(f"requantize_groups: codes {tuple(codes.shape)} (contiguous: {codes.is_contiguous()}) and "
                         f"scales {tuple(scales.shape)} are not a ({m}, {k}) row-major matrix in groups of {group}")  # fmt: skip
    q = torch.empty_like(codes)
    s = torch.empty((m, 1), device=codes.device, dtype=torch.float32)
    qmax, is_int = _qspec(codes.dtype)
    on_gpu = codes.device.type == "cuda"
    rows, block_n = (16, group * max(1, 1024 // group)) if on_gpu else (4, 2 * group)
    kernel = _kernel("_requantize_groups_kernel", not on_gpu)
    kernel[(triton_cdiv(m, rows), triton_cdiv(k, block_n))](
        codes, scales.contiguous(), q, s, m, k, QMAX=qmax, IS_INT=is_int, EXACT=not on_gpu, GROUP=group,
        GROUPS=1 << max(k // group - 1, 0).bit_length(), ROWS=rows, BLOCK_N=block_n,
        **({"num_warps": 4} if on_gpu else {}),
    )  # fmt: skip
    return q, s


def w8a8_gemm(
    a: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.float16, residual: torch.Tensor | None = None,
    config: dict | None = None, swiglu_block: int | None = None, a_group: int | None = None,
    quantize_out: bool = False, rotary: tuple[torch.Tensor, torch.Tensor, int, int] | None = None,
    pow2_scales: bool = False,
):  # fmt: skip
    """(a @ w.T) * a_scale * w_scale (+ residual) in `out_dtype`: a (M, K) and w (N, K) both
    int8 or both fp8 e4m3, a_scale (M, 1) and w_scale (1, N) or (N,) fp32.
    With `swiglu_block` (w and w_scale from `swiglu_interleave(..., swiglu_block)`), the
    result is silu(gate) * up, (M, N // 2), computed in the epilogue; with `quantize_out`
    too, that result leaves quantized in a's dtype, per row and group of `swiglu_block`
    columns: (codes (M, N // 2), scales (N // 2 // swiglu_block, M) fp32), the input a GEMM
    with `a_group=swiglu_block` takes. With `pow2_scales` (e4m3 only), each scale is the power
    of two at or above its group's max |value| / 448, so that `requantize_groups` rescales
    the codes to one scale per row exactly.
    With `a_group`, a is quantized per row and group of `a_group` columns: a_scale is
    (K // a_group, M), and each group's partial sums are scaled in the mainloop.
    With `rotary` = (cos, sin, n_q, n_k), the q|k|v projection finished for attention: cos
    and sin are (T, D) tables (T positions, head size D; row m is position m % T); the
    first n_q + n_k columns (q's heads, then k's), whose weight rows `rotary_interleave`
    reordered, are rotated (_rotary_pairs), and the result is stored as q (M, n_q), k (M,
    n_k) and v (M, N - n_q - n_k), dense, one after the other in the returned (M, N)
    tensor's memory (`split_qkv`)."""
    m, k = a.shape
    n, k2 = w.shape
    if k != k2 or a.dtype != w.dtype:
        raise ValueError(f"w8a8_gemm: a {tuple(a.shape)} {a.dtype} and w {tuple(w.shape)} {w.dtype} do not match")
    if quantize_out and not swiglu_block:
        raise ValueError("w8a8_gemm: quantize_out is the SwiGLU epilogue's (give swiglu_block)")
    if pow2_scales and not (quantize_out and a.dtype == torch.float8_e4m3fn):
        raise ValueError(f"w8a8_gemm: pow2_scales are quantize_out's, for e4m3 codes (got {a.dtype}, quantize_out "
                         f"{quantize_out}): an 8-bit integer grid would lose up to a bit to them")  # fmt: skip
    if a_group and (k % a_group or tuple(a_scale.shape) != (k // a_group, m) or a_group & (a_group - 1) or a_group < 32
                    or k // a_group * m >= 2**31):  # fmt: skip
        raise ValueError(f"w8a8_gemm: a_group {a_group} needs a power of two >= 32 (an 8-bit dot's K step) dividing K = {k}, "
                         f"a_scale of shape {(k // a_group, m)} (got {tuple(a_scale.shape)}) and fewer than 2**31 scales")  # fmt: skip
    if a_group and config is None and out_dtype == torch.float16 and not swiglu_block and rotary is None:
        # on Hopper, the Gluon kernel whose warpgroups scale and multiply at once (gluon_gemm)
        from qbench import gluon_gemm

        why = gluon_gemm.unavailable(a, w, a_group, residual)
        _log_once(f"grouped GEMM: Triton ({why})" if why else f"grouped GEMM: Gluon, tile {gluon_gemm.tile()}")
        if why is None:
            return gluon_gemm.grouped_gemm(a, a_scale, w, w_scale, residual)
    rope, rope_args = {"HEAD_DIM": 0}, (a, a, 1, 0, 0)  # cos_ptr, sin_ptr, SEQ, N_Q, N_ROT: unused without rotary
    if rotary is not None:
        cos, sin, n_q, n_k = rotary
        d = cos.shape[-1]
        if (residual is not None or swiglu_block or cos.dim() != 2 or sin.shape != cos.shape or d < 2 or d % 2
                or n_q % d or n_k % d or n_q + n_k > n):  # fmt: skip
            raise ValueError(f"w8a8_gemm: rotary needs (T, D) cos and sin tables with D even, dividing n_q {n_q} and "
                             f"n_k {n_k} (n_q + n_k <= N = {n}), and no residual or SwiGLU; got {tuple(cos.shape)}")  # fmt: skip
        rope, rope_args = {"HEAD_DIM": d}, (cos.contiguous(), sin.contiguous(), cos.shape[0], n_q, n_q + n_k)
    is_int = a.dtype == torch.int8
    group = a_group or (swiglu_block if quantize_out else None)
    cfg = dict(config or gemm_config("int8" if is_int else "fp8", m, n, k, a.device, bool(swiglu_block), group))
    if swiglu_block and cfg["BLOCK_N"] != 2 * swiglu_block:
        # the tile must hold whole gate/up blocks: a config tuned for another width would
        # change shape (and spill); the default has the right one. A config given here
        # keeps its other keys.
        cfg = dict(cfg if config else DEFAULT_GEMM, BLOCK_N=2 * swiglu_block)
    if a_group and cfg["BLOCK_K"] > a_group:
        cfg["BLOCK_K"] = a_group  # a K step must not span two groups' scales
    c = torch.empty((m, n // 2 if swiglu_block else n), device=a.device, dtype=a.dtype if quantize_out else out_dtype)
    qs = torch.empty((n // 2 // swiglu_block, m), device=a.device, dtype=torch.float32) if quantize_out else c
    r = residual.reshape(m, n) if residual is not None else c
    qmax, _ = _qspec(a.dtype)
    # Q_OUT: 0 no, 1 scales max |value| / QMAX, 2 their powers of two at or above (pow2_scales)
    q_out = 2 if pow2_scales else int(quantize_out)
    quant = {"A_GROUP": a_group or 0, "Q_OUT": q_out, "QMAX": qmax, "EXACT": a.device.type != "cuda"}
    # SWIGLU: 0 none, else the formula of silu (_silu_mul; the interpreter's is the exact one)
    silu = silu_formula() if swiglu_block else 0
    silu = 1 if silu and a.device.type != "cuda" else silu
    bm, bn = cfg.pop("BLOCK_M"), cfg.pop("BLOCK_N")
    tma = cfg.pop("TMA", False) and k % 16 == 0 and a.is_contiguous() and w.is_contiguous()
    ws = bool(cfg.pop("WS", False))  # warp specialization: the TMA kernel's only
    # C and R through TMA too (the TMA kernel's only): TMA wants 16-byte-aligned base
    # addresses and row strides and unit column strides, else the pointer epilogue runs
    tma_store = bool(cfg.pop("TMA_STORE", False)) and bool(tma) and _tma_ok(c) and _tma_ok(r)
    sections = split_qkv(c, *rotary[2:]) if rotary is not None else ()
    if rotary is not None:
        # q, k and v through TMA, one descriptor each, where no half-tile spans two of them
        tma_store = (tma_store and rotary[2] % (bn // 2) == 0 and rotary[3] % (bn // 2) == 0
                     and all(_tma_ok(part) for part in sections))  # fmt: skip
    fit_key = (str(a.device), bm, bn, tuple(sorted(cfg.items())), is_int, residual is not None, bool(swiglu_block),
               quantize_out, a_group, rotary is not None)  # fmt: skip
    tma_store = tma_store and fit_key not in _TMA_STORE_TOO_BIG
    if a.device.type != "cuda":
        cfg.pop("num_warps", None), cfg.pop("num_stages", None)
    if tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        tiles = triton_cdiv(m, bm) * triton_cdiv(n, bn)
        sms = torch.cuda.get_device_properties(a.device).multi_processor_count if a.is_cuda else 4
        kernel = _kernel("_w8a8_gemm_tma_kernel", a.device.type != "cuda")

        def launch(store: bool) -> None:
            # the epilogue's half-tile blocks (_gemm_epilogue_tma); for SWIGLU a half is a whole output tile
            descs = [TensorDescriptor.from_tensor(t, [bm, bn // 2]) if store else None for t in sections or (c,)]
            r_desc = TensorDescriptor.from_tensor(r, [bm, bn // 2]) if store and residual is not None else None
            c_desc, k_desc, v_desc = (descs + [None, None])[:3]
            # Triton 3.6 fails to flatten the tile loop around _store_section's runtime branch
            rotary_store = store and rotary is not None
            kernel[(min(sms, tiles),)](
                TensorDescriptor.from_tensor(a, [bm, cfg["BLOCK_K"]]), TensorDescriptor.from_tensor(w, [bn, cfg["BLOCK_K"]]),
                c_desc, r_desc, k_desc, v_desc,
                c, a_scale.reshape(-1), w_scale.reshape(-1), r, qs, m, n, k, c.stride(0), c.stride(1), r.stride(0), r.stride(1),
                *rope_args, IS_INT=is_int, HAS_RESIDUAL=residual is not None, SWIGLU=silu,
                BLOCK_M=bm, BLOCK_N=bn, NUM_SMS=min(sms, tiles), WARP_SPECIALIZE=ws, FLATTEN=not ws and not rotary_store,
                TMA_STORE=store,
                **quant, **rope, **cfg,
            )  # fmt: skip

        try:
            launch(tma_store)
        except triton.runtime.errors.OutOfResources as exc:
            # the store's staging buffers (a residual's too) come on top of the mainloop's
            # stages: 128x256x128 with 4 stages and a residual needs 256 KiB of the H100's
            # 227 (a tile tuned without a residual, used with one). The pointer epilogue fits.
            # Remembered, so later calls go straight to the pointer epilogue.
            if not tma_store:
                raise
            _TMA_STORE_TOO_BIG.add(fit_key)
            log.info("TMA_STORE off for %dx%dx%d, %s stages%s: %s", bm, bn, cfg["BLOCK_K"], cfg.get("num_stages"),
                     " with a residual" if residual is not None else "", str(exc).splitlines()[0][:120])  # fmt: skip
            launch(False)
        return (c, qs) if quantize_out else c
    grid = (triton_cdiv(m, bm) * triton_cdiv(n, bn),)
    kernel = _kernel("_w8a8_gemm_kernel", a.device.type != "cuda")
    kernel[grid](
        a, w, c, a_scale.reshape(-1), w_scale.reshape(-1), r, qs, m, n, k,
        a.stride(0), a.stride(1), w.stride(0), w.stride(1), c.stride(0), c.stride(1), r.stride(0), r.stride(1), *rope_args,
        IS_INT=is_int, HAS_RESIDUAL=residual is not None, EVEN_K=k % cfg["BLOCK_K"] == 0, SWIGLU=silu,
        BLOCK_M=bm, BLOCK_N=bn, **quant, **rope, **cfg,
    )  # fmt: skip
    return (c, qs) if quantize_out else c


# silu(gate) * up in the SiLU*mul epilogues on the GPU (QBENCH_SILU names one): "exact",
# as torch computes it; "tanh", through the hardware's tanh.approx.f32, one special-function
# op per element instead of two (_silu_mul)
SILU_MODES = {"exact": 1, "tanh": 2}
SILU_DEFAULT = "tanh"


def silu_formula() -> int:
    """The SWIGLU constexpr of the formula QBENCH_SILU names (default SILU_DEFAULT)."""
    name = os.environ.get("QBENCH_SILU", SILU_DEFAULT)
    if name not in SILU_MODES:
        raise ValueError(f"QBENCH_SILU={name!r}: the SiLU*mul epilogue's formula is one of {', '.join(SILU_MODES)}")
    return SILU_MODES[name]


@functools.cache
def _log_once(message: str) -> None:
    log.info(message)


# GEMM launches (device, tile, kind, epilogue) whose TMA-store staging did not fit in
# shared memory: they use the pointer epilogue from their first call on
_TMA_STORE_TOO_BIG: set[tuple] = set()


def split_qkv(c: torch.Tensor, n_q: int, n_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q (M, n_q), k (M, n_k) and v (M, rest): views of the memory of `w8a8_gemm(...,
    rotary=...)`'s (M, N) result, where they lie one after the other."""
    m, n = c.shape
    widths = (n_q, n_k, n - n_q - n_k)
    return tuple(part.view(m, w) for part, w in zip(c.view(-1).split([m * w for w in widths]), widths))


def rotary_interleave(w: torch.Tensor, n_rot: int, head_dim: int) -> torch.Tensor:
    """The q|k|v weight's rows (N, K), or its (N,) scales, with the first n_rot rows'
    heads reordered so each rotary pair (j, j + head_dim/2) is two neighbouring rows:
    the order `w8a8_gemm(..., rotary=...)` rotates in. The other rows (v) keep theirs."""
    half = head_dim // 2
    rot = w[:n_rot].reshape(n_rot // head_dim, 2, half, *w.shape[1:]).transpose(1, 2).reshape(n_rot, *w.shape[1:])
    return torch.cat([rot, w[n_rot:]]).contiguous()


def _tma_ok(t: torch.Tensor) -> bool:
    """Whether a 2-D tensor can be read or written by TMA: contiguous, its base address
    and row stride (in bytes) multiples of 16."""
    return t.is_contiguous() and (t.stride(0) * t.element_size()) % 16 == 0 and t.data_ptr() % 16 == 0


def swiglu_block_for(n_gate: int, device: torch.device) -> int | None:
    """The gate/up block the SwiGLU-epilogue GEMM uses for an intermediate size of
    `n_gate` on `device` (half the tile's BLOCK_N), or None when it does not divide it."""
    block = (INTERPRET_GEMM if device.type != "cuda" else DEFAULT_GEMM)["BLOCK_N"] // 2
    return block if n_gate % block == 0 else None


def swiglu_interleave(w: torch.Tensor, block: int) -> torch.Tensor:
    """Rows [gate; up] of a fused gate|up weight (N, K), or of its (N,) scales, reordered
    into blocks of `block` gate rows, each followed by the matching `block` up rows."""
    n = w.shape[0] // 2
    tail = w.shape[1:]
    pairs = torch.stack([w[:n].reshape(n // block, block, *tail), w[n:].reshape(n // block, block, *tail)], dim=1)
    return pairs.reshape(2 * n, *tail).contiguous()


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)
