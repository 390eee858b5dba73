"""The breakdown table: where one forward pass spends its time, per cell.

The contract between whatever profiles a forward (torch.profiler, one extra forward per
cell) and the report that draws it: a table (Parquet or CSV) with one row per cell and
part, columns

    workload (str), dtype (str), batch (int), part (str), ms (float, >= 0)

`ms` is the time of that part in one forward pass. Several rows for the same cell and
part (one per repeat, say) are averaged. Parts are free text; the usual ones are ordered
and coloured alike in every report: PARTS.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

COLUMNS = ["workload", "dtype", "batch", "part", "ms"]
# The parts the report knows, in stacking order (bottom first); others follow these.
PARTS = ["gemm", "quantization", "attention", "elementwise", "other"]


class BreakdownError(ValueError):
    """A breakdown table the report cannot draw; the message names the file."""


def read_breakdown(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a breakdown table; returns it averaged to one row per cell and part."""
    path = Path(path)
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # not Parquet/CSV, unreadable
        raise BreakdownError(f"{path}: not a readable table ({exc.__class__.__name__}: {exc})") from exc
    return check_breakdown(df, str(path))


def check_breakdown(df: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise BreakdownError(f"{source}: missing columns {missing}; a breakdown has columns {COLUMNS}")
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
