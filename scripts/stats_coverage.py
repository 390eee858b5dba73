"""Measure the empirical coverage of qbench's 95% intervals on simulated hierarchical data
with a known truth, beside the first version's two-level percentile bootstrap.

    python scripts/stats_coverage.py [--trials 2000] [--resamples 500] [--iterations 20] [--table paired]

Prints Markdown tables (a few minutes on 2 cores with the defaults): the intervals of one
cell and the independent speedup (`--table cells`), and the speedup of two cells measured
in blocks, paired by repeat beside independent, on the same data (`--table paired`; a
block effect shared by repeat r of both cells, in units of the between-process sd, and
0 for none). The binomial standard error of a coverage near 0.95 is about
sqrt(0.95·0.05/trials): 0.005 at 2000.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from qbench.simulate import (  # noqa: E402
    independent_coverage,
    mean_coverage,
    median_coverage,
    paired_coverage,
    simulate,
    simulate_blocks,
    speedup_coverage,
)
from qbench.stats import StatsConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--repeats", type=int, nargs="+", default=[2, 3, 5, 10, 20])
    ap.add_argument("--icc", type=float, nargs="+", default=[0.01, 0.5, 0.9])
    ap.add_argument("--blocks", type=float, nargs="+", default=[0.0, 1.0, 3.0],
                    help="between-block sd in units of the between-process sd (paired table)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", choices=["all", "cells", "paired"], default="all")
    args = ap.parse_args()
    if args.table in ("all", "cells"):
        cells_table(args)
    if args.table in ("all", "paired"):
        paired_table(args)


def cells_table(args) -> None:
    cfg = StatsConfig(resamples=args.resamples)
    mu = 10.0
    print(f"{args.trials} trials, {args.resamples} resamples, {args.iterations} iterations per repeat, "
          f"confidence {cfg.confidence}; 'old' = the two-level percentile bootstrap "
          "(resample repeats, then iterations)\n")  # fmt: skip
    print("| data | repeats | icc | mean: t (now) | mean: old | median: now | median: old | "
          "speedup: now | speedup: old | verdict same (now) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for skew in (False, True):
        for r in args.repeats:
            for icc in args.icc:
                rng = np.random.default_rng([args.seed, r, int(icc * 1000), skew])
                y = simulate(rng, args.trials, r, args.iterations, icc, mu, skew=skew)
                y2 = simulate(rng, args.trials, r, args.iterations, icc, mu, skew=skew)
                cells = [
                    mean_coverage(y, mu, cfg.confidence),
                    mean_coverage(y, mu, cfg.confidence, rng=rng, resamples=args.resamples, old=True),
                ]
                if skew:  # the median of the skewed model has no closed form
                    cells += [float("nan"), float("nan")]
                else:
                    cells += [
                        median_coverage(y, mu, cfg.confidence, rng, args.resamples),
                        median_coverage(y, mu, cfg.confidence, rng, args.resamples, old=True),
                    ]
                cov, same = speedup_coverage(y, y2, 1.0, cfg, rng)
                cov_old, _ = speedup_coverage(y, y2, 1.0, cfg, rng, old=True)
                cells += [cov, cov_old, same]
                text = " | ".join("—" if np.isnan(c) else f"{c:.3f}" for c in cells)
                print(f"| {'skewed' if skew else 'normal'} | {r} | {icc} | {text} |", flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s)\n")


def paired_table(args) -> None:
    """Two cells in blocks, variant 20% faster (true ratio 1.2): the paired interval beside
    the independent one on the same data; half-widths relative to the ratio."""
    cfg = StatsConfig(resamples=args.resamples)
    mu, ratio, cv = 10.0, 1.2, 0.05
    print(f"{args.trials} trials, {args.resamples} resamples, {args.iterations} iterations per repeat, "
          f"confidence {cfg.confidence}; speedup {ratio} of two cells in blocks; block = between-block sd "
          "/ between-process sd (shared by both cells' repeat r; 0: no shared effect)\n")  # fmt: skip
    print("| data | repeats | icc | block | paired: coverage | independent: coverage | "
          "paired: half-width | independent: half-width | paired / independent |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for skew in (False, True):
        for r in args.repeats:
            for icc in args.icc:
                for block in args.blocks:
                    rng = np.random.default_rng([args.seed, r, int(icc * 1000), int(block * 100), skew, 7])
                    ya, yb = simulate_blocks(rng, args.trials, r, args.iterations, icc, block, mu, mu / ratio, cv, skew)
                    cov_p, half_p = paired_coverage(ya, yb, ratio, cfg, rng)
                    cov_i, half_i = independent_coverage(ya, yb, ratio, cfg, rng)
                    print(f"| {'skewed' if skew else 'normal'} | {r} | {icc} | {block:g} | {cov_p:.3f} | {cov_i:.3f} | "
                          f"±{half_p:.2%} | ±{half_i:.2%} | {half_p / half_i:.2f} |", flush=True)  # fmt: skip
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
