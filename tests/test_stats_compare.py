"""Run-to-run comparison, through the command users run, on real shards in two folders."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from qbench.compare import COMPARE_COLUMNS, compare_runs
from qbench.shards import read_shards
from qbench.stats import StatsConfig
from tests.conftest import REPO
from tests.test_stats_edges import shard


def make_run(folder, cells, seed):
    """cells: {(dtype, batch): mean latency or a failed status}; 4 repeats of 15."""
    rng = np.random.default_rng(seed)
    shards = folder / "shards"
    shards.mkdir(parents=True)
    for (dtype, batch), mean in cells.items():
        for rep in range(4):
            if isinstance(mean, str):
                shard(shards, dtype, batch, rep, None, status=mean)
            else:
                shard(shards, dtype, batch, rep, mean * (1 + rng.normal(0, 0.01)) + rng.normal(0, 0.02 * mean, 15))
    (folder / "summary.parquet").write_bytes(b"not a shard")  # a results folder holds more than shards
    return folder


@pytest.fixture
def two_runs(tmp_path):
    a = make_run(tmp_path / "a", {("fp16", 1): 10.0, ("fp16", 2): 20.0, ("w8a8", 1): 9.0, ("w8a8", 4): 30.0}, seed=1)
    b = make_run(tmp_path / "b", {("fp16", 1): 10.0, ("fp16", 2): 16.0, ("w8a8", 1): "oom", ("fp16", 8): 70.0}, seed=2)
    return a, b


def test_compare_command_writes_table_and_chart(two_runs, tmp_path):
    a, b = two_runs
    out = tmp_path / "cmp"
    proc = subprocess.run([sys.executable, "-m", "qbench.cli", "compare", str(a), str(b), "--out", str(out),
                           "--label-a", "old", "--label-b", "new", "--resamples", "2000"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "5 cells" in proc.stdout and "2 in one run only" in proc.stdout
    csv = pd.read_csv(out / "compare.csv")
    assert list(csv.columns) == COMPARE_COLUMNS
    table = pd.read_parquet(out / "compare.parquet").set_index(["dtype", "batch"])
    assert len(table) == len(csv) == 5
    assert table.loc[("fp16", 1), "verdict"] == "same"
    faster = table.loc[("fp16", 2)]
    assert faster["verdict"] == "faster" and faster["ratio_ci_low"] < 1.25 < faster["ratio_ci_high"]
    assert table.loc[("w8a8", 4), "present"] == "a" and table.loc[("w8a8", 4), "note"] == "only in old"
    assert table.loc[("fp16", 8), "present"] == "b" and table.loc[("fp16", 8), "note"] == "only in new"
    oom = table.loc[("w8a8", 1)]
    assert oom["present"] == "both" and oom["status_b"] == "oom" and np.isnan(oom["ratio"])
    assert oom["note"] == "not timed in new oom"
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (out / "compare.svg").read_text()
    assert "Latency ratio old / new" in svg and "only in new" in svg
    assert "Latency ratio old / new" in (out / "compare.html").read_text()


def test_cells_timed_differently_are_noted(two_runs):
    a, b = (read_shards(sorted((r / "shards").glob("*.parquet"))) for r in two_runs)
    b.loc[b["dtype"] == "fp16", "tokens"] *= 2
    table = compare_runs(a, b, StatsConfig(resamples=500)).set_index(["dtype", "batch"])
    assert table.loc[("fp16", 1), "note"] == "tokens differs: 8 vs 16"


def test_compare_names_a_folder_without_shards(tmp_path, two_runs):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "-m", "qbench.cli", "compare", str(two_runs[0]), str(empty)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0 and f"no shards (*.parquet) under {empty}" in proc.stderr
    assert "Traceback" not in proc.stderr
