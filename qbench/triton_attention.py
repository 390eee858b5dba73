"""Causal grouped-query attention with the rotary embeddings, in one Triton kernel that
reads the q|k|v projection as the GEMM wrote it.

The torch path runs three kernels per layer: q's rotary (which also lays q out for
cuDNN), k's, and cuDNN's attention. Here one program computes one block of query rows of
one head: it loads its q rows and, block by block up to the diagonal (causal: the blocks
above it are skipped), the head's k and v, straight from the (M, q+k+v) projection; it
rotates q and k in registers, keeps a running softmax (FlashAttention's), and writes its
output where the o projection reads it, (M, heads * head_dim). The projection is read
once and the output written once; the rotated q and k never reach memory.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch

from qbench.triton_kernels import _jit, interpreting, tl

# One program: BLOCK_M query rows of one head of one sequence, keys in blocks of BLOCK_N.
ATTENTION_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
# The tiles scripts/bench_attention.py --write measured fastest, per GPU name and head size.
CONFIGS_FILE = Path(__file__).with_name("attention_configs.json")


@functools.cache
def _tuned() -> dict:
    return json.loads(CONFIGS_FILE.read_text()) if CONFIGS_FILE.exists() else {}


def attention_config(device: torch.device, head_dim: int) -> dict:
    """The tiles for this GPU and head size: the measured fastest, else ATTENTION_CONFIG."""
    if device.type == "cuda":
        tuned = _tuned().get(torch.cuda.get_device_name(device), {}).get(str(head_dim))
        if tuned:
            return dict(tuned)
    return dict(ATTENTION_CONFIG)


@_jit
def _rotated(ptr, rows, d, cos_ptr, sin_ptr, pos, mask, HALF: tl.constexpr, ROTARY: tl.constexpr):
    # rows x head_dim of q or k at ptr, rotated: x * cos + rotate_half(x) * sin, where
    # rotate_half(x) = [-x2, x1] is x read at columns (d + HALF) % head_dim, the first
    # half negated (qbench.workloads.apply_rotary); in fp32, rounded once by the caller
    x = tl.load(ptr + rows[:, None] + d[None, :], mask=mask[:, None], other=0.0).to(tl.float32)
    if ROTARY:
        swap = (d + HALF) % (2 * HALF)
        xs = tl.load(ptr + rows[:, None] + swap[None, :], mask=mask[:, None], other=0.0).to(tl.float32)
        xs = tl.where(d[None, :] < HALF, -xs, xs)
        table = pos.to(tl.int64)[:, None] * (2 * HALF) + d[None, :]
        cos = tl.load(cos_ptr + table, mask=mask[:, None], other=0.0).to(tl.float32)
        sin = tl.load(sin_ptr + table, mask=mask[:, None], other=0.0).to(tl.float32)
        x = x * cos + xs * sin
    return x


@_jit
def _rotary_attention_kernel(
    qkv_ptr, o_ptr, cos_ptr, sin_ptr, T, stride_qkv, stride_o, qk_scale,
    HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    ROTARY: tl.constexpr,
):  # fmt: skip
    # Program order: the query blocks, then the heads that share a k/v head, then the
    # k/v heads, then the sequences, so programs that run together read the same k and v.
    pid = tl.program_id(0)
    n_mb = tl.cdiv(T, BLOCK_M)
    mb = pid % n_mb
    h = (pid // n_mb) % HEADS  # heads h of one group are neighbours: h // group is their k/v head
    b = pid // (n_mb * HEADS)
    kvh = h // (HEADS // KV_HEADS)
    d = tl.arange(0, HEAD_DIM)
    offs_m = mb * BLOCK_M + tl.arange(0, BLOCK_M)  # query positions
    mask_m = offs_m < T
    rows_m = (b * T + offs_m).to(tl.int64) * stride_qkv
    HALF: tl.constexpr = HEAD_DIM // 2
    # q rounded to the projection's 16 bits after rotation, as the torch path stores it
    q = _rotated(qkv_ptr + h * HEAD_DIM, rows_m, d, cos_ptr, sin_ptr, offs_m, mask_m, HALF, ROTARY).to(
        o_ptr.dtype.element_ty
    )
    k_ptr = qkv_ptr + (HEADS + kvh) * HEAD_DIM
    v_ptr = qkv_ptr + (HEADS + KV_HEADS + kvh) * HEAD_DIM
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)  # running max, log2 units
    l_i = tl.zeros((BLOCK_M,), tl.float32)  # running sum of exp2
    o = tl.zeros((BLOCK_M, HEAD_DIM), tl.float32)
    # key blocks up to the last query of this block: the causal mask leaves the rest out
    for start in range(0, tl.minimum((mb + 1) * BLOCK_M, T), BLOCK_N):
        offs_t = start + tl.arange(0, BLOCK_N)  # key positions
        mask_t = offs_t < T
        rows_t = (b * T + offs_t).to(tl.int64) * stride_qkv
        k = _rotated(k_ptr, rows_t, d, cos_ptr, sin_ptr, offs_t, mask_t, HALF, ROTARY).to(q.dtype)
        v = tl.load(v_ptr + rows_t[:, None] + d[None, :], mask=mask_t[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale  # log2 units: exp2 below
        s = tl.where((offs_t[None, :] <= offs_m[:, None]) & mask_t[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))  # finite: key 0 is in every row's first block
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        o = o * alpha[:, None] + tl.dot(p.to(q.dtype), v)
        m_i = m_new
    o = o / l_i[:, None]
    out = o_ptr + (b * T + offs_m).to(tl.int64)[:, None] * stride_o + h * HEAD_DIM + d[None, :]
    tl.store(out, o.to(o_ptr.dtype.element_ty), mask=mask_m[:, None])


def attention_supported(seq_len: int, heads: int, kv_heads: int, head_dim: int) -> str | None:
    """Why `rotary_attention` cannot take this shape, or None."""
    if head_dim < 16 or head_dim & (head_dim - 1):
        return f"head size {head_dim} (a power of two >= 16: the tensor cores' dot)"
    if heads % kv_heads:
        return f"{heads} heads over {kv_heads} k/v heads"
    return None


def rotary_attention(
    qkv: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None, heads: int, kv_heads: int, seq_len: int,
    config: dict | None = None,
) -> torch.Tensor:  # fmt: skip
    """Causal grouped-query attention of the q|k|v projection qkv (batch * seq_len, (heads +
    2 * kv_heads) * head_dim), q and k rotated by the (seq_len, head_dim) tables cos and
    sin first (none: no rotary): (batch * seq_len, heads * head_dim), each token's heads
    side by side: `DecoderLayer.attend`'s result, as the o projection reads it."""
    m, n = qkv.shape
    head_dim = n // (heads + 2 * kv_heads)
    why = attention_supported(seq_len, heads, kv_heads, head_dim)
    if why or m % seq_len or n != (heads + 2 * kv_heads) * head_dim or qkv.stride(1) != 1:
        raise ValueError(f"rotary_attention: q|k|v {tuple(qkv.shape)} for {heads} heads, {kv_heads} k/v heads and "
                         f"{seq_len} tokens: " + (why or "not (batch * tokens, (heads + 2 * kv heads) * head size) rows"))  # fmt: skip
    rotary = cos is not None
    if rotary and (tuple(cos.shape) != (seq_len, head_dim) or sin.shape != cos.shape):
        raise ValueError(
            f"rotary_attention: cos and sin must be ({seq_len}, {head_dim}) tables, got {tuple(cos.shape)}"
        )
    cfg = dict(config or attention_config(qkv.device, head_dim))
    block_t = max(16, 1 << (seq_len - 1).bit_length())
    bm = min(cfg.pop("BLOCK_M"), block_t)
    cfg["BLOCK_N"] = min(cfg["BLOCK_N"], block_t)
    if not qkv.is_cuda:
        cfg.pop("num_warps", None), cfg.pop("num_stages", None)
    o = torch.empty((m, heads * head_dim), device=qkv.device, dtype=qkv.dtype)
    cos = cos.contiguous() if rotary else qkv
    sin = sin.contiguous() if rotary else qkv
    grid = (m // seq_len * heads * -(-seq_len // bm),)
    if not qkv.is_cuda and not interpreting():
        raise RuntimeError("rotary_attention runs on CPU tensors only in Triton's interpreter (TRITON_INTERPRET=1)")
    _rotary_attention_kernel[grid](
        qkv, o, cos, sin, seq_len, qkv.stride(0), o.stride(0), math.log2(math.e) / math.sqrt(head_dim),
        HEADS=heads, KV_HEADS=kv_heads, HEAD_DIM=head_dim, BLOCK_M=bm, ROTARY=rotary, **cfg,
    )  # fmt: skip
    return o
