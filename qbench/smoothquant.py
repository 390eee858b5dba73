"""SmoothQuant-style smoothing (Xiao et al., 2023): move activation outliers into the weights.

For a linear layer fed by an RMSNorm, per input channel j,

    s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha)

and X / s (folded into the norm's weight) times s * W (folded into the weight) is the same
product, with activations that quantize per token with less error. Folding happens once,
before quantization, so it costs nothing at run time. max|X_j| comes from a calibration
batch (not the timed input). The layers a norm precedes are q|k|v and gate|up; o and down
are left alone, as in the published recipe.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def smooth_decoder(model: nn.Module, calibration: torch.Tensor, alpha: float) -> int:
    """Smooth a `qbench.workloads.LlamaDecoder` in place from one forward of
    `calibration`; returns the number of linear layers smoothed (0 for other models)."""
    from qbench.workloads import DecoderLayer

    pairs = [
        (norm, linear)
        for layer in getattr(model, "layers", [])
        if isinstance(layer, DecoderLayer)
        for norm, linear in ((layer.input_norm, layer.qkv), (layer.post_norm, layer.gate_up))
    ]
    if not pairs:
        return 0
    amax: dict[nn.Module, torch.Tensor] = {}

    def record(module, args):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).abs().amax(0).float()
        amax[module] = torch.maximum(amax[module], x) if module in amax else x

    hooks = [linear.register_forward_pre_hook(record) for _, linear in pairs]
    try:
        model(calibration)
    finally:
        for h in hooks:
            h.remove()
    for norm, linear in pairs:
        w_max = linear.weight.abs().amax(0).float().clamp(min=1e-5)
        s = (amax[linear].clamp(min=1e-5).pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)
        norm.weight.copy_((norm.weight.float() / s).to(norm.weight.dtype))
        linear.weight.copy_((linear.weight.float() * s).to(linear.weight.dtype))
    return len(pairs)
