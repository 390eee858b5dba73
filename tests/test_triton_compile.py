"""The GEMM and row kernels compiled for the H100 (sm_90), without a GPU.

Triton's interpreter runs the kernels' Python as Python. Compiling them goes through
Triton's code generator instead, which has its own rules. In the tenth session a
`return` inside a constexpr `if` compiled the int8 dot that followed it, into the wrong
accumulator. The interpreter tests passed; the GPU failed to compile. This test runs
that code generator (and ptxas) on CI's CPU machines for each epilogue and mainloop
variant of both GEMM kernels, each mode of the row kernel, and the attention kernel. It needs a process without TRITON_INTERPRET, since the kernels are jitted at
import.

CI compiles with the triton it installs (3.9); the GPU machine runs 3.6, whose passes
differ (3.6 fails to flatten a persistent loop around a runtime branch, 3.9 does not).
To compile as the GPU machine does, without one: `python -m pip install --no-deps --target
/tmp/t36 triton==3.6.0`, then `PYTHONPATH=/tmp/t36 .venv/bin/pytest tests/test_triton_compile.py`."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")
pytest.importorskip("triton.backends.nvidia")

SCRIPT = textwrap.dedent(
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    import qbench.triton_attention as ta
    import qbench.triton_kernels as tk

    H100 = GPUTarget("cuda", 90, 32)

    def gemm(is_int, a_group=0, q_out=False, swiglu=False, residual=False, head_dim=0):
        fn, q = tk._w8a8_gemm_kernel, "i8" if is_int else "fp8e4nv"
        const = dict(IS_INT=is_int, HAS_RESIDUAL=residual, EVEN_K=True, SWIGLU=swiglu, BLOCK_M=128, BLOCK_N=256,
                     BLOCK_K=128, GROUP_M=8, A_GROUP=a_group, Q_OUT=q_out, QMAX=127.0 if is_int else 448.0,
                     EXACT=False, HEAD_DIM=head_dim)
        ptr = {"a_ptr": q, "b_ptr": q, "c_ptr": q if q_out else "fp16", "sa_ptr": "fp32", "sb_ptr": "fp32",
               "qs_ptr": "fp32", "r_ptr": "fp16", "cos_ptr": "fp16", "sin_ptr": "fp16"}
        sig = {n: "constexpr" if n in const else "*" + ptr[n] if n in ptr else "i32" for n in fn.arg_names}
        triton.compile(ASTSource(fn, sig, const), target=H100, options=dict(num_warps=8, num_stages=3))

    def gemm_tma(is_int, a_group=0, q_out=False, swiglu=False, residual=False, head_dim=0, store=True):
        # the persistent kernel, its C (and R) through TMA (config key TMA_STORE); the
        # rotary one with q, k and v through a descriptor each, its tile loop not flattened
        # (as w8a8_gemm launches it), and through pointers
        fn, q = tk._w8a8_gemm_tma_kernel, "i8" if is_int else "fp8e4nv"
        c = q if q_out else "fp16"
        const = dict(IS_INT=is_int, HAS_RESIDUAL=residual, SWIGLU=swiglu, BLOCK_M=128, BLOCK_N=256, BLOCK_K=128,
                     GROUP_M=8, NUM_SMS=132, WARP_SPECIALIZE=False, FLATTEN=not (store and head_dim), TMA_STORE=store,
                     A_GROUP=a_group, Q_OUT=q_out, QMAX=127.0 if is_int else 448.0, EXACT=False, HEAD_DIM=head_dim)
        ptr = {"a_desc": f"tensordesc<{q}[128, 128]>", "b_desc": f"tensordesc<{q}[256, 128]>",
               "c_desc": f"tensordesc<{c}[128, 128]>", "r_desc": "tensordesc<fp16[128, 128]>",
               "k_desc": f"tensordesc<{c}[128, 128]>", "v_desc": f"tensordesc<{c}[128, 128]>", "c_ptr": "*" + c,
               "sa_ptr": "*fp32", "sb_ptr": "*fp32", "qs_ptr": "*fp32", "r_ptr": "*fp16", "cos_ptr": "*fp16",
               "sin_ptr": "*fp16"}
        sig = {n: "constexpr" if n in const else ptr.get(n, "i32") for n in fn.arg_names}
        triton.compile(ASTSource(fn, sig, const), target=H100, options=dict(num_warps=8, num_stages=3))

    def rows(mode, is_int):
        fn, q = tk._quantize_rows_kernel, "i8" if is_int else "fp8e4nv"
        const = dict(QMAX=127.0 if is_int else 448.0, MODE=mode, IS_INT=is_int, BLOCK=8192, EXACT=False)
        ptr = {"x_ptr": "fp16", "q_ptr": q, "w_ptr": "fp16", "s_ptr": "fp32"}
        sig = {n: "constexpr" if n in const else "*" + ptr[n] if n in ptr else "fp32" if n == "eps" else "i32"
               for n in fn.arg_names}
        triton.compile(ASTSource(fn, sig, const), target=H100, options=dict(num_warps=8))

    def requantize(is_int):
        fn, q = tk._requantize_groups_kernel, "i8" if is_int else "fp8e4nv"
        const = dict(QMAX=127.0 if is_int else 448.0, IS_INT=is_int, EXACT=False, GROUP=128, GROUPS=64, ROWS=16,
                     BLOCK_N=1024)
        ptr = {"x_ptr": "*" + q, "q_ptr": "*" + q, "s_ptr": "*fp32", "rs_ptr": "*fp32"}
        sig = {n: "constexpr" if n in const else ptr.get(n, "i32") for n in fn.arg_names}
        triton.compile(ASTSource(fn, sig, const), target=H100, options=dict(num_warps=4))

    def attention(rotary):
        fn = ta._rotary_attention_kernel
        const = dict(HEADS=32, KV_HEADS=8, HEAD_DIM=64, BLOCK_M=64, BLOCK_N=64, ROTARY=rotary)
        ptr = {"qkv_ptr": "*fp16", "o_ptr": "*fp16", "cos_ptr": "*fp16", "sin_ptr": "*fp16", "qk_scale": "fp32"}
        sig = {n: "constexpr" if n in const else ptr.get(n, "i32") for n in fn.arg_names}
        triton.compile(ASTSource(fn, sig, const), target=H100, options=dict(num_warps=4, num_stages=2))

    for rotary in (True, False):
        attention(rotary)
        print("attention, rotary" if rotary else "attention", "ok", flush=True)
    for is_int in (True, False):
        for name, kw in [("plain", {}), ("residual", dict(residual=True)), ("swiglu", dict(swiglu=True)),
                         ("swiglu, quantized per group", dict(swiglu=True, q_out=True)),
                         ("swiglu by tanh.approx, quantized per group", dict(swiglu=2, q_out=True)),
                         ("swiglu, quantized per group, power-of-two scales", dict(swiglu=2, q_out=2)),
                         ("per-group A, residual", dict(a_group=128, residual=True)),
                         ("rotary, q, k and v stored apart", dict(head_dim=64))]:
            gemm(is_int, **kw)
            print("gemm", "int8" if is_int else "fp8", name, "ok", flush=True)
            gemm_tma(is_int, **kw)
            print("gemm tma", "int8" if is_int else "fp8", name, "ok", flush=True)
        gemm_tma(is_int, head_dim=64, store=False)
        print("gemm tma", "int8" if is_int else "fp8", "rotary, pointer store", "ok", flush=True)
        for mode in (0, 1, 2):
            rows(mode, is_int)
            print("rows", "int8" if is_int else "fp8", mode, "ok", flush=True)
        requantize(is_int)
        print("requantize groups", "int8" if is_int else "fp8", "ok", flush=True)
    """
)


def test_the_kernels_compile_for_the_h100():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert run.stdout.count(" ok") == 2 * (2 * 8 + 1 + 4) + 2, run.stdout


def test_the_gluon_ping_pong_probe_compiles_for_the_h100():
    """scripts/gluon_gemm_probe.py (run on an H100 since 2026-11-27) compiles for sm_90, both
    variants (with and without the residual), each with its 16 wgmma and within the
    H100's 227 KiB of shared memory: a broken probe is found here, not in a device call."""
    pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, str(root / "scripts" / "gluon_gemm_probe.py"), "--compile-only"], env=env,
                         capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("pingpong block=")]
    assert len(lines) == 2 and all("wgmma=16" in line for line in lines), run.stdout
    assert all(int(line.split("shared=")[1].split()[0]) <= 232448 for line in lines), run.stdout


@pytest.mark.parametrize(
    "consumers,stages,sa_mode,wgmma,block_n,rescale",
    [(3, 4, 0, 12, 128, False), (3, 4, 2, 12, 128, False), (2, 6, 1, 8, 128, False), (2, 3, 0, 8, 256, True),
     (4, 3, 0, 16, 128, True)],
)  # fmt: skip
def test_the_gluon_grouped_gemm_compiles_for_the_h100(consumers, stages, sa_mode, wgmma, block_n, rescale):
    """qbench.gluon_gemm (the down GEMM for A in 128-column groups: Gluon has no
    interpreter, so the CPU can only compile it) compiles for sm_90 with and without the
    residual: one 64 x block_n x 128 MMA (4 wgmma) per consumer warpgroup, with a partial
    sum per K step or the accumulator rescaled, within the H100's 227 KiB of shared memory.
    With its row scales by TMA (sa_mode 2) the producer loads one 1-D box of them per
    consumer and K step; otherwise none."""
    pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")
    script = (
        "from qbench import gluon_gemm as g\n"
        "for residual in (False, True):\n"
        f"    k = g.compile_for_sm90(residual, consumers={consumers}, stages={stages}, sa_mode={sa_mode},\n"
        f"                           block_n={block_n}, rescale={rescale})\n"
        "    ptx = k.asm['ptx']\n"
        "    print('shared', k.metadata.shared, 'wgmma', ptx.count('wgmma.mma_async'),\n"
        "          'tma1d', ptx.count('cp.async.bulk.tensor.1d'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    lines = [line.split() for line in run.stdout.splitlines() if line.startswith("shared")]
    assert len(lines) == 2 and all(int(line[3]) == wgmma for line in lines), run.stdout
    assert all(int(line[1]) <= 232448 for line in lines), run.stdout
    assert all(int(line[5]) == (consumers if sa_mode == 2 else 0) for line in lines), run.stdout
