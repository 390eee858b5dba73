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
