import numpy as np
import pandas as pd
import pytest

from qbench.diagnostics import MAX_ADVICE, MIN_REPEATS, CellDiagnostics, advise, variance_components
from qbench.stats import CellEstimate, StatsConfig, bootstrap_arrays, hierarchical_bootstrap, summarize, verdict

CFG = StatsConfig(resamples=2000, seed=1)


def groups(means, n=20, sd=0.5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(m, sd, n) for m in means]


def test_interval_brackets_the_mean_and_is_reproducible():
    g = groups([10.0, 10.3, 9.8, 10.1, 9.9])
    a = CellEstimate.from_samples(g, CFG, np.random.default_rng(0))
    b = CellEstimate.from_samples(g, CFG, np.random.default_rng(0))
    assert a.mean_ci == b.mean_ci
    assert a.mean_ci[0] <= a.mean <= a.mean_ci[1]
    assert a.median_ci[0] <= a.median <= a.median_ci[1]
    assert a.n_repeats == 5 and a.n_samples == 100


def test_between_repeat_spread_widens_the_interval():
    """Iterations are not independent replicates: the same samples split into repeats
    with different means must give a wider interval than repeats that agree."""
    tight = CellEstimate.from_samples(groups([10, 10, 10, 10, 10]), CFG, np.random.default_rng(0))
    spread = CellEstimate.from_samples(groups([9, 11, 9.5, 10.5, 10]), CFG, np.random.default_rng(0))
    assert (spread.mean_ci[1] - spread.mean_ci[0]) > 3 * (tight.mean_ci[1] - tight.mean_ci[0])


def test_unequal_repeat_lengths():
    g = [np.full(5, 1.0), np.full(50, 3.0)]
    means, medians = hierarchical_bootstrap(g, 4000, np.random.default_rng(0))
    # the mean of repeat means weights repeats equally: resamples are 1, 2 or 3
    assert set(np.round(np.unique(means), 6)) <= {1.0, 2.0, 3.0}
    assert abs(means.mean() - 2.0) < 0.05


@pytest.mark.parametrize("chunk_elems", [4_000_000, 3_000], ids=["one chunk", "many chunks"])
def test_bootstrap_medians_are_those_of_the_pooled_draws(chunk_elems):
    """The medians counted along sorted samples equal np.median of each resample's pooled
    repeats, drawn from the same generator: equal and unequal repeats, odd and even counts."""
    rng = np.random.default_rng(1)
    lengths = np.array([[40] * 5, [40, 30, 40, 12, 40], [1, 2, 3, 4, 5]])
    values = rng.normal(10, 1, (3, 5, 40)).round(1)  # rounded: ties, as real timings have
    values[np.arange(40) >= lengths[..., None]] = np.nan
    _, meds = bootstrap_arrays(values, lengths, 500, np.random.default_rng(7), chunk_elems=chunk_elems)

    draws = np.random.default_rng(7).integers(0, 5, size=(3 * 500, 5))  # the same stream, in one piece
    expected = [np.median(np.concatenate([values[i // 500, k, : lengths[i // 500, k]] for k in row]))
                for i, row in enumerate(draws)]  # fmt: skip
    np.testing.assert_array_equal(meds.reshape(-1), expected)


def test_single_repeat_has_no_interval():
    est = CellEstimate.from_samples(groups([10.0]), CFG, np.random.default_rng(0))
    assert np.isnan(est.mean_ci[0]) and est.n_repeats == 1


@pytest.mark.parametrize(
    "point, lo, hi, expected",
    [(1.2, 1.1, 1.3, "faster"), (0.8, 0.7, 0.9, "slower"), (1.005, 1.001, 1.01, "same"), (1.1, 0.95, 1.2, "same")],
)
def test_verdict(point, lo, hi, expected):
    assert verdict(point, lo, hi, threshold=0.01) == expected


def cell_frame(dtype, batch, means, status="ok", n=20, seed=0, sd=0.5):
    rows = []
    for rep, g in enumerate(groups(means, n=n, sd=sd, seed=seed)):
        for i, v in enumerate(g):
            rows.append({"workload": "w", "dtype": dtype, "batch": batch, "rep": rep, "iteration": i, "latency_ms": v,
                         "status": status, "scheme": dtype, "impl": "eager", "model": "llama", "tokens": batch * 8,
                         "rel_error": 0.01, "tolerance": 0.1, "gpu_name": None, "device": "cpu", "flops": 1e9,
                         "status_detail": None})  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_speedups_and_failed_cells():
    df = pd.concat(
        [
            cell_frame("fp16", 1, [10, 10.1, 9.9], seed=1),
            cell_frame("w8a8", 1, [5, 5.05, 4.95], seed=2),
            cell_frame("fp16", 2, [20, 20.1, 19.9], seed=3),
            cell_frame("w8a8", 2, [20, 20.1, 19.9], seed=4),
        ]
    )
    oom = cell_frame("w8a8", 4, [1.0], seed=5).iloc[:1].assign(status="oom", latency_ms=np.nan, status_detail="OOM")
    df = pd.concat([df, cell_frame("fp16", 4, [40, 40, 40], seed=6), oom])
    s = summarize(df, "fp16", CFG).set_index(["dtype", "batch"])
    assert len(s) == 6
    assert (s["ci_low_ms"].dropna() <= s["mean_ms"].dropna()).all()
    assert s.loc[("w8a8", 1), "verdict"] == "faster"
    assert 1.9 < s.loc[("w8a8", 1), "speedup"] < 2.1
    assert s.loc[("w8a8", 1), "speedup_ci_low"] < s.loc[("w8a8", 1), "speedup"] < s.loc[("w8a8", 1), "speedup_ci_high"]
    assert s.loc[("w8a8", 2), "verdict"] == "same"
    assert s.loc[("w8a8", 4), "status"] == "oom" and np.isnan(s.loc[("w8a8", 4), "mean_ms"])
    assert pd.isna(s.loc[("fp16", 1), "speedup"])  # the baseline has no speedup against itself


# ---------------------------------------------------------------- intervals


def test_mean_interval_is_student_t_over_repeat_means():
    from scipy import stats as sps

    g = groups([10.0, 10.4, 9.7, 10.2], n=15, seed=3)
    est = CellEstimate.from_samples(g, CFG, np.random.default_rng(0))
    rm = np.array([x.mean() for x in g])
    lo, hi = sps.t.interval(0.95, len(rm) - 1, loc=rm.mean(), scale=sps.sem(rm))
    assert est.mean_ci == pytest.approx((lo, hi), rel=1e-12)


def test_two_level_bootstrap_is_kept_for_comparison():
    """within=True resamples iterations too (K&J's scheme): its spread of the mean is
    wider when the within-repeat variance dominates, as the docstring says."""
    g = groups([10.0, 10.0, 10.0, 10.0, 10.0], n=20, sd=1.0, seed=4)
    flat, _ = hierarchical_bootstrap(g, 4000, np.random.default_rng(0))
    two, _ = hierarchical_bootstrap(g, 4000, np.random.default_rng(0), within=True)
    assert two.std() > 1.2 * flat.std()


def test_config_rejects_unknown_and_bad_keys():
    with pytest.raises(ValueError, match=r"stats: unknown key\(s\) \['confidense'\]"):
        StatsConfig.from_dict({"confidense": 0.9})
    with pytest.raises(ValueError, match="stats.confidence"):
        StatsConfig.from_dict({"confidence": 95})
    with pytest.raises(ValueError, match="stats.target_halfwidth"):
        StatsConfig.from_dict({"target_halfwidth": 0})
    assert StatsConfig.from_dict({"target_halfwidth": 0.02}).target_halfwidth == 0.02


# ---------------------------------------------------------------- diagnostics


def test_variance_components_recover_the_truth():
    rng = np.random.default_rng(7)
    sb, sw = 0.3, 1.2  # between- and within-repeat standard deviations
    g = [10 + rng.normal(0, sb) + rng.normal(0, sw, 40) for _ in range(400)]
    between, within = variance_components(g)
    assert between == pytest.approx(sb**2, rel=0.15)
    assert within == pytest.approx(sw**2, rel=0.03)
    d = CellDiagnostics.from_samples(g, repeat_cost_s=float("nan"), target=0.005, confidence=0.95)
    assert d.icc == pytest.approx(sb**2 / (sb**2 + sw**2), rel=0.15)


def test_outliers_are_counted_not_dropped():
    g = groups([10.0, 10.0, 10.0, 10.0], n=20, sd=0.1, seed=5)
    g[1][[3, 11]] = [14.0, 15.0]  # two spikes in one repeat
    g[3] = g[3] + 3.0  # and one whole repeat that ran slow
    est = CellEstimate.from_samples(g, CFG, np.random.default_rng(0))
    d = CellDiagnostics.from_samples(g, float("nan"), 0.005, 0.95)
    assert d.n_outliers >= 2 and d.n_outlier_repeats == 1
    assert est.n_samples == 80 and est.mean == pytest.approx(np.mean([x.mean() for x in g]))


def test_unstable_flag_at_ten_percent():
    assert CellDiagnostics.from_samples(groups([10, 10, 10], sd=1.2), float("nan"), 0.005, 0.95).unstable
    assert not CellDiagnostics.from_samples(groups([10, 10, 10], sd=0.5), float("nan"), 0.005, 0.95).unstable


def test_advice_follows_kalibera_and_jones():
    from scipy import stats as sps

    vb, vw, mean, c2 = 0.04, 4.0, 50.0, 10.0  # ms², ms², ms, s
    n, r = advise(vb, vw, mean, iterations=20, repeat_cost_s=c2, target=0.005, confidence=0.95)
    assert n == int(np.ceil(np.sqrt(c2 * vw / (mean * 1e-3 * vb))))  # ceil(sqrt(c2 T1² / (c1 T2²)))
    v = vb + vw / n
    half = lambda k: sps.t.ppf(0.975, k - 1) * np.sqrt(v / k)  # noqa: E731
    assert half(r) <= 0.005 * mean < half(r - 1)
    # without cost information the iterations stay; without between-repeat variance they max out
    assert advise(vb, vw, mean, 20, float("nan"), 0.005, 0.95)[0] == 20
    assert advise(0.0, vw, mean, 20, c2, 0.005, 0.95) == (MAX_ADVICE, MIN_REPEATS)
    # a looser target needs fewer repeats
    assert advise(vb, vw, mean, 20, c2, 0.02, 0.95)[1] < r


def test_schema_documents_every_stats_key_with_the_same_default():
    import dataclasses

    import yaml

    from tests.conftest import REPO

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]["stats"]["properties"]
    readme = (REPO / "config" / "README.md").read_text()
    for f in dataclasses.fields(StatsConfig):
        assert props[f.name]["default"] == f.default and props[f.name]["description"], f.name
        assert f"`stats.{f.name}`" in readme, f.name


def test_experiment_advice_meets_every_cell_at_least_cost():
    from qbench.diagnostics import experiment_advice, repeats_needed

    rng = np.random.default_rng(11)
    frames = []
    for b, (sb, sw) in enumerate([(0.02, 0.5), (0.3, 0.2), (0.0, 1.0)]):
        df = cell_frame("fp16", b + 1, list(10 + rng.normal(0, sb, 5)), n=20, seed=b)
        df["latency_ms"] = 10 + (df["latency_ms"] - 10) * sw / 0.5  # rescale the within spread
        frames.append(df.assign(setup_s=8.0, warmup_s=1.0))
    s = summarize(pd.concat(frames), "fp16", CFG)
    advice = experiment_advice(s)
    n, r = advice["iterations"], advice["repeats"]
    for c in s.itertuples():
        assert repeats_needed(c.var_between_ms2, c.var_within_ms2, c.mean_ms, n, c.target_halfwidth, 0.95) <= r

    def cost(n_):
        r_ = max(repeats_needed(c.var_between_ms2, c.var_within_ms2, c.mean_ms, n_, c.target_halfwidth, 0.95)
                 for c in s.itertuples())  # fmt: skip
        return r_ * sum(9.0 + n_ * c.mean_ms * 1e-3 for c in s.itertuples())

    assert advice["cost_s"] == pytest.approx(cost(n))
    assert all(advice["cost_s"] <= cost(k) + 1e-9 for k in (1, 5, 20, 100, 1000))
    assert advice["current_iterations"] == 20 and advice["current_repeats"] == 5
    assert experiment_advice(s.assign(mean_ms=np.nan)) is None


def test_advice_says_when_the_target_is_out_of_reach():
    from qbench.diagnostics import experiment_advice

    wild = cell_frame("fp16", 1, [5, 15, 40], n=20, seed=3).assign(setup_s=1.0, warmup_s=0.1)
    advice = experiment_advice(summarize(wild, "fp16", CFG))
    assert advice["reachable"] is False and advice["repeats"] == MAX_ADVICE
    calm = cell_frame("fp16", 1, [10, 10.01, 9.99], n=20, sd=0.01, seed=3).assign(setup_s=1.0, warmup_s=0.1)
    assert experiment_advice(summarize(calm, "fp16", CFG))["reachable"] is True
