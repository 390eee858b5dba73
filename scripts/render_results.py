"""Summary, breakdown, charts and report for shards measured elsewhere, or for a run that
did not finish: what the workflow's aggregate, breakdown, plot and report rules make,
from whatever shards are in a folder, with the cells still missing named in the report.

    python scripts/render_results.py RESULTS_DIR --configfile CONFIG [--command "..."]

RESULTS_DIR holds shards/ (and breakdown/) as the workflow writes them; the outputs go
beside them (summary.parquet/.csv, breakdown.parquet/.csv, charts/, report.html).
Use the workflow itself where you can: this is for results brought back from a machine
whose time ran out before the sweep finished.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import yaml

from qbench.breakdown import collect_cells, summarize_cells
from qbench.charts import build_chart, save_chart
from qbench.config import Experiment
from qbench.report import render_report
from qbench.shards import collect_shards
from qbench.stats import StatsConfig, summarize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--configfile", required=True, type=Path)
    ap.add_argument("--command", default="", help="the command that measured the shards, for the report")
    args = ap.parse_args()
    config = yaml.safe_load(args.configfile.read_text())
    exp = Experiment.from_config(config)
    out = args.results
    shards = sorted((out / "shards").rglob("*.parquet"))
    samples, skipped = collect_shards(shards)
    expected = {
        f"{w}/dtype={d}/batch={b}/rep={r}"
        for w in exp.workloads for d in exp.dtypes for b in exp.batch_sizes for r in range(exp.repeats)
    }  # fmt: skip
    present = {str(p.relative_to(out / "shards").with_suffix("")) for p in shards}
    missing = sorted(expected - present)
    skipped = pd.concat(
        [skipped, pd.DataFrame({"path": [f"shards/{m}.parquet" for m in missing],
                                "problem": ["not measured: the run stopped before this job"] * len(missing)})],
        ignore_index=True,
    )  # fmt: skip
    summary = summarize(samples, config.get("baseline", "fp16"), StatsConfig.from_dict(config.get("stats") or {}))
    summary.to_parquet(out / "summary.parquet", index=False)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    skipped.to_csv(out / "skipped_shards.csv", index=False)
    breakdown = None
    cells = sorted((out / "breakdown").rglob("*.parquet"))
    if cells:
        breakdown = summarize_cells(collect_cells(cells))
        breakdown.to_parquet(out / "breakdown.parquet", index=False)
        breakdown.to_csv(out / "breakdown.csv", index=False, float_format="%.6g")
    reference = None
    if config.get("reference") and Path(config["reference"]).exists():
        reference = pd.read_csv(config["reference"])
    charts = {}
    names = ["latency", "distributions"] + (["speedup"] if len(exp.dtypes) > 1 else [])
    names += ["breakdown"] if breakdown is not None else []
    for name in names:
        chart = build_chart(name, summary, samples=samples, reference=reference, breakdown=breakdown)
        stem = out / "charts" / name
        save_chart(chart, stem)
        charts[name] = {"spec": json.loads(stem.with_suffix(".json").read_text()),
                        "svg": stem.with_suffix(".svg").read_text()}  # fmt: skip
    html = render_report(summary, samples, charts, config, args.command, reference=reference, skipped=skipped,
                         reference_note=f"Reference figures from {config['reference']} (config key reference)."
                         if reference is not None else "")  # fmt: skip
    (out / "report.html").write_text(html)
    print(f"{len(shards)} shards, {len(missing)} missing; wrote {out}/summary.csv, report.html")


if __name__ == "__main__":
    main()
