"""Which part of a forward pass a profiler event belongs to, by name.

The parts (qbench.breakdown.PARTS): `gemm` (matrix multiplies), `quantization` (quantizing
activations and dequantizing results), `attention`, `elementwise` (norms, activations,
rotary embeddings, residual adds, casts) and `other` (copies and fills the runtime does,
view and allocation bookkeeping, host time between ops).

An event is a GPU kernel (named by its library or by Inductor) or, on the CPU, an aten op
or a `record_function` range. `part_of_name` classifies a name with RULES, the first rule
that matches wins. The order is the point:

1. Wrappers and bookkeeping are `other`: Inductor's `## Call CompiledFxGraph <hash> ##`
   ranges (a hash could spell anything), runtime copies and fills, and aten ops that only
   make views or allocate.
2. Attention before GEMM: attention kernels carry GEMM words (`fmha_cutlassF_...`,
   `flash_fwd_kernel<..., cutlass::half_t, ...>`); softmax only occurs in attention here.
3. Inductor's GEMM templates (`triton_tem_fused_mm_...`) are GEMMs, whatever epilogue
   (a dequantizing `mul`, a cast) they list.
4. Inductor's pointwise and reduction kernels (`triton_poi_` / `triton_red_` /
   `triton_per_`, `cpp_fused_`) that list a quantization op (abs, amax, round, clamp) are
   quantization, even when they also list a norm, an activation or a matrix multiply:
   such a kernel is a loop over the elements, so the quantization is its work, and a
   matmul name in it is a small matmul Inductor wrote as a loop or the GEMM whose input
   it quantizes (`..._abs_amax_clamp_div_opaque_gemm_...`). A fused norm or activation
   with quantization (`triton_red_fused__to_copy_abs_amax_mul_silu_...`, qbench's Triton
   `rmsnorm_quant` / `silu_mul_quant`) is counted as quantization: it is the work the
   16-bit path does not do.
5. GEMM libraries and ops: cuBLAS (`sm90_xmma_gemm_...`, `nvjet_...`, `cublasLt::...`),
   CUTLASS, `aten::mm` / `_int_mm` / `_scaled_mm` / `linear` / `matmul`, and qbench's own
   Triton GEMMs (`w8a8_gemm`, `..._gemm_kernel`).
6. Quantization by other names: anything with quant in it, and the ops and eager CUDA
   kernels of per-token quantization: abs (`AbsFunctor`), amax (`MaxNanFunctor`, `max_values`),
   round, clamp, div. In qbench's workloads these occur only in quantization (RMSNorm
   multiplies by rsqrt, SDPA scales inside its kernel); a model that divides elsewhere
   would need a narrower rule.
7. A matmul Inductor wrote as a pointwise or reduction loop (`triton_poi_fused_mm_...`).
8. Elementwise and norms: Inductor's other pointwise and reduction kernels, eager
   elementwise, reduction and cat kernels, and every aten op not named above (add, mul,
   pow, mean, rsqrt, silu, cat, the casts `to` / `copy_` ...).
9. Everything else is `other`.

Names alone cannot see everything: an eager cast to int8 is a plain copy kernel, and the
dequantizing multiply after a GEMM is a plain multiply. `part_of` therefore also looks at
the ranges an event ran in (innermost first), which qbench.profile_parts collects: inside
`aten::scaled_dot_product_attention` everything is attention (the math backend's bmm and
softmax too); inside a quantized layer (the range QUANTIZED_LAYER that
qbench.profile_parts opens around every layer holding 8-bit weights, in eager runs)
everything but the GEMM is quantization; inside `aten::linear` / `aten::matmul` everything
is GEMM (their transposes and reshapes). Compiled code runs no such ranges; there the
kernel names carry the information, and Inductor names its kernels after the ops they fuse.

This module imports neither torch nor pandas.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Sequence

# The range qbench.profile_parts opens around each quantized layer's forward.
QUANTIZED_LAYER = "qbench::quantized_layer"
# The range around each profiled forward; its own time is host time between ops.
FORWARD = "qbench::forward"


class Rule(NamedTuple):
    part: str
    pattern: re.Pattern
    why: str


def _rule(part: str, pattern: str, why: str) -> Rule:
    return Rule(part, re.compile(pattern, re.IGNORECASE), why)


# Inductor's pointwise/reduction kernels: triton_poi_fused_..., triton_red_..., triton_per_...; cpp_fused_... on the CPU
_LOOP = r"^(?:triton_(?:poi|red|per)_|cpp_)"
# a word in a name: not inside a longer word (names separate words by _ : < , ( and spaces)
_W = r"(?:^|[^a-z0-9])"
_E = r"(?:[^a-z0-9]|$)"
_VIEWS = (
    "view|reshape|_reshape_alias|_unsafe_view|t|transpose|permute|expand|expand_as|as_strided|split|"
    "split_with_sizes|chunk|unbind|slice|select|narrow|squeeze|unsqueeze|flatten|unflatten|alias|detach|"
    "contiguous|empty|empty_like|empty_strided|new_empty|resize_|lift_fresh|result_type|item|_local_scalar_dense"
)

RULES: list[Rule] = [
    _rule("other", r"^## |^torch-compiled region|^compiledfunction|^memcpy|^memset|^qbench::forward$",
          "wrappers around compiled code, runtime copies and fills, host time between ops"),
    _rule("other", rf"^aten::(?:{_VIEWS})$", "views and allocations: bookkeeping, no arithmetic"),
    _rule("attention", rf"flash|fmha|sdpa|scaled_dot_product|attention|softmax|{_W}mha{_E}",
          "attention kernels and ops (before GEMM: their names carry cutlass)"),
    _rule("gemm", r"^triton_tem_", "Inductor GEMM templates, whatever epilogue they fused"),
    _rule("quantization", _LOOP + rf".*_(?:abs|amax|round|clamp|clamp_min|clamp_max|quant\w*)(?=_)",
          "Inductor loops that quantize, fused with a norm, an activation or a matmul's name or not"),
    _rule("gemm", rf"gemm|gemv|nvjet|cutlass|xmma|cublas|matmul|{_W}_?(?:int|scaled)_mm{_E}|^aten::\w*mm$|"
                  r"^aten::(?:linear|einsum)$",
          "GEMM libraries (cuBLAS, CUTLASS), aten's matmuls, qbench's Triton GEMMs"),
    _rule("quantization", rf"quant|amax|max_values|maxnan|absfunctor|{_W}abs{_E}|{_W}round|clamp|divfunctor|div_true|"
                          r"^aten::div$",
          "quantization ops and their eager kernels"),
    _rule("gemm", _LOOP + r".*_(?:mm|bmm|addmm|int_mm)(?=_)", "a small matmul Inductor wrote as a loop"),
    _rule("elementwise", _LOOP + r"|elementwise|reduce_kernel|catarray|cat_|^aten::|norm|rsqrt",
          "Inductor's other loops, eager elementwise/reduction/cat kernels, the remaining aten ops"),
]


def part_of_name(name: str) -> str:
    """The part an event belongs to by its name alone: the first matching rule, else other."""
    for rule in RULES:
        if rule.pattern.search(name):
            return rule.part
    return "other"


def explain(name: str) -> str:
    """Which rule decides `name`, for debugging a classification."""
    for i, rule in enumerate(RULES, 1):
        if rule.pattern.search(name):
            return f"rule {i} ({rule.part}): {rule.why}"
    return "no rule: other"


def part_of(name: str, scopes: Sequence[str] = ()) -> str:
    """The part of an event called `name` that ran inside the ranges `scopes` (innermost
    first: the ops and record_function ranges that enclose it; for a GPU kernel, the op
    that launched it and that op's enclosing ranges). Only aten ops and QUANTIZED_LAYER
    count as scopes: other ranges (Inductor's wrappers) say nothing of the work."""
    own = part_of_name(name)
    ops = [part_of_name(s) for s in scopes if s.startswith("aten::")]
    if own == "attention" or "attention" in ops:
        return "attention"
    if own == "gemm":
        return "gemm"
    if name == QUANTIZED_LAYER or QUANTIZED_LAYER in scopes:
        return "quantization"
    if own == "quantization":
        return own
    if "gemm" in ops:
        return "gemm"
    return own
