import json

import numpy as np
import pandas as pd

from qbench.charts import latency_chart, save_chart
from qbench.report import answer_sentences, render_report
from qbench.stats import SUMMARY_COLUMNS


def summary():
    rows = []
    for dtype, scale in (("fp16", 1.0), ("w8a8", 0.95), ("bf16", 1.02)):
        for b in (128, 256):
            m = b * 0.5 * scale
            rows.append({"workload": "w", "model": "llama", "dtype": dtype, "scheme": dtype, "impl": "compile",
                         "batch": b, "tokens": b * 128, "status": "ok", "n_repeats": 5, "n_failed_repeats": 0,
                         "n_samples": 100, "mean_ms": m, "ci_low_ms": m * 0.99, "ci_high_ms": m * 1.01,
                         "median_ms": m, "cv": 0.01, "few_repeats": False, "baseline": "fp16",
                         "speedup": None if dtype == "fp16" else 1 / scale, "speedup_ci_low": 1.01 / scale - 0.02,
                         "speedup_ci_high": 1 / scale + 0.01, "verdict": None if dtype == "fp16" else "faster",
                         "rel_error": 0.05, "tolerance": 0.1})  # fmt: skip
    rows.append({**rows[-1], "batch": 512, "status": "oom", "mean_ms": np.nan, "ci_low_ms": np.nan,
                 "ci_high_ms": np.nan, "speedup": np.nan, "status_detail": "CUDA out of memory"})  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=SUMMARY_COLUMNS)


REFERENCE = pd.DataFrame({"batch_size": [128, 128], "dtype": ["fp16", "w8a8"], "latency_ms": [79, 75]})


def test_chart_matches_the_reference_style(tmp_path):
    chart = latency_chart(summary(), REFERENCE)
    spec = chart.to_dict()
    text = json.dumps(spec)
    assert '"Latency (ms)"' in text and '"Batch Size"' in text
    bars = spec["layer"][0]
    assert bars["mark"]["type"] == "bar"
    scale = bars["encoding"]["color"]["scale"]
    assert scale["domain"][:2] == ["fp16", "w8a8"] and scale["range"][:2] == ["#c8c8c8", "#8b0000"]
    assert bars["encoding"]["color"]["legend"]["orient"] == "top-left"
    assert any(layer["mark"]["type"] == "tick" for layer in spec["layer"])  # reference values
    assert any(layer["mark"]["type"] == "text" for layer in spec["layer"])  # the OOM cell is labelled
    paths = save_chart(chart, tmp_path / "latency")
    files = {p.suffix: p for p in paths}
    assert files[".png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = files[".svg"].read_text()
    assert svg.lstrip().startswith("<svg") and "Batch Size" in svg
    html = files[".html"].read_text()
    assert "cdn.jsdelivr" not in html and "vega-lite" in html.lower()  # inlined: opens offline
    assert json.loads(files[".json"].read_text())["$schema"].startswith("https://vega.github.io/schema/vega-lite")


def test_report_answers_and_is_self_contained():
    s = summary()
    samples = pd.DataFrame({c: ["x"] for c in ["device", "gpu_name", "gpu_uuid", "driver", "cuda", "torch", "python",
                                              "qbench_version", "git_commit", "config_hash", "seed", "host", "cpu",
                                              "slurm_job_id"]}).assign(started_at=pd.Timestamp("2026-11-26", tz="UTC"))  # fmt: skip
    html = render_report(s, samples, {"latency": "<svg id='c'></svg>"}, {"baseline": "fp16", "dtypes": {"fp16": {}, "w8a8": {}}},
                         "snakemake --cores 1", reference=REFERENCE)  # fmt: skip
    assert "<svg id='c'></svg>" in html
    assert "w8a8 vs fp16 (w, batch 128): speedup 1.05×" in html
    assert "not measured — oom" in html
    assert "snakemake --cores 1" in html and "<script src=" not in html
    sentences = answer_sentences(s)
    assert len(sentences) == 5  # 2 variants x 2 batches + the OOM cell
