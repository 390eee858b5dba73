"""The Parquet shard: one file per measurement job, one row per timed iteration.

A shard describes itself: the cell's keys, each sample with the sensor readings taken
during it, the cell's status and accuracy, and the provenance of the run. A cell that
could not be timed (out of memory, unsupported) is one row with a null latency and its
status, so every job leaves a shard and the report can say what happened.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

SCHEMA_VERSION = 2  # 2: timing method, stop reason, L2 state, throttling, reserved memory
STATUSES = ("ok", "inaccurate", "oom", "unsupported", "error")
# statuses whose samples are real timings
TIMED_STATUSES = ("ok", "inaccurate")

SCHEMA = pa.schema(
    [
        # the cell
        pa.field("schema_version", pa.int32(), nullable=False),
        pa.field("workload", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("scheme", pa.string(), nullable=False),
        pa.field("impl", pa.string(), nullable=False),
        pa.field("batch", pa.int64(), nullable=False),
        pa.field("rep", pa.int64(), nullable=False),
        pa.field("attempt", pa.int64()),  # Snakemake's attempt number (1 unless retried)
        pa.field("tokens", pa.int64(), nullable=False),
        # the sample
        pa.field("iteration", pa.int64()),
        pa.field("latency_ms", pa.float64()),
        pa.field("sm_clock_mhz", pa.float64()),
        pa.field("mem_clock_mhz", pa.float64()),
        pa.field("temperature_c", pa.float64()),
        pa.field("power_w", pa.float64()),
        pa.field("clock_event_reasons", pa.int64()),  # NVML bitmask read during the sample
        pa.field("throttled", pa.bool_()),  # kept out of statistics by default
        # the cell's outcome
        pa.field("status", pa.string(), nullable=False),
        pa.field("status_detail", pa.string()),
        pa.field("rel_error", pa.float64()),
        pa.field("tolerance", pa.float64()),
        pa.field("flops", pa.float64()),
        pa.field("timing_method", pa.string()),  # cuda_graph | cuda_launch | perf_counter
        pa.field("timing_note", pa.string()),  # why no CUDA graph, when there is none
        pa.field("stop_reason", pa.string()),  # target_rsd | target_rse | max_time | max_iterations
        pa.field("l2", pa.string()),  # hot | cold (flushed before each sample)
        pa.field("warmup_iterations", pa.int64()),
        pa.field("startup_s", pa.float64()),  # process start to the measurement (interpreter, imports)
        pa.field("setup_s", pa.float64()),  # build + quantize + reference check, first call included
        pa.field("compile_s", pa.float64()),  # the first call of the variant (compiles, for impl=compile)
        pa.field("warmup_s", pa.float64()),  # the CUDA-graph capture included (timing.warmup_counts_capture)
        pa.field("timed_s", pa.float64()),  # wall time of the timed loop
        pa.field("peak_mem_bytes", pa.int64()),
        pa.field("peak_reserved_bytes", pa.int64()),
        pa.field("max_sm_clock_mhz", pa.float64()),
        # provenance
        pa.field("device", pa.string(), nullable=False),
        pa.field("gpu_name", pa.string()),
        pa.field("gpu_uuid", pa.string()),
        pa.field("gpu_index", pa.int64()),
        pa.field("driver", pa.string()),
        pa.field("cuda", pa.string()),
        pa.field("torch", pa.string()),
        pa.field("python", pa.string()),
        pa.field("qbench_version", pa.string()),
        pa.field("git_commit", pa.string()),
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("host", pa.string()),
        pa.field("cpu", pa.string()),
        pa.field("slurm_job_id", pa.string()),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
    ]
)


class ShardError(ValueError):
    """A shard that cannot be trusted; the message names the file and the problem."""


def make_table(rows: list[dict], cell_config: dict | None = None) -> pa.Table:
    """Rows (dicts with the schema's columns) as a table of exactly SCHEMA. The cell's
    config goes into the file's metadata so the shard can be traced to it."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in SCHEMA}
    table = pa.table(cols, schema=SCHEMA)
    if cell_config is not None:
        table = table.replace_schema_metadata({b"qbench.cell_config": json.dumps(cell_config, sort_keys=True).encode()})
    return table


def write_shard(table: pa.Table, path: str | os.PathLike) -> None:
    """Write atomically: a reader (or a killed job) never sees a partial file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def with_attempt(table: pa.Table, attempt: int) -> pa.Table:
    """The same shard with its `attempt` column set (which try of the job measured it)."""
    i = table.schema.get_field_index("attempt")
    column = pa.array([attempt] * table.num_rows, pa.int64())
    return table.set_column(i, SCHEMA.field("attempt"), column).replace_schema_metadata(table.schema.metadata)


def validate_table(table: pa.Table, source: str, expected_hash: str | None = None) -> None:
    """Raise ShardError naming `source` unless `table` holds valid samples of SCHEMA and,
    if `expected_hash` is given, was measured with that cell config."""
    if table.num_rows == 0:
        raise ShardError(f"{source}: no rows")
    if "schema_version" in table.column_names:
        versions = set(table.column("schema_version").to_pylist())
        if versions != {SCHEMA_VERSION}:
            raise ShardError(
                f"{source}: schema_version {sorted(versions, key=str)}, this qbench reads {SCHEMA_VERSION} "
                "(written by another qbench version)"
            )
    missing = [f.name for f in SCHEMA if f.name not in table.column_names]
    if missing:
        raise ShardError(f"{source}: missing columns {missing} (not a qbench shard of schema {SCHEMA_VERSION}?)")
    for f in SCHEMA:
        if not table.schema.field(f.name).type.equals(f.type):
            raise ShardError(f"{source}: column {f.name} has type {table.schema.field(f.name).type}, expected {f.type}")
    if expected_hash is not None:
        hashes = sorted(set(table.column("config_hash").to_pylist()), key=str)
        if hashes != [expected_hash]:
            raise ShardError(
                f"{source}: config_hash {hashes[0] if len(hashes) == 1 else hashes} differs from this run's "
                f"{expected_hash} (measured with another config)"
            )
    df = table.select(["status", "latency_ms"]).to_pandas()
    bad_status = sorted(set(df["status"]) - set(STATUSES))
    if bad_status:
        raise ShardError(f"{source}: unknown status {bad_status}; expected one of {list(STATUSES)}")
    timed = df[df["status"].isin(TIMED_STATUSES)]["latency_ms"]
    if timed.isna().any():
        raise ShardError(f"{source}: {int(timed.isna().sum())} timed samples have no latency (NaN)")
    if not np.isfinite(timed).all():
        raise ShardError(f"{source}: latencies must be finite, found {timed[~np.isfinite(timed)].tolist()[:5]}")
    if (timed <= 0).any():
        raise ShardError(f"{source}: latencies must be > 0, found {timed[timed <= 0].tolist()[:5]}")


def check_shard(path: str | os.PathLike, expected_hash: str | None = None) -> None:
    """Raise ShardError naming `path` unless it is a readable, valid shard (of that config)."""
    try:
        table = pq.read_table(path)
    except Exception as exc:  # truncated, not Parquet, unreadable
        raise ShardError(f"{path}: not a readable Parquet file ({exc.__class__.__name__}: {exc})") from exc
    validate_table(table, str(path), expected_hash)


SKIPPED_COLUMNS = ["path", "problem"]


def collect_shards(
    paths: list[str | os.PathLike], expected_hashes: dict[str, str] | None = None, on_bad_shard: str = "stop"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every shard, then read the good ones into one DataFrame with pyarrow.dataset.

    `expected_hashes` maps a path to the config hash its cell has in this run.
    `on_bad_shard="stop"` raises the first ShardError; `"skip"` leaves bad files out and
    returns them, with the reason, as the second frame (columns SKIPPED_COLUMNS)."""
    if on_bad_shard not in ("stop", "skip"):
        raise ValueError(f"on_bad_shard must be stop or skip, got {on_bad_shard!r}")
    if not paths:
        raise ShardError("no shards to read")
    expected_hashes = expected_hashes or {}
    good, skipped = [], []
    for p in paths:
        try:
            check_shard(p, expected_hashes.get(str(p)))
        except ShardError as exc:
            if on_bad_shard == "stop":
                raise
            skipped.append({"path": str(p), "problem": str(exc).removeprefix(f"{p}: ")})
            continue
        good.append(str(p))
    if not good:
        first = skipped[0]
        raise ShardError(f"all {len(paths)} shards are unusable; the first: {first['path']}: {first['problem']}")
    samples = ds.dataset(good, schema=SCHEMA, format="parquet").to_table().to_pandas()
    return keep_gpu_models_apart(samples), pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)


GPU_SEPARATOR = " @ "


def keep_gpu_models_apart(samples: pd.DataFrame) -> pd.DataFrame:
    """Cells measured on more than one GPU model (or on a GPU and the CPU) must not be
    pooled: their latencies differ by the card, not by chance. When the shards hold more
    than one model, each workload is renamed `workload @ model`, so every statistic,
    speedup, chart and table keeps them apart; with one model nothing changes."""
    where = samples["gpu_name"].fillna(samples["device"]).astype(str)
    if where.nunique() <= 1:
        return samples
    return samples.assign(workload=samples["workload"].astype(str) + GPU_SEPARATOR + where)


def read_shards(paths: list[str | os.PathLike]) -> pd.DataFrame:
    """Read and validate the given shards into one DataFrame; the first bad one raises
    ShardError naming the file."""
    return collect_shards(paths)[0]
