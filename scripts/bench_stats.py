"""How long the statistics take: `summarize` over the default sweep (1 workload x 2 dtypes x
4 batch sizes = 8 cells, 5 repeats x 20 iterations each) with 10,000 resamples.

    python scripts/bench_stats.py                      # simulated shards of the default sweep's shape
    python scripts/bench_stats.py --shards results     # a real run's shards (a results folder or shard folder)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from qbench.shards import SCHEMA_VERSION, make_table, read_shards  # noqa: E402
from qbench.stats import StatsConfig, summarize  # noqa: E402


def default_sweep(repeats=5, iterations=20, seed=0):
    """Samples shaped like the default experiment's, with the H100 run's magnitudes."""
    rng = np.random.default_rng(seed)
    rows = []
    for dtype, scale in (("fp16", 1.0), ("w8a8", 1.09)):
        for batch in (128, 256, 512, 1024):
            mean = 0.45 * batch * scale
            for rep in range(repeats):
                rep_mean = mean * (1 + rng.normal(0, 0.002))
                for i, v in enumerate(rep_mean * (1 + rng.normal(0, 0.02, iterations))):
                    rows.append({"schema_version": SCHEMA_VERSION, "workload": "llama-1b", "model": "llama",
                                 "dtype": dtype, "scheme": dtype, "impl": "compile", "batch": batch, "rep": rep,
                                 "tokens": batch * 128, "iteration": i, "latency_ms": float(v), "status": "ok",
                                 "device": "cuda", "config_hash": "bench", "seed": 0, "flops": 3e13 * batch / 128,
                                 "setup_s": 9.0, "warmup_s": 1.0})  # fmt: skip
    return make_table(rows).to_pandas()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", help="a results folder (with shards/) or a folder of shards")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=3, help="timed runs; the best and the median are printed")
    args = ap.parse_args()
    if args.shards:
        root = Path(args.shards)
        root = root / "shards" if (root / "shards").is_dir() else root
        samples = read_shards(sorted(root.rglob("*.parquet")))
    else:
        samples = default_sweep()
    cfg = StatsConfig(resamples=args.resamples)
    n_cells = samples.groupby(["workload", "dtype", "batch"]).ngroups
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        summary = summarize(samples, "fp16", cfg)
        times.append(time.perf_counter() - start)
    print(f"summarize: {n_cells} cells, {len(samples)} samples, {args.resamples} resamples per cell: "
          f"best {min(times):.2f} s, median {np.median(times):.2f} s of {args.runs} runs "
          f"({min(times) / n_cells * 1e3:.0f} ms per cell)")  # fmt: skip
    cols = ["dtype", "batch", "mean_ms", "ci_low_ms", "ci_high_ms", "speedup", "speedup_ci_low", "speedup_ci_high"]
    cols += ["speedup_pairing", "verdict"]
    print(summary[cols].to_string(index=False))


if __name__ == "__main__":
    main()
