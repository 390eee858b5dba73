import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Without a GPU, qbench's Triton kernels run in Triton's interpreter; it must be chosen
# before triton is first imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]

from qbench.workloads import WorkloadConfig  # noqa: E402

TINY_LLAMA = WorkloadConfig(
    name="tiny", model="llama", seq_len=8, hidden=64, intermediate=128, heads=4, kv_heads=2, layers=2
)
TINY_GEMM = WorkloadConfig(name="g", model="gemm", seq_len=4, in_features=64, out_features=48)


@pytest.fixture(autouse=True)
def bytecode_settings_kept():
    """A test that leaves a bytecode prefix set makes every later test's processes share
    its cache (one did, 2026-11-27): each test must put them back as it found them."""
    before = (os.environ.get("PYTHONPYCACHEPREFIX"), os.environ.get("PYTHONDONTWRITEBYTECODE"), sys.pycache_prefix)
    yield
    after = (os.environ.get("PYTHONPYCACHEPREFIX"), os.environ.get("PYTHONDONTWRITEBYTECODE"), sys.pycache_prefix)
    assert after == before, (
        f"the test changed (PYTHONPYCACHEPREFIX, PYTHONDONTWRITEBYTECODE, sys.pycache_prefix): {before} -> {after}"
    )


@pytest.fixture
def tiny_llama():
    return TINY_LLAMA


def snakemake_exe() -> list[str]:
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "snakemake"]


def run_snakemake(args, cwd=REPO, check=True, timeout=900, env=None):
    """Drive Snakemake through its CLI, as users do (its Python API changes between majors);
    `env` adds to (or, with None values, removes from) the environment."""
    full = dict(os.environ)
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    proc = subprocess.run(
        snakemake_exe() + ["--snakefile", str(REPO / "Snakefile")] + list(args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc
