"""scripts/tune_triton.py under a time budget: a candidate list cut short gives no winner
(a partial winner is no winner), and what finished before the budget stays."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tune_triton.py"


@pytest.fixture
def tune(monkeypatch):
    spec = importlib.util.spec_from_file_location("tune_triton", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_budget_stops_between_candidates(tune, monkeypatch, capsys):
    clock = [0.0]
    monkeypatch.setattr(tune.time, "monotonic", lambda: clock[0])
    times = iter([3.0, 1.0, 2.0, 0.5])

    def graph_ms(fn):
        clock[0] += 10.0  # each candidate takes 10 s to compile and time
        return next(times)

    monkeypatch.setattr(tune, "graph_ms", graph_ms)
    row = {"m": 8, "n": 8, "k": 8}
    cands = [{"BLOCK_M": i} for i in range(4)]

    rows = []
    assert tune.fastest("", cands, lambda cfg: None, rows, row) == (0.5, {"BLOCK_M": 3})  # no budget: all four
    assert len(rows) == 4 and "TFLOP/s" in capsys.readouterr().out

    times, clock[0] = iter([3.0, 1.0, 2.0, 0.5]), 0.0
    tune.DEADLINE.append(15.0)  # the second candidate starts at 10 s, the third would at 20 s
    rows = []
    assert tune.fastest("", cands, lambda cfg: None, rows, row) is None
    assert len(rows) == 2 and "after 2 of 4 candidates; not tuned" in capsys.readouterr().out


def test_the_grouped_gemms_are_tuned_under_entries_of_their_own(tune, monkeypatch):
    """--group: the SiLU*mul epilogue that quantizes, then the down GEMM with group scales
    and the residual, each run for real (Triton's interpreter on the CPU) and kept under
    `NxK/swiglu/gG` and `NxK/gG`; down candidates whose K step spans two groups are left out."""
    import torch

    from qbench import triton_kernels as tk

    if not torch.cuda.is_available():
        if not tk.interpreting():
            pytest.skip("no GPU and TRITON_INTERPRET is not set")
        monkeypatch.setattr(tune, "DEVICE", "cpu")
    ran = []
    monkeypatch.setattr(tune, "graph_ms", lambda fn: (ran.append(fn()), 1.0)[1])
    monkeypatch.setattr(tune, "CANDIDATES", [(32, 64, 32, 4, 1), (32, 64, 64, 4, 1)])
    monkeypatch.setattr(tune, "SWIGLU_SHAPES", {(128, 64)})
    monkeypatch.setattr(tune, "DOWN_SHAPE", (48, 64))
    rows, winners = [], {}
    tune.tune_grouped("fp8", 40, 32, [False], rows, winners, "GPU X")
    assert set(winners["fp8"]) == {"128x64/swiglu/g32", "48x64/g32"}
    assert [r["variant"] for r in rows] == ["swiglu/g32", "swiglu/g32", "g32"]  # BLOCK_K 64 > 32: not a down candidate
    codes, scales = ran[0]
    assert codes.shape == (40, 64) and scales.shape == (2, 40) and ran[-1].shape == (40, 48)
    rows, winners = [], {}
    tune.tune_grouped("fp8", 40, 32, [False], rows, winners, "GPU X", swiglu_only=True)  # --only-swiglu
    assert set(winners["fp8"]) == {"128x64/swiglu/g32"} and {r["variant"] for r in rows} == {"swiglu/g32"}
