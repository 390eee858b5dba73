"""Altair charts of the summary.

`latency_chart` reproduces the reference figure: grouped bars, x = Batch Size (ordered
categories), y = Latency (ms), FP16 light gray and w8a8 dark red, legend top-left, with
the 95% interval of each mean as an error bar, and the reference values as ticks.
"""

from __future__ import annotations

import os
from pathlib import Path

import altair as alt
import pandas as pd

# The reference chart's colours; other dtypes get a palette that stays apart from them.
FIXED_COLORS = {"fp16": "#c8c8c8", "w8a8": "#8b0000"}
PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#eeca3b", "#9d755d"]


def dtype_colors(dtypes: list[str]) -> tuple[list[str], list[str]]:
    """Domain and range for the colour scale: fixed colours first, then the palette."""
    rest = iter(PALETTE)
    return list(dtypes), [FIXED_COLORS.get(d) or next(rest, "#777777") for d in dtypes]


def latency_chart(summary: pd.DataFrame, reference: pd.DataFrame | None = None, title: str | None = None) -> alt.Chart:
    """Grouped bars of mean latency per batch size and dtype, with CI error bars.

    `summary` is the aggregate's table for one workload. Cells without timings (OOM,
    unsupported) are kept as labelled zero-height marks, not dropped. `reference`
    (batch_size, dtype, latency_ms) adds the published values as black ticks."""
    df = summary.copy()
    df["batch"] = df["batch"].astype(int).astype(str)
    batches = [str(b) for b in sorted(summary["batch"].astype(int).unique())]
    dtypes = list(dict.fromkeys(summary["dtype"]))
    domain, colors = dtype_colors(dtypes)
    x = alt.X("batch:O", title="Batch Size", sort=batches, axis=alt.Axis(labelAngle=0))
    color = alt.Color(
        "dtype:N",
        title=None,
        scale=alt.Scale(domain=domain, range=colors),
        legend=alt.Legend(orient="top-left", fillColor="white", padding=4),
    )
    offset = alt.XOffset("dtype:N", sort=dtypes)
    timed = df[df["mean_ms"].notna()]
    tooltip = [
        alt.Tooltip("dtype:N"),
        alt.Tooltip("batch:O", title="batch"),
        alt.Tooltip("mean_ms:Q", title="mean (ms)", format=".2f"),
        alt.Tooltip("ci_low_ms:Q", title="CI low (ms)", format=".2f"),
        alt.Tooltip("ci_high_ms:Q", title="CI high (ms)", format=".2f"),
        alt.Tooltip("n_repeats:Q", title="repeats"),
        alt.Tooltip("status:N"),
    ]
    bars = (
        alt.Chart(timed)
        .mark_bar(stroke="#444444", strokeWidth=0.5)
        .encode(x=x, xOffset=offset, y=alt.Y("mean_ms:Q", title="Latency (ms)"), color=color, tooltip=tooltip)
    )
    errors = (
        alt.Chart(timed[timed["ci_low_ms"].notna()])
        .mark_rule(color="black", strokeWidth=1.2)
        .encode(x=x, xOffset=offset, y="ci_low_ms:Q", y2="ci_high_ms:Q")
    )
    layers = [bars, errors]
    missing = df[df["mean_ms"].isna()]
    if not missing.empty:
        layers.append(
            alt.Chart(missing.assign(y=0.0))
            .mark_text(angle=270, align="left", dx=-4, fontSize=10, color="#b00000")
            .encode(x=x, xOffset=offset, y="y:Q", text="status:N")
        )
    if reference is not None and not reference.empty:
        ref = reference[reference["dtype"].isin(dtypes)].copy()
        ref["batch"] = ref["batch_size"].astype(int).astype(str)
        ref = ref[ref["batch"].isin(batches)]
        if not ref.empty:
            layers.append(
                alt.Chart(ref)
                .mark_tick(color="black", thickness=2, size=14, strokeDash=[3, 2])
                .encode(
                    x=x,
                    xOffset=offset,
                    y="latency_ms:Q",
                    tooltip=[alt.Tooltip("dtype:N"), alt.Tooltip("latency_ms:Q", title="reference (ms)")],
                )
            )
    chart = alt.layer(*layers).properties(width=alt.Step(28 if len(dtypes) <= 3 else 18), height=320)
    if title:
        chart = chart.properties(title=title)
    return chart


def save_chart(chart: alt.Chart, stem: str | os.PathLike, formats=("html", "svg", "png", "json")) -> list[Path]:
    """Write the chart as self-contained HTML (Vega inlined, opens offline), SVG and PNG
    (through vl-convert) and its Vega-Lite JSON. Returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        if fmt == "html":
            chart.save(str(path), inline=True)
        elif fmt == "png":
            chart.save(str(path), scale_factor=2)
        else:
            chart.save(str(path))
        written.append(path)
    return written
