"""`qbench run`: the one command that runs the experiment on whatever machine this is.

With CUDA GPUs it runs the default experiment (config/config.yaml) with one measurement
slot per GPU; without, it says so and runs the CPU preset (config/cpu.yaml). Anything
after the options goes to Snakemake unchanged, e.g. `qbench run -- -n`.

`qbench compare RUN_A RUN_B`: compares two result directories (their shards) cell by cell
and writes a table and a chart of the latency ratios A / B with intervals and verdicts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path


def count_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def snakemake_command(configfile: str | None, gpus: int, cores: str, extra: list[str]) -> list[str]:
    exe = shutil.which("snakemake")
    cmd = [exe] if exe else [sys.executable, "-m", "snakemake"]
    cmd += ["--cores", cores, "--resources", f"gpu={max(gpus, 1)}"]
    if configfile:
        cmd += ["--configfile", configfile]
    return cmd + extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qbench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the experiment here (GPU default, CPU preset without a GPU)")
    run.add_argument("--configfile", help="experiment to run (default: config/config.yaml, or config/cpu.yaml without a GPU)")
    run.add_argument("--cores", default="all", help="cores for Snakemake (default: all)")
    run.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="passed to snakemake (after --)")
    cmp = sub.add_parser("compare", help="compare two runs' shards cell by cell (latency ratio A / B)")
    cmp.add_argument("run_a", help="results directory of run A (holding shards/), or a directory of shards")
    cmp.add_argument("run_b", help="results directory of run B, likewise")
    cmp.add_argument("--out", default="results/compare",
                     help="folder for compare.csv/.parquet and the chart (default: %(default)s)")  # fmt: skip
    cmp.add_argument("--label-a", help="name of run A in the table and chart (default: its path)")
    cmp.add_argument("--label-b", help="name of run B (default: its path)")
    for key, kind in (("confidence", float), ("resamples", int), ("seed", int), ("threshold", float)):
        cmp.add_argument(f"--{key}", type=kind, help=f"stats.{key} (default: the config default)")
    args = parser.parse_args(argv)
    if args.command == "compare":
        return compare(args)

    if not Path("Snakefile").exists():
        parser.error(f"no Snakefile in {os.getcwd()}: run qbench from the root of the qbench checkout")
    gpus = count_gpus()
    configfile = args.configfile
    if configfile is None and gpus == 0:
        configfile = "config/cpu.yaml"
        print("qbench: no CUDA GPU found: running the CPU preset config/cpu.yaml "
              "(its numbers say nothing about GPUs).", flush=True)  # fmt: skip
    elif configfile is None:
        print(f"qbench: {gpus} CUDA GPU(s) found: running the default experiment config/config.yaml.", flush=True)
    extra = [a for a in args.snakemake_args if a != "--"]
    cmd = snakemake_command(configfile, gpus, args.cores, extra)
    print("qbench: " + " ".join(cmd[0:1] and [Path(cmd[0]).name] + cmd[1:]), flush=True)
    return subprocess.call(cmd)


def run_shards(folder: str) -> list[Path]:
    """The shards of a run: under folder/shards/ if there is one (a results directory, whose
    summary.parquet is no shard), else under folder itself."""
    root = Path(folder)
    if not root.is_dir():
        raise SystemExit(f"qbench compare: {folder} is not a directory")
    if (root / "shards").is_dir():
        root = root / "shards"
    paths = sorted(root.rglob("*.parquet"))
    if not paths:
        raise SystemExit(f"qbench compare: no shards (*.parquet) under {root}")
    return paths


def compare(args: argparse.Namespace) -> int:
    from qbench.charts import save_chart
    from qbench.compare import compare_runs, comparison_chart, describe_run
    from qbench.shards import ShardError, read_shards
    from qbench.stats import StatsConfig

    keys = ("confidence", "resamples", "seed", "threshold")
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    try:
        cfg = StatsConfig.from_dict(overrides)
        a, b = read_shards(run_shards(args.run_a)), read_shards(run_shards(args.run_b))
        label_a, label_b = args.label_a or args.run_a, args.label_b or args.run_b
        table = compare_runs(a, b, cfg, label_a, label_b)
    except (ShardError, ValueError) as exc:  # bad shards or settings: one line naming them
        raise SystemExit(f"qbench compare: {exc}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False, float_format="%.6g")
    table.to_parquet(out / "compare.parquet", index=False)
    save_chart(comparison_chart(table, describe_run(a), describe_run(b)), out / "compare")
    counts = table["verdict"].value_counts().to_dict()
    one_side = int((table["present"] != "both").sum())
    print(f"qbench compare: {len(table)} cells, verdicts of B against A {counts}, {one_side} in one run only; "
          f"wrote {out}/compare.csv and compare.{{html,svg,png,json}}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
