"""scripts/bench_pipeline.py's stability per card: two runs compared on the repeats each
measured on the same GPU, on jobs tables built here."""

import importlib.util

import numpy as np
import pandas as pd

from tests.conftest import REPO


def bench_pipeline():
    spec = importlib.util.spec_from_file_location("bench_pipeline", REPO / "scripts" / "bench_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(jobs: list[tuple[int, str, float]]) -> dict:
    """A run's jobs table: (rep, gpu_uuid, the job's mean latency) for one cell."""
    df = pd.DataFrame(
        [{"workload": "w", "dtype": "fp16", "batch": 128, "rep": r, "gpu_uuid": g, "job_mean_ms": x} for r, g, x in jobs]
    )
    return {"jobs": df.set_index(["workload", "dtype", "batch", "rep"])}


def test_two_runs_are_compared_card_by_card():
    bp = bench_pipeline()
    one_card = run([(r, "GPU-A", 100.0 + d) for r, d in enumerate([0.0, 0.1, -0.1, 0.05, -0.05])])
    two_cards = run([(0, "GPU-A", 100.02), (1, "GPU-B", 99.0), (2, "GPU-A", 99.98), (3, "GPU-B", 99.1), (4, "GPU-A", 100.0)])
    c = bp.stability_per_card(one_card, two_cards)
    assert list(c["gpu"]) == ["GPU-A"]  # GPU-B measured nothing in the first run
    row = c.iloc[0]
    assert (row["repeats_a"], row["repeats_b"]) == (5, 3)
    assert np.isclose(row["mean_ms_b"], 100.0) and abs(row["diff_pct"]) < 1e-9
    assert row["overlap"]
    # the whole-cell comparison mixes in card B, 1% faster: its intervals need not overlap
    whole = two_cards["jobs"]["job_mean_ms"].mean()
    assert whole < 99.7


def test_a_card_that_moved_is_caught_and_one_repeat_gives_no_verdict():
    bp = bench_pipeline()
    a = run([(r, "GPU-A", 100.0 + d) for r, d in enumerate([0.0, 0.02, -0.02, 0.01, -0.01])])
    slower = run([(r, "GPU-A", 101.0 + d) for r, d in enumerate([0.0, 0.02, -0.02])] + [(3, "GPU-B", 99.0)])
    c = bp.stability_per_card(a, slower).set_index("gpu")
    assert not c.loc["GPU-A", "overlap"] and np.isclose(c.loc["GPU-A", "diff_pct"], 1.0)
    assert "GPU-B" not in c.index
    lone = run([(0, "GPU-A", 100.0)])
    assert bp.stability_per_card(a, lone).iloc[0]["overlap"] is None


def shards(cells: dict[str, list[np.ndarray]]) -> dict:
    """A run's samples: per dtype, one latency series (ms) per repeat."""
    rows = [
        {"workload": "w", "dtype": d, "batch": 128, "rep": r, "iteration": i, "latency_ms": x, "status": "ok"}
        for d, reps in cells.items()
        for r, series in enumerate(reps)
        for i, x in enumerate(series)
    ]
    return {"shards": pd.DataFrame(rows)}


def test_windows_tell_a_spread_between_processes_from_one_a_longer_loop_averages_out():
    bp = bench_pipeline()
    rng = np.random.default_rng(0)
    # 100 ms samples: 80 of them are an 8 s loop
    offsets = [-0.5, 0.3, 0.0, 0.4, -0.2]  # ms: each process its own level, the whole loop long
    per_process = [100 + o + rng.normal(0, 0.05, 80) for o in offsets]
    # one level for all, a slow swing in a random phase: a short window catches a part of it
    swings = [100 + np.sin(np.arange(80) / 6 + rng.uniform(0, 6.3)) for _ in offsets]
    short = [100 + rng.normal(0, 0.05, 30)]  # a 3 s loop: counted at 2 s only
    w = bp.windows(shards({"process": per_process, "swing": swings, "short": short + per_process[:1]}))
    w = w.set_index("dtype")
    assert w.loc["process", "n_8s"] == 5 and w.loc["short", "n_2s"] == 2 and w.loc["short", "n_4s"] == 1
    assert np.isnan(w.loc["short", "sd_4s_pct"])  # one repeat has no spread
    p = w.loc["process"]
    assert 0.3 < p["sd_2s_pct"] < 0.45 and abs(p["sd_8s_pct"] - p["sd_2s_pct"]) < 0.05
    s = w.loc["swing"]
    assert s["sd_8s_pct"] < s["sd_2s_pct"] / 2


def test_thermal_finds_the_slope_of_latency_on_the_starting_temperature():
    """Repeats whose latency rises 0.1% per degree of their starting temperature, in two
    runs at different temperature levels: the pooled slope is 0.1% per degree, the
    correlation 1, and each cell's repeats are said to follow the other cell's."""
    bp = bench_pipeline()
    runs = []
    for base_c in (50.0, 65.0):  # each run's level is taken out: only the spread within it counts
        rows, t = [], pd.Timestamp("2026-11-27", tz="UTC")
        for rep, dc in enumerate([-2.0, 1.0, 3.0, -1.0]):
            for dtype, ms in (("fp16", 100.0), ("w8a8", 50.0)):
                t += pd.Timedelta(seconds=10)
                lat = ms * (1 + 0.001 * dc)
                rows += [{"workload": "w", "dtype": dtype, "batch": 128, "rep": rep, "iteration": i, "started_at": t,
                          "latency_ms": lat, "temperature_c": base_c + dc + 0.1 * i} for i in range(5)]  # fmt: skip
        runs.append({"jobs": bp.jobs_of(pd.DataFrame(rows))})
    th = bp.thermal(runs).set_index("dtype")
    assert list(th["repeats"]) == [8, 8]
    assert np.allclose(th["corr"], 1.0) and np.allclose(th["pct_per_c"], 0.1, rtol=0.02)
    assert th.loc["w8a8", "after"] == "fp16/128" and th.loc["fp16", "after"] == "w8a8/128"
