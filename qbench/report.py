"""The self-contained HTML report: the answer, the charts, the table, the warnings, the
provenance and the command that reproduces it. Charts are inlined as SVG, so the file
opens offline and can be mailed to a colleague as it is."""

from __future__ import annotations

import html
import math

import jinja2
import pandas as pd
import yaml

from qbench import __version__


def _fmt(x, spec=".2f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def answer_sentences(summary: pd.DataFrame) -> list[str]:
    """One sentence per workload, non-baseline dtype and batch size."""
    out = []
    for _, r in summary.sort_values(["workload", "dtype", "batch"]).iterrows():
        if r["dtype"] == r["baseline"]:
            continue
        where = f"{r['workload']}, batch {r['batch']}"
        if pd.isna(r.get("speedup")):
            out.append(f"{r['dtype']} vs {r['baseline']} ({where}): no comparison — status {r['status']}.")
            continue
        interval = (
            f"[{_fmt(r['speedup_ci_low'])}, {_fmt(r['speedup_ci_high'])}]"
            if pd.notna(r["speedup_ci_low"])
            else "(no interval: fewer than 2 repeats)"
        )
        verdict = {
            "faster": f"{r['dtype']} is faster",
            "slower": f"{r['dtype']} is slower",
            "same": "no difference beyond noise",
        }.get(r["verdict"], "undecided")
        out.append(
            f"{r['dtype']} vs {r['baseline']} ({where}): speedup {_fmt(r['speedup'])}× {interval} — {verdict}."
        )
    return out


def warnings(summary: pd.DataFrame) -> list[str]:
    out = []
    for _, r in summary.iterrows():
        cell = f"{r['workload']} / {r['dtype']} / batch {r['batch']}"
        if r["status"] not in ("ok", "inaccurate"):
            out.append(f"{cell}: not measured — {r['status']}" + (f" ({r['status_detail']})" if r["status_detail"] else ""))
            continue
        if r["status"] == "inaccurate":
            out.append(
                f"{cell}: output differs from the fp16 model by {_fmt(r['rel_error'], '.3g')} "
                f"(tolerance {_fmt(r['tolerance'], '.3g')}) — the timing is of a model that computes something else."
            )
        if r["n_failed_repeats"]:
            out.append(f"{cell}: {r['n_failed_repeats']} repeat(s) failed and are not in the statistics.")
        if r["few_repeats"] is True:
            out.append(f"{cell}: only {r['n_repeats']} repeat(s); intervals need at least 3 to be trusted.")
        if pd.notna(r["cv"]) and r["cv"] >= 0.10:
            out.append(f"{cell}: unstable, coefficient of variation {r['cv']:.1%}.")
    return out


def provenance_table(samples: pd.DataFrame) -> list[tuple[str, str]]:
    """Every distinct value of each provenance column across the shards."""
    cols = ["device", "gpu_name", "gpu_uuid", "driver", "cuda", "torch", "python", "qbench_version",
            "git_commit", "config_hash", "seed", "host", "cpu", "slurm_job_id"]  # fmt: skip
    rows = []
    for c in cols:
        vals = sorted({str(v) for v in samples[c].dropna().unique()})
        rows.append((c, ", ".join(vals) if vals else "—"))
    started = samples["started_at"].dropna()
    if not started.empty:
        rows.append(("measured from", str(started.min())))
        rows.append(("measured until", str(started.max())))
    return rows


def reference_table(summary: pd.DataFrame, reference: pd.DataFrame | None) -> list[dict]:
    if reference is None or reference.empty:
        return []
    rows = []
    for _, ref in reference.iterrows():
        hit = summary[(summary["dtype"] == ref["dtype"]) & (summary["batch"] == int(ref["batch_size"]))]
        for _, r in hit.iterrows():
            rows.append(
                {
                    "workload": r["workload"],
                    "dtype": ref["dtype"],
                    "batch": int(ref["batch_size"]),
                    "reference": _fmt(float(ref["latency_ms"]), ".0f"),
                    "measured": _fmt(r["mean_ms"]),
                    "ratio": _fmt(r["mean_ms"] / float(ref["latency_ms"]) if pd.notna(r["mean_ms"]) else None, ".2f"),
                }
            )
    return rows


TEMPLATE = jinja2.Template(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>qbench report — {{ title }}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}.warn{color:#8b0000}.faster{color:#1a7f37;font-weight:600}
.slower{color:#8b0000;font-weight:600}pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}
.chart{margin:1em 0}
</style></head><body>
<h1>Does {{ variants }} make {{ title }} faster than {{ baseline }}?</h1>
<p>{{ setting }}</p>
<h2>Answer</h2>
<ul>{% for s in answers %}<li>{{ s }}</li>{% endfor %}</ul>
<p>Speedup is the {{ baseline }} mean latency divided by the variant's (above 1: the variant is faster), with a
{{ confidence }} interval from a hierarchical bootstrap over repeats (fresh processes) and the iterations within them.
The verdict is <em>faster</em> or <em>slower</em> only when the interval excludes 1 and the effect is at least {{ threshold }}.</p>
{% if warnings %}<h2>Warnings</h2><ul class="warn">{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
<h2>Latency</h2>
{% for name, svg in charts %}<div class="chart" id="chart-{{ name }}">{{ svg | safe }}</div>{% endfor %}
<p>Bars: mean latency of one forward pass; whiskers: its {{ confidence }} interval; dashed ticks: the reference figures.</p>
{% if reference_rows %}<h2>Reference and measured</h2>
<table><tr><th class="l">workload</th><th class="l">dtype</th><th>batch</th><th>reference (ms)</th><th>measured (ms)</th><th>measured / reference</th></tr>
{% for r in reference_rows %}<tr><td class="l">{{ r.workload }}</td><td class="l">{{ r.dtype }}</td><td>{{ r.batch }}</td><td>{{ r.reference }}</td><td>{{ r.measured }}</td><td>{{ r.ratio }}</td></tr>{% endfor %}
</table><p>{{ reference_note }}</p>{% endif %}
<h2>Summary</h2>
<table id="summary"><tr>{% for c in columns %}<th class="l">{{ c }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for c in row %}<td class="{{ c[1] }}">{{ c[0] }}</td>{% endfor %}</tr>{% endfor %}
</table>
<h2>Provenance</h2>
<table>{% for k, v in provenance %}<tr><th class="l">{{ k }}</th><td class="l">{{ v }}</td></tr>{% endfor %}</table>
<h2>Configuration</h2><pre>{{ config_yaml }}</pre>
<h2>Reproduce</h2><pre>{{ command }}</pre>
<p><small>Made by qbench {{ version }}.</small></p>
</body></html>
"""
)

TABLE_COLUMNS = [
    ("workload", "l", None), ("dtype", "l", None), ("scheme", "l", None), ("impl", "l", None),
    ("batch", "", "d"), ("status", "l", None), ("n_repeats", "", None), ("n_samples", "", None),
    ("mean_ms", "", ".2f"), ("ci_low_ms", "", ".2f"), ("ci_high_ms", "", ".2f"), ("median_ms", "", ".2f"),
    ("cv", "", ".2%"), ("tflops", "", ".1f"), ("speedup", "", ".3f"), ("speedup_ci_low", "", ".3f"),
    ("speedup_ci_high", "", ".3f"), ("verdict", "l", None), ("rel_error", "", ".2e"),
]  # fmt: skip


def _cell(value, spec):
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "—"
    return format(value, spec) if spec else str(value)


def render_report(
    summary: pd.DataFrame,
    samples: pd.DataFrame,
    charts: dict[str, str],
    config: dict,
    command: str,
    reference: pd.DataFrame | None = None,
    reference_note: str = "",
) -> str:
    """The report as one HTML string. `charts` maps a name to an inline SVG document."""
    baseline = config.get("baseline", "fp16")
    variants = ", ".join(d for d in config.get("dtypes", {}) if d != baseline) or "quantization"
    workloads = config.get("workloads", {})
    setting = "; ".join(
        f"{name}: {spec.get('model')} ({', '.join(f'{k} {v}' for k, v in spec.items() if k != 'model')})"
        for name, spec in workloads.items()
    )
    gpus = sorted({str(v) for v in samples["gpu_name"].dropna().unique()}) or ["CPU"]
    rows = [[(_cell(r[c], spec), cls) for c, cls, spec in TABLE_COLUMNS] for _, r in summary.iterrows()]
    stats = config.get("stats", {})
    return TEMPLATE.render(
        title=", ".join(workloads) + " on " + ", ".join(gpus),
        variants=variants,
        baseline=baseline,
        setting=setting,
        answers=answer_sentences(summary),
        warnings=warnings(summary),
        confidence=f"{stats.get('confidence', 0.95):.0%}",
        threshold=f"{stats.get('threshold', 0.01):.0%}",
        charts=list(charts.items()),
        reference_rows=reference_table(summary, reference),
        reference_note=reference_note,
        columns=[c for c, _, _ in TABLE_COLUMNS],
        rows=rows,
        provenance=provenance_table(samples),
        config_yaml=yaml.safe_dump(config, sort_keys=False),
        command=command,
        version=html.escape(__version__),
    )
