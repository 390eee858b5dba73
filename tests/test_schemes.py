import pytest
import torch
from torch import nn

from qbench import schemes
from qbench.workloads import WorkloadConfig, build_model, make_input
from tests.conftest import TINY_LLAMA


@pytest.mark.parametrize("qdtype, qmax", [(torch.int8, 127.0), (torch.float8_e4m3fn, 448.0)])
def test_quantize_rows_is_symmetric_per_row(qdtype, qmax):
    x = torch.randn(5, 33) * torch.arange(1, 6).view(5, 1)  # rows of different scale
    q, s = schemes.quantize_rows(x, qmax, qdtype)
    assert q.dtype == qdtype and s.shape == (5, 1)
    assert torch.allclose(s.squeeze(1), x.abs().amax(1) / qmax)
    assert q.float().abs().amax(1).eq(qmax).all()  # each row's largest value hits the top code
    back = q.float() * s
    assert (back - x).abs().max() <= s.max() * (0.5 if qdtype == torch.int8 else 32)


@pytest.mark.parametrize("scheme, cls, tol", [("w8a8-int8", schemes.Int8Linear, 0.02), ("w8a8-fp8", schemes.Fp8Linear, 0.06)])
@pytest.mark.parametrize("m, k, n", [(32, 64, 48), (17, 40, 24), (33, 136, 72)])
def test_quantized_linear_matches_float(scheme, cls, tol, m, k, n):
    """Fresh random inputs, shapes that are not multiples of any tile: a wrong scale,
    transpose or rounding makes the error jump far above the tolerance."""
    torch.manual_seed(m * k + n)
    lin = nn.Linear(k, n, bias=False).half()
    x = torch.randn(m, k, dtype=torch.float16)
    ref = (x.float() @ lin.weight.float().T)
    q = cls(lin, torch.float16)
    if scheme == "w8a8-fp8":
        schemes.probe_fp8_output(q, torch.device("cpu"))
    y = q(x)
    assert y.dtype == torch.float16 and y.shape == (m, n)
    err = schemes.relative_error(y, ref)
    assert err < tol, err
    # sanity: the test can fail; a layer that forgets the weight scale is far off
    q.weight_scale.fill_(1.0)
    assert schemes.relative_error(q(x), ref) > 1.0


def test_apply_scheme_replaces_every_linear():
    model = build_model(TINY_LLAMA, "cpu", torch.float16, seed=0)
    schemes.apply_scheme(model, "w8a8-int8")
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert sum(isinstance(m, schemes.Int8Linear) for m in model.modules()) == 4 * TINY_LLAMA.layers
    assert model.layers[0].qkv.weight_q.dtype == torch.int8


@pytest.mark.parametrize("scheme, max_err", [("fp16", 0.0), ("bf16", 0.05), ("w8a8-int8", 0.1), ("w8a8-fp8", 0.15)])
def test_whole_model_error_against_fp16(scheme, max_err):
    ref_model = build_model(TINY_LLAMA, "cpu", torch.float16, seed=1)
    x = make_input(TINY_LLAMA, 2, "cpu", torch.float16, seed=1)
    with torch.inference_mode():
        ref = ref_model(x)
        model = schemes.apply_scheme(ref_model, scheme)
        y = model(x.to(schemes.activation_dtype(scheme)))
    err = schemes.relative_error(y, ref)
    assert err <= max_err, err
    if scheme != "fp16":
        assert err > 0  # it really ran in the other format


def test_fp8_is_supported_on_cpu_and_reason_names_the_gpu_otherwise():
    assert schemes.unsupported_reason("w8a8-fp8", torch.device("cpu")) is None
    assert schemes.unsupported_reason("w8a8-int8", torch.device("cpu")) is None


def test_smoothquant_lowers_the_error_when_activations_have_outlier_channels():
    """The case SmoothQuant exists for: a few input channels 30x larger than the rest
    (made through the norm weights, as in real LLMs). Smoothing folds them into the
    weights; the product is unchanged in exact arithmetic, the int8 error drops."""
    from qbench.smoothquant import smooth_decoder

    wl = WorkloadConfig(name="t", model="llama", seq_len=8, hidden=64, intermediate=128, heads=4, kv_heads=2, layers=2)

    def model():
        m = build_model(wl, "cpu", torch.float16, 0)
        for layer in m.layers:
            layer.input_norm.weight.data[:4] = 30.0
            layer.post_norm.weight.data[5:8] = 30.0
        return m

    with torch.inference_mode():
        x = make_input(wl, 4, "cpu", torch.float16, 0)
        calib = make_input(wl, 2, "cpu", torch.float16, 7)
        ref = model()(x)
        smoothed = model()
        assert smooth_decoder(smoothed, calib, 0.5) == 4  # q|k|v and gate|up of 2 layers
        assert schemes.relative_error(smoothed(x), ref) < 0.01  # same function before quantizing
        plain = schemes.relative_error(schemes.apply_scheme(model(), "w8a8-int8", "eager")(x), ref)
        smooth = schemes.relative_error(
            schemes.apply_scheme(model(), "w8a8-int8", "eager", smoothquant=0.5, calibration=calib)(x), ref
        )
    assert smooth < 0.7 * plain, (smooth, plain)


def test_smoothquant_needs_calibration_and_skips_models_without_norms():
    from qbench.smoothquant import smooth_decoder

    wl = WorkloadConfig(name="g", model="gemm", seq_len=4, in_features=32, out_features=16)
    m = build_model(wl, "cpu", torch.float16, 0)
    x = make_input(wl, 2, "cpu", torch.float16, 0)
    assert smooth_decoder(m, x, 0.5) == 0
    with pytest.raises(ValueError, match="calibration"):
        schemes.apply_scheme(m, "w8a8-int8", "eager", smoothquant=0.5)


def test_triton_and_torchao_say_why_they_cannot_run():
    cpu = torch.device("cpu")
    assert "need a CUDA GPU" in schemes.unsupported_reason("w8a8-int8", cpu, "triton")
    try:
        import torchao  # noqa: F401
    except ImportError:
        assert "pip install 'qbench[torchao]'" in schemes.unsupported_reason("w8a8-int8", cpu, "torchao")
    assert schemes.activation_dtype("w8a8-fp8", "torchao") == torch.bfloat16
    assert schemes.activation_dtype("w8a8-fp8", "triton") == torch.float16
