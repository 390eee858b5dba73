"""Snakemake's own cost per job, without torch: N trivial jobs shaped like rule measure
(`resources: gpu=1`, a priority, a log, retries, a params value), run one at a time with
`--resources gpu=1` as the sweep is, under each scheduler and each way of launching the
job's Python: `script:` (Snakemake's preamble unpickles the job and imports Snakemake
first) or `shell:` (a plain command, its input as arguments, as rule measure is since
2026-11-27). Each job records its process start (CLOCK_BOOTTIME, qbench.startup) and when
its body began and ended; the gap is one job's end to the next job's process start.

    python scripts/bench_snakemake.py [--jobs 40] [--rounds 2] [--cores 16] [--schedulers greedy]
        [--launches script shell] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SNAKEFILE = """
import json, sys
N = int(config["njobs"])

rule all:
    input: expand("out/{i}.json", i=range(N))

def prio(wildcards):
    return N - int(wildcards.i)

if config["launch"] == "script":
    rule job:
        output: "out/{i}.json"
        log: "logs/{i}.log"
        priority: prio
        resources: gpu=1, runtime=30, mem_mb=16000, qbench_attempt=lambda wildcards, attempt: attempt
        retries: 2
        params: cell=lambda wildcards: {"i": int(wildcards.i), "workload": {"hidden": 2048}}
        script: "job.py"
else:
    rule job:
        output: shard="out/{i}.json"
        log: "logs/{i}.log"
        priority: prio
        resources: gpu=1, runtime=30, mem_mb=16000, qbench_attempt=lambda wildcards, attempt: attempt
        retries: 2
        params: python=sys.executable, cell=lambda wildcards: json.dumps({"i": int(wildcards.i), "workload": {"hidden": 2048}})
        shell: "{params.python:q} job_shell.py --request {params.cell:q} --output {output.shard:q} --attempt {resources.qbench_attempt}"
"""

JOB = """
import json, time
from qbench.startup import process_start
start = process_start()
body = time.clock_gettime(time.CLOCK_BOOTTIME)
json.dump({"start": start, "body": body, "end": time.clock_gettime(time.CLOCK_BOOTTIME)}, open(snakemake.output[0], "w"))
"""
JOB_SHELL = """
import argparse, json, time
from qbench.startup import process_start
start = process_start()
ap = argparse.ArgumentParser()
ap.add_argument("--request"), ap.add_argument("--output"), ap.add_argument("--attempt", type=int)
args = ap.parse_args()
json.loads(args.request)
body = time.clock_gettime(time.CLOCK_BOOTTIME)
json.dump({"start": start, "body": body, "end": time.clock_gettime(time.CLOCK_BOOTTIME)}, open(args.output, "w"))
"""


def one_run(work: Path, scheduler: str, jobs: int, cores: str, launch: str = "script") -> dict:
    for d in ("out", "logs", ".snakemake"):
        shutil.rmtree(work / d, ignore_errors=True)
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent))
    cmd = ([exe] if exe else [sys.executable, "-m", "snakemake"]) + [
        "--cores", cores, "--resources", "gpu=1", "--scheduler", scheduler, "--quiet", "--config", f"njobs={jobs}",
        f"launch={launch}"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=work, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    rows = sorted((json.load(open(f)) for f in (work / "out").glob("*.json")), key=lambda r: r["start"])
    gaps = [b["start"] - a["end"] for a, b in zip(rows, rows[1:])]
    return {
        "scheduler": scheduler,
        "launch": launch,
        "jobs": len(rows),
        "wall_s": wall,
        "jobs_span_s": rows[-1]["end"] - rows[0]["start"],
        "per_job_s": (rows[-1]["end"] - rows[0]["start"]) / len(rows),
        "median_gap_s": statistics.median(gaps),
        "median_start_to_body_s": statistics.median(r["body"] - r["start"] for r in rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cores", default="16")
    ap.add_argument("--schedulers", nargs="+", default=["ilp", "greedy"])
    ap.add_argument("--launches", nargs="+", default=["script", "shell"], choices=["script", "shell"])
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qbench-snakemake-"))
    (work / "Snakefile").write_text(SNAKEFILE)
    (work / "job.py").write_text(JOB)
    (work / "job_shell.py").write_text(JOB_SHELL)
    results = [one_run(work, s, args.jobs, args.cores, launch) for _ in range(args.rounds) for s in args.schedulers
               for launch in args.launches]  # fmt: skip
    print("| scheduler | launch | jobs | wall (s) | first start to last end (s) | per job (s) | gap between jobs, median (s) | process start to body, median (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['scheduler']} | {r['launch']} | {r['jobs']} | {r['wall_s']:.2f} | {r['jobs_span_s']:.2f} | {r['per_job_s']:.3f} "
              f"| {r['median_gap_s']:.3f} | {r['median_start_to_body_s']:.3f} |")  # fmt: skip
    if args.json:
        json.dump(results, open(args.json, "w"), indent=1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
