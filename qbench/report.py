"""The self-contained HTML report: the question and its answer per batch size, the charts,
the tables, the warnings, the provenance and the command that reproduces it.

Charts are embedded as Vega-Lite specs rendered by Vega, whose libraries are inlined
once, so the file opens offline and can be mailed as it is; each chart's static SVG is
kept in a <noscript> for readers without JavaScript. Columns that later versions of the
summary add (diagnostics such as `icc`, `unstable`, `n_outliers`) are shown when present.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime, timezone

import jinja2
import pandas as pd
import yaml

from qbench import __version__
from qbench.shards import TIMED_STATUSES
from qbench.stats import mean_interval

# Sections of the report, in order: name -> (heading, what the reader sees).
CHART_SECTIONS = {
    "latency": (
        "Latency: the reference chart, reproduced",
        "Bars: mean latency of one forward pass (the mean of the repeats' means); whiskers: its {confidence} "
        "interval; black ticks: the reference chart's values where configured. Untimed cells are labelled at the "
        "foot of their bar.",
    ),
    "speedup": (
        "Speedup over {baseline}",
        "{baseline} mean latency / the variant's (above 1: the variant is faster), with its {confidence} interval; "
        "the marker's shape is the verdict. Untimed cells are labelled on the dashed line.",
    ),
    "breakdown": (
        "Where the time goes",
        "Time of one forward pass split into its parts, per dtype and batch size: GEMM, quantization (quantizing "
        "activations, dequantizing results), attention, elementwise (norms, activations, casts) and other. Each bar "
        "is the mean over repeats of a few forwards profiled after the timed loop, launched without a CUDA graph, "
        "classified by kernel and op name (qbench/parts.py). On a GPU the parts are kernel time (the gaps between "
        "kernels are in none); on the CPU, op time, with the host time between ops as other.",
    ),
    "distributions": (
        "Distributions behind the bars",
        "Every timed forward as a dot, spread across its cell by repeat (first repeat on the left), and each "
        "repeat's mean as a black tick; each batch size has its own latency scale. Repeats that sit apart "
        "from each other are the process-to-process variation the intervals account for.",
    ),
}

NO_BREAKDOWN = (
    "No breakdown was measured in this run, so the report cannot say where the time goes. Set config key "
    "breakdown.enabled to true to profile a few forwards of every cell after its timed loop "
    "(results/breakdown.parquet: columns workload, dtype, batch, part, ms)."
)

TABLE_COLUMNS = [
    ("workload", "l", None), ("dtype", "l", None), ("scheme", "l", None), ("impl", "l", None),
    ("batch", "", "d"), ("status", "l", None), ("n_repeats", "", None), ("n_samples", "", None),
    ("mean_ms", "", ".2f"), ("ci_low_ms", "", ".2f"), ("ci_high_ms", "", ".2f"), ("median_ms", "", ".2f"),
    ("cv", "", ".2%"), ("tflops", "", ".1f"), ("speedup", "", ".3f"), ("speedup_ci_low", "", ".3f"),
    ("speedup_ci_high", "", ".3f"), ("speedup_pairing", "l", None), ("verdict", "l", None), ("rel_error", "", ".2e"),
]  # fmt: skip
# Summary columns that are not diagnostics: shown elsewhere or constant.
_NOT_DIAGNOSTICS = {c for c, _, _ in TABLE_COLUMNS} | {
    "model", "tokens", "status_detail", "baseline", "gpu_name", "confidence", "few_repeats", "tolerance",
    "n_failed_repeats",
}  # fmt: skip
# Optional summary columns written by later statistics, by what they mean.
THROTTLED_COLUMNS = ("n_throttled", "throttled", "n_throttled_samples", "throttled_samples")
OUTLIER_COLUMNS = ("n_outliers", "outliers")
REPEATS_ADVICE_COLUMNS = ("recommended_repeats", "repeats_needed", "advised_repeats")
LOW_CLOCK = 0.75  # of the maximum SM clock: below it a sample ran on a slowed card


def _fmt(x, spec=".2f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA else format(x, spec)


def _first_column(frame: pd.DataFrame, names) -> str | None:
    return next((c for c in names if c in frame.columns), None)


def _number(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v


# ---------------------------------------------------------------------------- answer


def answers(summary: pd.DataFrame) -> list[dict]:
    """One sentence per workload, non-baseline dtype and batch size, with its verdict."""
    several = summary["workload"].nunique() > 1
    out = []
    for _, r in summary.sort_values(["workload", "dtype", "batch"]).iterrows():
        if r["dtype"] == r["baseline"]:
            continue
        d, b, where = r["dtype"], r["baseline"], f"at batch {r['batch']}"
        prefix = f"{r['workload']}: " if several else ""
        s, lo, hi = _number(r.get("speedup")), _number(r.get("speedup_ci_low")), _number(r.get("speedup_ci_high"))
        if math.isnan(s):
            why = f"{d} {r['status']}" if r["status"] not in ("ok", "inaccurate") else f"{b} was not timed"
            out.append({"text": f"{prefix}{d} vs {b} {where}: no comparison — {why}.", "verdict": "missing"})
            continue
        # a third decimal where two would print a narrow interval as [0.91, 0.91]
        p = 3 if not math.isnan(lo) and hi - lo < 0.02 else 2
        interval = f"[{lo:.{p}f}, {hi:.{p}f}]" if not math.isnan(lo) else "(no interval: fewer than 2 repeats)"
        verdict = r["verdict"] if isinstance(r["verdict"], str) else "unknown"
        if s >= 1:
            claim = f"{d} is {s:.{p}f}× {interval} faster than {b} {where}"
        else:
            claim = f"{d} is {s:.{p}f}× {interval} the speed of {b} {where}"
        change = 1.0 / s - 1.0  # relative change in time per forward
        detail = {
            "faster": f"faster, {abs(change):.1%} less time per forward",
            "slower": f"slower, {change:.1%} more time per forward",
            "same": "same, no difference beyond noise",
        }.get(verdict, "undecided")
        if r["status"] == "inaccurate":
            detail += f" (but {d} is inaccurate: see the warnings)"
        out.append({"text": f"{prefix}{claim}: {detail}.", "verdict": verdict})
    return out


def pairing_note(summary: pd.DataFrame, config: dict | None = None, device: str = "card") -> str:
    """How the speedup intervals were made, in a sentence or two: which were paired by
    repeat and why that is valid, which were not and why not. `device`: what a repeat's
    dtypes shared (the card; the machine on the CPU)."""
    if "speedup_pairing" not in summary.columns:
        return ""
    made = summary["speedup_pairing"].dropna()
    paired, independent = int((made == "paired").sum()), int((made == "independent").sum())
    text = ""
    if paired:
        which = (
            f"{paired} of {paired + independent} speedup intervals are"
            if independent
            else ("Every speedup interval is" if paired > 1 else "The speedup interval is")
        )
        text = (
            f"{which} paired by repeat: the dtypes of one repeat ran back to back on the same {device}, so the "
            f"{device}'s and the moment's effects (clock, temperature) cancel in that repeat's ratio, and the "
            "bootstrap draws whole repeats of both dtypes together. "
        )
    if independent:
        off = (config or {}).get("stats", {}).get("paired_speedup") is False
        why = "stats.paired_speedup is off" if off else (
            f"fewer than 3 repeats, a repeat missing on one side, or its dtypes on different {device}s")
        who = ("The other one comes" if independent == 1 else f"The other {independent} come") if paired else (
            "The speedup interval comes" if independent == 1 else "The speedup intervals come")  # fmt: skip
        text += f"{who} from independent bootstraps of the two dtypes ({why})."
    return text.strip()


def answer_sentences(summary: pd.DataFrame) -> list[str]:
    return [a["text"] for a in answers(summary)]


def headline(summary: pd.DataFrame) -> str:
    """The answer in one line per workload and variant: a common verdict or the mix."""
    lines = []
    for (workload, dtype), cells in summary[summary["dtype"] != summary["baseline"]].groupby(["workload", "dtype"], sort=False):
        base = cells["baseline"].iloc[0]
        timed = cells[cells["speedup"].notna()]
        where = f" ({workload})" if summary["workload"].nunique() > 1 else ""
        if timed.empty:
            lines.append(f"{dtype} could not be compared with {base}{where}: no cell was timed on both.")
            continue
        lo, hi = f"{timed['speedup'].min():.2f}", f"{timed['speedup'].max():.2f}"
        span = f"{lo}×" if lo == hi else f"{lo}–{hi}×"
        verdicts = timed["verdict"].fillna("unknown")
        if verdicts.nunique() == 1:
            v = verdicts.iloc[0]
            word = {"faster": "faster than", "slower": "slower than", "same": "no faster or slower than"}.get(v, "undecided against")
            every = "at every batch size measured" if len(timed) == len(cells) else f"at every batch size timed ({len(timed)} of {len(cells)})"
            lines.append(f"{dtype} is {word} {base}{where} {every}: {span}.")
        else:
            parts = [f"{v} at batch {', '.join(str(b) for b in timed.loc[verdicts == v, 'batch'])}" for v in dict.fromkeys(verdicts)]
            lines.append(f"{dtype} against {base}{where}: " + "; ".join(parts) + f" ({span}).")
    return " ".join(lines)


# -------------------------------------------------------------------------- warnings


def warnings(summary: pd.DataFrame, samples: pd.DataFrame | None = None) -> list[str]:
    out = []
    if samples is not None and "gpu_name" in samples.columns:
        models = sorted(set(samples["gpu_name"].fillna(samples["device"]).astype(str)))
        if len(models) > 1:
            out.append(
                f"Measured on {len(models)} GPU models ({', '.join(models)}): their cells are kept apart, each "
                "workload shown per model as “workload @ model”, and speedups compare cells of one model only."
            )
    unstable_col = "unstable" if "unstable" in summary.columns else None
    outlier_col = _first_column(summary, OUTLIER_COLUMNS)
    advice_col = _first_column(summary, REPEATS_ADVICE_COLUMNS)
    throttle_col = _first_column(summary, THROTTLED_COLUMNS)
    for _, r in summary.iterrows():
        cell = f"{r['workload']} / {r['dtype']} / batch {r['batch']}"
        if r["status"] not in ("ok", "inaccurate"):
            detail = r["status_detail"] if isinstance(r.get("status_detail"), str) and r["status_detail"] else ""
            out.append(f"{cell}: not measured — {r['status']}" + (f" ({detail})" if detail else "") + ".")
            continue
        if r["status"] == "inaccurate":
            out.append(
                f"{cell}: output differs from the fp16 model by {_fmt(r['rel_error'], '.3g')} "
                f"(tolerance {_fmt(r['tolerance'], '.3g')}) — the timing is of a model that computes something else."
            )
        if _number(r.get("n_failed_repeats")) > 0:
            out.append(f"{cell}: {int(r['n_failed_repeats'])} repeat(s) failed and are not in the statistics.")
        if r.get("few_repeats") is True or r.get("few_repeats") == 1:
            out.append(f"{cell}: only {r['n_repeats']} repeat(s); intervals need at least 3 to be trusted.")
        unstable = bool(r[unstable_col]) if unstable_col and pd.notna(r[unstable_col]) else _number(r.get("cv")) >= 0.10
        if unstable:
            out.append(f"{cell}: unstable, coefficient of variation {_fmt(_number(r.get('cv')), '.1%')}.")
        if outlier_col and _number(r[outlier_col]) > 0:
            out.append(f"{cell}: {int(_number(r[outlier_col]))} outlier sample(s) by Tukey's fences (kept in the statistics).")
        if throttle_col and _number(r[throttle_col]) > 0:
            out.append(f"{cell}: {int(_number(r[throttle_col]))} sample(s) taken while the GPU throttled "
                       "(left out of the statistics unless stats.exclude_throttled is false).")  # fmt: skip
        if advice_col and _number(r[advice_col]) > _number(r.get("n_repeats")):
            out.append(f"{cell}: {int(_number(r[advice_col]))} repeats advised for the target interval width "
                       f"({r['n_repeats']} run).")  # fmt: skip
    if samples is not None:
        counted = throttle_col is not None and summary[throttle_col].notna().any()
        out += clock_warnings(samples, counted=counted)
        conf = summary["confidence"].dropna() if "confidence" in summary else pd.Series(dtype=float)
        out += card_warnings(samples, float(conf.iloc[0]) if len(conf) else 0.95)
    return out


def card_spread(samples: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per cell measured on more than one card of one GPU model: each card's mean of its
    repeat means, how far the slowest is from the fastest (`spread`, a fraction), and
    whether the cards' intervals all overlap (`agree`; None where a card has one repeat).
    Cards of one model differ (two H100s at their power cap: 1.0-1.7% on every cell; two
    H200s 0.3-0.9%, 2026-11-26), and a cell's interval then holds that spread too."""
    need = {"gpu_uuid", "gpu_name", "rep", "latency_ms", "status"}
    if samples is None or not need <= set(samples.columns):
        return pd.DataFrame()
    s = samples[samples["status"].isin(TIMED_STATUSES) & samples["gpu_uuid"].notna() & samples["latency_ms"].notna()]
    if "throttled" in s.columns:
        s = s[s["throttled"].ne(True)]
    if s.empty or s["gpu_uuid"].nunique() < 2:
        return pd.DataFrame()
    keys = ["workload", "dtype", "batch", "gpu_name"]
    per_rep = s.groupby(keys + ["gpu_uuid", "rep"])["latency_ms"].mean()
    rows = []
    for key, cell in per_rep.groupby(keys):
        cards = [g.to_numpy(dtype=float) for _, g in cell.groupby(level="gpu_uuid")]
        if len(cards) < 2:
            continue
        means = [x.mean() for x in cards]
        # do the cards agree? each card's Student-t interval over its repeat means; all
        # overlap when the highest lower end is below the lowest upper end
        agree = None
        if all(len(x) >= 2 for x in cards):
            ends = [mean_interval(x, confidence) for x in cards]
            agree = bool(max(lo for lo, _ in ends) <= min(hi for _, hi in ends))
        rows.append({**dict(zip(keys, key)), "cards": len(cards), "spread": max(means) / min(means) - 1,
                     "repeats_per_card": "/".join(str(len(x)) for x in cards), "agree": agree})  # fmt: skip
    return pd.DataFrame(rows)


def card_warnings(samples: pd.DataFrame, confidence: float = 0.95) -> list[str]:
    """One line per GPU model measured on several cards: how many, how far apart, and
    whether their intervals agree."""
    spread = card_spread(samples, confidence)
    out = []
    for model, cells in (spread.groupby("gpu_name") if not spread.empty else []):
        worst = cells.loc[cells["spread"].idxmax()]
        # blocks: the dtypes of one (workload, batch, repeat), which qbench.lanes puts on one card
        on = samples[samples["gpu_name"] == model].dropna(subset=["gpu_uuid"])
        cards_per_block = on.groupby(["workload", "batch", "rep"])["gpu_uuid"].nunique()
        split = int((cards_per_block > 1).sum())
        blocks = (
            "within every repeat all dtypes ran on one card, so the card does not pose as a dtype effect"
            if split == 0
            else f"in {split} of {len(cards_per_block)} repeats the dtypes ran on different cards, so part of a "
            "dtype difference there may be the cards'"
        )
        judged = cells[cells["agree"].notna()]
        apart = judged[judged["agree"] == False]  # noqa: E712 (an object column: True, False, None)
        if judged.empty:
            agreement = ""
        elif apart.empty:
            agreement = (f" Each card's {confidence:.0%} interval overlaps the others' in each of the {len(judged)} cell(s) "
                         "with 2+ repeats per card.")  # fmt: skip
        else:
            names = ", ".join(f"{r.dtype} / batch {r.batch}" for r in apart.head(4).itertuples())
            agreement = (f" The cards' {confidence:.0%} intervals do not overlap in {len(apart)} of {len(judged)} cell(s) "
                         f"with 2+ repeats per card ({names}{', …' if len(apart) > 4 else ''}): there the cards differ "
                         "by more than their repeats vary.")  # fmt: skip
        out.append(
            f"Measured on {int(cells['cards'].max())} {model} cards: in {len(cells)} cell(s) their means differ, by up to "
            f"{worst['spread']:.1%} ({worst['workload']} / {worst['dtype']} / batch {worst['batch']}, repeats "
            f"{worst['repeats_per_card']} per card).{agreement} The intervals include this card-to-card spread; {blocks}."
        )
    return out


def skipped_warnings(skipped: pd.DataFrame | None) -> list[str]:
    """Shards aggregate left out (aggregate.on_bad_shard: skip), each with its problem."""
    if skipped is None or skipped.empty:
        return []
    head = f"{len(skipped)} shard(s) left out of every number here (aggregate.on_bad_shard: skip):"
    return [head] + [f"{r.path}: {r.problem}" for r in skipped.itertuples()]


def clock_warnings(samples: pd.DataFrame, counted: bool = False) -> list[str]:
    """What the clock readings in the shards say: samples on a slowed card (unless the
    summary `counted` them already), and dtypes that ran at different clocks in the same
    batch size (part of their difference is the clock)."""
    clocks = clock_table(samples)
    if clocks.empty:
        return []
    out = []
    slow = clocks["slow_samples"].sum()
    if slow and not counted:
        worst = clocks[clocks["slow_share"] >= 0.5]
        where = "; ".join(f"{r.dtype} at batch {r.batch} ({r.slow_share:.0%})" for r in worst.itertuples())
        marked = "throttled" in samples.columns
        how = "marked throttled by the harness" if marked else f"with the SM clock below {LOW_CLOCK:.0%} of its maximum"
        out.append(
            f"{slow} of {clocks['samples'].sum()} timed samples ran {how}"
            + (f", most of them in {where}" if where else "")
            + f"; board power reached {clocks['power_max_w'].max():.0f} W"
            + ("; see the clocks table." if marked else ". They are in the statistics: see the clocks table.")
        )
    gaps = []
    for (workload, batch), cells in clocks.groupby(["workload", "batch"]):
        cells = cells[cells["sm_clock_median"].notna()]
        if len(cells) >= 2 and cells["sm_clock_median"].max() >= 1.10 * cells["sm_clock_median"].min():
            each = " / ".join(f"{r.dtype} {r.sm_clock_median:.0f}" for r in cells.itertuples())
            gaps.append(f"{workload} batch {batch}: {each}")
    if gaps:
        out.append(
            "The dtypes ran at different SM clocks (median MHz; " + "; ".join(gaps) + "): part of their latency "
            "difference is the clock the card allowed (power or thermal limit), not the arithmetic alone."
        )
    return out


def clock_table(samples: pd.DataFrame) -> pd.DataFrame:
    """Per timed cell: median and lowest SM clock, share of slowed samples, power, temperature."""
    timed = samples[samples["status"].isin(["ok", "inaccurate"])] if "status" in samples.columns else samples
    if timed.empty or "sm_clock_mhz" not in timed.columns or timed["sm_clock_mhz"].isna().all():
        return pd.DataFrame()
    timed = timed.copy()
    if "throttled" in timed.columns:
        timed["slow"] = timed["throttled"].fillna(False).astype(bool)
    else:
        timed["slow"] = timed["sm_clock_mhz"] < LOW_CLOCK * timed["max_sm_clock_mhz"]
    g = timed.groupby(["workload", "dtype", "batch"], sort=True)
    table = pd.DataFrame(
        {
            "samples": g.size(),
            "sm_clock_median": g["sm_clock_mhz"].median(),
            "sm_clock_min": g["sm_clock_mhz"].min(),
            "sm_clock_max_rated": g["max_sm_clock_mhz"].max(),
            "slow_samples": g["slow"].sum().astype(int),
            "power_median_w": g["power_w"].median(),
            "power_max_w": g["power_w"].max(),
            "temperature_max_c": g["temperature_c"].max(),
        }
    ).reset_index()
    table["slow_share"] = table["slow_samples"] / table["samples"]
    return table


# ------------------------------------------------------------------------- tables


def reference_table(summary: pd.DataFrame, reference: pd.DataFrame | None) -> list[dict]:
    """Reference and measured latency side by side, with their ratio, and each side's speedup."""
    if reference is None or reference.empty:
        return []
    ref = {(str(r["dtype"]), int(r["batch_size"])): float(r["latency_ms"]) for _, r in reference.iterrows()}
    rows = []
    for _, r in summary.sort_values(["workload", "batch", "dtype"]).iterrows():
        key = (r["dtype"], int(r["batch"]))
        if key not in ref:
            continue
        base_ref = ref.get((r["baseline"], int(r["batch"])))
        is_variant = r["dtype"] != r["baseline"]
        rows.append(
            {
                "workload": r["workload"],
                "dtype": r["dtype"],
                "batch": int(r["batch"]),
                "reference": _fmt(ref[key], ".0f"),
                "measured": _fmt(_number(r["mean_ms"])) + (
                    f" [{_fmt(_number(r['ci_low_ms']))}, {_fmt(_number(r['ci_high_ms']))}]" if pd.notna(r["ci_low_ms"]) else ""),
                "ratio": _fmt(_number(r["mean_ms"]) / ref[key], ".2f"),
                "reference_speedup": _fmt(base_ref / ref[key], ".2f") + "×" if is_variant and base_ref else "",
                "measured_speedup": _fmt(_number(r["speedup"]), ".2f") + "×" if is_variant else "",
            }
        )  # fmt: skip
    return rows


def _cell(value, spec):
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if spec:
        return format(value, spec)
    if isinstance(value, float):
        return format(value, ".4g")
    return str(value)


def diagnostics_columns(summary: pd.DataFrame) -> list[str]:
    """Summary columns beyond the main table's (the statistics' diagnostics), in order."""
    return [c for c in summary.columns if c not in _NOT_DIAGNOSTICS and not c.startswith("median_ci")]


def provenance_table(samples: pd.DataFrame, generated_at: str | None = None) -> list[tuple[str, str]]:
    """Every distinct value of each provenance column across the shards, and when."""
    cols = ["device", "gpu_name", "gpu_uuid", "driver", "cuda", "torch", "python", "qbench_version",
            "git_commit", "config_hash", "seed", "host", "cpu", "slurm_job_id"]  # fmt: skip
    rows = []
    for c in cols:
        vals = sorted({str(v) for v in samples[c].dropna().unique()}) if c in samples.columns else []
        text = ", ".join(vals) if len(vals) <= 3 else f"{len(vals)} distinct: " + ", ".join(vals[:3]) + ", …"
        rows.append((c, text if vals else "—"))
    rows.append(("shards", str(samples.groupby(["workload", "dtype", "batch", "rep"]).ngroups)))
    started = samples["started_at"].dropna() if "started_at" in samples.columns else pd.Series([], dtype=object)
    if not started.empty:
        rows.append(("first measurement started", str(started.min())))
        rows.append(("last measurement started", str(started.max())))
    rows.append(("report made", generated_at or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")))
    return rows


def describe_setting(config: dict) -> str:
    """The experiment in a sentence: workloads, dtypes, repeats and iterations."""
    from qbench.specs import WorkloadConfig

    parts = []
    for name, spec in config.get("workloads", {}).items():
        try:
            parts.append(f"{name}: {WorkloadConfig.from_dict(name, spec).describe()}")
        except Exception:  # a workload this qbench does not know: show it as given
            parts.append(f"{name}: {spec}")
    dtypes = ", ".join(f"{d} ({v.get('scheme', d)}, {v.get('impl', 'eager')})" for d, v in config.get("dtypes", {}).items())
    timing = config.get("timing", {})
    lo, hi = timing.get("min_iterations", 10), timing.get("max_iterations", 1000)
    forwards = f"{lo}" if lo == hi else f"{lo}–{hi} (adaptive, at most {timing.get('max_time_s', 4)} s)"
    runs = f"{config.get('repeats', '?')} repeats (fresh processes) × {forwards} timed forwards"
    return "; ".join(parts) + f". Dtypes: {dtypes}. {runs} per cell."


# ------------------------------------------------------------------------ template

TEMPLATE = jinja2.Environment(autoescape=True).from_string(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>qbench report — {{ title }}</title>
<style>
body{font-family:"Liberation Sans",Arial,Helvetica,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.15em}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0}#summary td,#diagnostics td{white-space:nowrap}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}.warn li{color:#7a0000}.faster{color:#1a7f37;font-weight:600}
.slower{color:#8b0000;font-weight:600}.same{color:#444;font-weight:600}.missing{color:#b00000}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}.lead{font-size:1.1em;font-weight:600}
.chart{margin:1em 0;overflow-x:auto}.note{color:#555;font-size:.92em}.setting{color:#444}
.table-wrap{overflow-x:auto}
</style>
<script>{{ vega_js | safe }}</script>
</head><body>
<h1>Does {{ variants }} make {{ title }} faster than {{ baseline }}?</h1>
<p class="setting">{{ setting }}</p>
<h2 id="answer">Answer</h2>
<p class="lead">{{ headline }}</p>
<ul id="answers">{% for a in answers %}<li class="{{ a.verdict }}">{{ a.text }}</li>{% endfor %}</ul>
<p class="note">Speedup is the {{ baseline }} mean latency divided by the variant's (above 1: the variant is faster), with a
{{ confidence }} interval from a bootstrap over repeats (fresh processes, each with its samples), corrected for few repeats.
{% if pairing_note %}<span id="pairing">{{ pairing_note }}</span>
{% endif %}The verdict is <em>faster</em> or <em>slower</em> only when the interval excludes 1 and the effect is at least {{ threshold }};
otherwise <em>same</em>.</p>
<h2 id="warnings">Warnings</h2>
{% if warnings %}<ul class="warn">{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul>
{% else %}<p>None: every cell was timed, accurate and stable.</p>{% endif %}
{% for s in sections %}<h2 id="{{ s.name }}">{{ s.heading }}</h2>
{% if s.spec %}<div class="chart" id="chart-{{ s.name }}" data-chart="{{ s.name }}"></div>
<noscript><div class="chart">{{ s.svg | safe }}</div></noscript>
<p class="note">{{ s.caption }}</p>{% else %}<p class="missing" id="no-{{ s.name }}">{{ s.caption }}</p>{% endif %}
{% if s.name == "latency" and reference_rows %}<h3>Reference and measured</h3>
<table id="reference"><tr><th class="l">workload</th><th class="l">dtype</th><th>batch</th><th>reference (ms)</th><th>measured (ms) [{{ confidence }} CI]</th>
<th>measured / reference</th><th>reference speedup</th><th>measured speedup</th></tr>
{% for r in reference_rows %}<tr><td class="l">{{ r.workload }}</td><td class="l">{{ r.dtype }}</td><td>{{ r.batch }}</td><td>{{ r.reference }}</td><td>{{ r.measured }}</td><td>{{ r.ratio }}</td><td>{{ r.reference_speedup }}</td><td>{{ r.measured_speedup }}</td></tr>{% endfor %}
</table><p class="note">{{ reference_note }}</p>{% endif %}
{% endfor %}
<h2 id="summary-table">Summary</h2>
<div class="table-wrap"><table id="summary"><tr>{% for c in columns %}<th class="l">{{ c }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for c in row %}<td class="{{ c[1] }}">{{ c[0] }}</td>{% endfor %}</tr>{% endfor %}
</table></div>
{% if diag_columns %}<h3>Diagnostics</h3>
<div class="table-wrap"><table id="diagnostics"><tr><th class="l">workload</th><th class="l">dtype</th><th>batch</th>{% for c in diag_columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in diag_rows %}<tr>{% for c in row %}<td class="{{ 'l' if loop.index < 3 else '' }}">{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table></div>{% endif %}
{% if clock_rows %}<h3>Clocks and power during the timed forwards</h3>
<table id="clocks"><tr><th class="l">workload</th><th class="l">dtype</th><th>batch</th><th>samples</th><th>SM clock median (MHz)</th>
<th>SM clock min (MHz)</th><th>max rated (MHz)</th><th>{{ slow_label }}</th><th>power median (W)</th><th>power max (W)</th><th>temperature max (°C)</th></tr>
{% for r in clock_rows %}<tr><td class="l">{{ r.workload }}</td><td class="l">{{ r.dtype }}</td><td>{{ r.batch }}</td><td>{{ r.samples }}</td>
<td>{{ r.sm_clock_median }}</td><td>{{ r.sm_clock_min }}</td><td>{{ r.sm_clock_max_rated }}</td><td>{{ r.slow }}</td><td>{{ r.power_median_w }}</td><td>{{ r.power_max_w }}</td><td>{{ r.temperature_max_c }}</td></tr>{% endfor %}
</table>{% endif %}
<h2 id="provenance">Provenance</h2>
<table>{% for k, v in provenance %}<tr><th class="l">{{ k }}</th><td class="l">{{ v }}</td></tr>{% endfor %}</table>
<h3>Configuration</h3><pre id="config">{{ config_yaml }}</pre>
<h2 id="reproduce">Reproduce</h2>
<p>With the shards of this run in <code>results/shards/</code>, the same command re-aggregates them and redraws this report;
without them, it measures again:</p>
<pre id="command">{{ command }}</pre>
<p><small>Made by qbench {{ version }}.</small></p>
<script>
const QBENCH_SPECS = {{ specs_json | safe }};
for (const [name, spec] of Object.entries(QBENCH_SPECS)) {
  vegaEmbed("#chart-" + name, spec, {renderer: "svg", actions: false}).catch(console.error);
}
</script>
</body></html>
"""
)


def _script_json(obj) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\!--")


def vega_javascript() -> str:
    """Vega, Vega-Lite and vega-embed as one inline script (vl-convert bundles them)."""
    import vl_convert
    from altair.utils._importers import vl_version_for_vl_convert

    return vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert()).replace("</script", "<\\/script")


def render_report(
    summary: pd.DataFrame,
    samples: pd.DataFrame,
    charts: dict[str, dict],
    config: dict,
    command: str,
    reference: pd.DataFrame | None = None,
    reference_note: str = "",
    generated_at: str | None = None,
    vega_js: str | None = None,
    skipped: pd.DataFrame | None = None,
) -> str:
    """The report as one HTML string. `charts` maps a chart's name (CHART_SECTIONS) to
    {"spec": Vega-Lite dict, "svg": static SVG text}; the breakdown section says plainly
    when there is none."""
    unknown = sorted(set(charts) - set(CHART_SECTIONS))
    if unknown:
        raise ValueError(f"unknown chart(s) {unknown}; the report knows {list(CHART_SECTIONS)}")
    baseline = config.get("baseline", "fp16")
    stats = config.get("stats", {})
    confidence = f"{stats.get('confidence', 0.95):.0%}"
    variants = ", ".join(d for d in config.get("dtypes", {}) if d != baseline) or "quantization"
    workloads = config.get("workloads", {})
    setting = describe_setting(config)
    gpus = sorted({str(v) for v in samples["gpu_name"].dropna().unique()}) or ["CPU"]
    sections = []
    for name, (heading, caption) in CHART_SECTIONS.items():
        chart = charts.get(name)
        if chart is None and name != "breakdown":
            continue
        sections.append(
            {
                "name": name,
                "heading": heading.format(baseline=baseline),
                "caption": caption.format(baseline=baseline, confidence=confidence) if chart else NO_BREAKDOWN,
                "spec": chart["spec"] if chart else None,
                "svg": chart["svg"] if chart else "",
            }
        )
    diag = diagnostics_columns(summary)
    clocks = clock_table(samples)
    clock_rows = [
        {**r, "sm_clock_median": f"{r['sm_clock_median']:.0f}", "sm_clock_min": f"{r['sm_clock_min']:.0f}",
         "sm_clock_max_rated": _fmt(r["sm_clock_max_rated"], ".0f"), "slow": f"{r['slow_samples']} ({r['slow_share']:.0%})",
         "power_median_w": _fmt(r["power_median_w"], ".0f"), "power_max_w": _fmt(r["power_max_w"], ".0f"),
         "temperature_max_c": _fmt(r["temperature_max_c"], ".0f")}
        for r in clocks.to_dict("records")
    ]  # fmt: skip
    return TEMPLATE.render(
        title=", ".join(workloads) + " on " + ", ".join(gpus),
        variants=variants,
        baseline=baseline,
        setting=setting,
        headline=headline(summary),
        answers=answers(summary),
        warnings=skipped_warnings(skipped) + warnings(summary, samples),
        confidence=confidence,
        threshold=f"{stats.get('threshold', 0.01):.0%}",
        sections=sections,
        reference_rows=reference_table(summary, reference),
        reference_note=reference_note,
        columns=[c for c, _, _ in TABLE_COLUMNS],
        rows=[[(_cell(r.get(c), spec), cls) for c, cls, spec in TABLE_COLUMNS] for _, r in summary.iterrows()],
        pairing_note=pairing_note(summary, config, "card" if samples["gpu_name"].notna().any() else "machine"),
        diag_columns=diag,
        diag_rows=[[r["workload"], r["dtype"], r["batch"]] + [_cell(r[c], None) for c in diag] for _, r in summary.iterrows()],
        clock_rows=clock_rows,
        slow_label="throttled samples" if "throttled" in samples.columns else f"samples below {LOW_CLOCK:.0%} of max clock",
        provenance=provenance_table(samples, generated_at),
        config_yaml=yaml.safe_dump(config, sort_keys=False),
        command=command,
        version=html.escape(__version__),
        vega_js=vega_js if vega_js is not None else vega_javascript(),
        specs_json=_script_json({s["name"]: s["spec"] for s in sections if s["spec"]}),
    )
