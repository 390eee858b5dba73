"""Speedups paired by repeat: chosen where the two cells' repeats ran as blocks (same
repeat ids, each repeat's dtypes on one card), independent otherwise, narrower when the
blocks share an effect, and covering the truth as often as they say (qbench.stats)."""

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from qbench.report import pairing_note, render_report
from qbench.shards import SCHEMA_VERSION, make_table, read_shards, write_shard
from qbench.simulate import independent_coverage, paired_coverage, simulate_blocks
from qbench.stats import SUMMARY_COLUMNS, StatsConfig, pairable, paired_speedup, summarize

CFG = StatsConfig(resamples=2000, seed=0)
H100 = "NVIDIA H100 80GB HBM3"


def shard(folder, dtype, batch, rep, latencies, gpu="GPU-0", status="ok", throttled=False):
    """Write one real shard of workload w; `gpu` None: measured on the CPU; `latencies`
    None: a failed cell's single row."""
    base = {
        "schema_version": SCHEMA_VERSION, "workload": "w", "model": "llama", "dtype": dtype, "scheme": dtype,
        "impl": "eager", "batch": batch, "rep": rep, "tokens": 8 * batch, "status": status,
        "device": "cuda" if gpu else "cpu", "gpu_name": H100 if gpu else None, "gpu_uuid": gpu,
        "gpu_index": int(gpu[-1]) if gpu else None, "config_hash": "abc", "seed": 0, "flops": 1e9,
        "rel_error": 0.01, "tolerance": 0.1, "setup_s": 2.0, "warmup_s": 0.5,
    }  # fmt: skip
    if latencies is None:
        rows = [dict(base, status_detail=f"{status} at batch {batch}")]
    else:
        rows = [dict(base, iteration=i, latency_ms=float(v), throttled=throttled) for i, v in enumerate(latencies)]
    path = folder / f"{dtype}-{batch}-{rep}.parquet"
    write_shard(make_table(rows), path)
    return path


def blocks(rng, repeats, block_sd=0.02, process_sd=0.001, noise=0.005, n=15):
    """Per repeat, one shared factor (the card, the moment) and each dtype's samples."""
    out = []
    for _ in range(repeats):
        c = 1 + rng.normal(0, block_sd)
        out.append({d: m * c * (1 + rng.normal(0, process_sd)) * (1 + rng.normal(0, noise, n))
                    for d, m in (("fp16", 10.0), ("w8a8", 8.0))})  # fmt: skip
    return out


def summary_of(paths, cfg=CFG):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no dtype or empty-slice warnings on the way
        return summarize(read_shards(paths), "fp16", cfg).set_index(["dtype", "batch"])


# ---------------------------------------------------------------- when to pair


def test_pairing_is_chosen_only_where_the_repeats_ran_as_blocks(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for batch in (1, 2, 3, 4, 5):
        for rep, cell in enumerate(blocks(rng, 4)):
            card = f"GPU-{rep % 2}"  # two lanes: a repeat's dtypes share a card
            paths.append(shard(tmp_path, "fp16", batch, rep, cell["fp16"], gpu=card))
            if batch == 2 and rep == 3:  # this repeat's w8a8 ran on the other card
                paths.append(shard(tmp_path, "w8a8", batch, rep, cell["w8a8"], gpu="GPU-0"))
            elif batch == 3 and rep == 3:  # failed: the repeat is missing on one side
                paths.append(shard(tmp_path, "w8a8", batch, rep, None, gpu=card, status="oom"))
            elif batch == 4 and rep == 3:  # every sample throttled: out of the statistics
                paths.append(shard(tmp_path, "w8a8", batch, rep, cell["w8a8"], gpu=card, throttled=True))
            elif batch == 5 and rep > 0:  # a single repeat: a speedup, but no interval
                continue
            else:
                paths.append(shard(tmp_path, "w8a8", batch, rep, cell["w8a8"], gpu=card))
    s = summary_of(paths)
    assert s.loc[("w8a8", 1), "speedup_pairing"] == "paired"
    assert s.loc[("w8a8", 2), "speedup_pairing"] == "independent"
    assert s.loc[("w8a8", 3), "speedup_pairing"] == "independent" and s.loc[("w8a8", 3), "n_repeats"] == 3
    assert s.loc[("w8a8", 4), "speedup_pairing"] == "independent" and s.loc[("w8a8", 4), "n_throttled"] == 15
    five = s.loc[("w8a8", 5)]
    assert pd.isna(five["speedup_pairing"]) and np.isnan(five["speedup_ci_low"]) and five["speedup"] > 1
    assert s.loc["fp16", "speedup_pairing"].isna().all()  # the baseline has no speedup
    off = summary_of(paths, replace(CFG, paired_speedup=False))
    assert set(off.loc["w8a8", "speedup_pairing"].dropna()) == {"independent"}
    # the independent intervals are the same whichever way the switch is set
    pd.testing.assert_series_equal(off.loc[("w8a8", 2)], s.loc[("w8a8", 2)])
    # throttled samples kept in: the repeat counts again, and the cell pairs
    kept = summary_of(paths, replace(CFG, exclude_throttled=False))
    assert kept.loc[("w8a8", 4), "speedup_pairing"] == "paired"


def test_shards_without_a_card_pair_by_repeat_id(tmp_path):
    """On the CPU the shards name no card: a repeat's dtypes ran on the one machine."""
    rng = np.random.default_rng(1)
    paths = [
        shard(tmp_path, d, 1, rep, x, gpu=None) for rep, cell in enumerate(blocks(rng, 3)) for d, x in cell.items()
    ]
    s = summary_of(paths)
    assert s.loc[("w8a8", 1), "speedup_pairing"] == "paired" and s.loc[("w8a8", 1), "gpu_name"] == "cpu"


def test_pairable_rules():
    two_cards = {0: ("GPU-0",), 1: ("GPU-1",), 2: ("GPU-0",)}
    assert pairable(two_cards, dict(two_cards))
    assert not pairable(two_cards, {**two_cards, 2: ("GPU-1",)})  # a repeat's dtypes on different cards
    assert not pairable(two_cards, {0: ("GPU-0",), 1: ("GPU-1",)})  # a repeat missing on one side
    assert not pairable(two_cards, {0: ("GPU-0",), 1: ("GPU-1",), 3: ("GPU-0",)})  # other repeat ids
    assert not pairable({0: ("GPU-0",)}, {0: ("GPU-0",)})  # one repeat: nothing to bootstrap
    assert pairable({0: (), 1: (), 2: ()}, {0: (), 1: (), 2: ()})  # no card recorded
    assert not pairable({0: (), 1: ()}, {0: (), 1: ()})  # two blocks: the paired interval covers < 95%
    assert not pairable({0: (), 1: ()}, {0: ("GPU-0",), 1: ()})  # recorded on one side only
    split = {0: ("GPU-0", "GPU-1"), 1: ("GPU-0",)}  # one repeat's samples on two cards: no block
    assert not pairable(split, dict(split))


# ---------------------------------------------------------------- what pairing buys


def test_a_shared_block_effect_cancels_in_the_paired_interval(tmp_path):
    """Cards and moments that differ by 2% (sd) from repeat to repeat, processes by 0.1%:
    the paired interval is several times narrower than the independent one, same point,
    and holds the true ratio 10 / 8."""
    rng = np.random.default_rng(2)
    paths = []
    for rep, cell in enumerate(blocks(rng, 5)):
        for d, x in cell.items():
            paths.append(shard(tmp_path, d, 1, rep, x, gpu=f"GPU-{rep % 2}"))
    paired = summary_of(paths).loc[("w8a8", 1)]
    indep = summary_of(paths, replace(CFG, paired_speedup=False)).loc[("w8a8", 1)]
    assert paired["speedup_pairing"] == "paired" and indep["speedup_pairing"] == "independent"
    assert paired["speedup"] == indep["speedup"]
    assert paired["speedup_ci_low"] <= 1.25 <= paired["speedup_ci_high"]

    def width(r):
        return r["speedup_ci_high"] - r["speedup_ci_low"]

    assert width(paired) < width(indep) / 3, (width(paired), width(indep))
    assert paired["verdict"] == "faster"


def test_paired_speedup_is_reproducible_and_degenerates_to_the_point():
    a, b = np.array([10.0, 10.4, 9.8]), np.array([8.0, 8.3, 7.85])
    one = paired_speedup(a, b, CFG, np.random.default_rng(5))
    assert one == paired_speedup(a, b, CFG, np.random.default_rng(5))
    assert one[0] == pytest.approx(a.mean() / b.mean()) and one[1] < one[0] < one[2]
    # every repeat's ratio the same: nothing varies, the interval is the point
    assert paired_speedup(a, a / 1.25, CFG, np.random.default_rng(5))[1:3] == pytest.approx((1.25, 1.25))
    # the pairs are the repeats as given: the same values paired otherwise are no blocks
    scrambled = paired_speedup(a, (a / 1.25)[[2, 0, 1]], CFG, np.random.default_rng(5))
    assert scrambled[2] - scrambled[1] > 0.1
    with pytest.raises(ValueError, match="aligned"):
        paired_speedup(a, b[:2], CFG, np.random.default_rng(5))


# ---------------------------------------------------------------- the summary's column


def frame(rows_per_cell, gpu_uuid=True):
    """Shard-like rows (no files): {(dtype, batch): [(rep, card, latencies), ...]}."""
    rows = []
    for (dtype, batch), reps in rows_per_cell.items():
        for rep, card, xs in reps:
            for i, v in enumerate(xs):
                row = {"workload": "w", "dtype": dtype, "batch": batch, "rep": rep, "iteration": i, "latency_ms": v,
                       "status": "ok", "scheme": dtype, "impl": "eager", "model": "llama", "tokens": 8 * batch,
                       "rel_error": 0.01, "tolerance": 0.1, "gpu_name": H100, "device": "cuda", "flops": 1e9,
                       "status_detail": None}  # fmt: skip
                if gpu_uuid:
                    row["gpu_uuid"] = card
                rows.append(row)
    return pd.DataFrame(rows)


def test_summary_column_pairs_by_repeat_id_not_by_position():
    """Repeat ids 3, 7, 11, 20, rows shuffled: each repeat of w8a8 must meet the fp16
    repeat with its id (and its block effect), or the interval would not narrow."""
    rng = np.random.default_rng(3)
    ids = [3, 7, 11, 20]
    cells = blocks(rng, len(ids), block_sd=0.03)
    spec = {
        (d, 1): [(rep, f"GPU-{k % 2}", c[d]) for k, (rep, c) in enumerate(zip(ids, cells))] for d in ("fp16", "w8a8")
    }
    spec[("fp16", 2)] = spec[("fp16", 1)]
    spec[("w8a8", 2)] = [(rep, "GPU-0" if rep == 20 else card, x) for rep, card, x in spec[("w8a8", 1)]]
    df = frame(spec).sample(frac=1.0, random_state=0)
    s = summarize(df, "fp16", CFG)
    assert list(s.columns) == SUMMARY_COLUMNS and SUMMARY_COLUMNS[-1] == "speedup_pairing"
    s = s.set_index(["dtype", "batch"])
    assert s["speedup_pairing"].tolist() == [None, None, "paired", "independent"]
    p, i = s.loc[("w8a8", 1)], s.loc[("w8a8", 2)]
    assert p["speedup_ci_low"] <= 1.25 <= p["speedup_ci_high"]
    assert (p["speedup_ci_high"] - p["speedup_ci_low"]) < (i["speedup_ci_high"] - i["speedup_ci_low"]) / 3
    # without a gpu_uuid column (older frames, the CPU): paired by repeat id alone
    s2 = summarize(frame(spec, gpu_uuid=False), "fp16", CFG).set_index(["dtype", "batch"])
    assert s2.loc["w8a8", "speedup_pairing"].tolist() == ["paired", "paired"]


def test_report_says_which_speedups_were_paired_and_why():
    s = pd.DataFrame({"dtype": ["fp16", "w8a8", "w8a8"], "speedup_pairing": [None, "paired", "independent"]})
    note = pairing_note(s)
    assert note.startswith("1 of 2 speedup intervals are paired by repeat")
    assert "back to back on the same card" in note and "cancel" in note
    assert "The other one comes from independent bootstraps" in note and "different cards" in note
    off = pairing_note(
        s.assign(speedup_pairing=[None, "independent", "independent"]), {"stats": {"paired_speedup": False}}
    )
    assert (
        off == "The speedup intervals come from independent bootstraps of the two dtypes (stats.paired_speedup is off)."
    )
    assert pairing_note(s.drop(columns="speedup_pairing")) == ""


def test_report_carries_the_note_and_the_column(tmp_path):
    rng = np.random.default_rng(4)
    paths = [
        shard(tmp_path, d, 1, rep, x, gpu=f"GPU-{rep % 2}")
        for rep, c in enumerate(blocks(rng, 3))
        for d, x in c.items()
    ]
    samples = read_shards(paths)
    html = render_report(summarize(samples, "fp16", CFG), samples, {}, {"baseline": "fp16"}, "snakemake", vega_js="")
    note = '<span id="pairing">The speedup interval is paired by repeat: the dtypes of one repeat ran back to back'
    assert note + " on the same card" in html
    assert '<th class="l">speedup_pairing</th>' in html and '<td class="l">paired</td>' in html


# ---------------------------------------------------------------- coverage

TRIALS = 2000
COV = StatsConfig(resamples=200, seed=0)  # few resamples per trial: the trials average the noise out
LOW, HIGH = 0.93, 0.97
MU, RATIO = 10.0, 1.2


def pair_data(repeats, icc, block, skew=False, tag=0):
    rng = np.random.default_rng([repeats, int(icc * 100), int(block * 10), int(skew), tag])
    return simulate_blocks(rng, TRIALS, repeats, 20, icc, block, MU, MU / RATIO, skew=skew)


# (repeats, icc, block): block = between-block sd / between-process sd; 0: nothing shared
PAIRED_SETTINGS = [(3, 0.5, 3.0), (3, 0.9, 0.0), (5, 0.01, 0.0), (5, 0.9, 1.0), (10, 0.5, 3.0)]


@pytest.mark.parametrize("repeats, icc, block", PAIRED_SETTINGS)
def test_paired_interval_coverage(repeats, icc, block):
    """Variant 20% faster: the paired interval of baseline / variant holds 1.2 in 93-97%
    of trials, with a shared block effect or without one."""
    cov, _ = paired_coverage(*pair_data(repeats, icc, block), RATIO, COV, np.random.default_rng(repeats))
    assert LOW <= cov <= HIGH, f"paired: coverage {cov:.3f} with {repeats} repeats, icc {icc}, block {block}"


def test_paired_interval_coverage_with_skewed_effects():
    cov, _ = paired_coverage(*pair_data(5, 0.9, 1.0, skew=True), RATIO, COV, np.random.default_rng(0))
    assert LOW <= cov <= HIGH, f"paired, skewed: coverage {cov:.3f}"


@pytest.mark.parametrize("repeats", [3, 5])
def test_blocks_make_the_paired_interval_narrower_than_the_independent(repeats):
    """A block effect 3x the process effect: the independent interval carries it twice
    (and over-covers); the paired one cancels it, at well under 60% of the width."""
    ya, yb = pair_data(repeats, 0.5, 3.0, tag=1)
    cov_p, half_p = paired_coverage(ya, yb, RATIO, COV, np.random.default_rng(1))
    cov_i, half_i = independent_coverage(ya, yb, RATIO, COV, np.random.default_rng(2))
    assert LOW <= cov_p <= HIGH and cov_i > 0.98
    assert half_p < 0.6 * half_i, f"paired ±{half_p:.2%} vs independent ±{half_i:.2%}"


def test_the_paired_check_catches_a_bad_interval():
    """What the tests above would catch: the percentile interval without the expansion
    covers far less than 93% at 3 repeats; repeats paired with the wrong partner
    (shifted by one) lose the block effect's cancellation, and their interval is about
    as wide as the independent one, not under 60% of it."""
    ya, yb = pair_data(3, 0.5, 3.0, tag=2)
    rng = np.random.default_rng(3)
    cov_old, _ = paired_coverage(ya, yb, RATIO, COV, rng, old=True)
    assert cov_old < 0.88, cov_old
    _, half_i = independent_coverage(ya, yb, RATIO, COV, rng)
    _, half_shift = paired_coverage(ya, yb, RATIO, COV, rng, shift=1)
    assert half_shift > 0.8 * half_i, (half_shift, half_i)
