"""Statistics over shards: intervals whose stated confidence is true, speedups with verdicts.

The repeat (one fresh process) is the unit of replication; the iterations inside a repeat
are samples of that process, not independent replicates (clocks ramp, caches warm, one
process lands on a slower placement). A cell's mean is the mean of its repeat means.

Intervals, at level `confidence` (Kalibera & Jones, "Rigorous Benchmarking in Reasonable
Time", ISMM 2013, for the design; Hesterberg, "What Teachers Should Know About the
Bootstrap", Am. Stat. 2015, for the small-sample expansion):

- mean: Student-t over the R repeat means, mean ± t(R-1)·s/√R. Exact when the repeat
  means are normal, whatever the iterations inside a repeat do (autocorrelation included).
- speedup (baseline mean / variant mean) and median (of all samples): hierarchical
  bootstrap over repeats — resample the repeats with replacement, each chosen repeat
  bringing its iterations as measured. Speedup, independent: each side on its own; the
  percentile interval of the log ratio, expanded about the estimate by √(R/(R-1))·t(df)/z
  with Welch–Satterthwaite's df. Median: estimate ± √(R/(R-1))·t(R-1) × the bootstrap
  standard error (its percentiles over few repeats are too lumpy). Without these
  corrections an interval over 3 or 5 top-level units is far too narrow.
- speedup, paired by repeat (the summary's `speedup_pairing`): qbench.lanes runs all
  dtypes of one (workload, batch, repeat) back to back on one card, a block; the card
  (two H100s differ by 1-1.7%) and the moment (clock, temperature) are shared by the
  block's cells and cancel in their ratio. Where both cells have the same repeat ids with
  timed samples (at least 3) and each repeat's two cells ran on the same card (gpu_uuid,
  where the shards record one), the bootstrap draws repeat ids with replacement for both
  sides together; interval: the percentile interval of the log ratio of the resampled
  means of repeat means, expanded by √(R/(R-1))·t(R-1)/z, the R blocks being the units.
  The point is the same ratio of cell means. Otherwise the independent interval: a
  repeat's dtypes on different cards are no block, and where a repeat is missing on one
  side (failed, or all of it throttled) pairing the common repeats would drop data, so
  the speedup keeps every repeat of each side, independently (`pairable`). Whether to
  pair is decided by the schedule the shards record, never by which interval is narrower
  (choosing the narrower would not cover). `stats.paired_speedup: false` turns it off.

Why not also resample the iterations inside each chosen repeat, as K&J and this module's
first version did (`within=True` still does it)? That adds the within-repeat variance a
second time — it is already in the repeat means — and treats iterations as independent.
Coverage of the 95% intervals, measured by scripts/stats_coverage.py (2000 trials, ±0.5%;
20 iterations per repeat; icc = between-repeat share of a sample's variance; speedup of
two equal distributions):

    data    repeats icc   mean: t  old    median: now  old    speedup: now  old
    normal  2       0.5   0.942    0.630  0.954        0.670  0.974         0.718
    normal  3       0.01  0.951    0.968  0.957        0.972  0.957         0.965
    normal  3       0.5   0.946    0.768  0.944        0.797  0.945         0.810
    normal  3       0.9   0.948    0.728  0.954        0.740  0.960         0.795
    normal  5       0.5   0.941    0.846  0.947        0.875  0.947         0.889
    normal  5       0.9   0.957    0.843  0.968        0.892  0.961         0.888
    normal  10      0.9   0.956    0.903  0.958        0.934  0.955         0.917
    normal  20      0.01  0.952    0.985  0.946        0.988  0.940         0.983
    skewed  3       0.9   0.886    0.683  —            —      0.973         0.810
    skewed  5       0.9   0.871    0.787  —            —      0.978         0.865
    skewed  20      0.9   0.896    0.881  —            —      0.943         0.924

The claim, checked by tests/test_stats_coverage.py: 93–97% for normal repeat effects
from 3 repeats on, for the mean, the median and the speedup. Where it does not hold:
- repeat effects strongly skewed (lognormal, σ = 0.8) and a large between-repeat share:
  the mean's interval covers 86–91% at 3–20 repeats (the t interval assumes symmetric
  repeat means); the speedup, skewed alike on both sides, is conservative (up to 98%);
- 2 repeats: mean 94–96%, median 95–96%, speedup conservative (97–98%; Welch's df is
  tiny) — given, but flagged `few_repeats`; 1 repeat: no interval at all.
The verdict calls two equal distributions `same` in as many trials as the speedup
interval covers, or more where the 1% threshold bites (97–98% at GPU-like noise, CV 1–3%).

The paired interval, measured by `scripts/stats_coverage.py --table paired` (2000 trials,
500 resamples, 20 iterations per repeat, CV 5%; variant 20% faster; block = sd of the
effect a repeat's two cells share, in units of the between-process sd, 0: none shared;
half-width relative to the true ratio, mean over trials, paired / independent):

    data    repeats icc   block  coverage: paired  indep.  half-width: paired  indep.   p/i
    normal  2       0.5   0      0.924             0.978   ±27.0%              ±22.7%   1.19
    normal  2       0.5   3      0.923             0.996   ±27.8%              ±54.0%   0.51
    normal  3       0.01  0      0.941             0.946   ±3.80%              ±2.92%   1.30
    normal  3       0.01  3      0.947             0.985   ±3.84%              ±4.41%   0.87
    normal  3       0.5   0      0.944             0.962   ±11.4%              ±8.80%   1.29
    normal  3       0.5   1      0.949             0.984   ±11.2%              ±11.8%   0.95
    normal  3       0.5   3      0.939             0.999   ±11.4%              ±23.9%   0.48
    normal  5       0.5   0      0.951             0.955   ±5.89%              ±5.23%   1.13
    normal  5       0.5   1      0.944             0.985   ±5.80%              ±7.18%   0.81
    normal  5       0.5   3      0.950             1.000   ±5.80%              ±15.6%   0.37
    normal  10      0.5   0      0.943             0.944   ±3.51%              ±3.34%   1.05
    normal  10      0.5   3      0.940             1.000   ±3.52%              ±10.3%   0.34
    normal  20      0.5   0      0.953             0.956   ±2.34%              ±2.29%   1.02
    normal  20      0.5   3      0.947             1.000   ±2.35%              ±7.03%   0.33
    skewed  3       0.9   0      0.961             0.968   ±12.4%              ±10.0%   1.24
    skewed  3       0.9   3      0.963             1.000   ±12.5%              ±32.0%   0.39
    skewed  5       0.9   3      0.955             1.000   ±6.76%              ±21.0%   0.32
    skewed  20      0.9   3      0.948             1.000   ±2.92%              ±9.38%   0.31

Over the whole grid (repeats 2-20, icc 0.01/0.5/0.9, block 0/1/3): paired 93.2–95.3%
for normal effects from 3 repeats on, with a shared block effect or without one
(skewed: 94.0–96.4%); 2 repeats: 92.3–94.8%, under 95% (the bootstrap of two blocks
is lumpy), so two repeats are not paired: their independent interval covers 97–99.6%. The independent interval stays valid on blocked data
but carries the shared effect on both sides: 96–100% and up to 3x as wide. Without a
shared effect pairing costs width for its R-1 df: 1.2–1.3x at 3 repeats, 1.02–1.13x
from 5. On the H100 shards in docs/results (2026-11-26, 5 repeats, w8a8 against fp16 at
4 batch sizes): where the repeats alternated between two cards, each repeat's dtypes on
one, ±0.18–1.52% paired against ±0.89–2.05% independent (h100x2-…-pinned/gpu1); on one
card ±0.17–0.37% against ±0.21–0.67% (h100-…-defaults; one cell 0.22% against 0.21%).
Checked by tests/test_stats_paired.py.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

# scipy.special, not scipy.stats: stats.t.ppf and stats.norm.ppf are these functions, bit
# for bit, and scipy.stats costs every aggregate job 0.8 s more to import (2-core VM)
from scipy import special

from qbench.diagnostics import MIN_REPEATS, CellDiagnostics
from qbench.shards import TIMED_STATUSES
from qbench.specs import StatsConfig  # noqa: F401 (re-exported; lives with the other config specs)

KEYS = ["workload", "dtype", "batch"]


# ---------------------------------------------------------------- intervals (vectorised)


def _t(df, confidence: float):
    return special.stdtrit(df, 0.5 + confidence / 2)  # Student t's quantile


def mean_interval(repeat_means: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Student-t interval of the mean of repeat means, over the last axis (R >= 2). A
    latency is positive: a lower end below 0 (wildly varying repeats) is cut to 0."""
    r = repeat_means.shape[-1]
    m = repeat_means.mean(axis=-1)
    half = _t(r - 1, confidence) * repeat_means.std(axis=-1, ddof=1) / np.sqrt(r)
    return np.maximum(m - half, 0.0), m + half


def expanded_percentile(point, boot: np.ndarray, df, confidence: float, inflation=1.0):
    """Percentile interval of `boot` (last axis) stretched about `point` by
    inflation · t(df) / z, so that few top-level units do not make it too narrow.
    `inflation` undoes the bootstrap's variance shrinkage, (R-1)/R, as a factor on sd."""
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=-1)
    k = inflation * _t(df, confidence) / special.ndtri(1 - alpha / 2)  # the normal's quantile
    point = np.asarray(point, dtype=float)
    return np.minimum(point - k * (point - lo), point), np.maximum(point + k * (hi - point), point)


def se_interval(point, boot: np.ndarray, df, confidence: float, inflation=1.0):
    """point ± inflation · t(df) · sd(boot), the lower end cut at 0: the bootstrap's
    standard error with a t quantile. Used for the median, whose bootstrap distribution
    over few repeats is too lumpy for its tail quantiles to be read off directly."""
    half = inflation * _t(df, confidence) * np.std(boot, axis=-1)
    return np.maximum(point - half, 0.0), point + half


def ratio_interval(point, boot_ratio, rel_var_a, r_a, rel_var_b, r_b, confidence: float):
    """Interval of mean_a / mean_b from independent bootstraps of both sides, expanded on
    the log scale (so it stays positive, and A/B and B/A get mirrored intervals).
    rel_var_x = s_x² / (R_x mean_x²), the squared relative standard error of each mean;
    the log ratio's standard error combines them, with Welch–Satterthwaite's df."""
    rel_var_a, rel_var_b = np.asarray(rel_var_a, float), np.asarray(rel_var_b, float)
    total = rel_var_a + rel_var_b
    with np.errstate(invalid="ignore", divide="ignore"):
        df = total**2 / (rel_var_a**2 / (r_a - 1) + rel_var_b**2 / (r_b - 1))
        shrunk = (r_a - 1) / r_a * rel_var_a + (r_b - 1) / r_b * rel_var_b
        inflation = np.sqrt(total / shrunk)
    # zero variance on both sides: the interval is the point whatever the factor
    df = np.where(np.isfinite(df), df, np.inf)
    inflation = np.where(np.isfinite(inflation), inflation, 1.0)
    lo, hi = expanded_percentile(np.log(point), np.log(boot_ratio), df, confidence, inflation)
    return np.exp(lo), np.exp(hi)


def paired_ratio_interval(point, boot_ratio, repeats: int, confidence: float):
    """Interval of mean_a / mean_b from a paired bootstrap over `repeats` blocks (both
    sides resampled with the same repeat ids), expanded on the log scale like
    ratio_interval: the blocks are the top-level units, so df = R-1 and the bootstrap's
    variance shrinkage is undone by √(R/(R-1))."""
    inflation = np.sqrt(repeats / (repeats - 1))
    lo, hi = expanded_percentile(np.log(point), np.log(boot_ratio), repeats - 1, confidence, inflation)
    return np.exp(lo), np.exp(hi)


# ---------------------------------------------------------------- the bootstrap


def pad(groups: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Repeats of unequal length as an (R, n_max) NaN-padded matrix and their lengths."""
    lengths = np.array([len(g) for g in groups])
    values = np.full((len(groups), int(lengths.max())), np.nan)
    for i, g in enumerate(groups):
        values[i, : len(g)] = g
    return values, lengths


def bootstrap_arrays(
    values: np.ndarray,
    lengths: np.ndarray,
    resamples: int,
    rng: np.random.Generator,
    *,
    within: bool = False,
    medians: bool = True,
    chunk_elems: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Hierarchical bootstrap of T independent data sets at once.

    values (T, R, n_max), NaN-padded; lengths (T, R). Each resample draws R repeats with
    replacement; with `within`, also n_r iterations with replacement inside each chosen
    repeat (K&J's two-level scheme), else the repeat's iterations as measured. Returns
    the bootstrap means of repeat means and (if `medians`) medians of the pooled
    samples, each (T, resamples). Chunked to bound memory."""
    t_sets, r, n_max = values.shape
    rep_means = np.nansum(values, axis=2) / lengths
    balanced = bool((lengths == n_max).all())
    means = np.empty((t_sets, resamples))
    meds = np.empty((t_sets, resamples)) if medians else None
    cols = np.arange(n_max)
    # without `within` a resample is whole repeats: the median comes from counting along
    # each data set's samples, sorted once (_median_of_repeats), not from the draws
    pooled_sorted = [_sorted_pool(values[t], lengths[t]) for t in range(t_sets)] if medians and not within else None
    step = max(1, chunk_elems // (r * n_max if medians or within else r))
    total = t_sets * resamples
    flat_means, flat_meds = means.reshape(-1), meds.reshape(-1) if medians else None
    for start in range(0, total, step):
        stop = min(start + step, total)
        t_idx = np.arange(start, stop) // resamples
        reps = rng.integers(0, r, size=(stop - start, r))
        if not within:
            flat_means[start:stop] = rep_means[t_idx[:, None], reps].mean(axis=1)
            for t in np.unique(t_idx) if medians else ():
                rows = np.flatnonzero(t_idx == t)
                flat_meds[start + rows] = _median_of_repeats(*pooled_sorted[t], reps[rows], r)
            continue
        n = lengths[t_idx[:, None], reps]  # (b, r)
        its = (rng.random((stop - start, r, n_max)) * n[..., None]).astype(np.int64)
        draws = values[t_idx[:, None, None], reps[..., None], its]  # (b, r, n_max)
        if not balanced:
            draws = np.where(cols < n[..., None], draws, np.nan)
        flat_means[start:stop] = (np.nansum(draws, axis=2) / n).mean(axis=1)
        if medians:
            pooled = draws.reshape(stop - start, -1)
            flat_meds[start:stop] = np.median(pooled, axis=1) if balanced else np.nanmedian(pooled, axis=1)
    return means, meds


def _sorted_pool(values: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One data set's samples, all repeats pooled and sorted, and each one's repeat."""
    keep = np.arange(values.shape[1]) < lengths[:, None]
    rep_of = np.broadcast_to(np.arange(values.shape[0])[:, None], values.shape)[keep]
    order = np.argsort(values[keep], kind="stable")
    return values[keep][order], rep_of[order]


def _median_of_repeats(sorted_values: np.ndarray, rep_of: np.ndarray, reps: np.ndarray, r: int) -> np.ndarray:
    """The median of each resample's pooled samples, where a resample is whole repeats
    drawn with replacement (reps, (b, r)): each sample counts as often as its repeat was
    drawn, so the median is found by counting along the samples sorted once, not by
    gathering and partitioning b pooled arrays. Equals np.median of the pooled draws (the
    mean of the two middle values when their number is even)."""
    counts = (reps[:, :, None] == np.arange(r)).sum(axis=1, dtype=np.int32)  # (b, r): draws of each repeat
    weight = np.cumsum(counts[:, rep_of], axis=1, dtype=np.int32)  # (b, N): samples up to each sorted one
    total = weight[:, -1]
    lo = (weight <= ((total - 1) // 2)[:, None]).sum(axis=1)  # order statistics (total-1)//2
    hi = (weight <= (total // 2)[:, None]).sum(axis=1)  # and total//2, 0-based
    return (sorted_values[lo] + sorted_values[hi]) / 2


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int, rng: np.random.Generator, chunk_elems: int = 4_000_000
) -> np.ndarray:
    """Paired bootstrap of T pairs of cells at once: a, b (T, R) repeat means aligned by
    repeat (a[t, r] and b[t, r] ran in one block). Each resample draws R repeat ids with
    replacement, the same ids for both sides, so whatever a block shares cancels in the
    ratio. Returns mean(a[ids]) / mean(b[ids]), (T, resamples). Chunked to bound memory."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"paired repeat means must be two (T, R) arrays of one shape, got {a.shape} and {b.shape}")
    t_sets, r = a.shape
    out = np.empty((t_sets, resamples))
    step = max(1, chunk_elems // (r * resamples))  # data sets per chunk
    for start in range(0, t_sets, step):
        stop = min(start + step, t_sets)
        ids = rng.integers(0, r, size=(stop - start, resamples, r))
        rows = np.arange(start, stop)[:, None, None]
        out[start:stop] = a[rows, ids].mean(axis=2) / b[rows, ids].mean(axis=2)
    return out


def hierarchical_bootstrap(
    groups: list[np.ndarray], resamples: int, rng: np.random.Generator, within: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap distributions of the mean (of repeat means) and of the pooled median of
    one cell, given its repeats' samples."""
    values, lengths = pad([np.asarray(g, dtype=float) for g in groups])
    means, meds = bootstrap_arrays(values[None], lengths[None], resamples, rng, within=within)
    return means[0], meds[0]


# ---------------------------------------------------------------- one cell


@dataclass(frozen=True)
class CellEstimate:
    """Point estimates of one cell, their intervals, and the bootstrap distribution of
    its mean (for speedups)."""

    n_repeats: int
    n_samples: int
    mean: float
    median: float
    mean_ci: tuple[float, float]
    median_ci: tuple[float, float]
    cv: float  # coefficient of variation of all samples
    boot_means: np.ndarray
    repeat_means: np.ndarray

    @property
    def rel_var(self) -> float:
        """Squared relative standard error of the mean, s² / (R mean²)."""
        return float(np.var(self.repeat_means, ddof=1) / (self.n_repeats * self.mean**2))

    @classmethod
    def from_samples(cls, groups: list[np.ndarray], cfg: StatsConfig, rng: np.random.Generator) -> "CellEstimate":
        groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
        if not groups:
            raise ValueError("a cell needs at least one repeat with samples")
        pooled = np.concatenate(groups)
        repeat_means = np.array([g.mean() for g in groups])
        mean = float(repeat_means.mean())
        median = float(np.median(pooled))
        cv = float(pooled.std(ddof=1) / pooled.mean()) if len(pooled) > 1 else float("nan")
        r = len(groups)
        if r < 2:
            # One process says nothing about process-to-process variation: no interval.
            nan = (float("nan"), float("nan"))
            return cls(1, len(pooled), mean, median, nan, nan, cv, np.full(cfg.resamples, mean), repeat_means)
        boot_means, boot_medians = hierarchical_bootstrap(groups, cfg.resamples, rng)
        lo, hi = mean_interval(repeat_means, cfg.confidence)
        mlo, mhi = se_interval(median, boot_medians, r - 1, cfg.confidence, np.sqrt(r / (r - 1)))
        return cls(
            r, len(pooled), mean, median, (float(lo), float(hi)), (float(mlo), float(mhi)), cv, boot_means, repeat_means
        )


def speedup(base: CellEstimate, other: CellEstimate, cfg: StatsConfig) -> tuple[float, float, float, str]:
    """baseline mean / variant mean (> 1: the variant is faster), its interval from the two
    independent bootstrap distributions, and a verdict that calls nothing noise-level a gain.
    Also the run-to-run ratio of qbench.compare (two runs share no blocks)."""
    point = base.mean / other.mean
    if base.n_repeats < 2 or other.n_repeats < 2:
        return point, float("nan"), float("nan"), "unknown"
    lo, hi = ratio_interval(
        point, base.boot_means / other.boot_means, base.rel_var, base.n_repeats, other.rel_var, other.n_repeats,
        cfg.confidence,
    )  # fmt: skip
    lo, hi = float(lo), float(hi)
    return point, lo, hi, verdict(point, lo, hi, cfg.threshold)


def paired_speedup(
    base_means: np.ndarray, other_means: np.ndarray, cfg: StatsConfig, rng: np.random.Generator
) -> tuple[float, float, float, str]:
    """Like `speedup`, from the two cells' repeat means aligned by repeat (index r of both
    ran in one block: same repeat id, same card, back to back), R >= 2: the same point
    (ratio of the means of repeat means), the interval from a paired bootstrap over the
    blocks (paired_ratio_interval), and the verdict."""
    base_means, other_means = np.asarray(base_means, dtype=float), np.asarray(other_means, dtype=float)
    r = len(base_means)
    if r < 2 or other_means.shape != base_means.shape:
        raise ValueError(f"a paired speedup needs >= 2 repeats on both sides, aligned; got {r} and {len(other_means)}")
    point = float(base_means.mean() / other_means.mean())
    boot = paired_bootstrap(base_means[None], other_means[None], cfg.resamples, rng)[0]
    lo, hi = paired_ratio_interval(point, boot, r, cfg.confidence)
    lo, hi = float(lo), float(hi)
    return point, lo, hi, verdict(point, lo, hi, cfg.threshold)


def repeat_blocks(timed: pd.DataFrame) -> dict:
    """rep -> the cards its timed samples ran on, as a sorted tuple of gpu_uuid: one card,
    or () where the shards record none (the CPU, or shards without the column)."""
    if "gpu_uuid" not in timed:
        return {rep: () for rep in sorted(timed["rep"].unique())}
    return {rep: tuple(sorted(set(g.dropna()))) for rep, g in timed.groupby("rep", sort=True)["gpu_uuid"]}


def pairable(base_blocks: dict, other_blocks: dict) -> bool:
    """Whether two cells' repeats pair up as blocks (repeat_blocks of each): the same
    repeat ids with timed samples, at least MIN_REPEATS (3: two blocks cover only 92–95%),
    and each repeat's two cells on one and the same card where the shards name it. A
    repeat missing on one side (failed, or every sample throttled) makes it False: pairing
    only the common repeats would drop data, so such a speedup keeps the independent
    interval over all repeats of each side."""
    if set(base_blocks) != set(other_blocks) or len(base_blocks) < MIN_REPEATS:
        return False
    return all(base_blocks[r] == other_blocks[r] and len(base_blocks[r]) <= 1 for r in base_blocks)


def verdict(point: float, lo: float, hi: float, threshold: float) -> str:
    if lo > 1.0 and point >= 1.0 + threshold:
        return "faster"
    if hi < 1.0 and point <= 1.0 / (1.0 + threshold):
        return "slower"
    return "same"


def cell_rng(cfg: StatsConfig, key: tuple) -> np.random.Generator:
    # Seeded per cell, so a cell's interval does not depend on which other cells exist.
    return np.random.default_rng([cfg.seed, zlib.crc32(repr(key).encode())])


def timed_groups(timed: pd.DataFrame, key: tuple) -> list[np.ndarray]:
    """The cell's samples per repeat; refuses what no interval can be made of."""
    groups = []
    for rep, g in timed.groupby("rep", sort=True):
        x = g["latency_ms"].to_numpy(dtype=float)
        bad = ~np.isfinite(x) | (x <= 0)
        if bad.any():
            raise ValueError(
                f"cell {dict(zip(KEYS, key))} rep {rep}: {int(bad.sum())} timed latencies are NaN, infinite or "
                f"<= 0 (e.g. {x[bad][:3].tolist()}); read shards with qbench.shards.read_shards, which names the file"
            )
        groups.append(x)
    return groups


def repeat_cost_s(timed: pd.DataFrame) -> float:
    """Time a repeat costs beyond its timed iterations (process start-up, set-up, compile,
    warm-up), mean over repeats; NaN where the shards do not say."""
    cols = [c for c in ("setup_s", "warmup_s") if c in timed]
    if not cols:
        return float("nan")
    if "startup_s" in timed and timed["startup_s"].notna().all():
        cols.append("startup_s")
    per_rep = timed.groupby("rep")[cols].first().sum(axis=1, min_count=len(cols))
    return float(per_rep.mean()) if per_rep.notna().any() else float("nan")


def summarize(samples: pd.DataFrame, baseline: str, cfg: StatsConfig) -> pd.DataFrame:
    """One row per (workload, dtype, batch): counts, mean and median with intervals, status,
    accuracy, throughput, the speedup against `baseline` with its interval and verdict,
    and the cell's diagnostics (variance components, ICC, outliers, repeats advice)."""
    rows, estimates, blocks = [], {}, {}
    for key, cell in samples.groupby(KEYS, sort=True):
        first = cell.iloc[0]
        per_rep = cell.groupby("rep")
        rep_status = per_rep["status"].first()
        timed = cell[cell["status"].isin(TIMED_STATUSES)]
        throttled = timed["throttled"].eq(True) if "throttled" in timed else pd.Series(False, index=timed.index)
        if cfg.exclude_throttled:
            timed = timed[~throttled]
        failed = rep_status[~rep_status.isin(TIMED_STATUSES)]
        row = {
            "workload": key[0],
            "dtype": key[1],
            "batch": int(key[2]),
            "scheme": first["scheme"],
            "impl": first["impl"],
            "model": first["model"],
            "tokens": int(first["tokens"]),
            "baseline": baseline,
            "n_failed_repeats": int(len(failed)),
            "rel_error": float(cell["rel_error"].max()) if cell["rel_error"].notna().any() else float("nan"),
            "tolerance": float(first["tolerance"]) if pd.notna(first["tolerance"]) else float("nan"),
            "gpu_name": ", ".join(sorted(set(cell["gpu_name"].dropna()))) or first["device"],
            "confidence": cfg.confidence,
            "target_halfwidth": cfg.target_halfwidth,
            "n_throttled": int(throttled.sum()),
        }
        if timed.empty:
            # every repeat failed, or every timed sample was throttled
            row["status"] = failed.value_counts().idxmax() if len(failed) else "throttled"
            row["status_detail"] = "; ".join(sorted(set(cell["status_detail"].dropna())))
            rows.append(row)
            continue
        row["status"] = "inaccurate" if (rep_status == "inaccurate").any() else "ok"
        details = sorted(set(cell["status_detail"].dropna()))
        row["status_detail"] = "; ".join(details) if details else None
        groups = timed_groups(timed, key)
        est = CellEstimate.from_samples(groups, cfg, cell_rng(cfg, key))
        diag = CellDiagnostics.from_samples(groups, repeat_cost_s(timed), cfg.target_halfwidth, cfg.confidence)
        estimates[key] = est
        blocks[key] = repeat_blocks(timed)
        row.update(
            n_repeats=est.n_repeats,
            n_samples=est.n_samples,
            mean_ms=est.mean,
            ci_low_ms=est.mean_ci[0],
            ci_high_ms=est.mean_ci[1],
            median_ms=est.median,
            median_ci_low_ms=est.median_ci[0],
            median_ci_high_ms=est.median_ci[1],
            cv=est.cv,
            few_repeats=est.n_repeats < MIN_REPEATS,
            tflops=float(first["flops"]) / (est.mean * 1e-3) / 1e12 if pd.notna(first["flops"]) else float("nan"),
            var_between_ms2=diag.var_between,
            var_within_ms2=diag.var_within,
            icc=diag.icc,
            n_outliers=diag.n_outliers,
            n_outlier_repeats=diag.n_outlier_repeats,
            unstable=diag.unstable,
            advised_iterations=diag.advised_iterations,
            advised_repeats=diag.advised_repeats,
            repeat_cost_s=diag.repeat_cost_s,
        )
        rows.append(row)
    summary = pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS)
    for col in ("speedup", "speedup_ci_low", "speedup_ci_high"):
        summary[col] = np.nan
    summary["verdict"] = None
    summary["speedup_pairing"] = None
    for i, row in summary.iterrows():
        key = (row["workload"], row["dtype"], row["batch"])
        base_key = (row["workload"], baseline, row["batch"])
        if row["dtype"] == baseline or key not in estimates or base_key not in estimates:
            continue
        base, est = estimates[base_key], estimates[key]
        if cfg.paired_speedup and pairable(blocks[base_key], blocks[key]):
            # repeat_means follow the sorted repeat ids on both sides, which are the same
            s, lo, hi, v = paired_speedup(base.repeat_means, est.repeat_means, cfg, cell_rng(cfg, key + ("paired",)))
            pairing = "paired"
        else:
            s, lo, hi, v = speedup(base, est, cfg)
            pairing = "independent" if np.isfinite(lo) else None  # no interval: neither
        summary.loc[i, ["speedup", "speedup_ci_low", "speedup_ci_high"]] = [s, lo, hi]
        summary.loc[i, "verdict"] = v
        summary.loc[i, "speedup_pairing"] = pairing
    return summary


SUMMARY_COLUMNS = [
    "workload", "model", "dtype", "scheme", "impl", "batch", "tokens", "status", "status_detail",
    "n_repeats", "n_failed_repeats", "n_samples", "mean_ms", "ci_low_ms", "ci_high_ms",
    "median_ms", "median_ci_low_ms", "median_ci_high_ms", "cv", "few_repeats", "tflops",
    "baseline", "speedup", "speedup_ci_low", "speedup_ci_high", "verdict",
    "rel_error", "tolerance", "gpu_name", "confidence",
    # diagnostics (qbench.diagnostics), added after the first version
    "var_between_ms2", "var_within_ms2", "icc", "n_outliers", "n_outlier_repeats", "unstable",
    "advised_iterations", "advised_repeats", "target_halfwidth", "repeat_cost_s",
    "n_throttled",  # samples the harness marked throttled (left out unless stats.exclude_throttled is false)
    "speedup_pairing",  # how the speedup's interval was made: paired (by repeat) | independent; empty without one
]  # fmt: skip
