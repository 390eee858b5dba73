"""qbench's Triton kernels against torch, on fresh random inputs of several shapes (tile
edges included). On the CPU they run for real in Triton's interpreter (conftest sets
TRITON_INTERPRET=1 where there is no GPU); on a GPU, compiled, with the tuned tiles."""

import re

import pytest
import torch

triton = pytest.importorskip("triton")

from qbench import schemes  # noqa: E402
from qbench import triton_kernels as tk  # noqa: E402
from qbench.workloads import WorkloadConfig, build_model, make_input  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# the SiLU*mul epilogue's formulas (QBENCH_SILU): the interpreter computes the exact one only
SILU_FORMULAS = ["exact", "tanh"] if CUDA else ["exact"]
if not CUDA and not tk.interpreting():
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)

QDTYPES = [(torch.int8, 127.0), (torch.float8_e4m3fn, 448.0)]
# (M, K, N): tile multiples and not, K not a multiple of BLOCK_K (interpreter tiles are 32);
# N = 40 ends inside a half tile (TMA_STORE stores tiles in column halves), N = 33 makes
# rows TMA cannot write (66 bytes: TMA_STORE falls back to pointers)
SHAPES = [(37, 64, 48), (64, 80, 96), (70, 64, 40), (1, 32, 33)] + (
    [(1000, 2048, 3000), (4096, 8192, 2048)] if CUDA else []
)
TINY = WorkloadConfig(name="tiny", model="llama", seq_len=8, hidden=64, intermediate=96, heads=4, kv_heads=2, layers=2)


def ids(q):
    return "int8" if q[0] == torch.int8 else "fp8"


def rand(*shape, seed, scale=1.0):
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    return (torch.randn(shape, generator=g, device=DEVICE) * scale).half()


def e4m3_step(v):
    """The spacing of the e4m3 grid at |v| (subnormals share 2^-6's step)."""
    return torch.exp2(torch.floor(torch.log2(v.abs().clamp(min=2.0**-6))) - 3)


def assert_codes_match(q, s, ref_q, ref_s, allow):
    """Same 8-bit codes as torch's reference quantization, except up to `allow` of them
    one grid step apart: a value within an ulp of a rounding tie (fp16 inputs make exact
    ties: x / amax * 127 = 27.5) lands either side, since the GPU kernel multiplies by
    qmax / amax where torch divides by the scale. A wrong scale moves most codes."""
    assert q.dtype == ref_q.dtype and q.shape == ref_q.shape
    torch.testing.assert_close(s, ref_s, rtol=1e-6, atol=0)
    got, ref = q.float(), ref_q.float()
    diff = (got - ref).abs()
    assert int((diff > 0).sum()) <= allow * diff.numel(), f"{int((diff > 0).sum())} codes differ"
    step = 1.0 if ref_q.dtype == torch.int8 else torch.maximum(e4m3_step(got), e4m3_step(ref))
    assert bool((diff <= step).all()), f"codes differ by more than one step: {float(diff.max())}"


@pytest.mark.parametrize("q", QDTYPES, ids=ids)
@pytest.mark.parametrize("m,k", [(37, 64), (5, 100), (3, 2048)])
def test_quantize_rows_matches_torch(q, m, k):
    qdtype, qmax = q
    x = rand(m, k, seed=m * k, scale=3.0)
    x[0, 0] = 0.0
    got = tk.quantize_rows(x, qdtype)
    ref = schemes.quantize_rows(x, qmax, qdtype)
    assert_codes_match(*got, *ref, allow=0 if not CUDA else 0.01)


@pytest.mark.parametrize("q", QDTYPES, ids=ids)
def test_rmsnorm_quant_is_norm_then_quantize(q):
    qdtype, qmax = q
    x, w = rand(29, 96, seed=1, scale=2.0), rand(96, seed=2).abs() + 0.5
    got = tk.rmsnorm_quant(x, w, 1e-5, qdtype)
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * w.float()
    assert_codes_match(*got, *schemes.quantize_rows(normed, qmax, qdtype), allow=0.01)


@pytest.mark.parametrize("q", QDTYPES, ids=ids)
def test_silu_mul_quant_is_swiglu_then_quantize(q):
    qdtype, qmax = q
    gu = rand(23, 2 * 72, seed=3, scale=2.0)
    got = tk.silu_mul_quant(gu, qdtype)
    h = torch.nn.functional.silu(gu[:, :72].float()) * gu[:, 72:].float()
    assert_codes_match(*got, *schemes.quantize_rows(h, qmax, qdtype), allow=0.01)


@pytest.mark.parametrize("q", QDTYPES, ids=ids)
@pytest.mark.parametrize("m,k,group", [(19, 96, 32), (3, 2048, 128)])
def test_requantize_groups_is_quantize_rows_of_the_dequantized_codes(q, m, k, group):
    """Codes with a scale per row and group, as the SiLU*mul epilogue writes them (scales
    (groups, M)), onto one scale per row: torch's quantize_rows of codes * scales. A wrong
    group's scale, or scales read row-major, moves most codes."""
    qdtype, qmax = q
    x = rand(m, k, seed=m + k, scale=2.0).float()
    x[:, :group] *= 8.0  # the first group holds each row's largest value: the others' ratios < 1
    groups = x.view(m, k // group, group)
    scales = groups.abs().amax(dim=2).clamp(min=1e-8) / qmax  # (m, groups)
    codes = (groups / scales.unsqueeze(2)).clamp(-qmax, qmax)
    codes = (codes.round() if qdtype == torch.int8 else codes).to(qdtype).view(m, k)
    st = scales.t().contiguous()  # (groups, m), the epilogue's layout
    got = tk.requantize_groups(codes, st, group)
    dequantized = (codes.float().view(m, k // group, group) * scales.unsqueeze(2)).view(m, k)
    assert_codes_match(*got, *schemes.quantize_rows(dequantized, qmax, qdtype), allow=0 if not CUDA else 0.01)
    with pytest.raises(ValueError, match="not a .* row-major matrix in groups of"):
        tk.requantize_groups(codes, scales, group)  # (m, groups): the wrong layout


@pytest.mark.parametrize("m,k,group", [(19, 96, 32), (5, 2048, 128)])
def test_requantizing_power_of_two_group_scales_is_exact(m, k, group):
    """e4m3 codes whose group scales are powers of two (w8a8_gemm(..., pow2_scales=True))
    onto one scale per row, the largest group's: each code times a power of two, so the
    result is the direct quantization of the values by that row scale, code for code,
    except where e4m3 runs out of exponents (below 2^-6, its subnormals)."""
    x = rand(m, k, seed=m + k, scale=2.0).float()
    x[:, group : 2 * group] *= 50.0  # the second group holds each row's largest value
    x[:, -group:] *= 1e-3  # a group far below it: its codes reach the subnormals
    groups = x.view(m, k // group, group)
    scales = torch.exp2(torch.ceil(torch.log2(groups.abs().amax(dim=2) / 448.0)))  # (m, groups), powers of two
    codes = (groups / scales.unsqueeze(2)).to(torch.float8_e4m3fn).view(m, k)
    q, s = tk.requantize_groups(codes, scales.t().contiguous(), group)
    row = scales.amax(dim=1, keepdim=True)
    assert torch.equal(s, row)
    direct = (x / row).to(torch.float8_e4m3fn)
    normal = (x / row).abs() >= 2.0**-6
    assert torch.equal(q.float()[normal], direct.float()[normal])
    assert int((~normal).sum()) > 0  # the subnormals were there to be rounded twice
    gap = (q.float() - direct.float()).abs()[~normal]
    assert float(gap.max()) <= 2.0**-9  # one step of e4m3's subnormal grid


@pytest.mark.parametrize("q", QDTYPES, ids=ids)
def test_the_swiglu_epilogue_makes_power_of_two_scales_for_e4m3_only(q):
    """pow2_scales: each group's scale is the power of two at or above max |value| / 448,
    and its codes times it are silu(gate) * up; an integer grid refuses them."""
    qdtype, qmax = q
    m, k, i = 37, 64, 64 if not CUDA else 256
    group = 32 if not CUDA else 128
    a, sa = schemes.quantize_rows(rand(m, k, seed=3), qmax, qdtype)
    w, sw = schemes.quantize_rows(rand(2 * i, k, seed=4), qmax, qdtype)
    args = (a, sa, tk.swiglu_interleave(w, group), tk.swiglu_interleave(sw.view(-1), group))
    if qdtype == torch.int8:
        with pytest.raises(ValueError, match="pow2_scales .* e4m3"):
            tk.w8a8_gemm(*args, swiglu_block=group, quantize_out=True, pow2_scales=True)
        return
    if CUDA and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    codes, scales = tk.w8a8_gemm(*args, swiglu_block=group, quantize_out=True, pow2_scales=True)
    gu = (a.double() @ w.double().t()) * sa.double() * sw.view(1, -1).double()
    ref = (torch.nn.functional.silu(gu[:, :i]) * gu[:, i:]).view(m, i // group, group)
    exponent = torch.log2(scales.double())
    assert torch.equal(exponent, exponent.round())  # powers of two
    need = ref.abs().amax(dim=2).t() / qmax  # (groups, m)
    assert bool((scales.double() >= need * (1 - 2e-2)).all() and (scales.double() < 2 * need * (1 + 2e-2)).all())
    got = codes.double().view(m, i // group, group) * scales.t().double().unsqueeze(2)
    assert float((got - ref).norm() / ref.norm()) < 0.05


def scaled_mm_fast_accum(a, sa, w, sw):
    """cuBLAS's fp8 GEMM with fast accumulation, zero-padded to the multiples of 16 it
    needs (zeros add nothing to the sums)."""
    m, k, n = a.shape[0], a.shape[1], w.shape[0]
    mp, kp, np_ = (-(-v // 16) * 16 for v in (m, k, n))
    ap = torch.zeros(mp, kp, dtype=a.dtype, device=a.device)
    wp = torch.zeros(np_, kp, dtype=w.dtype, device=w.device)
    ap[:m, :k], wp[:n, :k] = a, w
    sap = torch.ones(mp, 1, device=a.device)
    swp = torch.ones(1, np_, device=a.device)
    sap[:m], swp[:, :n] = sa, sw.view(1, -1)
    out = torch._scaled_mm(ap, wp.t(), scale_a=sap, scale_b=swp, out_dtype=torch.bfloat16, use_fast_accum=True)
    return out[:m, :n]


# the pointer kernel, the persistent TMA one, and that one warp-specialized (config key
# WS), each TMA one also with its output (and residual) through TMA (config key TMA_STORE)
KERNELS = pytest.mark.parametrize(
    "tma",
    [{"TMA": False}, {"TMA": True}, {"TMA": True, "WS": True},
     {"TMA": True, "TMA_STORE": True}, {"TMA": True, "WS": True, "TMA_STORE": True}],
    ids=["pointers", "tma", "tma-ws", "tma-store", "tma-ws-store"],
)  # fmt: skip


@pytest.mark.parametrize("q", QDTYPES, ids=ids)
@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("residual", [False, True])
@KERNELS
def test_gemm_dequantizes_in_its_epilogue(q, m, k, n, residual, tma):
    qdtype, qmax = q
    if qdtype != torch.int8 and CUDA and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    a, sa = schemes.quantize_rows(rand(m, k, seed=m + k), qmax, qdtype)
    w, sw = schemes.quantize_rows(rand(n, k, seed=n + 7), qmax, qdtype)
    r = rand(m, n, seed=11) if residual else None
    cfg = {**tk.gemm_config(ids(q), m, n, k, torch.device(DEVICE)), **tma}
    got = tk.w8a8_gemm(a, sa, w, sw.view(1, -1), residual=r, config=cfg)
    assert got.dtype == torch.float16 and got.shape == (m, n)
    ref = (a.double() @ w.double().t()) * sa.double() * sw.view(1, -1).double()
    if residual:
        ref = ref + r.double()
    # a wrong index, tile edge or scale is off by far more than either check allows
    err = float((got.double() - ref).norm() / ref.norm())
    if qdtype != torch.int8 and CUDA:
        # Hopper's fp8 dots accumulate with fewer bits: hold the kernel to cuBLAS's fast
        # accumulation on the same operands
        cublas = scaled_mm_fast_accum(a, sa, w, sw).double() + (r.double() if residual else 0)
        assert err < 2 * float((cublas - ref).norm() / ref.norm()) + 1e-4
    else:
        assert err < 1e-3
    if qdtype == torch.int8 or not CUDA:
        # exact integer sums: the only rounding is the fp32 scaling and the fp16 store
        # (Hopper's fp8 dots accumulate with fewer bits, as cuBLAS's fast accumulation does)
        torch.testing.assert_close(got.double(), ref, rtol=2e-3, atol=2e-3 * float(ref.abs().max()))


@pytest.mark.parametrize("q", QDTYPES, ids=ids)
@pytest.mark.parametrize("m,k,d,heads,kv", [(37, 64, 16, 4, 2), (19, 32, 32, 2, 1), (5, 32, 6, 2, 1)] + (
    [(1000, 2048, 64, 32, 8)] if CUDA else []))  # fmt: skip
@KERNELS
def test_gemm_rotary_epilogue_finishes_qkv_for_attention(q, m, k, d, heads, kv, tma, monkeypatch):
    """rotary: with the q|k weight rows in interleaved pairs (rotary_interleave), the
    epilogue applies rotary embeddings to q and k (row m at position m % T), leaves v, and
    stores q, k and v dense one after the other (split_qkv): qbench.workloads.apply_rotary's
    result, in the interleaved order. A wrong position, pair, frequency, section or row
    stride is off by O(1). With TMA_STORE, q, k and v go through a descriptor each where
    every half-tile lies in one of them, else through pointers."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    from qbench.workloads import apply_rotary, rotary_tables

    stored, from_tensor = [], TensorDescriptor.from_tensor

    def spy(t, block, *args, **kwargs):
        if t.dtype == torch.float16:  # an output's, not A's or B's
            stored.append((tuple(t.shape), tuple(block)))
        return from_tensor(t, block, *args, **kwargs)

    monkeypatch.setattr(TensorDescriptor, "from_tensor", staticmethod(spy))

    qdtype, qmax = q
    if qdtype != torch.int8 and CUDA and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    n_q, n_k, t = heads * d, kv * d, 8
    n, n_rot = n_q + 2 * n_k, n_q + n_k
    a, sa = schemes.quantize_rows(rand(m, k, seed=m + k), qmax, qdtype)
    w, sw = schemes.quantize_rows(rand(n, k, seed=n + 7), qmax, qdtype)
    cos, sin = rotary_tables(t, d, 10000.0, DEVICE, torch.float16)
    cfg = {**tk.gemm_config(ids(q), m, n, k, torch.device(DEVICE)), **tma}
    wi, swi = tk.rotary_interleave(w, n_rot, d), tk.rotary_interleave(sw.view(-1), n_rot, d)
    got = tk.w8a8_gemm(a, sa, wi, swi.view(1, -1), config=cfg, rotary=(cos, sin, n_q, n_k))
    assert got.shape == (m, n) and got.is_contiguous()
    half = cfg["BLOCK_N"] // 2
    sections = tma.get("TMA_STORE", False) and n_q % half == 0 and n_k % half == 0
    block = (cfg["BLOCK_M"], half)
    assert stored == ([((m, n_q), block), ((m, n_k), block), ((m, n_k), block)] if sections else []), stored
    got = torch.cat(tk.split_qkv(got, n_q, n_k), dim=1)
    plain = (a.double() @ w.double().t()) * sa.double() * sw.view(1, -1).double()
    pos = torch.arange(m, device=DEVICE) % t
    c, s = cos.double()[pos].unsqueeze(1), sin.double()[pos].unsqueeze(1)  # (m, 1, d)
    rotated = apply_rotary(plain[:, :n_rot].view(m, heads + kv, d), c, s).view(m, n_rot)
    ref = tk.rotary_interleave(torch.cat([rotated, plain[:, n_rot:]], dim=1).t(), n_rot, d).t()
    tol = 2e-3 if qdtype == torch.int8 or not CUDA else 2e-2  # Hopper's fp8 dots: fewer accumulator bits
    torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol * float(ref.abs().max()))
    with pytest.raises(ValueError, match="rotary needs"):
        tk.w8a8_gemm(a, sa, wi, swi.view(1, -1), rotary=(cos, sin, n_q + 1, n_k))


def test_gemm_rejects_mismatched_operands():
    a = torch.zeros(4, 32, dtype=torch.int8, device=DEVICE)
    w = torch.zeros(8, 16, dtype=torch.int8, device=DEVICE)
    with pytest.raises(ValueError, match="do not match"):
        tk.w8a8_gemm(a, torch.ones(4, 1, device=DEVICE), w, torch.ones(1, 8, device=DEVICE))


def tiny_decoder_outputs(scheme: str, **variants: dict) -> dict:
    """The tiny decoder's output on one input: in fp16 (`ref`), and under `scheme` for each
    variant (apply_scheme's keyword arguments: impl, act_group_size)."""
    if scheme == "w8a8-fp8" and CUDA and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    with torch.inference_mode():
        x = make_input(TINY, 3, DEVICE, torch.float16, 0)
        out = {"ref": build_model(TINY, DEVICE, torch.float16, 0)(x)}
        for name, kwargs in variants.items():
            out[name] = schemes.apply_scheme(build_model(TINY, DEVICE, torch.float16, 0), scheme, **kwargs)(x)
    return out


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
def test_triton_decoder_matches_the_eager_w8a8_model(scheme):
    """The fused layer computes what the unfused eager one computes (same quantization
    points), and stays within the scheme's tolerance of fp16."""
    out = tiny_decoder_outputs(scheme, eager={"impl": "eager"}, fused={"impl": "triton"})
    # they differ only where the fused norm's fp32 rounding flips a code by one step; a
    # wrong index, scale or residual costs O(1)
    quant_error = schemes.relative_error(out["eager"], out["ref"])
    assert schemes.relative_error(out["fused"], out["eager"]) < quant_error
    assert schemes.relative_error(out["fused"], out["ref"]) < 1.5 * quant_error < schemes.DEFAULT_TOLERANCE[scheme]


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
def test_triton_decoder_rotary_in_the_qkv_epilogue_is_the_original_attention(scheme, monkeypatch):
    """fused_rotary: the layer's attention with rotary embeddings in the q|k|v GEMM's
    epilogue (q and k in interleaved pairs, q, k and v stored dense) against the original
    path on the same quantized input: they differ by the fp16 rounding of q and k before
    rotation only (a wrong position, pair or head order between q and k is off by O(1))."""
    from qbench import triton_layers as tl_

    if scheme == "w8a8-fp8" and CUDA and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    kind = "int8" if scheme == "w8a8-int8" else "fp8"
    out = {}
    with torch.inference_mode():
        x = make_input(TINY, 3, DEVICE, torch.float16, 0)
        for fused in (False, True):
            monkeypatch.setattr(tl_.TritonDecoderLayer, "fused_rotary", fused)
            model = schemes.apply_scheme(build_model(TINY, DEVICE, torch.float16, 0), scheme, "triton")
            model(x)  # builds the rotary tables
            layer, (cos, sin) = model.layers[0], model._rope
            assert layer.rotary == fused
            xq, xs = tl_.rmsnorm_quant_op(x, layer.input_norm_weight, layer.input_eps, kind)
            out[fused] = layer.attend(xq, xs, cos, sin, 3, TINY.seq_len)
    assert out[True].shape == out[False].shape == (3, TINY.seq_len, TINY.hidden)
    assert 0 < schemes.relative_error(out[True], out[False]) < 2e-3


@pytest.mark.skipif(not CUDA or torch.cuda.get_device_capability() < (8, 9), reason="cuBLAS fp8 needs a GPU of 8.9+")
def test_triton_decoder_q_k_v_projection_by_cublas_is_ours(monkeypatch):
    """cublas_qkv: the fp8 q|k|v projection by torch._scaled_mm (row-wise scales, fast
    accumulation) is our GEMM's, to the fp8 dots' accumulation (a wrong scale is O(1))."""
    from qbench import triton_layers as tl_

    out = {}
    with torch.inference_mode():
        x = make_input(TINY, 3, DEVICE, torch.float16, 0)
        for cublas in (False, True):
            monkeypatch.setattr(tl_.TritonDecoderLayer, "cublas_qkv", cublas)
            model = schemes.apply_scheme(build_model(TINY, DEVICE, torch.float16, 0), "w8a8-fp8", "triton")
            layer = model.layers[0]
            assert layer.qkv_cublas == cublas
            xq, xs = tl_.rmsnorm_quant_op(x, layer.input_norm_weight, layer.input_eps, "fp8")
            out[cublas] = layer.project_qkv(xq, xs)
    assert out[True].shape == out[False].shape and out[True].dtype == torch.float16
    assert schemes.relative_error(out[True], out[False]) < 2e-2


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
def test_triton_decoder_with_activation_groups_is_as_accurate_and_computes_the_same(scheme):
    """act_group_size: the down projection's input quantized per token and group in the
    SiLU*mul epilogue. Finer scales than one per token: no less accurate against fp16; and
    the layer is what the kernels compute (a wrong group or scale in either GEMM costs
    O(1), far above the quantization's few percent)."""
    out = tiny_decoder_outputs(scheme, per_token={"impl": "triton"}, grouped={"impl": "triton", "act_group_size": 32})
    per_token_error = schemes.relative_error(out["per_token"], out["ref"])
    assert schemes.relative_error(out["grouped"], out["ref"]) < 1.1 * per_token_error
    assert 0 < schemes.relative_error(out["grouped"], out["per_token"]) < 1.5 * per_token_error  # > 0: groups used
    with pytest.raises(ValueError, match="act_group_size 64 does not divide the intermediate size 96"):
        schemes.apply_scheme(build_model(TINY, DEVICE, torch.float16, 0), scheme, "triton", act_group_size=64)


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
def test_triton_decoder_with_requantized_groups_is_the_per_token_layer(scheme):
    """requantize: the SiLU*mul epilogue's groups rescaled to one scale per token before
    the down GEMM. The same quantization points as the per-token layer, the down input
    rounded twice: about as accurate, and close to that layer's output (a wrong scale or
    group costs O(1))."""
    out = tiny_decoder_outputs(scheme, per_token={"impl": "triton"},
                               requantized={"impl": "triton", "act_group_size": 32, "requantize": True})  # fmt: skip
    per_token_error = schemes.relative_error(out["per_token"], out["ref"])
    assert schemes.relative_error(out["requantized"], out["ref"]) < 1.25 * per_token_error
    assert 0 < schemes.relative_error(out["requantized"], out["per_token"]) < 0.75 * per_token_error
    with pytest.raises(ValueError, match="requantize .* needs act_group_size"):
        schemes.apply_scheme(build_model(TINY, DEVICE, torch.float16, 0), scheme, "triton", requantize=True)


def test_the_group_ops_fake_what_they_compute():
    """torch.compile traces the layer with the ops' fake implementations: their shapes,
    dtypes and strides must be the real ones (torch.library.opcheck runs both)."""
    from qbench import triton_layers as tl_

    qdtype, qmax = QDTYPES[1]
    if CUDA and torch.cuda.get_device_capability() < (8, 9):
        qdtype, qmax = QDTYPES[0]
    group = 128 if CUDA else 32
    a, sa = schemes.quantize_rows(rand(37, 64, seed=1), qmax, qdtype)
    w, sw = schemes.quantize_rows(rand(2 * group * 2, 64, seed=2), qmax, qdtype)
    w, sw = tk.swiglu_interleave(w, group), tk.swiglu_interleave(sw.view(-1), group).view(1, -1)
    torch.library.opcheck(tl_.w8a8_gemm_swiglu_quant_op, (a, sa, w, sw, group), test_utils=("test_faketensor",))
    codes, scales = tl_.w8a8_gemm_swiglu_quant_op(a, sa, w, sw, group)
    wd, swd = schemes.quantize_rows(rand(40, 2 * group, seed=3), qmax, qdtype)
    args = (codes, scales, wd, swd.view(1, -1), rand(37, 40, seed=4), group)
    torch.library.opcheck(tl_.w8a8_gemm_grouped_op, args, test_utils=("test_faketensor",))
    torch.library.opcheck(tl_.requantize_groups_op, (codes, scales, group), test_utils=("test_faketensor",))


def test_triton_gemm_workload():
    wl = WorkloadConfig(name="g", model="gemm", seq_len=5, in_features=48, out_features=40)
    with torch.inference_mode():
        x = make_input(wl, 3, DEVICE, torch.float16, 0)
        ref = build_model(wl, DEVICE, torch.float16, 0)(x)
        y = schemes.apply_scheme(build_model(wl, DEVICE, torch.float16, 0), "w8a8-int8", "triton")(x)
    assert y.shape == ref.shape and schemes.relative_error(y, ref) < 0.02


class Props:
    major, minor, multi_processor_count = 9, 0, 132


def test_gemm_config_prefers_the_tuned_entry_of_the_nearest_m(tmp_path, monkeypatch):
    table = {"GPU X": {"int8": {"2048x4096": {"1024": {"BLOCK_M": 64}, "65536": {"BLOCK_M": 256}}}}}
    monkeypatch.setattr(tk, "_tuned", lambda: table)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "GPU X")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=None: Props())
    tk.tuned_table.cache_clear()
    cuda = torch.device("cuda", 0)
    assert tk.gemm_config("int8", 1000, 2048, 4096, cuda)["BLOCK_M"] == 64
    assert tk.gemm_config("int8", 131072, 2048, 4096, cuda)["BLOCK_M"] == 256
    assert tk.gemm_config("int8", 1000, 999, 4096, cuda) == tk.DEFAULT_GEMM
    assert tk.gemm_config("fp8", 1000, 2048, 4096, cuda) == tk.DEFAULT_GEMM
    table["GPU X"]["int8"]["2048x4096/swiglu"] = {"1024": {"BLOCK_M": 32}}
    assert tk.gemm_config("int8", 1000, 2048, 4096, cuda, swiglu=True)["BLOCK_M"] == 32
    assert tk.gemm_config("int8", 1000, 2048, 4096, cuda)["BLOCK_M"] == 64
    # per-token groups: their own entries where tuned, else their per-token twin's
    assert tk.gemm_config("int8", 1000, 2048, 4096, cuda, swiglu=True, group=128)["BLOCK_M"] == 32
    table["GPU X"]["int8"]["2048x4096/swiglu/g128"] = {"1024": {"BLOCK_M": 16}}
    table["GPU X"]["int8"]["2048x4096/g128"] = {"1024": {"BLOCK_M": 8}}
    assert tk.gemm_config("int8", 1000, 2048, 4096, cuda, swiglu=True, group=128)["BLOCK_M"] == 16
    assert tk.gemm_config("int8", 1000, 2048, 4096, cuda, group=128)["BLOCK_M"] == 8
    assert tk.gemm_config("int8", 1000, 2048, 4096, cuda, group=64)["BLOCK_M"] == 64


def test_a_gpu_without_tiles_of_its_own_borrows_those_of_the_same_hardware(monkeypatch, caplog):
    """An H200 (capability 9.0, 132 SMs) uses the H100's tiles; a GPU of other hardware
    gets the default, as does one whose twin has no table."""
    table = {"GPU X": {"fp8": {"2048x4096": {"1024": {"BLOCK_M": 64}}}}}
    monkeypatch.setattr(tk, "_tuned", lambda: table)
    monkeypatch.setattr(tk, "TUNED_HARDWARE", {"GPU X": ((9, 0), 132), "GPU W": ((9, 0), 132)})
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=None: Props())
    cuda = torch.device("cuda", 0)
    for name, props, block in (("GPU Y", Props(), 64), ("GPU Z", type("P", (), {"major": 9, "minor": 0,
                               "multi_processor_count": 114})(), tk.DEFAULT_GEMM["BLOCK_M"])):  # fmt: skip
        tk.tuned_table.cache_clear()
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None, n=name: n)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d=None, p=props: p)
        with caplog.at_level("INFO", logger="qbench.triton"):
            assert tk.gemm_config("fp8", 1000, 2048, 4096, cuda)["BLOCK_M"] == block, name
    assert "no tuned Triton tiles for GPU Y: using those of GPU X (same capability 9.0, 132 SMs)" in caplog.text
    assert "GPU Z" not in caplog.text
    tk.tuned_table.cache_clear()
    assert tk.tuned_table("GPU V", (9, 0), 132)[0] == "GPU X"  # GPU W has no table: not chosen
    tk.tuned_table.cache_clear()


def test_every_tuned_gpu_names_its_hardware():
    """A table's GPU is in TUNED_HARDWARE, so GPUs of the same hardware can use it."""
    assert set(tk._tuned()) <= set(tk.TUNED_HARDWARE)


def test_tuned_configs_file_is_well_formed():
    keys = {"BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M", "num_warps", "num_stages"}
    for gpu, kinds in tk._tuned().items():
        for kind, shapes in kinds.items():
            assert kind in ("int8", "fp8"), gpu
            for nk, by_m in shapes.items():
                n, k = map(int, nk.split("/")[0].split("x"))
                assert all(part == "swiglu" or re.fullmatch(r"g\d+", part) for part in nk.split("/")[1:]), nk
                for m, cfg in by_m.items():
                    assert int(m) > 0 and keys <= set(cfg) <= keys | {"TMA", "WS", "TMA_STORE"}, (gpu, kind, nk, m)


@pytest.mark.parametrize("q", QDTYPES, ids=ids)
@pytest.mark.parametrize(
    "m,k,i", [(37, 64, 48), (5, 80, 32), (300, 128, 384), (3000, 2048, 8192)][: None if CUDA else 2]
)
@pytest.mark.parametrize("silu", SILU_FORMULAS)
@KERNELS
def test_gemm_swiglu_epilogue_is_silu_gate_times_up(q, m, k, i, tma, silu, monkeypatch):
    """silu(gate) * up by each formula the epilogue has (QBENCH_SILU; the GPU's tanh.approx
    one is off by at most |gate| * 2^-12, far inside the tolerance)."""
    monkeypatch.setenv("QBENCH_SILU", silu)
    qdtype, qmax = q
    if qdtype != torch.int8 and CUDA and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    block = tk.swiglu_block_for(i, torch.device(DEVICE))
    if block is None:
        pytest.skip(f"intermediate {i} is not a multiple of this device's gate/up block")
    a, sa = schemes.quantize_rows(rand(m, k, seed=m), qmax, qdtype)
    w, sw = schemes.quantize_rows(rand(2 * i, k, seed=i), qmax, qdtype)
    cfg = {**tk.gemm_config(ids(q), m, 2 * i, k, torch.device(DEVICE)), **tma}
    got = tk.w8a8_gemm(
        a, sa, tk.swiglu_interleave(w, block), tk.swiglu_interleave(sw.view(-1), block), swiglu_block=block, config=cfg
    )
    gu = (a.double() @ w.double().t()) * sa.double() * sw.view(1, -1).double()
    ref = torch.nn.functional.silu(gu[:, :i]) * gu[:, i:]
    assert got.shape == (m, i)
    assert float((got.double() - ref).norm() / ref.norm()) < 2e-3


@pytest.mark.parametrize("q", QDTYPES, ids=ids)
# the group is the tile's half-width (128 on a GPU, 32 in the interpreter): i a multiple of it
@pytest.mark.parametrize(
    "m,k,i", [(37, 64, 128), (5, 80, 256), (3000, 2048, 8192)] if CUDA else [(37, 64, 64), (5, 80, 96)]
)
@pytest.mark.parametrize("silu", SILU_FORMULAS)
@KERNELS
def test_gemm_swiglu_epilogue_quantizes_per_token_group(q, m, k, i, tma, silu, monkeypatch):
    """With quantize_out, the SiLU*mul tile leaves as 8-bit codes and one scale per row and
    group (the tile's half-width): each group's codes times its scale are silu(gate) * up,
    to the grid's rounding, and the scale is that group's max |value| / qmax; by each
    formula of silu the epilogue has."""
    monkeypatch.setenv("QBENCH_SILU", silu)
    qdtype, qmax = q
    if qdtype != torch.int8 and CUDA and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    group = 128 if CUDA else 32
    a, sa = schemes.quantize_rows(rand(m, k, seed=m), qmax, qdtype)
    w, sw = schemes.quantize_rows(rand(2 * i, k, seed=i), qmax, qdtype)
    cfg = {**tk.gemm_config(ids(q), m, 2 * i, k, torch.device(DEVICE), swiglu=True), **tma}
    codes, scales = tk.w8a8_gemm(
        a, sa, tk.swiglu_interleave(w, group), tk.swiglu_interleave(sw.view(-1), group),
        swiglu_block=group, quantize_out=True, config=cfg,
    )  # fmt: skip
    assert codes.dtype == qdtype and codes.shape == (m, i) and scales.shape == (i // group, m)
    gu = (a.double() @ w.double().t()) * sa.double() * sw.view(1, -1).double()
    ref = (torch.nn.functional.silu(gu[:, :i]) * gu[:, i:]).view(m, i // group, group)
    ref_scales = ref.abs().amax(dim=2).clamp(min=1e-8) / qmax  # (m, groups)
    # Hopper's fp8 dots accumulate with fewer bits than the float64 reference: 2% there
    acc = 2e-2 if qdtype != torch.int8 and CUDA else 1e-3
    torch.testing.assert_close(scales.t().double(), ref_scales, rtol=acc, atol=1e-9)
    got = codes.double().view(m, i // group, group) * scales.t().double().unsqueeze(2)
    # each value within half a grid step (int8: 0.5 of a code; e4m3: 2^-4 relative), plus
    # the fp32 epilogue's own rounding; a wrong group, row or scale is off by far more
    rel = 0.5 / qmax if qdtype == torch.int8 else 2.0**-4
    if qdtype == torch.int8:
        bound = ref.abs().amax(dim=2, keepdim=True) * (rel + 1e-3)
    else:  # relative to each value, plus a margin above the subnormals' spacing (2^-9 codes),
        # plus Hopper's accumulation error, which scales with the group's largest value
        bound = ref.abs() * (rel + 1e-3) + ref_scales.unsqueeze(2) * (2.0**-6 + qmax * (acc - 1e-3))
    assert bool(((got - ref).abs() <= bound).all()), float(((got - ref).abs() - bound).max())


@pytest.mark.parametrize("q", QDTYPES, ids=ids)
@pytest.mark.parametrize("m,k,n,group,block_k", [(37, 128, 48, 32, 64), (70, 192, 40, 64, 32), (1, 64, 33, 32, 32)])
@KERNELS
def test_gemm_scales_each_group_of_a_in_its_mainloop(q, m, k, n, group, block_k, tma):
    """a_group: A's scales are per row and group of K; the GEMM is the exact sum over groups
    of (codes @ w.T) * that group's scale (a tile config whose K step spans two groups is
    narrowed to one), times w's scales, plus the residual."""
    qdtype, qmax = q
    if qdtype != torch.int8 and CUDA and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    x = rand(m, k, seed=k).float().view(m, k // group, group)
    sa = (x.abs().amax(dim=2) / qmax).clamp(min=1e-8)  # (m, groups)
    a = (x / sa.unsqueeze(2)).clamp(-qmax, qmax)
    a = (a.round() if qdtype == torch.int8 else a).to(qdtype).view(m, k)
    w, sw = schemes.quantize_rows(rand(n, k, seed=n + 7), qmax, qdtype)
    r = rand(m, n, seed=11)
    cfg = {**tk.gemm_config(ids(q), m, n, k, torch.device(DEVICE)), **tma, "BLOCK_K": block_k}
    got = tk.w8a8_gemm(a, sa.t().contiguous(), w, sw.view(1, -1), residual=r, a_group=group, config=cfg)
    deq = a.double().view(m, k // group, group) * sa.double().unsqueeze(2)
    ref = deq.view(m, k) @ (w.double() * sw.double()).t() + r.double()
    err = float((got.double() - ref).norm() / ref.norm())
    assert err < (2e-3 if qdtype != torch.int8 and CUDA else 1e-3), err


@pytest.mark.skipif(not CUDA or torch.cuda.get_device_capability() != (9, 0), reason="the Gluon kernel is Hopper's")
@pytest.mark.parametrize("m,k,n,residual", [(1000, 1024, 384, True), (4096, 8192, 2048, True), (193, 256, 136, False)])
def test_the_gluon_grouped_gemm_matches_the_triton_one(m, k, n, residual):
    """On Hopper, w8a8_gemm(..., a_group=128) runs qbench.gluon_gemm's kernel (its tile()).
    Every tile is close to the float64 sum over groups, at tile edges too (M not a multiple
    of its rows, N of its columns); the one with a partial sum per K step agrees with the
    Triton kernel (which a given config forces), and to the bit with itself whichever way
    it fetches the row scales (sa_mode)."""
    from qbench import gluon_gemm

    x = rand(m, k, seed=m + k).float().view(m, k // 128, 128)
    sa = (x.abs().amax(dim=2) / 448.0).clamp(min=1e-8)
    a = (x / sa.unsqueeze(2)).clamp(-448.0, 448.0).to(torch.float8_e4m3fn).view(m, k)
    w, sw = schemes.quantize_rows(rand(n, k, seed=n), 448.0, torch.float8_e4m3fn)
    r = rand(m, n, seed=5) if residual else None
    assert gluon_gemm.unavailable(a, w, 128, r) is None
    got = tk.w8a8_gemm(a, sa.t().contiguous(), w, sw.view(1, -1), residual=r, a_group=128)
    cfg = tk.gemm_config("fp8", m, n, k, torch.device(DEVICE), group=128)
    triton_out = tk.w8a8_gemm(a, sa.t().contiguous(), w, sw.view(1, -1), residual=r, a_group=128, config=cfg)
    deq = a.double().view(m, k // 128, 128) * sa.double().unsqueeze(2)
    ref = deq.view(m, k) @ (w.double() * sw.double()).t() + (r.double() if residual else 0)
    assert torch.equal(got, gluon_gemm.grouped_gemm(a, sa.t().contiguous(), w, sw.view(1, -1), r))  # its tile()
    # each tile; the one with a partial sum per K step (exact over K) with every way it can
    # fetch the row scales (sa_mode), to the bit. A rescaled accumulator leaves the sum over K
    # to the tensor cores, whose fp8 MMAs keep fewer bits (as in the per-token GEMM): 2.7e-3
    # at K = 8192 on an H100 (2026-11-27), against the exact tile's
    exact = gluon_gemm.grouped_gemm(a, sa.t().contiguous(), w, sw.view(1, -1), r, consumers=3, block_n=128,
                                    rescale=False)  # fmt: skip
    assert float((exact.double() - ref).norm() / ref.norm()) < 2e-3
    assert float((exact.float() - triton_out.float()).abs().max()) <= 2e-3 * float(ref.abs().max())
    for mode in (1, 2):
        other = gluon_gemm.grouped_gemm(a, sa.t().contiguous(), w, sw.view(1, -1), r, consumers=3, block_n=128,
                                        rescale=False, sa_mode=mode)  # fmt: skip
        assert torch.equal(other, exact), (mode, float((other.float() - exact.float()).abs().max()))
    for consumers, block_n, rescale in gluon_gemm.TILES:
        other = gluon_gemm.grouped_gemm(a, sa.t().contiguous(), w, sw.view(1, -1), r, consumers=consumers,
                                        block_n=block_n, rescale=rescale)  # fmt: skip
        # (elementwise, 4.0 on values up to 474 at K = 8192: the bound of the fused-rotary test)
        tile, tol, tol_max = (consumers, block_n, rescale), *((5e-3, 2e-2) if rescale else (2e-3, 2e-3))
        assert float((other.double() - ref).norm() / ref.norm()) < tol, tile
        assert float((other.float() - exact.float()).abs().max()) <= tol_max * float(ref.abs().max()), tile


def test_the_gluon_tile_comes_from_the_environment(monkeypatch):
    """QBENCH_GLUON_TILE picks the grouped GEMM's tile (rows x columns, r: rescaled); one it
    does not have is refused by name, with the tiles it has."""
    from qbench import gluon_gemm

    monkeypatch.delenv(gluon_gemm.TILE_ENV, raising=False)
    assert gluon_gemm.tile() == gluon_gemm.TILE
    monkeypatch.setenv(gluon_gemm.TILE_ENV, "128x256r")
    assert gluon_gemm.tile() == (2, 256, True)
    monkeypatch.setenv(gluon_gemm.TILE_ENV, "192x128")
    assert gluon_gemm.tile() == (3, 128, False)
    for bad in ("128x256", "100x128", "wide"):
        monkeypatch.setenv(gluon_gemm.TILE_ENV, bad)
        with pytest.raises(ValueError, match=rf"QBENCH_GLUON_TILE='{bad}'.*192x128, "):
            gluon_gemm.tile()


def test_the_gluon_grouped_gemm_says_why_it_cannot_run(monkeypatch):
    """gluon_gemm.unavailable names what stands in the way (w8a8_gemm then runs Triton's
    kernel), and grouped_gemm refuses such operands by that name."""
    from qbench import gluon_gemm

    a = torch.zeros(4, 256, dtype=torch.float8_e4m3fn)
    w = torch.zeros(8, 256, dtype=torch.float8_e4m3fn)
    expected = "not a Hopper GPU (sm_90)" if gluon_gemm.gluon is not None else "Gluon"
    assert expected in gluon_gemm.unavailable(a, w, 128)
    with pytest.raises(ValueError, match=re.escape(expected)):
        gluon_gemm.grouped_gemm(a, torch.ones(2, 4), w, torch.ones(8))
    monkeypatch.setenv("QBENCH_GLUON", "0")
    assert gluon_gemm.unavailable(a, w, 128) == "QBENCH_GLUON=0"


def test_gemm_rejects_a_group_that_does_not_fit():
    a = torch.zeros(4, 64, dtype=torch.int8, device=DEVICE)
    w = torch.zeros(8, 64, dtype=torch.int8, device=DEVICE)
    with pytest.raises(ValueError, match="a_group 16 needs a power of two >= 32"):
        tk.w8a8_gemm(a, torch.ones(4, 4, device=DEVICE), w, torch.ones(1, 8, device=DEVICE), a_group=16)
    with pytest.raises(ValueError, match="a_group 24 needs a power of two"):
        tk.w8a8_gemm(a, torch.ones(2, 4, device=DEVICE), w, torch.ones(1, 8, device=DEVICE), a_group=24)
    with pytest.raises(ValueError, match=r"a_scale of shape \(2, 4\) \(got \(4, 1\)\)"):
        tk.w8a8_gemm(a, torch.ones(4, 1, device=DEVICE), w, torch.ones(1, 8, device=DEVICE), a_group=32)
    with pytest.raises(ValueError, match="quantize_out is the SwiGLU epilogue's"):
        tk.w8a8_gemm(a, torch.ones(4, 1, device=DEVICE), w, torch.ones(1, 8, device=DEVICE), quantize_out=True)


def test_tma_store_writes_through_descriptors_only_where_tma_can(monkeypatch):
    """TMA_STORE gives C and the residual descriptors of half-tile blocks; where TMA cannot
    address them (rows not a multiple of 16 bytes, a base address off 16 bytes) they go
    through the pointer epilogue, with the same result."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    blocks, from_tensor = [], TensorDescriptor.from_tensor

    def spy(t, block, *args, **kwargs):
        blocks.append(tuple(block))
        return from_tensor(t, block, *args, **kwargs)

    monkeypatch.setattr(TensorDescriptor, "from_tensor", staticmethod(spy))
    cfg = {**tk.gemm_config("int8", 37, 48, 64, torch.device(DEVICE)), "TMA": True, "TMA_STORE": True}
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    for n, offset, made in ((48, 0, 2), (33, 0, 0), (48, 1, 0)):
        a, sa = schemes.quantize_rows(rand(37, 64, seed=1), 127.0, torch.int8)
        w, sw = schemes.quantize_rows(rand(n, 64, seed=2), 127.0, torch.int8)
        r = rand(37 * n + offset, seed=3)[offset:].view(37, n)  # offset 1: 2 bytes off
        blocks.clear()
        got = tk.w8a8_gemm(a, sa, w, sw.view(1, -1), residual=r, config=cfg)
        assert sorted(blocks) == sorted([(bm, bk), (bn, bk)] + [(bm, bn // 2)] * made), (n, offset)
        ref = (a.double() @ w.double().t()) * sa.double() * sw.view(1, -1).double() + r.double()
        torch.testing.assert_close(got.double(), ref, rtol=2e-3, atol=2e-3 * float(ref.abs().max()))


def test_a_tma_store_tile_that_does_not_fit_falls_back_to_pointer_stores(monkeypatch, caplog):
    """A tile tuned without a residual may not fit with one (128x256x128, 4 stages, needs
    256 KiB of an H100's 227 once the residual's buffer is added): the GEMM then runs with
    the pointer epilogue, says so once, and gives the same result."""
    real, launched = tk._kernel, []

    class Kernel:
        def __init__(self, name, on_cpu):
            self.fn = real(name, on_cpu)

        def __getitem__(self, grid):
            def run(*args, **kwargs):
                launched.append(kwargs["TMA_STORE"])
                if kwargs["TMA_STORE"]:
                    raise triton.runtime.errors.OutOfResources(262192, 232448, "shared memory")
                return self.fn[grid](*args, **kwargs)

            return run

    monkeypatch.setattr(tk, "_kernel", Kernel)
    monkeypatch.setattr(tk, "_TMA_STORE_TOO_BIG", set())
    cfg = {**tk.gemm_config("int8", 37, 48, 64, torch.device(DEVICE)), "TMA": True, "TMA_STORE": True}
    a, sa = schemes.quantize_rows(rand(37, 64, seed=1), 127.0, torch.int8)
    w, sw = schemes.quantize_rows(rand(48, 64, seed=2), 127.0, torch.int8)
    r = rand(37, 48, seed=3)
    with caplog.at_level("INFO", logger="qbench.triton"):
        got = tk.w8a8_gemm(a, sa, w, sw.view(1, -1), residual=r, config=cfg)
    assert launched == [True, False]
    assert "TMA_STORE off for" in caplog.text and "with a residual" in caplog.text
    ref = (a.double() @ w.double().t()) * sa.double() * sw.view(1, -1).double() + r.double()
    torch.testing.assert_close(got.double(), ref, rtol=2e-3, atol=2e-3 * float(ref.abs().max()))


def test_an_unknown_silu_formula_is_named(monkeypatch):
    monkeypatch.setenv("QBENCH_SILU", "fast")
    a = torch.zeros(4, 64, dtype=torch.int8, device=DEVICE)
    w = torch.zeros(64, 64, dtype=torch.int8, device=DEVICE)
    with pytest.raises(ValueError, match="QBENCH_SILU='fast'.*exact, tanh"):
        tk.w8a8_gemm(a, torch.ones(4, 1, device=DEVICE), w, torch.ones(64, device=DEVICE), swiglu_block=32)


def test_swiglu_interleave_pairs_blocks():
    w = torch.arange(8).view(8, 1)  # gate rows 0-3, up rows 4-7
    assert tk.swiglu_interleave(w, 2).view(-1).tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
    assert tk.swiglu_interleave(torch.arange(8), 2).tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
