import dataclasses

import pytest
import torch

from qbench.config import CellConfig
from qbench.measure import run_cell
from qbench.schemes import DtypeConfig
from qbench.shards import SCHEMA
from qbench.timing import TimingConfig
from tests.conftest import TINY_GEMM, TINY_LLAMA


def cell(scheme, impl="eager", workload=TINY_LLAMA, tolerance=None, iterations=4):
    return CellConfig(workload, DtypeConfig("d", scheme, impl, tolerance), 2, 0, TimingConfig(warmup=1, warmup_ms=0, min_iterations=iterations, max_iterations=iterations), 0, "cpu")


@pytest.mark.parametrize("scheme", ["fp16", "bf16", "w8a8-int8", "w8a8-fp8"])
def test_every_scheme_gives_a_shard(scheme):
    table = run_cell(cell(scheme))
    assert table.schema.remove_metadata().equals(SCHEMA)
    df = table.to_pandas()
    assert len(df) == 4 and (df["status"] == "ok").all()
    assert (df["latency_ms"] > 0).all()
    assert df["iteration"].tolist() == [0, 1, 2, 3]
    assert df["scheme"].iloc[0] == scheme and df["tokens"].iloc[0] == 2 * TINY_LLAMA.seq_len
    assert df["device"].iloc[0] == "cpu" and df["torch"].iloc[0] == torch.__version__
    assert df["rel_error"].iloc[0] < 0.15


def test_the_log_splits_the_set_up(caplog):
    """Where a job's set-up goes, before its first call: the log line names each part."""
    import re

    with caplog.at_level("INFO", logger="qbench.measure"):
        df = run_cell(cell("w8a8-int8")).to_pandas()
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("setup "))
    m = re.match(r"setup ([\d.]+) s \(build ([\d.]+), reference ([\d.]+), scheme ([\d.]+), first call ([\d.]+) s\)", line)
    assert m, line
    total, *parts = map(float, m.groups())
    assert sum(parts) <= total + 0.1 and total == pytest.approx(df["setup_s"].iloc[0], abs=0.06)


def test_over_tolerance_is_marked_inaccurate():
    df = run_cell(cell("w8a8-int8", tolerance=1e-6)).to_pandas()
    assert (df["status"] == "inaccurate").all()
    assert "tolerance" in df["status_detail"].iloc[0]
    assert df["latency_ms"].notna().all()  # still timed, and flagged


def test_cuda_without_gpu_is_an_error_not_a_fallback():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from qbench.device import DeviceError

    with pytest.raises(DeviceError, match="device is 'cuda'"):
        run_cell(dataclasses.replace(cell("fp16"), device="cuda"))


@pytest.mark.slow
def test_compiled_cell():
    """torch.compile on the CPU: one small test, since a first compile takes seconds."""
    df = run_cell(cell("w8a8-int8", impl="compile", workload=TINY_GEMM, iterations=3)).to_pandas()
    assert (df["status"] == "ok").all() and df["impl"].iloc[0] == "compile"
    assert df["setup_s"].iloc[0] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the Triton kernels run")
def test_triton_on_the_cpu_is_an_unsupported_cell_not_a_crash():
    df = run_cell(cell("w8a8-int8", impl="triton")).to_pandas()
    assert len(df) == 1 and df["status"].iloc[0] == "unsupported"
    assert "CUDA GPU" in df["status_detail"].iloc[0] and df["impl"].iloc[0] == "triton"


def test_smoothed_int8_cell_is_measured_with_its_alpha_in_the_config():
    c = dataclasses.replace(cell("w8a8-int8"), dtype=DtypeConfig("d", "w8a8-int8", "eager", smoothquant=0.5))
    df = run_cell(c).to_pandas()
    assert (df["status"] == "ok").all() and df["rel_error"].iloc[0] < 0.15
    assert c.config_hash() != cell("w8a8-int8").config_hash()
