"""How far to trust one cell: variance at each level, outliers, and how many repeats suffice.

Kalibera & Jones ("Rigorous Benchmarking in Reasonable Time", ISMM 2013) split the
variance of a two-level experiment (repeats = processes, iterations inside each) into
a between-repeat part T2² and a within-repeat part T1², estimated from a pilot run (here:
the shards themselves):

    S1² = pooled variance of the iterations about their own repeat's mean   -> T1² = S1²
    S2² = variance of the repeat means                                      -> T2² = S2² - S1²/n

(T2² is clipped at 0: a negative estimate means no between-repeat variance was seen.)
The variance of the cell's mean with r repeats of n iterations is (T2² + T1²/n) / r. At a
cost c1 per iteration and c2 per repeat (its set-up and warm-up), the cheapest design
for a given variance runs n* = ceil(sqrt(c2 T1² / (c1 T2²))) iterations per repeat, and
then as many repeats as the target interval width needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special  # not scipy.stats: see qbench/stats.py

UNSTABLE_CV = 0.10  # a cell whose samples vary by this much (CV) is flagged unstable
MIN_REPEATS = 3  # fewer repeats than this give no usable interval
MAX_ADVICE = 1000  # cap on advised iterations (T2² = 0 makes n* infinite) and repeats (target out of reach)
TUKEY_K = 1.5  # Tukey's fences: outside [Q1 - k IQR, Q3 + k IQR]


def variance_components(groups: list[np.ndarray]) -> tuple[float, float]:
    """(T2², T1²): between-repeat and within-repeat variance (ms²) of one cell. NaN where
    a level has too few samples to say (one repeat; one iteration per repeat)."""
    lengths = np.array([len(g) for g in groups])
    dof_within = int((lengths - 1).sum())
    within = sum(float(((g - g.mean()) ** 2).sum()) for g in groups) / dof_within if dof_within > 0 else float("nan")
    if len(groups) < 2:
        return float("nan"), within
    s2 = float(np.var([g.mean() for g in groups], ddof=1))
    # unequal lengths: the harmonic mean is the effective n of the S1²/n correction
    n_eff = len(lengths) / float((1.0 / lengths).sum())
    between = s2 - (within / n_eff if np.isfinite(within) else 0.0)
    return max(between, 0.0), within


def tukey_outliers(x: np.ndarray, k: float = TUKEY_K) -> int:
    """How many values lie outside Tukey's fences (counted, never dropped)."""
    if len(x) < 4:
        return 0
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    return int(((x < q1 - k * iqr) | (x > q3 + k * iqr)).sum())


def advise(
    var_between: float,
    var_within: float,
    mean: float,
    iterations: int,
    repeat_cost_s: float,
    target: float,
    confidence: float,
) -> tuple[int, int]:
    """(iterations, repeats) that reach a `confidence` interval of the mean no wider than
    ±`target` × mean at least cost (Kalibera & Jones). The cost of an iteration is the
    mean latency; `repeat_cost_s` that of a repeat beyond its iterations (NaN: unknown,
    then the iteration count stays as it is, as it does with a single repeat)."""
    if not (np.isfinite(mean) and mean > 0) or not np.isfinite(var_within):
        return iterations, MIN_REPEATS
    # one repeat shows no between-repeat variance: keep the iterations, count it as 0
    vb = var_between if np.isfinite(var_between) else 0.0
    iteration_cost_s = mean * 1e-3
    if not np.isfinite(repeat_cost_s) or repeat_cost_s <= 0 or not np.isfinite(var_between):
        n = iterations
    elif var_within == 0:
        n = 1  # iterations repeat themselves exactly: one says it all
    elif vb == 0:
        n = MAX_ADVICE
    else:
        n = math.ceil(math.sqrt(repeat_cost_s * var_within / (iteration_cost_s * vb)))
    n = int(min(max(n, 1), MAX_ADVICE))
    return n, repeats_needed(vb, var_within, mean, n, target, confidence)


def repeats_needed(var_between, var_within, mean, iterations, target: float, confidence: float):
    """Fewest repeats (at least MIN_REPEATS, at most MAX_ADVICE) of `iterations` each
    whose t interval of the mean is within ±target × mean. Broadcasts over arrays."""
    r = np.arange(MIN_REPEATS, MAX_ADVICE + 1)
    t_over_sqrt_r = special.stdtrit(r - 1, 0.5 + confidence / 2) / np.sqrt(r)  # t quantiles, decreasing in r
    sd = np.sqrt(np.asarray(var_between, float) + np.asarray(var_within, float) / np.asarray(iterations, float))
    with np.errstate(invalid="ignore", divide="ignore"):  # sd 0: any count will do
        ratio = np.asarray(target, float) * np.asarray(mean, float) / sd  # the largest t/sqrt(r) allowed
        first = np.searchsorted(-t_over_sqrt_r, -np.nan_to_num(ratio, nan=np.inf), side="left")
    out = r[np.minimum(first, len(r) - 1)]
    return int(out) if out.ndim == 0 else out


def experiment_advice(summary: pd.DataFrame) -> dict | None:
    """One setting of `repeats` and `timing.iterations` for the whole experiment that
    brings every timed cell to its target (the summary's target_halfwidth) at the least
    total time, searching iterations 1..MAX_ADVICE. Where no repeat cost is known only
    the current iteration count is considered. `reachable` is False when even
    MAX_ADVICE repeats would not do. None without timed cells."""
    cells = summary[summary["mean_ms"].notna() & summary["var_within_ms2"].notna()]
    if cells.empty:
        return None
    current = int(round(float((cells["n_samples"] / cells["n_repeats"]).median())))
    cost_known = cells["repeat_cost_s"].notna().all()
    n = np.arange(1, MAX_ADVICE + 1)[:, None] if cost_known else np.array([[current]])
    cols = ("var_between_ms2", "var_within_ms2", "mean_ms", "repeat_cost_s")
    c = {k: cells[k].to_numpy(float)[None, :] for k in cols}
    need = repeats_needed(np.nan_to_num(c["var_between_ms2"]), c["var_within_ms2"], c["mean_ms"], n,
                          cells["target_halfwidth"].iloc[0], cells["confidence"].iloc[0])  # fmt: skip
    r = need.max(axis=1)  # (candidates,)
    cost = r * (np.nan_to_num(c["repeat_cost_s"]) + n * c["mean_ms"] * 1e-3).sum(axis=1)
    i = int(np.argmin(cost))
    worst = cells.iloc[int(np.argmax(need[i]))]
    return {
        "reachable": bool(r[i] < MAX_ADVICE),  # else the cells are too noisy for the target
        "repeats": int(r[i]),
        "iterations": int(n[i, 0]),
        "cost_s": float(cost[i]),
        "limiting_cell": f"{worst['workload']} {worst['dtype']} batch {int(worst['batch'])}",
        "target_halfwidth": float(cells["target_halfwidth"].iloc[0]),
        "current_repeats": int(cells["n_repeats"].max()),
        "current_iterations": current,
    }


@dataclass(frozen=True)
class CellDiagnostics:
    """Per-cell numbers that say how far to trust its interval."""

    var_between: float  # T2², ms²
    var_within: float  # T1², ms²
    icc: float  # T2² / (T2² + T1²): the share of a sample's variance due to its repeat
    n_outliers: int  # iterations outside Tukey's fences of their own repeat
    n_outlier_repeats: int  # repeats whose mean lies outside the fences of the repeat means
    unstable: bool  # CV of all samples >= UNSTABLE_CV
    advised_iterations: int
    advised_repeats: int
    repeat_cost_s: float  # set-up and warm-up of one repeat, the cost K&J weigh iterations against

    @classmethod
    def from_samples(
        cls, groups: list[np.ndarray], repeat_cost_s: float, target: float, confidence: float
    ) -> "CellDiagnostics":
        groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
        pooled = np.concatenate(groups)
        between, within = variance_components(groups)
        total = between + within
        icc = between / total if np.isfinite(total) and total > 0 else float("nan")
        cv = pooled.std(ddof=1) / pooled.mean() if len(pooled) > 1 else float("nan")
        mean = float(np.mean([g.mean() for g in groups]))
        iterations = int(round(np.median([len(g) for g in groups])))
        n, r = advise(between, within, mean, iterations, repeat_cost_s, target, confidence)
        return cls(
            var_between=between,
            var_within=within,
            icc=float(icc),
            n_outliers=sum(tukey_outliers(g) for g in groups),
            n_outlier_repeats=tukey_outliers(np.array([g.mean() for g in groups])),
            unstable=bool(cv >= UNSTABLE_CV),
            advised_iterations=n,
            advised_repeats=r,
            repeat_cost_s=float(repeat_cost_s),
        )
