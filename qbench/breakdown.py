"""The breakdown table: where one forward pass spends its time, per cell.

The contract between whatever profiles a forward (torch.profiler, one extra forward per
cell) and the report that draws it: a table (Parquet or CSV) with one row per cell and
part, columns

    workload (str), dtype (str), batch (int), part (str), ms (float, >= 0)

`ms` is the time of that part in one forward pass. Several rows for the same cell and
part (one per repeat, say) are averaged. Parts are free text; the usual ones are ordered
and coloured alike in every report: PARTS.

The workflow makes it (config key breakdown.enabled): each measurement job profiles a few
extra forwards (qbench.profile_parts) and writes a table of CELL_SCHEMA beside its shard,
one row per part, empty for a cell that was not timed; `collect_cells` reads them and
`summarize_cells` averages them over repeats into results/breakdown.parquet, which has the
contract's columns and more.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = ["workload", "dtype", "batch", "part", "ms"]
# The parts the report knows, in stacking order (bottom first); others follow these.
PARTS = ["gemm", "quantization", "attention", "elementwise", "other"]


class BreakdownError(ValueError):
    """A breakdown table the report cannot draw; the message names the file."""


def read_breakdown(path: str | os.PathLike, allow_empty: bool = False) -> pd.DataFrame:
    """Read and check a breakdown table; returns it averaged to one row per cell and part.
    `allow_empty`: a table without rows (a run where no cell could be profiled) is returned
    empty instead of refused."""
    path = Path(path)
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # not Parquet/CSV, unreadable
        raise BreakdownError(f"{path}: not a readable table ({exc.__class__.__name__}: {exc})") from exc
    return check_breakdown(df, str(path), allow_empty)


def check_breakdown(df: pd.DataFrame, source: str, allow_empty: bool = False) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise BreakdownError(f"{source}: missing columns {missing}; a breakdown has columns {COLUMNS}")
    if df.empty and allow_empty:
        return df[COLUMNS].copy()
    if df.empty:
        raise BreakdownError(f"{source}: no rows")
    ms = pd.to_numeric(df["ms"], errors="coerce")
    if ms.isna().any() or (ms < 0).any():
        bad = df.loc[ms.isna() | (ms < 0), "ms"].tolist()[:5]
        raise BreakdownError(f"{source}: column ms must hold times >= 0, found {bad}")
    batch = pd.to_numeric(df["batch"], errors="coerce")
    if batch.isna().any():
        raise BreakdownError(f"{source}: column batch must hold integers, found {df.loc[batch.isna(), 'batch'].tolist()[:5]}")
    out = df.assign(ms=ms, batch=batch.astype(int), part=df["part"].astype(str).str.strip().str.lower())
    return out.groupby(["workload", "dtype", "batch", "part"], as_index=False, sort=False)["ms"].mean()


def part_order(parts) -> list[str]:
    """Known parts in PARTS order, then the others as they come."""
    seen = list(dict.fromkeys(parts))
    return [p for p in PARTS if p in seen] + [p for p in seen if p not in PARTS]


# ------------------------------------------------------------------- made by the workflow

# One measurement job's breakdown: a row per part, times per forward.
CELL_SCHEMA = pa.schema(
    [
        pa.field("workload", pa.string(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("batch", pa.int64(), nullable=False),
        pa.field("rep", pa.int64(), nullable=False),
        pa.field("part", pa.string(), nullable=False),
        pa.field("ms", pa.float64(), nullable=False),  # the part's time in one forward
        pa.field("events", pa.float64()),  # its kernels (GPU) or ops and ranges (CPU), per forward
        pa.field("forwards", pa.int64()),  # profiled forwards the numbers are the mean of
        pa.field("forwards_dropped", pa.int64()),  # profiled forwards left out: incomplete records
        pa.field("total_ms", pa.float64()),  # all parts, one forward
        pa.field("wall_ms", pa.float64()),  # wall time of one profiled forward, the profiler's overhead included
        pa.field("source", pa.string()),  # "cuda kernels" (kernel time) | "cpu ops" (op self time + host time)
        pa.field("top_events", pa.string()),  # JSON [{"name", "ms", "events"}]: the part's largest, per forward
        pa.field("status", pa.string()),  # the shard's status (ok | inaccurate)
        pa.field("config_hash", pa.string()),
        pa.field("device", pa.string()),
        pa.field("gpu_name", pa.string()),
        pa.field("torch", pa.string()),
    ]
)
TOP_NAME_WIDTH = 240  # C++ kernel names run to thousands of characters


def top_json(top, width: int = TOP_NAME_WIDTH) -> str:
    """A part's largest events, [(name, ms, events)] per forward, as JSON."""
    return json.dumps([{"name": n[:width], "ms": round(t, 6), "events": round(c, 3)} for n, t, c in top])


def cell_rows(shard_row: dict, profile) -> list[dict]:
    """The rows of one cell's breakdown: the shard's keys and provenance (`shard_row`, one
    row of its shard) and a qbench.profile_parts.PartsProfile."""
    keys = {k: shard_row.get(k) for k in ("workload", "dtype", "batch", "rep", "status", "config_hash", "device",
                                          "gpu_name", "torch")}  # fmt: skip
    return [
        {**keys, "part": part, "ms": float(ms), "events": float(profile.events.get(part, 0.0)),
         "forwards": profile.forwards, "forwards_dropped": profile.requested - profile.forwards,
         "total_ms": float(profile.total_ms), "wall_ms": float(profile.wall_ms), "source": profile.source,
         "top_events": top_json(profile.top.get(part, []))}
        for part, ms in profile.ms.items()
    ]  # fmt: skip


def cell_table(rows: list[dict]) -> pa.Table:
    """Rows as a table of exactly CELL_SCHEMA; no rows: the empty table of a cell not timed."""
    return pa.table({f.name: [r.get(f.name) for r in rows] for f in CELL_SCHEMA}, schema=CELL_SCHEMA)


def collect_cells(paths) -> pd.DataFrame:
    """Read every job's breakdown table into one frame (columns CELL_SCHEMA); a file that is
    unreadable or lacks columns raises BreakdownError naming it. Empty tables (cells not
    timed) add no rows."""
    frames = []
    for path in paths:
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise BreakdownError(f"{path}: not a readable Parquet file ({exc.__class__.__name__}: {exc})") from exc
        missing = [f.name for f in CELL_SCHEMA if f.name not in table.column_names]
        if missing:
            raise BreakdownError(f"{path}: missing columns {missing}; not a breakdown table of this qbench")
        if table.num_rows:
            frames.append(table.select(CELL_SCHEMA.names).cast(CELL_SCHEMA).to_pandas())
    if not frames:
        return CELL_SCHEMA.empty_table().to_pandas()
    return pd.concat(frames, ignore_index=True)


def _merge_top(tops: pd.Series, repeats: int, width: int = 5) -> str:
    """The largest events over repeats: each event's mean time per forward over the repeats."""
    ms, events = {}, {}
    for text in tops.dropna():
        for e in json.loads(text):
            ms[e["name"]] = ms.get(e["name"], 0.0) + e["ms"] / repeats
            events[e["name"]] = events.get(e["name"], 0.0) + e["events"] / repeats
    top = sorted(ms, key=lambda n: -ms[n])[:width]
    return json.dumps([{"name": n, "ms": round(ms[n], 6), "events": round(events[n], 3)} for n in top])


SUMMARY_COLUMNS = COLUMNS + ["share", "ms_min", "ms_max", "n_repeats", "total_ms", "wall_ms", "forwards", "source",
                             "top_events"]  # fmt: skip


def summarize_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (workload, dtype, batch, part): `ms` the mean over repeats of the part's
    time per forward (the contract's columns), with its range, its share of the forward,
    the number of repeats and of profiled forwards behind it, and its largest events.
    Cells in the order they come, parts in PARTS order."""
    if cells.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    keys = ["workload", "dtype", "batch"]
    cells = cells.assign(_cell=cells.groupby(keys, sort=False).ngroup())
    out = []
    for (cell, part), g in cells.groupby(["_cell", "part"], sort=False):
        reps = g["rep"].nunique()
        out.append({**g.iloc[0][keys].to_dict(), "part": part, "ms": g["ms"].mean(), "ms_min": g["ms"].min(),
                    "ms_max": g["ms"].max(), "n_repeats": reps, "total_ms": g["total_ms"].mean(),
                    "wall_ms": g["wall_ms"].mean(), "forwards": int(g["forwards"].sum()),
                    "source": ", ".join(sorted(set(g["source"].dropna()))),
                    "top_events": _merge_top(g["top_events"], reps),
                    "_cell": cell})  # fmt: skip
    df = pd.DataFrame(out)
    df["share"] = df["ms"] / df["total_ms"].where(df["total_ms"] > 0)
    order = {p: i for i, p in enumerate(part_order(df["part"]))}
    df = df.assign(_part=df["part"].map(order)).sort_values(["_cell", "_part"], kind="stable")
    return df[SUMMARY_COLUMNS].reset_index(drop=True)
