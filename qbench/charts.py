"""Altair charts of the summary, the samples and the breakdown.

- `latency_chart` reproduces the reference figure: grouped bars, x = Batch Size (ordered
  categories), y = Latency (ms) from 0 in steps of 125 when the data fit 500 ms, FP16
  light gray and w8a8 dark red, legend top-left, the 95% interval of each mean as an
  error bar, and the reference values as black ticks with a legend entry of their own.
- `speedup_chart`: every dtype's speedup over the baseline per batch size, with its
  interval, a rule at 1.0 and the verdict as the marker's shape.
- `distribution_chart`: per cell, every sample and each repeat's mean, so a reader sees
  the spread behind a bar.
- `breakdown_chart`: stacked bars of where a forward's time goes (qbench.breakdown).

Cells that were not timed (out of memory, unsupported, error) are labelled where their
mark would be, never dropped. Every chart names its mark layers (`*_marks` in the SVG),
so tests can count what was drawn.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from qbench.breakdown import part_order

# The reference chart's colours; other dtypes get a palette that stays apart from them.
FIXED_COLORS = {"fp16": "#c8c8c8", "w8a8": "#8b0000"}
PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#eeca3b", "#9d755d"]
PART_COLORS = {"gemm": "#4c78a8", "quantization": "#e45756", "attention": "#54a24b", "elementwise": "#eeca3b",
               "other": "#bab0ac"}  # fmt: skip
# A legend symbol that looks like the reference tick: a short thick horizontal bar.
TICK_SYMBOL = "M -1 -0.2 H 1 V 0.2 H -1 Z"
VERDICT_SHAPES = {"faster": "triangle-up", "slower": "triangle-down", "same": "circle", "unknown": "diamond"}
MISSING_COLOR = "#b00000"
FONT = "Liberation Sans, Arial, Helvetica, sans-serif"
# The reference's y axis: 0 to 500 in steps of 125.
REFERENCE_STEP = 125.0
NICE_STEPS = (1.0, 1.25, 2.0, 2.5, 5.0)


def dtype_colors(dtypes: list[str]) -> tuple[list[str], list[str]]:
    """Domain and range for the colour scale: fixed colours first, then the palette."""
    rest = iter(PALETTE)
    return list(dtypes), [FIXED_COLORS.get(d) or next(rest, "#777777") for d in dtypes]


def dtype_order(summary: pd.DataFrame) -> list[str]:
    """The baseline first, then the dtypes in the order the summary lists them."""
    dtypes = list(dict.fromkeys(summary["dtype"]))
    base = summary["baseline"].dropna().unique() if "baseline" in summary.columns else []
    return sorted(dtypes, key=lambda d: d not in base)


def batch_order(frame: pd.DataFrame, col: str = "batch") -> list[str]:
    return [str(b) for b in sorted(frame[col].astype(int).unique())]


def nice_axis(top: float) -> tuple[float, float]:
    """(axis maximum, step) for data reaching `top`: 4 intervals of a nice step where one
    fits (500/125 for the reference's data), else 5, else as few as fit."""
    if not top > 0 or not math.isfinite(top):
        return 1.0, 0.25
    scale = 10.0 ** math.floor(math.log10(top))
    steps = sorted({m * scale * f for m in NICE_STEPS for f in (0.1, 1.0, 10.0)})
    for intervals in (4, 5):
        for s in steps:
            if math.ceil(top / s - 1e-9) == intervals:
                return intervals * s, s
    s = next(s for s in steps if math.ceil(top / s - 1e-9) <= 5)
    return math.ceil(top / s - 1e-9) * s, s


def _status_label(row) -> str:
    return str(row["status"]).upper() if row["status"] == "oom" else str(row["status"])


def _configure(chart):
    """Fonts and sizes shared by every chart (vl-convert and the browser use the same)."""
    return (
        chart.configure(font=FONT)
        .configure_axis(labelFontSize=12, titleFontSize=13, labelColor="#222", titleColor="#222")
        .configure_legend(labelFontSize=12, titleFontSize=12)
        .configure_view(strokeWidth=0)
        .configure_title(fontSize=14, anchor="start")
    )


def _per_workload(frame: pd.DataFrame, draw, title: str | None, **kwargs):
    """One chart per workload, stacked, each titled by its workload when there are several."""
    workloads = list(dict.fromkeys(frame["workload"]))
    if len(workloads) == 1:
        chart = draw(frame, **kwargs)
        if title:
            chart = chart.properties(title=title)
        return _configure(chart)
    parts = [draw(frame[frame["workload"] == w], **kwargs).properties(title=w) for w in workloads]
    chart = alt.vconcat(*parts).resolve_scale(color="shared")
    if title:
        chart = chart.properties(title=title)
    return _configure(chart)


# ---------------------------------------------------------------------------- latency


def latency_chart(summary: pd.DataFrame, reference: pd.DataFrame | None = None, title: str | None = None):
    """Grouped bars of mean latency per batch size and dtype, with CI error bars.

    `summary` is the aggregate's table. Cells without timings (OOM, unsupported) are
    kept as labels at the foot of their bar. `reference` (batch_size, dtype, latency_ms)
    adds the published values as black ticks with a legend entry."""
    return _per_workload(summary, _latency, title, reference=reference)


def _latency(summary: pd.DataFrame, reference: pd.DataFrame | None) -> alt.LayerChart:
    df = summary.copy()
    df["batch"] = df["batch"].astype(int).astype(str)
    batches = batch_order(summary)
    dtypes = dtype_order(summary)
    domain, colors = dtype_colors(dtypes)
    ref = _reference_rows(reference, dtypes, batches)
    top = np.nanmax(
        np.concatenate([df["mean_ms"].to_numpy(float), df["ci_high_ms"].to_numpy(float), ref["latency_ms"].to_numpy(float)])
        if len(df) or len(ref)
        else [np.nan]
    )
    y_max, step = nice_axis(float(top))
    y_scale = alt.Scale(domain=[0, y_max], nice=False, zero=True)
    y_axis = alt.Axis(values=[round(v, 9) for v in np.arange(0, y_max + step / 2, step)], grid=True, gridColor="#e6e6e6")
    y_title = "Latency (ms)"

    x = alt.X("batch:O", title="Batch Size", sort=batches, axis=alt.Axis(labelAngle=0), scale=alt.Scale(paddingInner=0.25))
    offset = alt.XOffset("dtype:N", sort=dtypes, scale=alt.Scale(domain=dtypes, paddingInner=0.05))
    color = alt.Color(
        "dtype:N",
        title=None,
        sort=dtypes,
        scale=alt.Scale(domain=domain, range=colors),
        legend=alt.Legend(orient="top-left", fillColor="white", padding=6, symbolStrokeColor="#444", symbolStrokeWidth=0.8),
    )
    timed = df[df["mean_ms"].notna()]
    tooltip = [
        alt.Tooltip("workload:N"),
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
        .mark_bar(stroke="#555555", strokeWidth=0.6)
        .encode(
            x=x,
            xOffset=offset,
            y=alt.Y("mean_ms:Q", title=y_title, scale=y_scale, axis=y_axis),
            color=color,
            tooltip=tooltip,
        )
        .properties(name="bars")
    )
    with_ci = timed[timed["ci_low_ms"].notna()]
    errors = (
        alt.Chart(with_ci)
        .mark_errorbar(ticks=alt.MarkConfig(size=10, color="black", strokeWidth=1.4), rule=alt.MarkConfig(strokeWidth=1.4))
        .encode(x=x, xOffset=offset, y=alt.Y("ci_low_ms:Q", title=y_title), y2="ci_high_ms:Q", color=alt.value("black"))
        .properties(name="errorbars")
    )
    layers = [bars, errors]
    missing = df[df["mean_ms"].isna()].copy()
    if not missing.empty:
        missing["label"] = missing.apply(_status_label, axis=1)
        missing["y"] = y_max * 0.02
        layers.append(
            alt.Chart(missing)
            .mark_text(angle=270, align="left", baseline="middle", fontSize=11, fontWeight="bold", color=MISSING_COLOR)
            .encode(x=x, xOffset=offset, y=alt.Y("y:Q", title=y_title), text="label:N",
                    tooltip=["dtype:N", "batch:O", "status:N", "status_detail:N"])  # fmt: skip
            .properties(name="missing")
        )
    if not ref.empty:
        ref = ref.assign(source="reference (published chart)")
        layers.append(
            alt.Chart(ref)
            .mark_tick(color="black", thickness=3, size=22, opacity=1, stroke="white", strokeWidth=0.8)
            .encode(
                x=x,
                xOffset=offset,
                y=alt.Y("latency_ms:Q", title=y_title),
                strokeDash=alt.StrokeDash(
                    "source:N",
                    title=None,
                    scale=alt.Scale(domain=["reference (published chart)"], range=[[6, 0]]),
                    legend=alt.Legend(orient="none", legendX=12, legendY=16 + 19 * len(dtypes), fillColor="white", padding=6,
                                      symbolType=TICK_SYMBOL, symbolSize=260),  # fmt: skip
                ),
                tooltip=[alt.Tooltip("dtype:N"), alt.Tooltip("batch:O"), alt.Tooltip("latency_ms:Q", title="reference (ms)")],
            )
            .properties(name="reference")
        )
    per_batch = max(2, len(dtypes)) * (50 if len(dtypes) <= 3 else 30)
    return alt.layer(*layers).properties(width=max(600, per_batch * len(batches)), height=400)


def _reference_rows(reference: pd.DataFrame | None, dtypes: list[str], batches: list[str]) -> pd.DataFrame:
    if reference is None or reference.empty:
        return pd.DataFrame({"dtype": [], "batch": [], "latency_ms": []})
    ref = reference[reference["dtype"].isin(dtypes)].copy()
    ref["batch"] = ref["batch_size"].astype(int).astype(str)
    return ref[ref["batch"].isin(batches)][["dtype", "batch", "latency_ms"]]


# ---------------------------------------------------------------------------- speedup


def speedup_chart(summary: pd.DataFrame, title: str | None = None):
    """Speedup over the baseline (baseline mean / variant mean) per batch size and dtype,
    with its interval; a rule at 1.0; the marker's shape is the verdict."""
    variants = summary[summary["dtype"] != summary["baseline"]]
    if variants.empty:
        raise ValueError("no dtype besides the baseline: nothing to compare")
    return _per_workload(variants, _speedup, title)


def _speedup(df: pd.DataFrame) -> alt.LayerChart:
    df = df.copy()
    df["batch"] = df["batch"].astype(int).astype(str)
    batches = batch_order(df)
    dtypes = list(dict.fromkeys(df["dtype"]))
    domain, colors = dtype_colors(dtypes)
    baseline = str(df["baseline"].iloc[0])
    df["verdict"] = df["verdict"].fillna("unknown")
    df["label"] = df["speedup"].map(lambda s: f"{s:.2f}×" if pd.notna(s) else "")
    timed = df[df["speedup"].notna()]
    values = np.concatenate([[1.0], timed[["speedup", "speedup_ci_low", "speedup_ci_high"]].to_numpy(float).ravel()])
    lo, hi = np.nanmin(values), np.nanmax(values)
    pad = max(0.02, (hi - lo) * 0.15)
    y_scale = alt.Scale(domain=[round(lo - pad, 3), round(hi + pad, 3)], nice=False, zero=False)
    y_title = f"Speedup over {baseline} (×)"
    x = alt.X("batch:O", title="Batch Size", sort=batches, axis=alt.Axis(labelAngle=0))
    offset = alt.XOffset("dtype:N", sort=dtypes, scale=alt.Scale(domain=dtypes))
    color = alt.Color("dtype:N", title=None, sort=dtypes, scale=alt.Scale(domain=domain, range=colors),
                      legend=alt.Legend(orient="right"))  # fmt: skip
    shapes = [v for v in VERDICT_SHAPES if v in set(timed["verdict"])] or ["same"]
    shape = alt.Shape("verdict:N", title="verdict", scale=alt.Scale(domain=shapes, range=[VERDICT_SHAPES[v] for v in shapes]),
                      legend=alt.Legend(orient="right"))  # fmt: skip
    one = pd.DataFrame({"y": [1.0], "label": [f"1.0 = as fast as {baseline}"]})
    rule = (
        alt.Chart(one)
        .mark_rule(color="#555", strokeDash=[5, 4], strokeWidth=1.2)
        .encode(y=alt.Y("y:Q", title=y_title, scale=y_scale))
        .properties(name="parity")
    )
    rule_label = (
        alt.Chart(one)
        .mark_text(align="right", baseline="top", dy=3, fontSize=11, color="#555", x="width")
        .encode(y=alt.Y("y:Q", title=y_title), text="label:N")
        .properties(name="parity_label")
    )
    tooltip = ["dtype:N", "batch:O", alt.Tooltip("speedup:Q", format=".3f"), alt.Tooltip("speedup_ci_low:Q", format=".3f"),
               alt.Tooltip("speedup_ci_high:Q", format=".3f"), "verdict:N"]  # fmt: skip
    if "speedup_pairing" in df.columns:  # paired by repeat | independent (qbench.stats)
        tooltip.insert(-1, alt.Tooltip("speedup_pairing:N", title="interval"))
    whiskers = (
        alt.Chart(timed[timed["speedup_ci_low"].notna()])
        .mark_errorbar(ticks=alt.MarkConfig(size=10, strokeWidth=1.4), rule=alt.MarkConfig(strokeWidth=1.6))
        .encode(x=x, xOffset=offset, y=alt.Y("speedup_ci_low:Q", title=y_title), y2="speedup_ci_high:Q", color=color)
        .properties(name="intervals")
    )
    points = (
        alt.Chart(timed)
        .mark_point(filled=True, size=110, stroke="black", strokeWidth=0.8, opacity=1)
        .encode(x=x, xOffset=offset, y=alt.Y("speedup:Q", title=y_title), color=color, shape=shape, tooltip=tooltip)
        .properties(name="points")
    )
    labels = (
        alt.Chart(timed)
        .mark_text(align="left", dx=9, fontSize=11, color="#222")
        .encode(x=x, xOffset=offset, y=alt.Y("speedup:Q", title=y_title), text="label:N")
        .properties(name="values")
    )
    layers = [rule, rule_label, whiskers, points, labels]
    missing = df[df["speedup"].isna()].copy()
    if not missing.empty:
        missing["y"] = 1.0
        missing["label"] = missing.apply(_status_label, axis=1)
        missing.loc[missing["status"].isin(["ok", "inaccurate"]), "label"] = f"no {baseline}"
        layers.append(
            alt.Chart(missing)
            .mark_text(fontSize=11, fontWeight="bold", color=MISSING_COLOR, dy=-10)
            .encode(x=x, xOffset=offset, y=alt.Y("y:Q", title=y_title), text="label:N")
            .properties(name="missing")
        )
    per_batch = max(2, len(dtypes)) * 50
    return alt.layer(*layers).properties(width=max(600, per_batch * len(batches)), height=320)


# ---------------------------------------------------------------------- distributions


def distribution_chart(samples: pd.DataFrame, summary: pd.DataFrame, title: str | None = None):
    """Per batch size (one panel each, own y scale), per dtype: every timed sample as a dot,
    spread across the cell by repeat, and each repeat's mean as a black tick. Untimed cells
    are labelled."""
    return _per_workload(summary, _distribution, title, samples=samples)


def _distribution(summary: pd.DataFrame, samples: pd.DataFrame) -> alt.HConcatChart:
    workload = summary["workload"].iloc[0]
    dtypes = dtype_order(summary)
    domain, colors = dtype_colors(dtypes)
    timed = samples[(samples["workload"] == workload) & samples["status"].isin(["ok", "inaccurate"])]
    points = timed[["dtype", "batch", "rep", "iteration", "latency_ms", "sm_clock_mhz"]].copy()
    means = points.groupby(["dtype", "batch", "rep"], as_index=False)["latency_ms"].mean()
    missing = summary[summary["mean_ms"].isna()][["dtype", "batch", "status"]].copy()
    missing["label"] = missing.apply(_status_label, axis=1) if not missing.empty else []
    reps = sorted(int(r) for r in points["rep"].unique()) or [0]
    x = alt.X("dtype:N", title=None, sort=dtypes, scale=alt.Scale(domain=dtypes, paddingInner=0.3),
              axis=alt.Axis(labelAngle=0))  # fmt: skip
    offset = alt.XOffset("rep:O", scale=alt.Scale(domain=reps))
    y = alt.Y("latency_ms:Q", title="Latency (ms)", scale=alt.Scale(zero=False, nice=True))
    color = alt.Color("dtype:N", title=None, sort=dtypes, scale=alt.Scale(domain=domain, range=colors),
                      legend=alt.Legend(orient="top", direction="horizontal"))  # fmt: skip
    width = max(130, 12 * len(dtypes) * len(reps))
    panels = []
    # One panel per batch size, each on its own scale; a layer only where it has data, so
    # an all-missing batch size is a panel of labels, not an empty scale.
    for batch in sorted(summary["batch"].astype(int).unique()):
        layers = []
        cell_points = points[points["batch"] == batch]
        if not cell_points.empty:
            layers.append(
                alt.Chart(cell_points)
                .mark_circle(size=22, opacity=0.75, stroke="#333", strokeWidth=0.4)
                .encode(x=x, xOffset=offset, y=y, color=color,
                        tooltip=["dtype:N", "batch:O", "rep:O", "iteration:Q", alt.Tooltip("latency_ms:Q", format=".3f"),
                                 alt.Tooltip("sm_clock_mhz:Q", title="SM clock (MHz)")])  # fmt: skip
                .properties(name="samples")
            )
            layers.append(
                alt.Chart(means[means["batch"] == batch])
                .mark_tick(color="black", thickness=2, size=10, opacity=1)
                .encode(x=x, xOffset=offset, y=y,
                        tooltip=["dtype:N", "rep:O", alt.Tooltip("latency_ms:Q", title="repeat mean", format=".3f")])  # fmt: skip
                .properties(name="repeat_means")
            )
        cell_missing = missing[missing["batch"] == batch]
        if not cell_missing.empty:
            layers.append(
                alt.Chart(cell_missing)
                .mark_text(fontSize=11, fontWeight="bold", color=MISSING_COLOR, angle=270, y="height", dy=-40)
                .encode(x=alt.X("dtype:N", title=None, sort=dtypes, scale=alt.Scale(domain=dtypes), axis=alt.Axis(labelAngle=0)),
                        text="label:N", tooltip=["dtype:N", "status:N"])  # fmt: skip
                .properties(name="missing")
            )
        panels.append(alt.layer(*layers).properties(width=width, height=240, title=f"Batch Size {batch}"))
    return alt.hconcat(*panels).resolve_scale(color="shared")


# -------------------------------------------------------------------------- breakdown


def breakdown_chart(breakdown: pd.DataFrame, title: str | None = None):
    """Stacked bars of where one forward's time goes (qbench.breakdown's table), one bar
    per dtype within each batch size; a line saying so when no cell could be profiled."""
    if breakdown.empty:
        text = pd.DataFrame({"text": ["No cell of this run could be profiled (see logs/breakdown.log)."]})
        chart = alt.Chart(text).mark_text(align="left", fontSize=13).encode(text="text:N")
        return _configure(chart.properties(width=520, height=40, name="parts"))
    return _per_workload(breakdown, _breakdown, title)


def _breakdown(df: pd.DataFrame) -> alt.FacetChart:
    df = df.copy()
    parts = part_order(df["part"])
    df["order"] = df["part"].map({p: i for i, p in enumerate(parts)})
    rest = iter(PALETTE)
    colors = [PART_COLORS.get(p) or next(rest, "#777777") for p in parts]
    dtypes = list(dict.fromkeys(df["dtype"]))
    batches = batch_order(df)
    df["batch"] = df["batch"].astype(int).astype(str)
    return (
        alt.Chart(df)
        .mark_bar(stroke="white", strokeWidth=0.5)
        .encode(
            x=alt.X("dtype:N", title=None, sort=dtypes, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("ms:Q", title="Time per forward (ms)", stack="zero"),
            color=alt.Color("part:N", title="part", sort=parts, scale=alt.Scale(domain=parts, range=colors)),
            order=alt.Order("order:Q"),
            tooltip=["dtype:N", "batch:N", "part:N", alt.Tooltip("ms:Q", format=".2f")],
        )
        .properties(width=max(80, 40 * len(dtypes)), height=260, name="parts")
        .facet(column=alt.Column("batch:N", sort=batches, title="Batch Size"))
        .resolve_scale(y="independent")
    )


# ----------------------------------------------------------------------------- files

CHARTS = ("latency", "speedup", "breakdown", "distributions")


def build_chart(name: str, summary: pd.DataFrame, samples=None, reference=None, breakdown=None):
    """The chart called `name` (one of CHARTS) from the tables it needs."""
    if name == "latency":
        return latency_chart(summary, reference)
    if name == "speedup":
        return speedup_chart(summary)
    if name == "distributions":
        if samples is None:
            raise ValueError("the distributions chart needs the samples (the shards)")
        return distribution_chart(samples, summary)
    if name == "breakdown":
        if breakdown is None:
            raise ValueError("the breakdown chart needs a breakdown table")
        return breakdown_chart(breakdown)
    raise ValueError(f"unknown chart {name!r}; expected one of {list(CHARTS)}")


CHART_FORMATS = ("html", "svg", "png", "json")


def save_chart(chart, stem: str | os.PathLike, formats=CHART_FORMATS) -> list[Path]:
    """Write the chart as self-contained HTML (Vega inlined, opens offline), SVG and PNG
    (through vl-convert) and its Vega-Lite JSON. Returns the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        if fmt == "html":
            chart.save(str(path), inline=True, embed_options={"renderer": "svg", "actions": False})
        elif fmt == "png":
            chart.save(str(path), scale_factor=2)
        else:
            chart.save(str(path))
        written.append(path)
    return written
