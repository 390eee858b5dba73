"""Run-to-run comparison: the same cells measured in two runs (two GPUs, two commits, two
torch versions), cell by cell.

For each (workload, dtype, batch) the ratio of mean latencies A / B (> 1: run B is
faster), its interval from independent hierarchical bootstraps of the two runs (the
method of the speedup's independent interval, qbench.stats: the repeats of two runs share
no block, so they are never paired), and a verdict for run B against run A:
`faster` or `slower` only when the interval excludes 1 and the change is at least the
threshold, else `same`; `unknown` with fewer than 2 repeats on a side. Cells measured
in one run only, or timed in one only, are kept and named.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from qbench.shards import TIMED_STATUSES
from qbench.stats import KEYS, CellEstimate, StatsConfig, cell_rng, speedup, timed_groups

COMPARE_COLUMNS = [
    "workload", "dtype", "batch", "present", "status_a", "status_b", "n_repeats_a", "n_repeats_b",
    "mean_a_ms", "ci_low_a_ms", "ci_high_a_ms", "mean_b_ms", "ci_low_b_ms", "ci_high_b_ms",
    "ratio", "ratio_ci_low", "ratio_ci_high", "verdict", "note", "run_a", "run_b", "confidence",
]  # fmt: skip
# what defines a cell beyond its keys: a mismatch means the two runs timed different things
DEFINITION = ["model", "scheme", "impl", "tokens"]


def describe_run(samples: pd.DataFrame) -> str:
    """Where a run was measured, in a few words: device, torch, commit."""

    def values(col):
        return ", ".join(sorted({str(v) for v in samples[col].dropna()})) if col in samples else ""

    parts = [values("gpu_name") or values("device"), values("torch") and f"torch {values('torch')}"]
    commits = sorted({str(c)[:7] for c in samples["git_commit"].dropna()}) if "git_commit" in samples else []
    parts.append(", ".join(commits))
    return " · ".join(p for p in parts if p)


def _cell(cell: pd.DataFrame | None, key: tuple, side: str, cfg: StatsConfig):
    """(status, estimate or None) of one run's cell."""
    if cell is None:
        return None, None
    status = cell.groupby("rep")["status"].first()
    timed = cell[cell["status"].isin(TIMED_STATUSES)]
    if timed.empty:
        return status.value_counts().idxmax(), None
    est = CellEstimate.from_samples(timed_groups(timed, key), cfg, cell_rng(cfg, key + (side,)))
    return ("inaccurate" if (status == "inaccurate").any() else "ok"), est


def compare_runs(
    a: pd.DataFrame, b: pd.DataFrame, cfg: StatsConfig, label_a: str = "A", label_b: str = "B"
) -> pd.DataFrame:
    """One row per cell in either run (samples as qbench.shards.read_shards returns them)."""
    cells_a = dict(iter(a.groupby(KEYS, sort=True)))
    cells_b = dict(iter(b.groupby(KEYS, sort=True)))
    rows = []
    for key in sorted(set(cells_a) | set(cells_b)):
        ca, cb = cells_a.get(key), cells_b.get(key)
        status_a, est_a = _cell(ca, key, "a", cfg)
        status_b, est_b = _cell(cb, key, "b", cfg)
        present = "both" if ca is not None and cb is not None else ("a" if cb is None else "b")
        notes = []
        if present != "both":
            notes.append(f"only in {label_a if present == 'a' else label_b}")
        else:
            for col in DEFINITION:
                va, vb = ca[col].iloc[0], cb[col].iloc[0]
                if va != vb:
                    notes.append(f"{col} differs: {va} vs {vb}")
        row = dict(zip(KEYS, key), present=present, status_a=status_a, status_b=status_b,
                   run_a=label_a, run_b=label_b, confidence=cfg.confidence)  # fmt: skip
        for side, est in (("a", est_a), ("b", est_b)):
            if est is not None:
                row.update({f"n_repeats_{side}": est.n_repeats, f"mean_{side}_ms": est.mean,
                            f"ci_low_{side}_ms": est.mean_ci[0], f"ci_high_{side}_ms": est.mean_ci[1]})  # fmt: skip
        if est_a is not None and est_b is not None:
            ratio, lo, hi, v = speedup(est_a, est_b, cfg)
            row.update(ratio=ratio, ratio_ci_low=lo, ratio_ci_high=hi, verdict=v)
        elif present == "both":
            sides = ((label_a, status_a), (label_b, status_b))
            untimed = [f"{label} {s}" for label, s in sides if s not in TIMED_STATUSES]
            notes.append("not timed in " + ", ".join(untimed))
        row["note"] = "; ".join(notes) or None
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=COMPARE_COLUMNS)
    table["batch"] = table["batch"].astype(int)
    return table


def comparison_chart(table: pd.DataFrame, about_a: str = "", about_b: str = "") -> alt.Chart:
    """Latency ratio A / B per batch size with its interval, one colour per workload and
    dtype, a line at 1; cells without a ratio are labelled with why. `about_x` (e.g.
    describe_run) goes beside each run's name in the subtitle."""
    label_a, label_b = table["run_a"].iloc[0], table["run_b"].iloc[0]
    df = table.copy()
    df["series"] = df["workload"] + " · " + df["dtype"]
    batches = [str(b) for b in sorted(df["batch"].unique())]
    df["batch"] = df["batch"].astype(str)
    series = sorted(df["series"].unique())
    x = alt.X("batch:O", title="Batch Size", sort=batches, axis=alt.Axis(labelAngle=0))
    offset = alt.XOffset("series:N", sort=series)
    color = alt.Color("series:N", title="cell", sort=series)
    ratio = df[df["ratio"].notna()]
    tooltip = [
        alt.Tooltip("series:N", title="cell"),
        alt.Tooltip("batch:O"),
        alt.Tooltip("ratio:Q", format=".3f"),
        alt.Tooltip("ratio_ci_low:Q", title="CI low", format=".3f"),
        alt.Tooltip("ratio_ci_high:Q", title="CI high", format=".3f"),
        alt.Tooltip("mean_a_ms:Q", title=f"{label_a} (ms)", format=".2f"),
        alt.Tooltip("mean_b_ms:Q", title=f"{label_b} (ms)", format=".2f"),
        alt.Tooltip("verdict:N"),
    ]
    y = alt.Y("ratio:Q", title=f"Latency ratio {label_a} / {label_b}", scale=alt.Scale(zero=False))
    layers = [
        alt.Chart(pd.DataFrame({"one": [1.0]})).mark_rule(color="#666666", strokeDash=[4, 3]).encode(y="one:Q"),
        alt.Chart(ratio[ratio["ratio_ci_low"].notna()])
        .mark_rule(strokeWidth=1.5)
        .encode(x=x, xOffset=offset, y="ratio_ci_low:Q", y2="ratio_ci_high:Q", color=color),
        alt.Chart(ratio)
        .mark_point(filled=True, size=60)
        .encode(
            x=x,
            xOffset=offset,
            y=y,
            color=color,
            shape=alt.Shape(
                "verdict:N",
                title=f"{label_b} vs {label_a}",
                scale=alt.Scale(domain=["faster", "same", "slower", "unknown"]),
            ),
            tooltip=tooltip,
        ),
    ]
    missing = df[df["ratio"].isna()].assign(one=1.0)
    if not missing.empty:
        layers.append(
            alt.Chart(missing)
            .mark_text(angle=270, align="left", dx=6, fontSize=10, color="#b00000")
            .encode(x=x, xOffset=offset, y="one:Q", text="note:N")
        )
    subtitle = [
        f"A: {label_a}" + (f" ({about_a})" if about_a else ""),
        f"B: {label_b}" + (f" ({about_b})" if about_b else ""),
        f"> 1: B is faster; bars: {table['confidence'].iloc[0]:.0%} intervals",
    ]
    chart = alt.layer(*layers).properties(
        width=alt.Step(28 if len(series) <= 3 else 18),
        height=300,
        title=alt.TitleParams("Latency ratio A / B per cell", subtitle=subtitle, anchor="start"),
    )
    return chart.resolve_scale(color="shared")

