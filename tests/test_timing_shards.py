import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from qbench.shards import SCHEMA, SCHEMA_VERSION, ShardError, make_table, read_shards, validate_table, write_shard
from qbench.timing import TimingConfig, stop_reason, time_forward


def fixed(**kw):
    base = dict(warmup=3, warmup_ms=0, min_iterations=7, max_iterations=7, min_time_s=0)
    return TimingConfig(**{**base, **kw})


def test_time_forward_counts_and_measures():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.002)

    s = time_forward(fn, torch.device("cpu"), fixed(), read_sensors=lambda: {"x": 1})
    assert len(calls) == 10
    assert len(s.latency_ms) == 7 and len(s.readings) == 7
    assert all(ms >= 2.0 for ms in s.latency_ms)  # the sleep is inside the timed region
    assert s.warmup_s >= 0.006 and s.warmup_iterations == 3
    assert s.method == "perf_counter" and s.stop_reason == "max_iterations" and s.l2 == "hot"


def test_warmup_runs_until_count_and_time():
    s = time_forward(lambda: time.sleep(0.001), torch.device("cpu"), fixed(warmup=2, warmup_ms=30))
    assert s.warmup_iterations >= 10  # 30 ms of ~1 ms calls, far more than the count of 2
    assert s.warmup_s >= 0.03


def test_adaptive_stopping_stops_on_the_target():
    # any RSD is under 1000%: stops right after the minimum, for that reason
    s = time_forward(lambda: time.sleep(0.002), torch.device("cpu"),
                     fixed(min_iterations=5, max_iterations=500, target_rsd=10.0, target_rse=0.0))  # fmt: skip
    assert s.stop_reason == "target_rsd" and len(s.latency_ms) == 5
    # an impossible target runs into the time limit instead
    s = time_forward(lambda: time.sleep(0.002), torch.device("cpu"),
                     fixed(min_iterations=5, max_iterations=10_000, target_rsd=0.0, target_rse=0.0, max_time_s=0.05))  # fmt: skip
    assert s.stop_reason == "max_time" and 0.05 <= sum(s.latency_ms) / 1e3 < 1.0


@pytest.mark.parametrize(
    "lat, elapsed, kw, expected",
    [
        ([1.0] * 3, 1.0, {}, None),  # under min_iterations
        ([1.0] * 10, 0.01, {"min_time_s": 0.1}, None),  # under min_time
        ([1.0, 1.001] * 5, 1.0, {}, "target_rsd"),
        ([1.0, 1.2] * 50, 1.0, {"target_rsd": 0.01, "target_rse": 0.02}, "target_rse"),
        ([1.0, 1.2] * 5, 1.0, {"target_rsd": 0.01, "target_rse": 0.001}, None),
        ([1.0, 1.2] * 5, 7.0, {"target_rsd": 0.01, "target_rse": 0.001, "max_time_s": 6}, "max_time"),
        ([1.0, 1.2] * 5, 1.0, {"max_iterations": 10}, "max_iterations"),
    ],
)
def test_stop_reason(lat, elapsed, kw, expected):
    assert stop_reason(lat, elapsed, TimingConfig(**{"min_iterations": 10, "min_time_s": 0.1, **kw})) == expected


def test_unknown_timing_key_is_named():
    with pytest.raises(ValueError, match=r"timing: unknown keys \['iterations'\]"):
        TimingConfig.from_dict({"iterations": 20})


def row(**kw):
    base = {
        "schema_version": SCHEMA_VERSION, "workload": "w", "model": "llama", "dtype": "fp16", "scheme": "fp16",
        "impl": "eager", "batch": 2, "rep": 0, "attempt": 1, "tokens": 16, "iteration": 0, "latency_ms": 1.5, "status": "ok",
        "device": "cpu", "config_hash": "abc", "seed": 0,
    }  # fmt: skip
    base.update(kw)
    return base


def test_shard_round_trip_is_atomic(tmp_path):
    path = tmp_path / "a" / "rep=0.parquet"
    table = make_table([row(iteration=i, latency_ms=1.0 + i) for i in range(3)], {"batch": 2})
    write_shard(table, path)
    assert [p.name for p in path.parent.iterdir()] == ["rep=0.parquet"]  # no temp file left behind
    back = pq.read_table(path)
    assert back.schema.remove_metadata().equals(SCHEMA)
    assert b"qbench.cell_config" in back.schema.metadata
    df = read_shards([path])
    assert df["latency_ms"].tolist() == [1.0, 2.0, 3.0]


def test_failed_cell_is_one_row_with_status(tmp_path):
    path = tmp_path / "oom.parquet"
    write_shard(make_table([row(status="oom", latency_ms=None, iteration=None, status_detail="CUDA out of memory")]), path)
    df = read_shards([path])
    assert len(df) == 1 and df["status"][0] == "oom" and df["latency_ms"].isna().all()


@pytest.mark.parametrize(
    "rows, message",
    [
        ([row(latency_ms=float("nan"))], "no latency"),
        ([row(latency_ms=-1.0)], "must be > 0"),
        ([row(latency_ms=0.0)], "must be > 0"),
        ([row(status="weird")], "unknown status"),
        ([row(schema_version=99)], "schema_version"),
    ],
)
def test_bad_shards_are_refused_naming_the_file(tmp_path, rows, message):
    path = tmp_path / "bad.parquet"
    write_shard(make_table(rows), path)
    with pytest.raises(ShardError, match=message) as err:
        read_shards([path])
    assert str(path) in str(err.value)


def test_truncated_and_foreign_files_are_named(tmp_path):
    good = tmp_path / "good.parquet"
    write_shard(make_table([row()]), good)
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ShardError, match="cut.parquet: not a readable Parquet file"):
        read_shards([good, cut])
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1]}), foreign)
    with pytest.raises(ShardError, match="foreign.parquet: missing columns"):
        read_shards([foreign])


def test_validate_checks_types():
    table = make_table([row()])
    table = table.set_column(table.schema.get_field_index("batch"), "batch", pa.array(["2"]))
    with pytest.raises(ShardError, match="column batch has type string"):
        validate_table(table, "x")


def test_cells_from_two_gpu_models_are_kept_apart(tmp_path):
    """Shards of one cell from an H100 and an A100 are not pooled: each becomes its own
    workload, `w @ model`, in the samples, the summary and the report's warnings."""
    from qbench.report import warnings
    from qbench.stats import StatsConfig, summarize

    paths = []
    for rep, gpu, ms in [(0, "H100", 1.0), (1, "H100", 1.01), (2, "A100", 2.0), (3, "A100", 2.02)]:
        for dtype in ("fp16", "w8a8"):
            p = tmp_path / dtype / f"rep={rep}.parquet"
            rows = [row(rep=rep, dtype=dtype, iteration=i, latency_ms=ms * (1 + 0.001 * i), device="cuda:0",
                        gpu_name=gpu) for i in range(5)]  # fmt: skip
            write_shard(make_table(rows, {"batch": 2}), p)
            paths.append(p)
    df = read_shards(paths)
    assert sorted(df["workload"].unique()) == ["w @ A100", "w @ H100"]
    summary = summarize(df, "fp16", StatsConfig(resamples=200))
    assert sorted(summary["workload"].unique()) == ["w @ A100", "w @ H100"]
    assert summary.loc[summary["workload"] == "w @ A100", "mean_ms"].iloc[0] > 1.9
    assert any("2 GPU models (A100, H100)" in w for w in warnings(summary, df))
    one = read_shards([p for p in paths if "rep=0" in str(p) or "rep=1" in str(p)])
    assert set(one["workload"]) == {"w"}  # one model: names unchanged
