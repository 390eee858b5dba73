"""Models that are timed, built from shapes alone with seeded random weights.

Nothing is downloaded: a workload is its shapes. `llama` is a decoder stack
(RMSNorm, grouped-query attention through SDPA, rotary embeddings, SwiGLU MLP)
timed on a prefill of `seq_len` tokens; `gemm` is one linear layer with
M = batch x tokens. Every matrix multiply lives in an `nn.Linear`, so a scheme can
swap them for quantized ones without touching the model code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qbench.specs import MODELS, WorkloadConfig  # noqa: F401 (re-exported)

def _init_linear(layer: nn.Linear, gen: torch.Generator) -> None:
    # Scaled so activations keep unit-ish magnitude through a deep residual stack.
    with torch.no_grad():
        layer.weight.normal_(0.0, 1.0 / math.sqrt(layer.in_features), generator=gen)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype) * self.weight


def rotary_tables(seq_len: int, head_dim: int, theta: float, device, dtype):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv)
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class DecoderLayer(nn.Module):
    """One Llama block. q/k/v and gate/up are fused into one GEMM each, as serving
    engines do, so one activation quantization feeds each of them."""

    def __init__(self, cfg: WorkloadConfig):
        super().__init__()
        self.heads, self.kv_heads = cfg.heads, cfg.kv_heads
        self.head_dim = cfg.hidden // cfg.heads
        kv = self.kv_heads * self.head_dim
        self.input_norm = RMSNorm(cfg.hidden)
        self.qkv = nn.Linear(cfg.hidden, cfg.hidden + 2 * kv, bias=False)
        self.o = nn.Linear(cfg.hidden, cfg.hidden, bias=False)
        self.post_norm = RMSNorm(cfg.hidden)
        self.gate_up = nn.Linear(cfg.hidden, 2 * cfg.intermediate, bias=False)
        self.down = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        attn = self.attend(self.qkv(self.input_norm(x)), cos, sin)
        x = x + self.o(attn)
        gate, up = self.gate_up(self.post_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)

    def attend(self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotary embeddings and causal grouped-query attention, from the fused q|k|v
        projection (batch, tokens, q+k+v) to the heads' output (batch, tokens, hidden)."""
        h, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        q, k, v = qkv.split([h, kv, kv], dim=-1)
        return self.attention(q, k, v, cos, sin)

    def attention(self, q, k, v, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None) -> torch.Tensor:
        """Causal grouped-query attention of q, k and v, each (batch, tokens, its heads *
        head_dim), rotary embeddings applied to q and k first where cos and sin are given,
        to the heads' output (batch, tokens, hidden)."""
        b, t, _ = q.shape
        q = q.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        if cos is not None:
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return attn.transpose(1, 2).reshape(b, t, -1)


class LlamaDecoder(nn.Module):
    """Decoder stack without embedding or LM head: input and output are hidden states."""

    def __init__(self, cfg: WorkloadConfig):
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.hidden)
        self._rope: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        rope = self._rope
        if rope is None or rope[0].shape[0] != t or rope[0].device != x.device or rope[0].dtype != x.dtype:
            self._rope = rotary_tables(t, self.cfg.hidden // self.cfg.heads, self.cfg.rope_theta, x.device, x.dtype)
        cos, sin = self._rope
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class Gemm(nn.Module):
    def __init__(self, cfg: WorkloadConfig):
        super().__init__()
        self.linear = nn.Linear(cfg.in_features, cfg.out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def build_model(cfg: WorkloadConfig, device: torch.device | str, dtype: torch.dtype, seed: int) -> nn.Module:
    """The workload with seeded random weights, in `dtype`, on `device`, in eval mode."""
    device = torch.device(device)
    with torch.device("meta"):
        model = LlamaDecoder(cfg) if cfg.model == "llama" else Gemm(cfg)
    # Allocated straight in `dtype` on the device: no fp32 copy of a billion weights. By
    # torch.empty, not Module.to_empty: its empty_like of meta tensors goes through
    # torch._refs, whose first use imports sympy and the meta registrations (0.6 s a
    # process on a 2-core VM).
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            module.register_parameter(name, nn.Parameter(torch.empty(p.shape, dtype=dtype, device=device)))
    gen = torch.Generator(device=device).manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            _init_linear(module, gen)
        elif isinstance(module, RMSNorm):
            with torch.no_grad():
                module.weight.fill_(1.0)
    return model.to(dtype).eval().requires_grad_(False)


def make_input(cfg: WorkloadConfig, batch: int, device, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Random hidden states for one prefill: (batch, seq_len, hidden), or (M, K) for gemm."""
    gen = torch.Generator(device=device).manual_seed(seed + 1_000_003)
    if cfg.model == "gemm":
        shape = (cfg.tokens(batch), cfg.in_features)
    else:
        shape = (batch, cfg.seq_len, cfg.hidden)
    return torch.randn(shape, generator=gen, device=device, dtype=torch.float32).to(dtype)


def flops_per_forward(cfg: WorkloadConfig, batch: int) -> float:
    """Matrix-multiply FLOPs of one forward (2 per multiply-add), attention included."""
    m = cfg.tokens(batch)
    if cfg.model == "gemm":
        return 2.0 * m * cfg.in_features * cfg.out_features
    hd = cfg.hidden // cfg.heads
    kv = cfg.kv_heads * hd
    linear = cfg.hidden * (cfg.hidden + 2 * kv) + cfg.hidden * cfg.hidden + cfg.hidden * 3 * cfg.intermediate
    # causal attention: QK^T and PV over half the square on average
    attn = 2 * batch * cfg.heads * cfg.seq_len * cfg.seq_len * hd
    return cfg.layers * (2.0 * m * linear + attn)
