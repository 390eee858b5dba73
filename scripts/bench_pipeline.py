"""Pipeline benchmark: precision, overhead and stability of whole workflow runs.

Reads the results of one or more complete runs of the workflow (each a `results/`
folder with `summary.csv` and `shards/`, plus the run's wall time in seconds) and prints
markdown tables:
- precision: the 95% interval's half-width as % of the mean, per cell (goal <= 0.5%);
- overhead: wall time against the sum of time inside timed loops (goal <= 1.5x with warm
  caches), and the per-job fixed cost split into start-up, build/check, first call
  (compile), warm-up;
- stability (two runs): per cell, whether the intervals overlap and how far the means
  differ (goal: overlap everywhere, < 1%); and the same per card, for the repeats both runs
  measured on one GPU (a one-card run beside a two-card run differs by the cards too);
- with --windows: whether a longer timed loop would narrow the intervals. Per cell, the
  spread (sd, % of the mean) of the repeats' means over each loop's first 2, 4, 6 and 8 s,
  on the repeats whose loops ran that long. Where it does not shrink from 2 s to 8 s, the
  repeats differ by more than their loops' sampling (the process, the card's power and
  temperature between jobs), and only more repeats narrow the interval;
- with --thermal: per cell, over all the runs given, how a repeat's mean deviates with the
  card's temperature when its loop started (both taken from the run's mean for the cell):
  the correlation and the slope (% per degree C), and the job each repeat followed.

    python scripts/bench_pipeline.py --run results-1:612 --run results-2:540 [--json out.json]

With --workflow it makes the runs itself: the given config, run by Snakemake in a scratch
folder once with the fork server and once without (measure.fork_server), after one run
that warms the compile cache, and prints per-job fixed cost both ways (works on any
machine; on a CPU use the CPU preset):

    python scripts/bench_pipeline.py --workflow config/cpu.yaml [--gpus 1] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from qbench.shards import read_shards
from qbench.stats import mean_interval


def jobs_of(shards: pd.DataFrame) -> pd.DataFrame:
    """One row per job (cell and repeat): each column's first value in sample order (the
    start time, the first sample's temperature ...), and the job's mean latency."""
    keys = ["workload", "dtype", "batch", "rep"]
    per_job = shards.groupby(keys).first()
    per_job["job_mean_ms"] = shards.groupby(keys)["latency_ms"].mean()
    return per_job


def load(spec: str) -> dict:
    path, _, wall = spec.partition(":")
    root = Path(path)
    summary = pd.read_csv(root / "summary.csv")
    shards = read_shards(sorted((root / "shards").rglob("*.parquet")))
    return {"name": path, "wall_s": float(wall) if wall else float("nan"), "summary": summary, "jobs": jobs_of(shards),
            "shards": shards}  # fmt: skip


WINDOWS_S = (2, 4, 6, 8)


def windows(run: dict, windows_s=WINDOWS_S) -> pd.DataFrame:
    """Per cell: the sd (as % of the cell's mean) of the repeats' means over the first W
    seconds of each timed loop (time = the samples' latencies summed), for each W in
    `windows_s`, over the repeats whose loops reached W (`n_W`: how many). The spread that
    a loop of W seconds leaves between repeats."""
    s = run["shards"]
    s = s[s["status"].isin(["ok", "inaccurate"]) & s["latency_ms"].notna()] if "status" in s else s
    rows = []
    for cell, c in s.groupby(["workload", "dtype", "batch"]):
        means = {w: [] for w in windows_s}
        for _, r in c.groupby("rep"):
            x = r.sort_values("iteration")["latency_ms"].to_numpy()
            t = x.cumsum() / 1000
            for w in windows_s:
                if len(x) and t[-1] >= w * 0.95:  # loops stop on the clock, a sample past or short of it
                    means[w].append(x[t <= w * 1.0001 + x[0] / 1000].mean())
        row = dict(zip(["workload", "dtype", "batch"], cell))
        ref = c["latency_ms"].mean()
        for w in windows_s:
            m = pd.Series(means[w], dtype=float)
            row[f"sd_{w}s_pct"] = 100 * m.std() / ref if len(m) >= 2 else float("nan")
            row[f"n_{w}s"] = len(m)
        rows.append(row)
    return pd.DataFrame(rows)


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


def job_timeline(shards_dir: Path) -> pd.DataFrame:
    """One row per measurement job: its start (job process start, from the shard's
    started_at less its startup_s), its end (the shard's mtime: Snakemake touches each
    output when it registers the job's end, so process exit is included) and its parts,
    in run order."""
    paths = sorted(shards_dir.rglob("*.parquet"))
    jobs = read_shards(paths).groupby(["workload", "dtype", "batch", "rep"]).first().reset_index()
    mtimes = {}
    for p in paths:
        rel = p.relative_to(shards_dir).parts  # workload/dtype=d/batch=b/rep=r.parquet
        mtimes[(rel[0], rel[1][6:], int(rel[2][6:]), int(Path(rel[3]).stem[4:]))] = p.stat().st_mtime
    jobs["end"] = [mtimes[(w, d, int(b), int(r))] for w, d, b, r in jobs[["workload", "dtype", "batch", "rep"]].values]
    jobs["start"] = jobs["started_at"].map(lambda t: t.timestamp()) - jobs["startup_s"]
    jobs = jobs.sort_values("start").reset_index(drop=True)
    jobs["span_s"] = jobs["end"] - jobs["start"]
    jobs["gap_before_s"] = jobs["start"] - jobs["end"].shift(1)  # Snakemake saw the last job end -> this one starts
    # the shard, the process's exit, Snakemake noticing it (and on CUDA the graph capture)
    jobs["after_timing_s"] = jobs["span_s"] - jobs[["startup_s", "setup_s", "warmup_s", "timed_s"]].sum(axis=1)
    return jobs


def job_costs(name: str, wall_s: float, jobs: pd.DataFrame) -> dict:
    """Per-job fixed cost of one run, medians per job and totals."""
    timed = float(jobs["timed_s"].sum())
    span = float(jobs["end"].max() - jobs["start"].min())  # first job's start to last shard
    return {
        "run": name,
        "jobs": len(jobs),
        "wall_s": wall_s,
        "measure_span_s": span,
        "timed_loop_sum_s": timed,
        "wall_over_timed": wall_s / timed,
        "measure_span_over_timed": span / timed,
        "per_job_fixed_s": (span - timed) / len(jobs),
        "median_startup_s": float(jobs["startup_s"].median()),
        "median_setup_s": float((jobs["setup_s"] - jobs["compile_s"]).median()),
        "median_first_call_s": float(jobs["compile_s"].median()),
        "median_warmup_s": float(jobs["warmup_s"].median()),
        "median_timed_s": float(jobs["timed_s"].median()),
        "median_after_timing_s": float(jobs["after_timing_s"].median()),
        "median_gap_between_jobs_s": float(jobs["gap_before_s"].median()),
    }


def stop_fork_server(work: Path) -> None:
    """Stop any fork server of this folder, so each run starts its own (as a run does)."""
    import socket

    for sock_path in (work / ".qbench-cache" / "fork-server").glob("*.sock"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(sock_path))
                s.sendall(b'{"op": "stop"}\n')
                s.recv(1024)
            except OSError:
                pass
    time.sleep(0.5)


def run_workflow(work: Path, config: dict, fork_server: bool, cores: str, gpus: int, log_name: str) -> float:
    """One Snakemake run of the whole workflow in `work` from fresh results (caches kept); its wall time."""
    cfg = json.loads(json.dumps(config))
    cfg.setdefault("measure", {})["fork_server"] = fork_server
    cfg_path = work / f"{log_name}.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    for d in ("results", "logs"):
        shutil.rmtree(work / d, ignore_errors=True)
    stop_fork_server(work)
    repo = Path(__file__).resolve().parents[1]
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent))
    cmd = ([exe] if exe else [sys.executable, "-m", "snakemake"]) + [
        "--snakefile", str(repo / "Snakefile"), "--directory", str(work), "--cores", cores,
        "--resources", f"gpu={gpus}", "--configfile", str(cfg_path)]  # fmt: skip
    t0 = time.perf_counter()
    with open(work / f"{log_name}.log", "w") as out:
        proc = subprocess.run(cmd, cwd=repo, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"snakemake failed ({proc.returncode}); see {work / (log_name + '.log')}")
    return wall


def bench_workflow(args) -> dict:
    """Run the workflow with and without the fork server, print per-job fixed cost, and
    check that both ways measure the same (the means of each round's two runs)."""
    config = yaml.safe_load(open(args.workflow))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="qbench-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if not args.no_warmup:
        print(f"scratch folder {work}; warming the compile cache ...", flush=True)
        run_workflow(work, config, True, args.cores, args.gpus, "warmup")
    modes = args.modes.split(",")
    rows, report = [], {"workflow": args.workflow, "workdir": str(work), "runs": [], "same_numbers": []}
    for r in range(args.rounds):
        kept = {}
        for mode in modes:
            name = f"{mode}-{r + 1}"
            wall = run_workflow(work, config, mode == "fork_server", args.cores, args.gpus, name)
            jobs = job_timeline(work / "results" / "shards")
            costs = job_costs(name, wall, jobs)
            print(f"{name}: wall {wall:.1f} s, per-job fixed cost {costs['per_job_fixed_s']:.2f} s", flush=True)
            rows.append(costs)
            report["runs"].append({"costs": costs, "jobs": jobs.drop(columns=["started_at"]).to_dict("records")})
            shutil.rmtree(work / "runs" / name, ignore_errors=True)
            shutil.copytree(work / "results", work / "runs" / name)  # kept for comparing the two ways
            kept[mode] = load(f"{work / 'runs' / name}:{wall}")
        if len(kept) == 2:
            same = stability(kept[modes[0]], kept[modes[1]])
            report["same_numbers"].append(same.to_dict("records"))
            print(f"\nround {r + 1}, {modes[0]} (a) vs {modes[1]} (b): the same cells' means\n\n"
                  f"{same.round(3).to_markdown(index=False)}\n")  # fmt: skip
    table = pd.DataFrame(rows).set_index("run").T
    print(f"\n## per-job fixed cost, {args.workflow} (medians per job; seconds)\n\n{table.round(3).to_markdown()}\n")
    return report


def per_gpu(run: dict, confidence: float = 0.95) -> pd.DataFrame:
    """A run on several GPUs: each cell's repeat means split by the GPU that measured
    them (mean, Student-t interval, count, how they were timed), against the first GPU."""
    jobs = run["jobs"].reset_index()
    rows = []
    for (w, d, b), cell in jobs.groupby(["workload", "dtype", "batch"]):
        first = None
        for g, on in cell.groupby("gpu_index"):
            x = on["job_mean_ms"].to_numpy()
            lo, hi = mean_interval(x, confidence) if len(x) > 1 else (float("nan"), float("nan"))
            first = x.mean() if first is None else first
            rows.append({"workload": w, "dtype": d, "batch": b, "gpu_index": g, "repeats": len(x), "mean_ms": x.mean(),
                         "ci_low_ms": float(lo), "ci_high_ms": float(hi),
                         "vs_first_gpu_pct": 100 * (x.mean() / first - 1),
                         "timing": ",".join(sorted(on["timing_method"].dropna().unique()))})  # fmt: skip
    return pd.DataFrame(rows)


def stability(a: dict, b: dict) -> pd.DataFrame:
    keys = ["workload", "dtype", "batch"]
    m = a["summary"].merge(b["summary"], on=keys, suffixes=("_a", "_b"))
    m["diff_pct"] = 100 * (m["mean_ms_b"] / m["mean_ms_a"] - 1)
    m["overlap"] = (m["ci_low_ms_a"] <= m["ci_high_ms_b"]) & (m["ci_low_ms_b"] <= m["ci_high_ms_a"])
    return m[keys + ["mean_ms_a", "mean_ms_b", "diff_pct", "overlap"]]


def stability_per_card(a: dict, b: dict, confidence: float = 0.95) -> pd.DataFrame:
    """Two runs compared card by card: for each cell and each GPU (gpu_uuid) that measured
    it in both runs, the two runs' repeat means on that card, their Student-t intervals,
    whether those overlap and how far the means differ. A one-card run's interval speaks
    for its card; set beside a run that also used another card, the whole-cell comparison
    (`stability`) mixes run-to-run change with card-to-card difference, this one does not."""
    keys = ["workload", "dtype", "batch"]
    ja, jb = a["jobs"].reset_index(), b["jobs"].reset_index()
    rows = []
    for (w, d, bt, card), on_a in ja.groupby(keys + ["gpu_uuid"]):
        on_b = jb[(jb["workload"] == w) & (jb["dtype"] == d) & (jb["batch"] == bt) & (jb["gpu_uuid"] == card)]
        if on_b.empty:
            continue
        row = {"workload": w, "dtype": d, "batch": bt, "gpu": str(card)[:12]}
        for side, on in (("a", on_a), ("b", on_b)):
            x = on["job_mean_ms"].to_numpy(dtype=float)
            lo, hi = mean_interval(x, confidence) if len(x) > 1 else (float("nan"), float("nan"))
            row.update({f"repeats_{side}": len(x), f"mean_ms_{side}": x.mean(), f"ci_low_ms_{side}": float(lo),
                        f"ci_high_ms_{side}": float(hi)})  # fmt: skip
        row["diff_pct"] = 100 * (row["mean_ms_b"] / row["mean_ms_a"] - 1)
        known = len(on_a) > 1 and len(on_b) > 1  # one repeat on a side: no interval, no verdict
        overlap = row["ci_low_ms_a"] <= row["ci_high_ms_b"] and row["ci_low_ms_b"] <= row["ci_high_ms_a"]
        row["overlap"] = bool(overlap) if known else None
        rows.append(row)
    return pd.DataFrame(rows)


def thermal(runs: list[dict]) -> pd.DataFrame:
    """Per cell, pooled over `runs`: the correlation between a repeat's deviation from its
    run's mean for the cell (%) and its loop's starting temperature (degrees C from the
    run's mean start for the cell), the least-squares slope (% per degree), the repeats
    counted, and the cell most often run just before it."""
    parts = []
    for i, run in enumerate(runs):
        jobs = run["jobs"][["started_at", "job_mean_ms", "temperature_c"]]
        jobs = jobs.set_axis(["start", "mean", "t0"], axis=1).dropna().sort_values("start").reset_index()
        jobs["before"] = (jobs["dtype"] + "/" + jobs["batch"].astype(str)).shift(1)
        cell = jobs.groupby(["workload", "dtype", "batch"])
        jobs["dev_pct"] = 100 * (jobs["mean"] / cell["mean"].transform("mean") - 1)
        jobs["dt_c"] = jobs["t0"] - cell["t0"].transform("mean")
        parts.append(jobs.assign(run=i))
    if not parts:
        return pd.DataFrame()
    pooled = pd.concat(parts)
    rows = []
    for key, g in pooled.groupby(["workload", "dtype", "batch"]):
        var = float((g["dt_c"] ** 2).sum())
        rows.append({
            **dict(zip(["workload", "dtype", "batch"], key)), "repeats": len(g),
            "corr": g["dev_pct"].corr(g["dt_c"]) if len(g) > 2 else float("nan"),
            "pct_per_c": float((g["dev_pct"] * g["dt_c"]).sum()) / var if var > 0 else float("nan"),
            "after": g["before"].mode().iloc[0] if g["before"].notna().any() else None,
        })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", help="RESULTS_DIR[:WALL_SECONDS]")
    ap.add_argument("--workflow", metavar="CONFIG", help="make the runs: this config with and without the fork server")
    ap.add_argument("--workdir", help="--workflow: scratch folder (default: a new one under the temp dir)")
    ap.add_argument("--rounds", type=int, default=1, help="--workflow: runs per mode, alternating (default 1)")
    ap.add_argument("--modes", default="fork_server,in_process", help="--workflow: which ways, in this order")
    ap.add_argument("--no-warmup", action="store_true", help="--workflow: the compile cache in --workdir is warm")
    ap.add_argument("--cores", default="2", help="--workflow: snakemake --cores (default 2)")
    ap.add_argument("--gpus", type=int, default=1, help="--workflow: snakemake --resources gpu=N (default 1)")
    ap.add_argument("--windows", action="store_true", help="--run: the repeats' spread over each loop's first 2-8 s")
    ap.add_argument("--thermal", action="store_true", help="--run: the repeats' deviations against the card's temperature")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.workflow:
        report = bench_workflow(args)
        if args.json:
            json.dump(report, open(args.json, "w"), indent=1, default=str)
        return
    if not args.run:
        ap.error("give --run RESULTS_DIR[:WALL] (one or more) or --workflow CONFIG")
    runs = [load(r) for r in args.run]
    report: dict = {"runs": []}
    for run in runs:
        p = precision(run)
        o = overhead(run)
        print(f"\n## {run['name']}\n\n{p.round(3).to_markdown(index=False)}\n")
        print(f"worst half-width {p['half_width_pct'].max():.3f}% (goal <= 0.5%)")
        print("\n".join(f"- {k}: {v:.3f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in o.items()))
        entry = {"overhead": o, "precision": p.to_dict("records")}
        if args.windows:
            w = windows(run)
            print(f"\n### the repeats' spread by loop length\n\n{w.round(3).to_markdown(index=False)}\n")
            entry["windows"] = w.to_dict("records")
        if run["jobs"]["gpu_index"].nunique() > 1:
            g = per_gpu(run)
            print(f"\n### per GPU\n\n{g.round(3).to_markdown(index=False)}\n")
            entry["per_gpu"] = g.to_dict("records")
        report["runs"].append(entry)
    if args.thermal:
        t = thermal(runs)
        print(f"\n## the repeats' deviations and the card's temperature ({len(runs)} runs pooled)\n\n"
              f"{t.round(3).to_markdown(index=False)}\n")  # fmt: skip
        report["thermal"] = t.to_dict("records")
    if len(runs) >= 2:
        s = stability(runs[0], runs[1])
        print(f"\n## stability {runs[0]['name']} vs {runs[1]['name']}\n\n{s.round(3).to_markdown(index=False)}\n")
        print(f"intervals overlap on {int(s['overlap'].sum())}/{len(s)} cells; "
              f"largest mean difference {s['diff_pct'].abs().max():.3f}% (goal < 1%)")  # fmt: skip
        report["stability"] = s.to_dict("records")
        c = stability_per_card(runs[0], runs[1])
        if not c.empty:
            known = c.dropna(subset=["ci_low_ms_a", "ci_low_ms_b"])
            print(f"\n## stability per card (the repeats each run measured on the same GPU)\n\n"
                  f"{c.round(3).to_markdown(index=False)}\n")
            print(f"same card: intervals overlap on {int(known['overlap'].sum())}/{len(known)} (cell, card) pairs "
                  f"with 2+ repeats in both runs; largest mean difference {c['diff_pct'].abs().max():.3f}%")  # fmt: skip
            report["stability_per_card"] = c.to_dict("records")
    if args.json:
        json.dump(report, open(args.json, "w"), indent=1, default=str)


if __name__ == "__main__":
    main()
