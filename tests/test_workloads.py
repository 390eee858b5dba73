import pytest
import torch

from qbench.workloads import WorkloadConfig, build_model, flops_per_forward, make_input
from tests.conftest import TINY_GEMM, TINY_LLAMA


def test_llama_shapes_and_determinism():
    m1 = build_model(TINY_LLAMA, "cpu", torch.float32, seed=3)
    m2 = build_model(TINY_LLAMA, "cpu", torch.float32, seed=3)
    x = make_input(TINY_LLAMA, 2, "cpu", torch.float32, seed=3)
    assert x.shape == (2, 8, 64)
    y1, y2 = m1(x), m2(x)
    assert y1.shape == x.shape
    assert torch.equal(y1, y2)
    assert torch.isfinite(y1).all()
    other = build_model(TINY_LLAMA, "cpu", torch.float32, seed=4)
    assert not torch.equal(other(x), y1)


def test_llama_has_the_decoder_parts():
    m = build_model(TINY_LLAMA, "cpu", torch.float32, seed=0)
    assert len(m.layers) == 2
    layer = m.layers[0]
    head_dim = 64 // 4
    assert layer.qkv.out_features == 64 + 2 * 2 * head_dim  # grouped-query: 2 KV heads
    assert layer.gate_up.out_features == 2 * 128 and layer.down.in_features == 128


def test_llama_is_causal():
    m = build_model(TINY_LLAMA, "cpu", torch.float32, seed=0)
    x = make_input(TINY_LLAMA, 1, "cpu", torch.float32, seed=0)
    x2 = x.clone()
    x2[:, -1] += 1.0  # changing the last token must not change earlier positions
    assert torch.allclose(m(x)[:, :-1], m(x2)[:, :-1], atol=1e-5)
    assert not torch.allclose(m(x)[:, -1], m(x2)[:, -1])


def test_gemm_is_one_linear_with_m_tokens():
    m = build_model(TINY_GEMM, "cpu", torch.float32, seed=0)
    x = make_input(TINY_GEMM, 3, "cpu", torch.float32, seed=0)
    assert x.shape == (12, 64) and m(x).shape == (12, 48)
    assert torch.allclose(m(x), x @ m.linear.weight.T)
    assert flops_per_forward(TINY_GEMM, 3) == 2 * 12 * 64 * 48


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"model": "llama", "hidden": 100, "heads": 3}, "not divisible by heads"),
        ({"model": "llama", "heads": 32, "kv_heads": 5}, "not divisible by kv_heads"),
        ({"model": "mamba"}, "is not one of"),
    ],
)
def test_shape_problems_name_the_key(spec, message):
    problems = WorkloadConfig.from_dict("w", spec).problems()
    assert any(message in p and "workloads.w" in p for p in problems), problems


def test_unknown_workload_key_is_named():
    with pytest.raises(ValueError, match="workloads.w: unknown keys \\['hiden'\\]"):
        WorkloadConfig.from_dict("w", {"model": "llama", "hiden": 64})
