"""The summary on the cells a real sweep produces at its edges, built from real shards:
one repeat, identical samples, out-of-memory cells, and latencies no interval can use."""

import warnings

import numpy as np
import pandas as pd
import pytest

from qbench.shards import SCHEMA_VERSION, ShardError, make_table, read_shards, write_shard
from qbench.stats import SUMMARY_COLUMNS, StatsConfig, summarize

CFG = StatsConfig(resamples=1000, seed=0)
FIRST_VERSION_COLUMNS = [
    "workload", "model", "dtype", "scheme", "impl", "batch", "tokens", "status", "status_detail",
    "n_repeats", "n_failed_repeats", "n_samples", "mean_ms", "ci_low_ms", "ci_high_ms",
    "median_ms", "median_ci_low_ms", "median_ci_high_ms", "cv", "few_repeats", "tflops",
    "baseline", "speedup", "speedup_ci_low", "speedup_ci_high", "verdict",
    "rel_error", "tolerance", "gpu_name", "confidence",
]  # fmt: skip


def shard(tmp_path, dtype, batch, rep, latencies, status="ok"):
    """Write one real shard; `latencies` None makes a failed cell's single row."""
    base = {
        "schema_version": SCHEMA_VERSION, "workload": "w", "model": "llama", "dtype": dtype, "scheme": dtype,
        "impl": "eager", "batch": batch, "rep": rep, "tokens": 8 * batch, "status": status, "device": "cpu",
        "config_hash": "abc", "seed": 0, "flops": 1e9, "rel_error": 0.01, "tolerance": 0.1,
        "setup_s": 2.0, "warmup_s": 0.5,
    }  # fmt: skip
    if latencies is None:
        rows = [dict(base, status_detail=f"{status} at batch {batch}")]
    else:
        rows = [dict(base, iteration=i, latency_ms=float(v)) for i, v in enumerate(latencies)]
    path = tmp_path / f"{dtype}-{batch}-{rep}.parquet"
    write_shard(make_table(rows), path)
    return path


def summary_of(paths, cfg=CFG):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero or empty slices on the way
        return summarize(read_shards(paths), "fp16", cfg).set_index(["dtype", "batch"])


def test_new_columns_come_after_the_first_versions():
    assert SUMMARY_COLUMNS[: len(FIRST_VERSION_COLUMNS)] == FIRST_VERSION_COLUMNS
    assert len(set(SUMMARY_COLUMNS)) == len(SUMMARY_COLUMNS)


def test_single_repeat_gives_numbers_but_no_interval(tmp_path):
    rng = np.random.default_rng(0)
    paths = [shard(tmp_path, "fp16", 1, 0, 10 + rng.normal(0, 0.2, 20)),
             shard(tmp_path, "w8a8", 1, 0, 5 + rng.normal(0, 0.1, 20))]  # fmt: skip
    s = summary_of(paths)
    row = s.loc[("w8a8", 1)]
    assert row["n_repeats"] == 1 and row["few_repeats"] == True  # noqa: E712
    assert np.isnan(row["ci_low_ms"]) and np.isnan(row["median_ci_low_ms"])
    assert row["speedup"] == pytest.approx(2.0, rel=0.05) and np.isnan(row["speedup_ci_low"])
    assert row["verdict"] == "unknown"
    assert np.isnan(row["var_between_ms2"]) and row["var_within_ms2"] > 0 and np.isnan(row["icc"])


def test_identical_samples_give_zero_width_intervals(tmp_path):
    paths = [shard(tmp_path, "fp16", 1, r, [10.0] * 20) for r in range(3)]
    paths += [shard(tmp_path, "w8a8", 1, r, [8.0] * 20) for r in range(3)]
    paths += [shard(tmp_path, "w8a8", 2, r, [10.0] * 20) for r in range(3)]
    paths += [shard(tmp_path, "fp16", 2, r, [10.0] * 20) for r in range(3)]
    s = summary_of(paths)
    fp = s.loc[("fp16", 1)]
    assert (fp["ci_low_ms"], fp["mean_ms"], fp["ci_high_ms"]) == (10.0, 10.0, 10.0)
    assert (fp["median_ci_low_ms"], fp["median_ci_high_ms"]) == (10.0, 10.0)
    assert fp["cv"] == 0 and fp["n_outliers"] == 0 and not fp["unstable"] and np.isnan(fp["icc"])
    assert fp["advised_repeats"] == 3
    w = s.loc[("w8a8", 1)]
    assert (w["speedup_ci_low"], w["speedup"], w["speedup_ci_high"]) == pytest.approx((1.25, 1.25, 1.25))
    assert w["verdict"] == "faster"
    assert s.loc[("w8a8", 2), "verdict"] == "same" and s.loc[("w8a8", 2), "speedup"] == 1.0


def test_oom_cells_and_partly_failed_cells(tmp_path):
    rng = np.random.default_rng(1)
    paths = [shard(tmp_path, "fp16", 4, r, 40 + rng.normal(0, 0.5, 10)) for r in range(3)]
    paths += [shard(tmp_path, "w8a8", 4, r, None, status="oom") for r in range(3)]  # all repeats out of memory
    paths += [shard(tmp_path, "fp16", 8, r, None, status="oom") for r in range(3)]  # the baseline out of memory
    paths += [shard(tmp_path, "w8a8", 8, r, 60 + rng.normal(0, 0.5, 10)) for r in range(3)]
    paths += [shard(tmp_path, "fp16", 2, r, 20 + rng.normal(0, 0.5, 10)) for r in range(3)]
    paths += [shard(tmp_path, "w8a8", 2, 0, None, status="oom")]  # one of three repeats failed
    paths += [shard(tmp_path, "w8a8", 2, r, 15 + rng.normal(0, 0.5, 10)) for r in (1, 2)]
    s = summary_of(paths)
    oom = s.loc[("w8a8", 4)]
    assert oom["status"] == "oom" and oom["n_failed_repeats"] == 3 and np.isnan(oom["mean_ms"])
    assert pd.isna(oom["verdict"]) and pd.isna(oom["advised_repeats"])
    assert pd.isna(s.loc[("w8a8", 8), "speedup"]) and s.loc[("w8a8", 8), "mean_ms"] > 0  # no baseline: no speedup
    part = s.loc[("w8a8", 2)]
    assert part["status"] == "ok" and part["n_failed_repeats"] == 1 and part["n_repeats"] == 2
    assert part["few_repeats"] == True and part["verdict"] in {"faster", "same"}  # noqa: E712
    assert part["speedup_ci_low"] <= part["speedup"] <= part["speedup_ci_high"]


@pytest.mark.parametrize("bad, message", [(float("nan"), "no latency"), (-3.0, "must be > 0")])
def test_nan_and_negative_latencies_are_refused_naming_the_shard(tmp_path, bad, message):
    good = shard(tmp_path, "fp16", 1, 0, [10.0, 10.1, 9.9])
    broken = shard(tmp_path, "fp16", 1, 1, [10.0, bad, 9.9])
    with pytest.raises(ShardError, match=message) as err:
        summary_of([good, broken])
    assert str(broken) in str(err.value)


def test_an_infinite_latency_is_refused_naming_the_shard(tmp_path):
    """The reader refuses an infinite latency, naming the file; the summary never sees it
    (and would name the cell and repeat if it did)."""
    paths = [shard(tmp_path, "fp16", 1, 0, [10.0, 10.1]), shard(tmp_path, "fp16", 1, 1, [10.0, float("inf")])]
    with pytest.raises(ShardError, match=r"latencies must be finite") as err:
        summary_of(paths)
    assert str(paths[1]) in str(err.value)


def test_summary_is_reproducible_and_per_cell(tmp_path):
    rng = np.random.default_rng(2)
    paths = [shard(tmp_path, d, b, r, m * b + rng.normal(0, 0.3, 12))
             for d, m in (("fp16", 10), ("w8a8", 9)) for b in (1, 2) for r in range(4)]  # fmt: skip
    a, b = summary_of(paths), summary_of(paths)
    pd.testing.assert_frame_equal(a, b)
    only_batch1 = summary_of([p for p in paths if "-1-" in p.name])
    # a cell's interval does not depend on which other cells are in the sweep
    pd.testing.assert_series_equal(a.loc[("w8a8", 1)], only_batch1.loc[("w8a8", 1)])
