"""Statistics over shards: hierarchical bootstrap intervals and speedups with verdicts.

The repeat (one fresh process) is the unit of replication; iterations inside a repeat
are samples of that process, not independent replicates. Intervals therefore come from
a two-level bootstrap (Kalibera & Jones 2013): resample repeats with replacement, then
iterations within each chosen repeat. A cell's mean is the mean of its repeat means.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from qbench.shards import TIMED_STATUSES

KEYS = ["workload", "dtype", "batch"]


@dataclass(frozen=True)
class StatsConfig:
    confidence: float = 0.95
    resamples: int = 10000
    seed: int = 0
    threshold: float = 0.01  # smallest relative effect called faster/slower

    @classmethod
    def from_dict(cls, spec: dict) -> "StatsConfig":
        return cls(**spec)


@dataclass(frozen=True)
class CellEstimate:
    """Point estimates of one cell and the bootstrap distribution of its mean."""

    n_repeats: int
    n_samples: int
    mean: float
    median: float
    mean_ci: tuple[float, float]
    median_ci: tuple[float, float]
    cv: float  # coefficient of variation of all samples
    boot_means: np.ndarray

    @classmethod
    def from_samples(cls, groups: list[np.ndarray], cfg: StatsConfig, rng: np.random.Generator) -> "CellEstimate":
        groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
        if not groups:
            raise ValueError("a cell needs at least one repeat with samples")
        pooled = np.concatenate(groups)
        mean = float(np.mean([g.mean() for g in groups]))
        median = float(np.median(pooled))
        cv = float(pooled.std(ddof=1) / pooled.mean()) if len(pooled) > 1 else float("nan")
        if len(groups) < 2:
            # One process says nothing about process-to-process variation: no interval.
            nan = (float("nan"), float("nan"))
            return cls(1, len(pooled), mean, median, nan, nan, cv, np.full(cfg.resamples, mean))
        boot_means, boot_medians = hierarchical_bootstrap(groups, cfg.resamples, rng)
        return cls(
            len(groups),
            len(pooled),
            mean,
            median,
            percentile_interval(boot_means, cfg.confidence),
            percentile_interval(boot_medians, cfg.confidence),
            cv,
            boot_means,
        )


def percentile_interval(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def hierarchical_bootstrap(
    groups: list[np.ndarray], resamples: int, rng: np.random.Generator, chunk_elems: int = 4_000_000
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap distributions of the mean (of repeat means) and of the pooled median.

    Vectorised: the repeats are padded into an (R, n_max) matrix; each resample draws R
    repeat indices, then n_max iteration indices per chosen repeat of which the first
    n_r count. Resamples are processed in chunks to bound memory."""
    r = len(groups)
    lengths = np.array([len(g) for g in groups])
    n_max = int(lengths.max())
    values = np.full((r, n_max), np.nan)
    for i, g in enumerate(groups):
        values[i, : len(g)] = g
    means = np.empty(resamples)
    medians = np.empty(resamples)
    step = max(1, chunk_elems // (r * n_max))
    cols = np.arange(n_max)
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        reps = rng.integers(0, r, size=(b, r))
        n = lengths[reps]  # (b, r)
        its = (rng.random((b, r, n_max)) * n[..., None]).astype(np.int64)
        draws = values[reps[..., None], its]  # (b, r, n_max)
        valid = cols[None, None, :] < n[..., None]
        draws = np.where(valid, draws, np.nan)
        means[start : start + b] = (np.nansum(draws, axis=2) / n).mean(axis=1)
        if (lengths == n_max).all():
            medians[start : start + b] = np.median(draws.reshape(b, -1), axis=1)
        else:
            medians[start : start + b] = np.nanmedian(draws.reshape(b, -1), axis=1)
    return means, medians


def speedup(base: CellEstimate, other: CellEstimate, cfg: StatsConfig) -> tuple[float, float, float, str]:
    """baseline mean / variant mean (> 1: the variant is faster), its interval from the two
    independent bootstrap distributions, and a verdict that calls nothing noise-level a gain."""
    point = base.mean / other.mean
    if base.n_repeats < 2 or other.n_repeats < 2:
        return point, float("nan"), float("nan"), "unknown"
    lo, hi = percentile_interval(base.boot_means / other.boot_means, cfg.confidence)
    return point, lo, hi, verdict(point, lo, hi, cfg.threshold)


def verdict(point: float, lo: float, hi: float, threshold: float) -> str:
    if lo > 1.0 and point >= 1.0 + threshold:
        return "faster"
    if hi < 1.0 and point <= 1.0 / (1.0 + threshold):
        return "slower"
    return "same"


def _cell_rng(cfg: StatsConfig, key: tuple) -> np.random.Generator:
    # Seeded per cell, so a cell's interval does not depend on which other cells exist.
    return np.random.default_rng([cfg.seed, zlib.crc32(repr(key).encode())])


def summarize(samples: pd.DataFrame, baseline: str, cfg: StatsConfig) -> pd.DataFrame:
    """One row per (workload, dtype, batch): counts, mean and median with intervals, status,
    accuracy, throughput, and the speedup against `baseline` with its interval and verdict."""
    rows, estimates = [], {}
    for key, cell in samples.groupby(KEYS, sort=True):
        first = cell.iloc[0]
        per_rep = cell.groupby("rep")
        rep_status = per_rep["status"].first()
        timed = cell[cell["status"].isin(TIMED_STATUSES)]
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
        }
        if timed.empty:
            row["status"] = failed.value_counts().idxmax()
            row["status_detail"] = "; ".join(sorted(set(cell["status_detail"].dropna())))
            rows.append(row)
            continue
        row["status"] = "inaccurate" if (rep_status == "inaccurate").any() else "ok"
        details = sorted(set(cell["status_detail"].dropna()))
        row["status_detail"] = "; ".join(details) if details else None
        groups = [g["latency_ms"].to_numpy() for _, g in timed.groupby("rep", sort=True)]
        est = CellEstimate.from_samples(groups, cfg, _cell_rng(cfg, key))
        estimates[key] = est
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
            few_repeats=est.n_repeats < 3,
            tflops=float(first["flops"]) / (est.mean * 1e-3) / 1e12 if pd.notna(first["flops"]) else float("nan"),
        )
        rows.append(row)
    summary = pd.DataFrame(rows)
    for col in ("speedup", "speedup_ci_low", "speedup_ci_high"):
        summary[col] = np.nan
    summary["verdict"] = None
    for i, row in summary.iterrows():
        key = (row["workload"], row["dtype"], row["batch"])
        base_key = (row["workload"], baseline, row["batch"])
        if row["dtype"] == baseline or key not in estimates or base_key not in estimates:
            continue
        s, lo, hi, v = speedup(estimates[base_key], estimates[key], cfg)
        summary.loc[i, ["speedup", "speedup_ci_low", "speedup_ci_high"]] = [s, lo, hi]
        summary.loc[i, "verdict"] = v
    return summary.reindex(columns=SUMMARY_COLUMNS)


SUMMARY_COLUMNS = [
    "workload", "model", "dtype", "scheme", "impl", "batch", "tokens", "status", "status_detail",
    "n_repeats", "n_failed_repeats", "n_samples", "mean_ms", "ci_low_ms", "ci_high_ms",
    "median_ms", "median_ci_low_ms", "median_ci_high_ms", "cv", "few_repeats", "tflops",
    "baseline", "speedup", "speedup_ci_low", "speedup_ci_high", "verdict",
    "rel_error", "tolerance", "gpu_name", "confidence",
]  # fmt: skip

