"""qbench.triton_attention against torch's rotary embeddings and SDPA, on fresh random
inputs. On the CPU the kernel runs in Triton's interpreter (conftest sets TRITON_INTERPRET=1
where there is no GPU); on a GPU, compiled."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from qbench import schemes
from qbench import triton_attention as ta
from qbench import triton_kernels as tk
from qbench.workloads import WorkloadConfig, apply_rotary, build_model, make_input, rotary_tables

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
if not CUDA and not tk.interpreting():
    pytest.skip("no GPU and TRITON_INTERPRET is not set", allow_module_level=True)


def reference(qkv, cos, sin, b, t, heads, kv, d):
    """DecoderLayer.attention's steps in float64: rotary on q and k, causal GQA attention."""
    q, k, v = qkv.double().view(b, t, -1).split([heads * d, kv * d, kv * d], dim=-1)
    q = q.reshape(b, t, heads, d).transpose(1, 2)
    k, v = (z.reshape(b, t, kv, d).transpose(1, 2) for z in (k, v))
    if cos is not None:
        q, k = apply_rotary(q, cos.double(), sin.double()), apply_rotary(k, cos.double(), sin.double())
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    return out.transpose(1, 2).reshape(b * t, heads * d)


# (batch, tokens, heads, k/v heads, head size): a whole tile, tokens not a multiple of the
# query block, one k/v head for all, as many k/v heads as heads; llama-1b's shape on a GPU
SHAPES = [(2, 8, 4, 2, 16), (3, 20, 4, 1, 32), (1, 40, 2, 2, 16)] + (
    [(4, 128, 32, 8, 64), (2, 300, 8, 2, 64)] if CUDA else []
)


# the default tiles, and small ones: several query and key blocks, the running softmax
# across them, the diagonal block's mask and the key blocks above it skipped
TILES = [None, {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 2}]


@pytest.mark.parametrize("b,t,heads,kv,d", SHAPES)
@pytest.mark.parametrize("rotary", [True, False])
@pytest.mark.parametrize("tiles", TILES, ids=["default", "16x16"])
def test_rotary_attention_is_rotary_then_causal_gqa(b, t, heads, kv, d, rotary, tiles):
    """The kernel's output is DecoderLayer.attention's on the same projection, to the
    rounding of q, k and the probabilities to 16 bits (a wrong head, k/v head, position,
    rotary pair, mask or block is off by O(1))."""
    g = torch.Generator(device=DEVICE).manual_seed(b * t + d)
    qkv = torch.randn(b * t, (heads + 2 * kv) * d, generator=g, device=DEVICE).half()
    cos, sin = rotary_tables(t, d, 10000.0, DEVICE, torch.float16) if rotary else (None, None)
    got = ta.rotary_attention(qkv, cos, sin, heads, kv, t, config=tiles)
    assert got.shape == (b * t, heads * d) and got.dtype == torch.float16
    ref = reference(qkv, cos, sin, b, t, heads, kv, d)
    assert float((got.double() - ref).norm() / ref.norm()) < 3e-3


def test_rotary_attention_rejects_what_it_cannot_take():
    qkv = torch.zeros(16, 8 * 16, device=DEVICE, dtype=torch.float16)
    cos, sin = rotary_tables(8, 16, 10000.0, DEVICE, torch.float16)
    with pytest.raises(ValueError, match="not \\(batch \\* tokens"):
        ta.rotary_attention(qkv, cos, sin, 4, 2, 5)  # 16 rows are not whole sequences of 5
    with pytest.raises(ValueError, match="cos and sin must be \\(8, 16\\) tables"):
        ta.rotary_attention(qkv, cos[:4], sin[:4], 4, 2, 8)
    assert "head size 24" in ta.attention_supported(128, 4, 2, 24)
    assert ta.attention_supported(128, 32, 8, 64) is None


TINY = WorkloadConfig(name="tiny", model="llama", seq_len=8, hidden=64, intermediate=96, heads=4, kv_heads=2, layers=2)


@pytest.mark.parametrize("scheme", ["w8a8-int8", "w8a8-fp8"])
def test_triton_decoder_with_its_own_attention_is_the_sdpa_layer(scheme, monkeypatch):
    """triton_attention: the W8A8 layer with rotary and attention in the Triton kernel
    against the same layer on torch's rotary and SDPA. Their attention differs by 16-bit
    rounding only (eager torch rounds the rotary's products one by one, the kernel once),
    but the next quantization turns that into whole code steps: so both are held to the
    fp16 model, equally accurate, and close to each other next to their quantization
    error (a wrong head or mask costs O(1)). The op fakes what it computes, for torch.compile."""
    from qbench import triton_layers as tl_

    if scheme == "w8a8-fp8" and CUDA and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("fp8 needs compute capability 8.9")
    out = {}
    with torch.inference_mode():
        x = make_input(TINY, 3, DEVICE, torch.float16, 0)
        ref = build_model(TINY, DEVICE, torch.float16, 0)(x)
        for own in (False, True):
            monkeypatch.setattr(tl_.TritonDecoderLayer, "triton_attention", own)
            model = schemes.apply_scheme(build_model(TINY, DEVICE, torch.float16, 0), scheme, "triton")
            assert all(layer.own_attention == own for layer in model.layers)
            out[own] = model(x)
    quant_error = schemes.relative_error(out[False], ref)
    assert schemes.relative_error(out[True], ref) < 1.1 * quant_error
    assert 0 < schemes.relative_error(out[True], out[False]) < 0.5 * quant_error
    qkv = torch.randn(3 * 8, 8 * 16, device=DEVICE).half()
    cos, sin = model._rope
    torch.library.opcheck(tl_.rotary_attention_op, (qkv, cos, sin, 4, 2, 8), test_utils=("test_faketensor",))


def test_attention_tiles_come_from_the_measured_table(monkeypatch):
    """attention_config: the tiles scripts/bench_attention.py --write kept for this GPU and
    head size, else the defaults (another head size, another GPU, the CPU); the shipped
    table holds whole configs."""
    tiles = {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
    monkeypatch.setattr(ta, "_tuned", lambda: {"GPU X": {"64": tiles}})
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "GPU X")
    cuda = torch.device("cuda", 0)
    assert ta.attention_config(cuda, 64) == tiles
    assert ta.attention_config(cuda, 128) == ta.ATTENTION_CONFIG
    assert ta.attention_config(torch.device("cpu"), 64) == ta.ATTENTION_CONFIG
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "GPU Y")
    assert ta.attention_config(cuda, 64) == ta.ATTENTION_CONFIG
    import json

    for gpu, by_head in json.loads(ta.CONFIGS_FILE.read_text()).items():
        for head, cfg in by_head.items():
            assert int(head) >= 16 and set(cfg) == set(ta.ATTENTION_CONFIG), (gpu, head)
