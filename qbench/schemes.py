"""How numbers are stored and multiplied: fp16, bf16, and W8A8 in int8 and fp8.

W8A8 here is the SmoothQuant/vLLM recipe without smoothing: weights quantized once,
symmetric, per output channel; activations quantized at run time, symmetric, per
token. int8 multiplies through `torch._int_mm` (int32 accumulate), fp8 (e4m3) through
`torch._scaled_mm` with row-wise scales. Attention and norms stay in 16 bits.

The `eager` implementation writes the quantization as plain torch ops, which is the
naive path: every step is a separate kernel and a round trip through memory. The
`compile` implementation hands the same code to torch.compile, which fuses the
elementwise steps around the GEMM. The `triton` implementation (qbench.triton_layers)
fuses the quantization into the op that produces each GEMM's input and the
dequantization into the GEMM's epilogue; `torchao` is torchao's `quantize_`, what users
reach for. Optional SmoothQuant smoothing (qbench.smoothquant) comes before any of them.
"""

from __future__ import annotations


import torch
from torch import nn

from qbench.specs import DEFAULT_TOLERANCE, IMPLS, SCHEMES, DtypeConfig  # noqa: F401 (re-exported)

INT8_MAX = 127.0
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def activation_dtype(scheme: str, impl: str = "compile") -> torch.dtype:
    """The 16-bit type the model's non-GEMM parts run in. torchao's row-wise fp8 needs bf16."""
    if scheme == "bf16" or (scheme == "w8a8-fp8" and impl == "torchao"):
        return torch.bfloat16
    return torch.float16


def unsupported_reason(scheme: str, device: torch.device, impl: str = "compile") -> str | None:
    """Why this scheme and implementation cannot run here, or None. Never silently
    measure something else."""
    if scheme == "w8a8-fp8":
        if not hasattr(torch, "float8_e4m3fn"):
            return f"torch {torch.__version__} has no float8_e4m3fn"
        if device.type == "cuda":
            major, minor = torch.cuda.get_device_capability(device)
            if (major, minor) < (8, 9):
                name = torch.cuda.get_device_name(device)
                return f"fp8 GEMMs need compute capability >= 8.9; {name} has {major}.{minor}"
    if impl == "triton":
        if device.type != "cuda":
            return "impl triton: qbench's Triton kernels need a CUDA GPU (on the CPU they run only in Triton's interpreter, for tests)"
        from qbench.triton_kernels import triton_available

        reason = triton_available()
        if reason:
            return f"impl triton: {reason}"
        if torch.cuda.get_device_capability(device) < (8, 0):
            return f"impl triton: int8/fp8 tensor-core dots need compute capability >= 8.0; {torch.cuda.get_device_name(device)}"
    if impl == "torchao":
        try:
            import torchao  # noqa: F401
        except Exception as exc:
            return f"impl torchao: torchao is not importable ({exc.__class__.__name__}: {exc}); pip install 'qbench[torchao]'"
    return None


def quantize_rows(x: torch.Tensor, qmax: float, qdtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantization: returns (q, scale) with x ~= q * scale."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-8)
    scale = amax / qmax
    q = (x.float() / scale)
    q = q.round().clamp(-qmax, qmax) if qdtype == torch.int8 else q.clamp(-qmax, qmax)
    return q.to(qdtype), scale


class Int8Linear(nn.Module):
    """y = (round(x / s_x) @ W_q^T) * s_x * s_w, int8 x int8 -> int32 through `torch._int_mm`."""

    def __init__(self, linear: nn.Linear, out_dtype: torch.dtype):
        super().__init__()
        wq, ws = quantize_rows(linear.weight.detach(), INT8_MAX, torch.int8)
        self.register_buffer("weight_q", wq.contiguous())  # (N, K), used as its transpose
        self.register_buffer("weight_scale", ws.view(1, -1).contiguous())  # (1, N) fp32
        self.out_dtype = out_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        xq, xs = quantize_rows(x2, INT8_MAX, torch.int8)
        acc = torch._int_mm(xq, self.weight_q.t())
        y = (acc.float() * xs * self.weight_scale).to(self.out_dtype)
        return y.reshape(*shape[:-1], -1)


class Fp8Linear(nn.Module):
    """e4m3 x e4m3 through `torch._scaled_mm`, row-wise scales applied in the epilogue."""

    def __init__(self, linear: nn.Linear, out_dtype: torch.dtype):
        super().__init__()
        wq, ws = quantize_rows(linear.weight.detach(), FP8_MAX, torch.float8_e4m3fn)
        self.register_buffer("weight_q", wq.contiguous())
        self.register_buffer("weight_scale", ws.view(1, -1).contiguous())
        self.out_dtype = out_dtype
        # cuBLASLt's row-wise fp8 path has only produced bf16 on some torch versions;
        # `mm_dtype` is settled once by `probe_fp8_output` and the result cast back.
        self.mm_dtype = out_dtype
        # fp8 tensor cores accumulate with fewer bits unless cuBLAS promotes partial sums
        # to fp32 (slower); fast accumulation is what torchao, vLLM and TensorRT-LLM run
        self.fast_accum = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        xq, xs = quantize_rows(x2, FP8_MAX, torch.float8_e4m3fn)
        y = torch._scaled_mm(
            xq, self.weight_q.t(), scale_a=xs, scale_b=self.weight_scale, out_dtype=self.mm_dtype,
            use_fast_accum=self.fast_accum,
        )  # fmt: skip
        return y.to(self.out_dtype).reshape(*shape[:-1], -1)


def probe_fp8_output(module: Fp8Linear, device: torch.device) -> None:
    """Pick what this build's `_scaled_mm` allows: fp16 output if it can (else bf16), fast
    accumulation if it can (else precise)."""
    k = module.weight_q.shape[1]
    x = torch.ones(32, k, device=device, dtype=module.out_dtype)
    for mm_dtype, fast in ((module.out_dtype, True), (torch.bfloat16, True), (module.out_dtype, False), (torch.bfloat16, False)):
        module.mm_dtype, module.fast_accum = mm_dtype, fast
        try:
            module(x)
            return
        except RuntimeError:
            continue
    module(x)  # raises the last combination's error


def apply_scheme(
    model: nn.Module, scheme: str, impl: str = "compile", smoothquant: float | None = None,
    calibration: torch.Tensor | None = None, act_group_size: int | None = None, requantize: bool = False,
) -> nn.Module:  # fmt: skip
    """Turn a 16-bit model into the scheme's, in place: cast it, or quantize every linear
    layer the way `impl` does (optionally smoothing first, from `calibration` inputs;
    `act_group_size`, `requantize`: impl triton's, see qbench.triton_layers)."""
    if scheme in ("fp16", "bf16"):
        return model.to(activation_dtype(scheme))
    if smoothquant is not None:
        if calibration is None:
            raise ValueError("smoothquant needs calibration inputs")
        from qbench.smoothquant import smooth_decoder

        smooth_decoder(model, calibration, smoothquant)
    kind = "int8" if scheme == "w8a8-int8" else "fp8"
    if impl == "triton":
        from qbench.triton_layers import apply_triton

        return apply_triton(model, kind, act_group_size, requantize)
    if impl == "torchao":
        return apply_torchao(model, kind)
    cls = {"w8a8-int8": Int8Linear, "w8a8-fp8": Fp8Linear}[scheme]
    out_dtype = activation_dtype(scheme)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, cls(child, out_dtype))
    if scheme == "w8a8-fp8":
        device = next(model.buffers()).device
        for m in model.modules():
            if isinstance(m, Fp8Linear):
                probe_fp8_output(m, device)
    return model


def apply_torchao(model: nn.Module, kind: str) -> nn.Module:
    """torchao's dynamic W8A8 with per-token activation and per-channel weight scales; its
    row-wise fp8 needs the model in bf16."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int8DynamicActivationInt8WeightConfig,
        PerRow,
        quantize_,
    )

    if kind == "int8":
        quantize_(model, Int8DynamicActivationInt8WeightConfig())
    else:
        model = model.to(torch.bfloat16)
        quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    return model


def compile_model(model: nn.Module) -> nn.Module:
    """Regional compilation: each decoder layer is compiled, and the identical layers
    share one compiled graph, so a 16-layer model compiles about as fast as one layer."""
    layers = getattr(model, "layers", None)
    if layers is not None:
        for layer in layers:
            layer.compile(dynamic=False)
        model.norm.compile(dynamic=False)
        return model
    model.compile(dynamic=False)
    return model


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """||y - ref|| / ||ref|| in fp32."""
    y, ref = y.float(), ref.float()
    return float(torch.linalg.vector_norm(y - ref) / torch.linalg.vector_norm(ref).clamp(min=1e-30))
