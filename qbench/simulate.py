"""Hierarchical latencies with a known truth, and the empirical coverage of qbench's
intervals on them: the evidence that a stated 95% is a true 95%.

A sample is mean · (1 + cv · (b_r + e_ri)): b_r is the repeat's effect (variance icc),
e_ri the iteration's (variance 1 - icc), both of mean 0, so the true mean is `mean`
and, for normal effects, so is the true median. `skew` draws b from a standardised
lognormal (σ = 0.8) and e from a centred exponential: latencies with a long right tail
and the occasional slow process. Every function works on T data sets at once.

simulate_blocks makes two cells measured in blocks, as qbench.lanes schedules them: repeat
r of both ran on one card, back to back, so both share the block's effect c_r (the card,
the moment's clock and temperature), proportional to each cell's mean, on top of their
own process and iteration effects.
"""

from __future__ import annotations

import numpy as np

from qbench.stats import (
    StatsConfig,
    bootstrap_arrays,
    mean_interval,
    paired_bootstrap,
    paired_ratio_interval,
    ratio_interval,
    se_interval,
    verdict,
)

LOGNORMAL_SIGMA = 0.8


def simulate(
    rng: np.random.Generator,
    trials: int,
    repeats: int,
    iterations: int,
    icc: float,
    mean: float = 10.0,
    cv: float = 0.05,
    skew: bool = False,
) -> np.ndarray:
    """(trials, repeats, iterations) latencies."""
    sb, sw = np.sqrt(icc), np.sqrt(1.0 - icc)
    if skew:
        s2 = LOGNORMAL_SIGMA**2
        b = (rng.lognormal(0.0, LOGNORMAL_SIGMA, (trials, repeats, 1)) - np.exp(s2 / 2)) / np.sqrt(
            (np.exp(s2) - 1) * np.exp(s2)
        )
        e = rng.exponential(1.0, (trials, repeats, iterations)) - 1.0
    else:
        b = rng.normal(0.0, 1.0, (trials, repeats, 1))
        e = rng.normal(0.0, 1.0, (trials, repeats, iterations))
    return mean * (1.0 + cv * (sb * b + sw * e))


def _lengths(y: np.ndarray) -> np.ndarray:
    return np.full(y.shape[:2], y.shape[2])


def _covers(lo, hi, truth) -> float:
    return float(np.mean((lo <= truth) & (truth <= hi)))


def mean_coverage(y: np.ndarray, truth: float, confidence: float, *, rng=None, resamples=0, old=False) -> float:
    """Share of data sets whose interval of the mean holds `truth`. `old`: the two-level
    percentile bootstrap of the first version, for comparison."""
    if old:
        boot, _ = bootstrap_arrays(y, _lengths(y), resamples, rng, within=True, medians=False)
        alpha = 1 - confidence
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=1)
        return _covers(lo, hi, truth)
    return _covers(*mean_interval(y.mean(axis=2), confidence), truth)


def median_coverage(
    y: np.ndarray, truth: float, confidence: float, rng: np.random.Generator, resamples: int, *, old=False
) -> float:
    """Share of data sets whose interval of the pooled median holds `truth`."""
    _, boot = bootstrap_arrays(y, _lengths(y), resamples, rng, within=old)
    point = np.median(y.reshape(len(y), -1), axis=1)
    if old:
        alpha = 1 - confidence
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=1)
    else:
        r = y.shape[1]
        lo, hi = se_interval(point, boot, r - 1, confidence, np.sqrt(r / (r - 1)))
    return _covers(lo, hi, truth)


def speedup_trials(
    ya: np.ndarray, yb: np.ndarray, cfg: StatsConfig, rng: np.random.Generator, *, old=False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Point, interval and verdict of mean_a / mean_b for each pair of data sets."""
    ba, _ = bootstrap_arrays(ya, _lengths(ya), cfg.resamples, rng, within=old, medians=False)
    bb, _ = bootstrap_arrays(yb, _lengths(yb), cfg.resamples, rng, within=old, medians=False)
    ma, mb = ya.mean(axis=2), yb.mean(axis=2)
    point = ma.mean(axis=1) / mb.mean(axis=1)
    if old:
        alpha = 1 - cfg.confidence
        lo, hi = np.quantile(ba / bb, [alpha / 2, 1 - alpha / 2], axis=1)
    else:
        ra, rb = ma.shape[1], mb.shape[1]
        rel_a = ma.var(axis=1, ddof=1) / (ra * ma.mean(axis=1) ** 2)
        rel_b = mb.var(axis=1, ddof=1) / (rb * mb.mean(axis=1) ** 2)
        lo, hi = ratio_interval(point, ba / bb, rel_a, ra, rel_b, rb, cfg.confidence)
    verdicts = [verdict(p, lo_, hi_, cfg.threshold) for p, lo_, hi_ in zip(point, lo, hi)]
    return point, lo, hi, verdicts


def speedup_coverage(ya, yb, true_ratio: float, cfg: StatsConfig, rng, *, old=False) -> tuple[float, float]:
    """(coverage of the speedup interval, share of verdicts that are `same`)."""
    _, lo, hi, verdicts = speedup_trials(ya, yb, cfg, rng, old=old)
    return _covers(lo, hi, true_ratio), float(np.mean([v == "same" for v in verdicts]))


def simulate_blocks(
    rng: np.random.Generator,
    trials: int,
    repeats: int,
    iterations: int,
    icc: float,
    block: float,
    mean_a: float,
    mean_b: float,
    cv: float = 0.05,
    skew: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Two cells' (trials, repeats, iterations) latencies, measured in blocks: a sample is
    mean · (1 + cv · (s_c c_r + s_b b_r + s_w e_ri)), c_r ~ N(0, 1) shared by repeat r of
    both cells, b and e each cell's own (as `simulate`). `block` is the between-block sd
    in units of the between-process sd: s_c = block · √icc. True ratio: mean_a / mean_b."""
    c = block * np.sqrt(icc) * cv * rng.normal(0.0, 1.0, (trials, repeats, 1))
    ya = simulate(rng, trials, repeats, iterations, icc, mean_a, cv, skew) + mean_a * c
    yb = simulate(rng, trials, repeats, iterations, icc, mean_b, cv, skew) + mean_b * c
    return ya, yb


def paired_speedup_trials(
    ya: np.ndarray, yb: np.ndarray, cfg: StatsConfig, rng: np.random.Generator, *, old=False, shift=0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point and paired interval of mean_a / mean_b for each pair of data sets, repeat r of
    `ya` paired with repeat r of `yb`. `old`: the plain percentile interval, not expanded;
    `shift`: pair repeat r of a with repeat r + shift of b (wrong blocks), for the checks."""
    ma, mb = ya.mean(axis=2), np.roll(yb.mean(axis=2), -shift, axis=1)
    point = ma.mean(axis=1) / mb.mean(axis=1)
    boot = paired_bootstrap(ma, mb, cfg.resamples, rng)
    if old:
        alpha = 1 - cfg.confidence
        lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=1)
    else:
        lo, hi = paired_ratio_interval(point, boot, ma.shape[1], cfg.confidence)
    return point, lo, hi


def halfwidth(lo, hi, truth: float) -> float:
    """Mean half-width of the intervals relative to `truth` (0.01: ±1%)."""
    return float(np.mean((np.asarray(hi) - np.asarray(lo)) / 2 / truth))


def paired_coverage(ya, yb, true_ratio: float, cfg: StatsConfig, rng, **kw) -> tuple[float, float]:
    """(coverage, mean relative half-width) of the paired speedup interval."""
    _, lo, hi = paired_speedup_trials(ya, yb, cfg, rng, **kw)
    return _covers(lo, hi, true_ratio), halfwidth(lo, hi, true_ratio)


def independent_coverage(ya, yb, true_ratio: float, cfg: StatsConfig, rng) -> tuple[float, float]:
    """(coverage, mean relative half-width) of the independent speedup interval."""
    _, lo, hi, _ = speedup_trials(ya, yb, cfg, rng)
    return _covers(lo, hi, true_ratio), halfwidth(lo, hi, true_ratio)
