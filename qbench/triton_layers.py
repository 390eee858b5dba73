"""The `triton` implementation of W8A8: model layers built on qbench.triton_kernels.

A decoder layer becomes five kernels around attention, each reading its input once:

    x ─ rmsnorm_quant ─ gemm(qkv) ─ rotary+attention ─ quantize_rows ─ gemm(o, +x)
      ─ rmsnorm_quant ─ gemm(gate|up, silu*mul) ─ quantize_rows ─ gemm(down, +x)

(With `TritonDecoderLayer.fused_rotary`, the q|k|v GEMM's epilogue applies the rotary
embeddings and stores q, k and v in the dense layout attention reads: no kernel between.
With `TritonDecoderLayer.triton_attention`, rotary and attention are one Triton kernel,
qbench.triton_attention. With `TritonDecoderLayer.cublas_qkv`, cuBLAS computes the fp8
q|k|v projection. All three are off: none was faster on the H100, docs/W8A8.md.)

With `act_group_size` and `requantize` (config keys of the dtype), the down projection's
input is quantized in the SiLU*mul epilogue per group and rescaled to one scale per token
by a pass over the 8-bit codes (`requantize_groups`), not read back in 16 bits.
With `act_group_size` alone, four: the gate|up GEMM's epilogue
quantizes silu(gate) * up itself, per token and group of channels (one tile's width), and
the down GEMM scales each group's partial sums in its mainloop, so the (M, I) activation
is written once, in 8 bits, and no kernel reads it back to quantize it.

(SiLU*mul goes into the gate|up GEMM's epilogue when the intermediate size is a multiple
of the tile's half-width; otherwise `silu_mul_quant` fuses it with the quantization.)

The kernels are registered as torch custom ops (`qbench::...`), so torch.compile treats
them as opaque calls and compiles only the glue between them (rotary, the attention's
layout changes), and CUDA graphs capture them like any kernel.
"""

from __future__ import annotations

import torch
from torch import nn

from qbench import triton_attention as ta
from qbench import triton_kernels as tk

QDTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}


@torch.library.custom_op("qbench::quantize_rows", mutates_args=())
def quantize_rows_op(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    return tk.quantize_rows(x, QDTYPES[kind])


@torch.library.custom_op("qbench::rmsnorm_quant", mutates_args=())
def rmsnorm_quant_op(x: torch.Tensor, weight: torch.Tensor, eps: float, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    return tk.rmsnorm_quant(x, weight, eps, QDTYPES[kind])


@torch.library.custom_op("qbench::silu_mul_quant", mutates_args=())
def silu_mul_quant_op(gate_up: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    return tk.silu_mul_quant(gate_up, QDTYPES[kind])


@torch.library.custom_op("qbench::w8a8_gemm_swiglu", mutates_args=())
def w8a8_gemm_swiglu_op(
    a: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, block: int
) -> torch.Tensor:
    return tk.w8a8_gemm(a, a_scale, w, w_scale, torch.float16, swiglu_block=block)


@torch.library.custom_op("qbench::w8a8_gemm_swiglu_quant", mutates_args=())
def w8a8_gemm_swiglu_quant_op(
    a: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, block: int, pow2: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    return tk.w8a8_gemm(a, a_scale, w, w_scale, swiglu_block=block, quantize_out=True, pow2_scales=pow2)


@torch.library.custom_op("qbench::w8a8_gemm_grouped", mutates_args=())
def w8a8_gemm_grouped_op(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    residual: torch.Tensor | None,
    group: int,
) -> torch.Tensor:
    return tk.w8a8_gemm(a, a_scale, w, w_scale, torch.float16, residual, a_group=group)


@torch.library.custom_op("qbench::w8a8_gemm_rotary", mutates_args=())
def w8a8_gemm_rotary_op(
    a: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor,
    cos: torch.Tensor, sin: torch.Tensor, n_q: int, n_k: int,
) -> torch.Tensor:  # fmt: skip
    return tk.w8a8_gemm(a, a_scale, w, w_scale, torch.float16, rotary=(cos, sin, n_q, n_k))


@torch.library.custom_op("qbench::rotary_attention", mutates_args=())
def rotary_attention_op(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int, seq_len: int
) -> torch.Tensor:
    return ta.rotary_attention(qkv, cos, sin, heads, kv_heads, seq_len)


@torch.library.custom_op("qbench::requantize_groups", mutates_args=())
def requantize_groups_op(codes: torch.Tensor, scales: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    return tk.requantize_groups(codes, scales, group)


@torch.library.custom_op("qbench::w8a8_gemm", mutates_args=())
def w8a8_gemm_op(
    a: torch.Tensor, a_scale: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, residual: torch.Tensor | None
) -> torch.Tensor:
    return tk.w8a8_gemm(a, a_scale, w, w_scale, torch.float16, residual)


def _rows_fake(x: torch.Tensor, n: int, kind: str):
    m = x.numel() // x.shape[-1]
    return x.new_empty((m, n), dtype=QDTYPES[kind]), x.new_empty((m, 1), dtype=torch.float32)


@quantize_rows_op.register_fake
def _(x, kind):
    return _rows_fake(x, x.shape[-1], kind)


@rmsnorm_quant_op.register_fake
def _(x, weight, eps, kind):
    return _rows_fake(x, x.shape[-1], kind)


@silu_mul_quant_op.register_fake
def _(gate_up, kind):
    return _rows_fake(gate_up, gate_up.shape[-1] // 2, kind)


@w8a8_gemm_op.register_fake
def _(a, a_scale, w, w_scale, residual):
    return a.new_empty((a.shape[0], w.shape[0]), dtype=torch.float16)


@w8a8_gemm_swiglu_op.register_fake
def _(a, a_scale, w, w_scale, block):
    return a.new_empty((a.shape[0], w.shape[0] // 2), dtype=torch.float16)


@w8a8_gemm_swiglu_quant_op.register_fake
def _(a, a_scale, w, w_scale, block, pow2=False):
    m, n = a.shape[0], w.shape[0] // 2
    return a.new_empty((m, n)), a.new_empty((n // block, m), dtype=torch.float32)


@w8a8_gemm_rotary_op.register_fake
def _(a, a_scale, w, w_scale, cos, sin, n_q, n_k):
    return a.new_empty((a.shape[0], w.shape[0]), dtype=torch.float16)


@rotary_attention_op.register_fake
def _(qkv, cos, sin, heads, kv_heads, seq_len):
    return qkv.new_empty((qkv.shape[0], qkv.shape[1] // (heads + 2 * kv_heads) * heads))


@requantize_groups_op.register_fake
def _(codes, scales, group):
    return codes.new_empty(codes.shape), codes.new_empty((codes.shape[0], 1), dtype=torch.float32)


@w8a8_gemm_grouped_op.register_fake
def _(a, a_scale, w, w_scale, residual, group):
    return a.new_empty((a.shape[0], w.shape[0]), dtype=torch.float16)


class QuantWeight(nn.Module):
    """A linear layer's weight, quantized per output channel: (N, K) values, (1, N) scales."""

    def __init__(self, linear: nn.Linear, kind: str):
        super().__init__()
        from qbench.schemes import FP8_MAX, INT8_MAX, quantize_rows

        wq, ws = quantize_rows(linear.weight.detach(), INT8_MAX if kind == "int8" else FP8_MAX, QDTYPES[kind])
        self.register_buffer("weight_q", wq.contiguous())
        self.register_buffer("weight_scale", ws.view(1, -1).contiguous())

    def forward(
        self, xq: torch.Tensor, xs: torch.Tensor, residual: torch.Tensor | None = None, group: int | None = None
    ) -> torch.Tensor:
        """xs: (M, 1) per-token scales, or with `group` (K // group, M), per token and group."""
        if group:
            return w8a8_gemm_grouped_op(xq, xs, self.weight_q, self.weight_scale, residual, group)
        return w8a8_gemm_op(xq, xs, self.weight_q, self.weight_scale, residual)


class SwiGLUWeight(QuantWeight):
    """The fused gate|up weight, its rows interleaved in blocks so that one GEMM tile holds
    matching gate and up columns and its epilogue writes silu(gate) * up: the (M, 2I)
    gate|up activation never reaches memory."""

    def __init__(self, linear: nn.Linear, kind: str, block: int):
        super().__init__(linear, kind)
        self.block = block
        self.weight_q = tk.swiglu_interleave(self.weight_q, block)
        self.weight_scale = tk.swiglu_interleave(self.weight_scale.view(-1), block).view(1, -1)

    def forward(self, xq: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        return w8a8_gemm_swiglu_op(xq, xs, self.weight_q, self.weight_scale, self.block)

    def quantized(self, xq: torch.Tensor, xs: torch.Tensor, pow2: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """silu(gate) * up quantized per token and per group of `block` channels:
        (codes (M, I), scales (I // block, M)); with pow2, scales that are powers of two."""
        return w8a8_gemm_swiglu_quant_op(xq, xs, self.weight_q, self.weight_scale, self.block, pow2)


class RotaryQKVWeight(QuantWeight):
    """The fused q|k|v weight, each q and k head's rows in interleaved rotary pairs
    (`rotary_interleave`), so the GEMM's epilogue applies the rotary embeddings and stores
    q, k and v each dense: the layout attention reads, with no kernel in between. The
    pairs' order is the same in q and k, so q.k, and attention, are unchanged."""

    def __init__(self, linear: nn.Linear, kind: str, heads: int, kv_heads: int, head_dim: int):
        super().__init__(linear, kind)
        self.n_q, self.n_k = heads * head_dim, kv_heads * head_dim
        self.weight_q = tk.rotary_interleave(self.weight_q, self.n_q + self.n_k, head_dim)
        self.weight_scale = tk.rotary_interleave(self.weight_scale.view(-1), self.n_q + self.n_k, head_dim).view(1, -1)

    def rotated(self, xq: torch.Tensor, xs: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """(q, k, v), each (M, its width): q and k with their rotary embeddings."""
        qkv = w8a8_gemm_rotary_op(xq, xs, self.weight_q, self.weight_scale, cos, sin, self.n_q, self.n_k)
        return tk.split_qkv(qkv, self.n_q, self.n_k)


class TritonLinear(nn.Module):
    """A W8A8 linear layer on its own: quantize the input rows, then the fused GEMM."""

    def __init__(self, linear: nn.Linear, kind: str):
        super().__init__()
        self.kind = kind
        self.weight = QuantWeight(linear, kind)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, xs = quantize_rows_op(x, self.kind)
        return self.weight(xq, xs).view(*x.shape[:-1], -1)


class TritonDecoderLayer(nn.Module):
    """A `qbench.workloads.DecoderLayer` with every GEMM in W8A8 and the quantization
    fused into the op that produces each GEMM's input. Attention is the original's (or,
    with `fused_rotary`, SDPA on the q|k|v GEMM's rotated output; with `triton_attention`,
    qbench.triton_attention's kernel)."""

    # True: rotary embeddings in the q|k|v GEMM's epilogue (`attend`), read when a layer
    # is built. Off: all four designs timed on the H100 were slower, this one (q, k and v
    # each through a TMA descriptor) by 3% (docs/W8A8.md). scripts/bench_schemes.py turns
    # it on for a variant with the suffix f.
    fused_rotary = False
    # True: rotary embeddings and attention in one Triton kernel that reads the q|k|v GEMM's
    # output as it is (qbench.triton_attention), where the shape allows (head size a power
    # of two >= 16). Off: within noise of torch's rotary + cuDNN in the H100's forward
    # (faster alone at batch 128). scripts/bench_schemes.py sets it for a variant with the suffix a.
    triton_attention = False
    # True (fp8, on a GPU): the q|k|v projection by cuBLAS (torch._scaled_mm, row-wise scales,
    # fast accumulation): the projection has no epilogue of ours to lose. Off: within noise
    # of our GEMM in the H100's forward. scripts/bench_schemes.py sets it for a variant with the suffix c.
    cublas_qkv = False

    def __init__(
        self, layer: nn.Module, kind: str, act_group_size: int | None = None, requantize: bool = False
    ) -> None:
        super().__init__()
        self.kind = kind
        self.layer = layer  # for attend(); its linear layers are dropped below
        self.group = act_group_size
        if requantize and not act_group_size:
            raise ValueError("requantize rescales the SiLU*mul epilogue's groups: it needs act_group_size")
        self.requantize = requantize
        self.input_norm_weight, self.input_eps = layer.input_norm.weight, layer.input_norm.eps
        self.post_norm_weight, self.post_eps = layer.post_norm.weight, layer.post_norm.eps
        self.rotary = self.fused_rotary and layer.head_dim % 2 == 0
        self.own_attention = self.triton_attention and not self.rotary
        self.qkv_cublas = self.cublas_qkv and kind == "fp8" and not self.rotary
        if self.rotary:
            self.qkv = RotaryQKVWeight(layer.qkv, kind, layer.heads, layer.kv_heads, layer.head_dim)
        else:
            self.qkv = QuantWeight(layer.qkv, kind)
        self.o = QuantWeight(layer.o, kind)
        width = layer.gate_up.out_features // 2
        if act_group_size and width % act_group_size:
            raise ValueError(f"act_group_size {act_group_size} does not divide the intermediate size {width}")
        # with groups, the SwiGLU tile's half-width is the group: one tile quantizes one group
        block = act_group_size or tk.swiglu_block_for(width, layer.gate_up.weight.device)
        # SiLU*mul in the gate|up GEMM's epilogue where the block divides the width; else its own kernel
        self.gate_up = SwiGLUWeight(layer.gate_up, kind, block) if block else QuantWeight(layer.gate_up, kind)
        self.down = QuantWeight(layer.down, kind)
        for name in ("qkv", "o", "gate_up", "down"):
            delattr(layer, name)

    def attend(self, xq: torch.Tensor, xs: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, b: int, t: int):
        """Attention from the quantized normed input: with `rotary`, on the q, k and v that
        the q|k|v GEMM's epilogue finished (RotaryQKVWeight); otherwise the original
        layer's path (rotary embeddings as torch ops)."""
        heads, kv_heads = self.layer.heads, self.layer.kv_heads
        if self.own_attention and ta.attention_supported(t, heads, kv_heads, self.layer.head_dim) is None:
            qkv = self.project_qkv(xq, xs)
            return rotary_attention_op(qkv, cos, sin, heads, kv_heads, t).view(b, t, -1)
        if not self.rotary:
            return self.layer.attend(self.project_qkv(xq, xs).view(b, t, -1), cos, sin)
        return self.layer.attention(*(z.view(b, t, -1) for z in self.qkv.rotated(xq, xs, cos, sin)))

    def project_qkv(self, xq: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """The q|k|v projection (M, q+k+v) in fp16: by our GEMM, or with `cublas_qkv` by cuBLAS."""
        if self.qkv_cublas and xq.is_cuda:
            w = self.qkv
            return torch._scaled_mm(xq, w.weight_q.t(), scale_a=xs, scale_b=w.weight_scale, out_dtype=torch.float16,
                                    use_fast_accum=True)  # fmt: skip
        return self.qkv(xq, xs)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        xq, xs = rmsnorm_quant_op(x, self.input_norm_weight, self.input_eps, self.kind)
        attn = self.attend(xq, xs, cos, sin, b, t)
        aq, as_ = quantize_rows_op(attn, self.kind)
        x = self.o(aq, as_, x.reshape(b * t, h))
        hq, hs = rmsnorm_quant_op(x, self.post_norm_weight, self.post_eps, self.kind)
        if self.group:
            # the groups to be rescaled get power-of-two scales where that is exact (e4m3)
            mq, ms = self.gate_up.quantized(hq, hs, self.requantize and self.kind == "fp8")
            if not self.requantize:
                return self.down(mq, ms, x, self.group).view(b, t, h)
            mq, ms = requantize_groups_op(mq, ms, self.group)
        elif isinstance(self.gate_up, SwiGLUWeight):
            mq, ms = quantize_rows_op(self.gate_up(hq, hs), self.kind)
        else:
            mq, ms = silu_mul_quant_op(self.gate_up(hq, hs), self.kind)
        return self.down(mq, ms, x).view(b, t, h)


def apply_triton(model: nn.Module, kind: str, act_group_size: int | None = None, requantize: bool = False) -> nn.Module:
    """Swap the model's layers for the Triton W8A8 ones, in place (`act_group_size`,
    `requantize`: TritonDecoderLayer's)."""
    from qbench.workloads import DecoderLayer

    layers = getattr(model, "layers", None)
    if layers is not None:
        for i, layer in enumerate(layers):
            if isinstance(layer, DecoderLayer):
                layers[i] = TritonDecoderLayer(layer, kind, act_group_size, requantize)
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, TritonLinear(child, kind))
    return model
