import json

import numpy as np
import pandas as pd
import pytest

from qbench.breakdown import BreakdownError, check_breakdown, read_breakdown
from qbench.charts import breakdown_chart, build_chart, latency_chart, nice_axis, save_chart, speedup_chart
from qbench.report import answer_sentences, headline, render_report, warnings
from qbench.stats import SUMMARY_COLUMNS


def summary():
    """Three dtypes, two batch sizes, and one cell that ran out of memory."""
    rows = []
    for dtype, scale in (("fp16", 1.0), ("w8a8", 0.95), ("bf16", 1.0 / 0.93)):
        for b in (128, 256):
            m = b * 0.5 * scale
            rows.append({"workload": "w", "model": "llama", "dtype": dtype, "scheme": dtype, "impl": "compile",
                         "batch": b, "tokens": b * 128, "status": "ok", "n_repeats": 5, "n_failed_repeats": 0,
                         "n_samples": 100, "mean_ms": m, "ci_low_ms": m * 0.99, "ci_high_ms": m * 1.01,
                         "median_ms": m, "cv": 0.01, "few_repeats": False, "baseline": "fp16",
                         "speedup": np.nan if dtype == "fp16" else 1 / scale,
                         "speedup_ci_low": np.nan if dtype == "fp16" else 1 / scale - 0.01,
                         "speedup_ci_high": np.nan if dtype == "fp16" else 1 / scale + 0.01,
                         "verdict": None if dtype == "fp16" else ("faster" if scale < 1 else "slower"),
                         "rel_error": 0.05, "tolerance": 0.1})  # fmt: skip
    rows.append({**rows[-1], "batch": 512, "status": "oom", "mean_ms": np.nan, "ci_low_ms": np.nan, "ci_high_ms": np.nan,
                 "speedup": np.nan, "speedup_ci_low": np.nan, "speedup_ci_high": np.nan, "verdict": None,
                 "status_detail": "CUDA out of memory"})  # fmt: skip
    rows.append({**rows[0], "batch": 512, "mean_ms": 256.0, "ci_low_ms": 255.0, "ci_high_ms": 257.0})
    return pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS)


REFERENCE = pd.DataFrame({"batch_size": [128, 128], "dtype": ["fp16", "w8a8"], "latency_ms": [79, 75]})


def samples_of(s: pd.DataFrame) -> pd.DataFrame:
    """Samples as the shards hold them: 2 repeats x 3 iterations per timed cell, one row per untimed cell."""
    rows = []
    for _, r in s.iterrows():
        timed = pd.notna(r["mean_ms"])
        for rep in range(2):
            for it in range(3 if timed else 1):
                rows.append({"workload": r["workload"], "dtype": r["dtype"], "batch": r["batch"], "rep": rep,
                             "iteration": it if timed else None, "latency_ms": r["mean_ms"] * (1 + 0.01 * (it - 1)),
                             "status": r["status"], "sm_clock_mhz": 1400.0 if r["dtype"] == "fp16" else 1900.0,
                             "max_sm_clock_mhz": 1980.0, "power_w": 690.0, "temperature_c": 55.0,
                             "device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "driver": "580", "cuda": "13.0",
                             "torch": "2.11", "qbench_version": "0.1.0", "git_commit": "abc", "config_hash": "h",
                             "seed": 0, "started_at": pd.Timestamp("2026-11-26 12:00", tz="UTC")})  # fmt: skip
    return pd.DataFrame(rows)


def layer_named(spec, name):
    return next(layer for layer in spec["layer"] if layer.get("name") == name)


def test_y_axis_is_the_reference_one_when_the_data_fit():
    assert nice_axis(490) == (500, 125)  # the reference chart's axis
    assert nice_axis(510.2) == (625, 125)  # the H100 run: one step more
    top, step = nice_axis(0.7)
    assert top >= 0.7 and top / step in (4, 5)
    top, step = nice_axis(3000)
    assert top >= 3000 and top / step in (3, 4, 5)  # 0-3000 by 1000: no nice step gives 4 or 5


def test_latency_chart_matches_the_reference_style(tmp_path):
    spec = latency_chart(summary(), REFERENCE).to_dict()
    text = json.dumps(spec)
    assert '"Latency (ms)"' in text and '"Batch Size"' in text
    bars = layer_named(spec, "bars")
    assert bars["mark"]["type"] == "bar"
    assert bars["encoding"]["x"]["sort"] == ["128", "256", "512"]  # ordered categories, not alphabetical
    scale = bars["encoding"]["color"]["scale"]
    assert scale["domain"] == ["fp16", "w8a8", "bf16"] and scale["range"][:2] == ["#c8c8c8", "#8b0000"]
    assert bars["encoding"]["color"]["legend"]["orient"] == "top-left"
    assert len(set(scale["range"])) == 3  # a third dtype gets its own colour
    assert bars["encoding"]["y"]["axis"]["values"] == [0, 100, 200, 300]  # no nice step gives 4 or 5 up to 257
    assert layer_named(spec, "errorbars")["mark"]["type"] == "errorbar"
    ref = layer_named(spec, "reference")
    assert ref["mark"]["type"] == "tick" and ref["encoding"]["strokeDash"]["legend"] is not None  # in the legend
    missing = layer_named(spec, "missing")  # the OOM cell is labelled, not dropped
    assert missing["mark"]["type"] == "text"
    assert [r["label"] for r in spec["datasets"][missing["data"]["name"]]] == ["OOM"]
    paths = save_chart(latency_chart(summary(), REFERENCE), tmp_path / "latency")
    files = {p.suffix: p for p in paths}
    assert files[".png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = files[".svg"].read_text()
    assert svg.lstrip().startswith("<svg") and "Batch Size" in svg and "OOM" in svg
    assert svg.count(">reference (published chart)</text>") == 1  # its legend entry
    html = files[".html"].read_text()
    assert "cdn.jsdelivr" not in html and "vega-lite" in html.lower()  # inlined: opens offline
    assert json.loads(files[".json"].read_text())["$schema"].startswith("https://vega.github.io/schema/vega-lite")


def test_speedup_chart_has_intervals_parity_and_verdicts():
    spec = speedup_chart(summary()).to_dict()
    points = layer_named(spec, "points")
    assert points["encoding"]["shape"]["field"] == "verdict"
    assert set(points["encoding"]["shape"]["scale"]["domain"]) == {"faster", "slower"}
    data = spec["datasets"][points["data"]["name"]]
    assert sorted((d["dtype"], d["batch"]) for d in data) == [("bf16", "128"), ("bf16", "256"), ("w8a8", "128"), ("w8a8", "256")]
    assert spec["datasets"][layer_named(spec, "parity")["data"]["name"]][0]["y"] == 1.0
    assert layer_named(spec, "intervals")["encoding"]["y2"]["field"] == "speedup_ci_high"
    missing = spec["datasets"][layer_named(spec, "missing")["data"]["name"]]
    assert [(m["dtype"], m["batch"], m["label"]) for m in missing] == [("bf16", "512", "OOM")]


def test_distribution_chart_shows_samples_and_repeat_means():
    s = summary()
    spec = build_chart("distributions", s, samples=samples_of(s)).to_dict()
    panels = spec["hconcat"]
    assert [p["title"] for p in panels] == ["Batch Size 128", "Batch Size 256", "Batch Size 512"]
    rows = {name: [] for name in ("samples", "repeat_means", "missing")}
    for panel in panels:
        for layer in panel["layer"]:
            kind = next(k for k in rows if layer["name"].startswith(k))  # Altair numbers repeated names
            rows[kind] += spec["datasets"][layer["data"]["name"]]
    assert len(rows["samples"]) == 7 * 2 * 3  # every timed sample
    assert len(rows["repeat_means"]) == 7 * 2
    assert [r["label"] for r in rows["missing"]] == ["OOM"]


def test_breakdown_contract_and_chart(tmp_path):
    table = pd.DataFrame({"workload": "w", "dtype": ["fp16", "fp16", "w8a8", "w8a8", "w8a8"], "batch": 128,
                          "part": ["GEMM", "other", "gemm", "quantization", "attention"], "ms": [40, 5, 30, 20, 4]})  # fmt: skip
    table.to_csv(tmp_path / "breakdown.csv", index=False)
    got = read_breakdown(tmp_path / "breakdown.csv")
    assert set(got["part"]) == {"gemm", "quantization", "attention", "other"}
    spec = breakdown_chart(got).to_dict()
    color = spec["spec"]["encoding"]["color"]
    assert color["scale"]["domain"] == ["gemm", "quantization", "attention", "other"]  # stacking order
    assert spec["spec"]["encoding"]["y"]["stack"] == "zero"
    with pytest.raises(BreakdownError, match=r"missing columns \['part'\]"):
        check_breakdown(table.drop(columns="part"), "b.parquet")
    with pytest.raises(BreakdownError, match="b.csv: column ms"):
        check_breakdown(table.assign(ms=[1, -2, 3, 4, 5]), "b.csv")


def test_answer_reads_naturally_for_gains_and_losses():
    sentences = answer_sentences(summary())
    assert "w8a8 is 1.05× [1.04, 1.06] faster than fp16 at batch 128: faster, 5.0% less time per forward." in sentences
    assert "bf16 is 0.93× [0.92, 0.94] the speed of fp16 at batch 128: slower, 7.5% more time per forward." in sentences
    assert "bf16 vs fp16 at batch 512: no comparison — bf16 oom." in sentences
    assert len(sentences) == 5  # one per variant and batch size, the OOM cell included
    assert headline(summary()) == (
        "w8a8 is faster than fp16 at every batch size measured: 1.05×. "
        "bf16 is slower than fp16 at every batch size timed (2 of 3): 0.93×."
    )


def test_warnings_use_optional_diagnostics_when_present():
    s = summary()
    plain = warnings(s)
    assert any("not measured — oom (CUDA out of memory)" in w for w in plain)
    assert not any("unstable" in w for w in plain)
    s["unstable"] = [False] * len(s)
    s.loc[0, "unstable"] = True
    s["n_outliers"] = 0
    s.loc[1, "n_outliers"] = 3
    s["recommended_repeats"] = 5
    s.loc[2, "recommended_repeats"] = 12
    s["icc"] = 0.4
    extra = warnings(s)
    assert "w / fp16 / batch 128: unstable, coefficient of variation 1.0%." in extra
    assert any("3 outlier sample(s)" in w for w in extra) and any("12 repeats advised" in w for w in extra)
    html = render_report(s, samples_of(s), {}, {"baseline": "fp16"}, "snakemake", vega_js="")
    assert '<table id="diagnostics">' in html and "<th>icc</th>" in html and "<th>n_outliers</th>" in html


def test_clock_warnings_from_the_shards():
    s = summary()
    found = warnings(s, samples_of(s))
    assert any(w.startswith("18 of 42 timed samples ran with the SM clock below 75% of its maximum") for w in found)
    assert any("different SM clocks" in w and "w batch 128: bf16 1900 / fp16 1400 / w8a8 1900" in w for w in found)


def test_report_is_self_contained_and_says_what_is_missing():
    s = summary()
    charts = {}
    for name in ("latency", "speedup"):
        chart = build_chart(name, s, reference=REFERENCE)
        charts[name] = {"spec": chart.to_dict(), "svg": f"<svg id='static-{name}'></svg>"}
    config = {"baseline": "fp16", "dtypes": {"fp16": {}, "w8a8": {}, "bf16": {}}, "reference": "config/reference_latency.csv"}
    html = render_report(s, samples_of(s), charts, config, "snakemake --cores 1 --resources gpu=1", reference=REFERENCE)
    assert "<script src=" not in html and "cdn.jsdelivr" not in html  # Vega inlined
    assert "vegaEmbed" in html and '<div class="chart" id="chart-latency"' in html
    assert "<noscript><div class=\"chart\"><svg id='static-latency'></svg></div></noscript>" in html
    assert "No breakdown was measured in this run" in html
    assert "w8a8 is 1.05× [1.04, 1.06] faster than fp16 at batch 128" in html
    assert "not measured — oom" in html
    assert "snakemake --cores 1 --resources gpu=1" in html
    assert "<td>79</td><td>64.00 [63.36, 64.64]</td><td>0.81</td>" in html  # reference table: ref, measured, ratio
    for key in ("gpu_name", "driver", "cuda", "torch", "qbench_version", "git_commit", "report made"):
        assert f'<th class="l">{key}</th>' in html
    with pytest.raises(ValueError, match="unknown chart"):
        render_report(s, samples_of(s), {"pie": {}}, config, "x", vega_js="")


def test_cards_of_one_model_that_differ_are_named_with_their_spread():
    """Two cards of one model, the second 1.5% faster on one cell: the report says how
    many cards, by how much they differ and where; one card says nothing."""
    rows = []
    for rep, (uuid, ms) in enumerate([("GPU-a", 100.0), ("GPU-b", 98.5), ("GPU-a", 100.2), ("GPU-b", 98.7)]):
        for dtype, scale in (("fp16", 1.0), ("w8a8", 0.9)):
            for i in range(3):
                rows.append({"workload": "w", "dtype": dtype, "batch": 128, "rep": rep, "iteration": i,
                             "latency_ms": ms * scale + 0.01 * i, "status": "ok", "throttled": False,
                             "gpu_uuid": uuid, "gpu_name": "H100", "device": "cuda"})  # fmt: skip
    samples = pd.DataFrame(rows)
    from qbench.report import card_spread, card_warnings

    spread = card_spread(samples)
    assert len(spread) == 2 and spread["spread"].round(4).tolist() == [0.0152, 0.0152]
    (line,) = card_warnings(samples)
    assert line.startswith("Measured on 2 H100 cards: in 2 cell(s) their means differ, by up to 1.5%")
    assert "repeats 2/2 per card" in line and "within every repeat all dtypes ran on one card" in line
    # two repeats a card: t(1) makes each interval ±1.3%, wide enough to span 1.5%
    assert spread["agree"].tolist() == [True, True]
    # a third repeat a card, still 0.2% apart: the intervals shrink to ±0.25% and part
    third = samples[samples["rep"].isin([0, 1])].assign(rep=lambda d: d["rep"] + 4)
    third["latency_ms"] += 0.1 * third["dtype"].map({"fp16": 1.0, "w8a8": 0.9})
    three = pd.concat([samples, third], ignore_index=True)
    assert card_spread(three)["agree"].tolist() == [False, False]
    (line3,) = card_warnings(three)
    assert "do not overlap in 2 of 2 cell(s) with 2+ repeats per card (fp16 / batch 128, w8a8 / batch 128)" in line3
    samples.loc[(samples["rep"] == 0) & (samples["dtype"] == "w8a8"), "gpu_uuid"] = "GPU-b"
    assert "in 1 of 4 repeats the dtypes ran on different cards" in card_warnings(samples)[0]
    assert card_warnings(samples[samples["gpu_uuid"] == "GPU-a"]) == []


def test_cards_whose_intervals_overlap_are_said_to_agree():
    """Two cards 0.1% apart with repeats that vary by 1%: their intervals overlap, and the
    report says so; a card with one repeat gives no verdict."""
    rows = []
    reps = [("GPU-a", 100.0), ("GPU-b", 99.6), ("GPU-a", 101.0), ("GPU-b", 100.6), ("GPU-a", 99.3)]
    for rep, (uuid, ms) in enumerate(reps):
        for i in range(3):
            rows.append({"workload": "w", "dtype": "fp16", "batch": 128, "rep": rep, "iteration": i,
                         "latency_ms": ms + 0.01 * i, "status": "ok", "throttled": False,
                         "gpu_uuid": uuid, "gpu_name": "H200", "device": "cuda"})  # fmt: skip
    samples = pd.DataFrame(rows)
    from qbench.report import card_spread, card_warnings

    assert card_spread(samples)["agree"].tolist() == [True]
    (line,) = card_warnings(samples)
    assert "Each card's 95% interval overlaps the others' in each of the 1 cell(s) with 2+ repeats per card." in line
    one = samples[(samples["gpu_uuid"] == "GPU-a") | (samples["rep"] == 1)]
    assert card_spread(one)["agree"].tolist() == [None]
    assert "interval" not in card_warnings(one)[0].split("per card).")[1].split("The intervals include")[0]
