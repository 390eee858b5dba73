"""`qbench run`: the one command that runs the experiment on whatever machine this is.

With CUDA GPUs it runs the default experiment (config/config.yaml) with one measurement
slot per GPU; without, it says so and runs the CPU preset (config/cpu.yaml). Anything
after the options goes to Snakemake unchanged, e.g. `qbench run -- -n`.
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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
