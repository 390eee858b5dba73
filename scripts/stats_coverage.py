"""Measure the empirical coverage of qbench's 95% intervals on simulated hierarchical data
with a known truth, beside the first version's two-level percentile bootstrap.

    python scripts/stats_coverage.py [--trials 2000] [--resamples 500] [--iterations 20]

Prints a Markdown table (a few minutes on 2 cores with the defaults). The binomial
standard error of a coverage near 0.95 is about sqrt(0.95·0.05/trials): 0.005 at 2000.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from qbench.simulate import mean_coverage, median_coverage, simulate, speedup_coverage  # noqa: E402
from qbench.stats import StatsConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--repeats", type=int, nargs="+", default=[2, 3, 5, 10, 20])
    ap.add_argument("--icc", type=float, nargs="+", default=[0.01, 0.5, 0.9])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
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
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
