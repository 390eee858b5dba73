"""Pipeline benchmark: precision, overhead and stability of whole workflow runs.

Reads the results of one or more complete runs of the workflow (each a `results/`
folder with `summary.csv` and `shards/`, plus the run's wall time in seconds) and prints
markdown tables:
- precision: the 95% interval's half-width as % of the mean, per cell (goal <= 0.5%);
- overhead: wall time against the sum of time inside timed loops (goal <= 1.5x with warm
  caches), and the per-job fixed cost split into start-up, build/check, first call
  (compile), warm-up;
- stability (two runs): per cell, whether the intervals overlap and how far the means
  differ (goal: overlap everywhere, < 1%).

    python scripts/bench_pipeline.py --run results-1:612 --run results-2:540 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from qbench.shards import read_shards


def load(spec: str) -> dict:
    path, _, wall = spec.partition(":")
    root = Path(path)
    summary = pd.read_csv(root / "summary.csv")
    shards = read_shards(sorted((root / "shards").rglob("*.parquet")))
    per_job = shards.groupby(["workload", "dtype", "batch", "rep"]).first()
    return {"name": path, "wall_s": float(wall) if wall else float("nan"), "summary": summary, "jobs": per_job}


def precision(run: dict) -> pd.DataFrame:
    s = run["summary"]
    out = s[["workload", "dtype", "batch", "mean_ms", "ci_low_ms", "ci_high_ms"]].copy()
    out["half_width_pct"] = 100 * (out["ci_high_ms"] - out["ci_low_ms"]) / 2 / out["mean_ms"]
    return out


def overhead(run: dict) -> dict:
    j = run["jobs"]
    timed = float(j["timed_s"].sum())
    return {
        "run": run["name"],
        "jobs": len(j),
        "wall_s": run["wall_s"],
        "timed_loop_sum_s": timed,
        "wall_over_timed": run["wall_s"] / timed,
        "median_startup_s": float(j["startup_s"].median()),
        "median_setup_s": float((j["setup_s"] - j["compile_s"]).median()),
        "median_first_call_s": float(j["compile_s"].median()),
        "median_warmup_s": float(j["warmup_s"].median()),
        "median_timed_s": float(j["timed_s"].median()),
        "per_job_fixed_s": (run["wall_s"] - timed) / len(j),
        "timing_methods": ", ".join(sorted(j["timing_method"].dropna().unique())),
        "stop_reasons": j["stop_reason"].value_counts().to_dict(),
    }


def stability(a: dict, b: dict) -> pd.DataFrame:
    keys = ["workload", "dtype", "batch"]
    m = a["summary"].merge(b["summary"], on=keys, suffixes=("_a", "_b"))
    m["diff_pct"] = 100 * (m["mean_ms_b"] / m["mean_ms_a"] - 1)
    m["overlap"] = (m["ci_low_ms_a"] <= m["ci_high_ms_b"]) & (m["ci_low_ms_b"] <= m["ci_high_ms_a"])
    return m[keys + ["mean_ms_a", "mean_ms_b", "diff_pct", "overlap"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="RESULTS_DIR[:WALL_SECONDS]")
    ap.add_argument("--json")
    args = ap.parse_args()
    runs = [load(r) for r in args.run]
    report: dict = {"runs": []}
    for run in runs:
        p = precision(run)
        o = overhead(run)
        print(f"\n## {run['name']}\n\n{p.round(3).to_markdown(index=False)}\n")
        print(f"worst half-width {p['half_width_pct'].max():.3f}% (goal <= 0.5%)")
        print("\n".join(f"- {k}: {v:.3f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in o.items()))
        report["runs"].append({"overhead": o, "precision": p.to_dict("records")})
    if len(runs) >= 2:
        s = stability(runs[0], runs[1])
        print(f"\n## stability {runs[0]['name']} vs {runs[1]['name']}\n\n{s.round(3).to_markdown(index=False)}\n")
        print(f"intervals overlap on {int(s['overlap'].sum())}/{len(s)} cells; "
              f"largest mean difference {s['diff_pct'].abs().max():.3f}% (goal < 1%)")  # fmt: skip
        report["stability"] = s.to_dict("records")
    if args.json:
        json.dump(report, open(args.json, "w"), indent=1, default=str)


if __name__ == "__main__":
    main()
