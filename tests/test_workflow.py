"""The workflow itself, driven through Snakemake's CLI: lint, dry run, and a real run of
the CPU preset in a temporary directory, checked file by file."""

import re
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from qbench.shards import SCHEMA
from tests.conftest import REPO, run_snakemake

pytestmark = pytest.mark.workflow
CPU = str(REPO / "config" / "cpu.yaml")


def test_lint_is_clean(tmp_path):
    proc = run_snakemake(["--lint", "--directory", str(tmp_path)], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Congratulations, your workflow is in a good condition" in out, out


def dry_run_jobs(args, tmp_path):
    proc = run_snakemake(["-n", "--quiet", "rules", "--directory", str(tmp_path)] + args)
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout, flags=re.M))
    return {k: int(v) for k, v in counts.items()}


def test_dry_run_of_the_default_experiment(tmp_path):
    jobs = dry_run_jobs(["--cores", "1", "--resources", "gpu=1", "--configfile", str(REPO / "config" / "config.yaml")], tmp_path)
    # 1 workload x 2 dtypes x 4 batch sizes x 5 repeats
    # plot: one job per chart (latency, distributions, speedup, breakdown)
    assert jobs == {"measure": 40, "aggregate": 1, "breakdown": 1, "plot": 4, "report": 1, "all": 1, "total": 48}


def test_measure_jobs_declare_one_gpu(tmp_path):
    proc = run_snakemake(["-n", "--cores", "1", "--configfile", CPU, "--directory", str(tmp_path)])
    blocks = re.split(r"\n(?=\[\w{3} \w{3} )", proc.stdout)  # one block per job, each starting with its date
    blocks = [b for b in blocks if "rule measure:" in b]
    assert len(blocks) == 12
    assert all(re.search(r"resources:.*gpu=1", b) for b in blocks)


def test_a_user_mistake_is_one_clear_message(tmp_path):
    bad = yaml.safe_load(open(CPU))
    bad["baseline"] = "int4"
    bad["batch_sizes"] = [2, 2]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = run_snakemake(["-n", "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"), "--directory", str(tmp_path)],
                         check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "batch_sizes" in out  # the schema (uniqueItems) or qbench names the key
    assert "Traceback" not in out


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """The whole workflow on the CPU preset, for real, where Python writes no bytecode (as
    in many container images), with the run's bytecode cache on (qbench.bytecode_cache:
    here torch has its .pyc files, so only QBENCH_BYTECODE_CACHE=1 turns it on)."""
    work = tmp_path_factory.mktemp("run")
    proc = run_snakemake(["--cores", "2", "--resources", "gpu=1", "--configfile", CPU, "--directory", str(work)],
                         env={"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": None, "QBENCH_BYTECODE_CACHE": "1"})
    return work, proc


def test_the_jobs_share_a_bytecode_cache(cpu_run):
    """Without bytecode writing, the run caches it in its own folder: the jobs' processes
    (Snakemake's script preamble) and the fork server's torch read it from there."""
    work, _ = cpu_run
    cached = {p.relative_to(work / ".qbench-cache/pycache").as_posix() for p in (work / ".qbench-cache/pycache").rglob("*.pyc")}
    assert any("/snakemake/iocontainers." in p for p in cached), sorted(cached)[:5]  # the script preamble
    assert any("/torch/_dynamo/" in p for p in cached), sorted(cached)[:5]
    logs = "".join(p.read_text() for p in (work / ".qbench-cache/fork-server").glob("*.log"))
    assert "(bytecode: cached in " in logs


def test_one_shard_per_job_with_the_schema(cpu_run):
    work, _ = cpu_run
    shards = sorted((work / "results" / "shards").rglob("*.parquet"))
    cfg = yaml.safe_load(open(CPU))
    assert len(shards) == len(cfg["dtypes"]) * len(cfg["batch_sizes"]) * cfg["repeats"]
    for path in shards:
        table = pq.read_table(path)
        assert table.schema.remove_metadata().equals(SCHEMA), path
        df = table.to_pandas()
        assert len(df) == cfg["timing"]["max_iterations"] and (df["status"] == "ok").all()
        # the path's keys are the shard's keys
        m = re.search(r"/(\w[\w.-]*)/dtype=(\w+)/batch=(\d+)/rep=(\d+)\.parquet$", str(path))
        assert (df["workload"].iloc[0], df["dtype"].iloc[0], str(df["batch"].iloc[0]), str(df["rep"].iloc[0])) == m.groups()


def test_dtypes_interleave(cpu_run):
    """Measurement jobs run repeat by repeat with dtypes alternating, so drift over the
    run cannot pose as a dtype effect: the shards' start times show it."""
    work, _ = cpu_run
    from qbench.shards import read_shards

    df = read_shards(sorted((work / "results" / "shards").rglob("*.parquet")))
    order = df.groupby(["rep", "batch", "dtype"])["started_at"].first().sort_values()
    dtypes = [key[2] for key in order.index]
    assert dtypes == ["fp16", "w8a8"] * (len(dtypes) // 2)
    assert [key[0] for key in order.index] == sorted(key[0] for key in order.index)
    assert (df["attempt"] == 1).all()


def test_summary_rows_intervals_and_speedups(cpu_run):
    work, _ = cpu_run
    csv = pd.read_csv(work / "results" / "summary.csv")
    parquet = pd.read_parquet(work / "results" / "summary.parquet")
    assert len(csv) == len(parquet) == 4
    assert (csv["ci_low_ms"] <= csv["mean_ms"]).all() and (csv["mean_ms"] <= csv["ci_high_ms"]).all()
    assert (csv["n_repeats"] == 3).all() and (csv["n_samples"] == 30).all()
    variants = csv[csv["dtype"] != "fp16"]
    assert len(variants) == 2 and variants["speedup"].notna().all()
    assert (variants["speedup_ci_low"] <= variants["speedup"]).all() and (variants["speedup"] <= variants["speedup_ci_high"]).all()
    assert set(variants["verdict"]) <= {"faster", "slower", "same"}


def test_charts_and_report(cpu_run):
    work, _ = cpu_run
    charts = work / "results" / "charts"
    assert (charts / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (charts / "latency.svg").read_text()
    assert svg.lstrip().startswith("<svg") and "Latency (ms)" in svg
    html = (work / "results" / "report.html").read_text()
    assert "<svg" in html and "Latency (ms)" in html  # the chart is in the report itself
    assert "speedup" in html and "Provenance" in html and "torch" in html
    assert "--configfile" in html  # how to reproduce it
    assert (work / "logs" / "aggregate.log").exists()


def test_breakdown_beside_the_shards_and_in_the_report(cpu_run):
    """The CPU preset profiles every cell (config key breakdown): one table per job beside
    its shard, their mean over repeats in results/breakdown.parquet and .csv, a chart."""
    from qbench.breakdown import COLUMNS, PARTS, read_breakdown

    work, _ = cpu_run
    cells = sorted((work / "results" / "breakdown").rglob("*.parquet"))
    assert [p.relative_to(work / "results" / "breakdown") for p in cells] == [
        p.relative_to(work / "results" / "shards") for p in sorted((work / "results" / "shards").rglob("*.parquet"))
    ]
    table = pd.read_parquet(work / "results" / "breakdown.parquet")
    assert table.columns.tolist()[: len(COLUMNS)] == COLUMNS
    # breakdown.repeats: 2 in the preset: repeats 0 and 1 profiled, repeat 2's table empty
    assert len(table) == 4 * len(PARTS) and (table["n_repeats"] == 2).all() and (table["source"] == "cpu ops").all()
    empty = {(p.name, len(pd.read_parquet(p)) == 0) for p in cells}
    assert empty == {("rep=0.parquet", False), ("rep=1.parquet", False), ("rep=2.parquet", True)}
    assert len(read_breakdown(work / "results" / "breakdown.csv")) == len(table)
    parts = table.set_index(["dtype", "batch", "part"])["ms"]
    for batch in (2, 8):
        assert parts[("fp16", batch, "quantization")] == 0 and parts[("w8a8", batch, "quantization")] > 0
        assert parts[("fp16", batch, "gemm")] > 0 and parts[("fp16", batch, "attention")] > 0
    assert (work / "results" / "charts" / "breakdown.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (work / "results" / "report.html").read_text()
    assert 'id="chart-breakdown"' in html and "No breakdown was measured" not in html


def test_second_run_has_nothing_to_do(cpu_run):
    work, _ = cpu_run
    proc = run_snakemake(["-n", "--cores", "1", "--configfile", CPU, "--directory", str(work)])
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_snakemake_report(cpu_run, tmp_path):
    work, _ = cpu_run
    out = tmp_path / "workflow-report.html"
    run_snakemake(["--cores", "1", "--configfile", CPU, "--directory", str(work), "--report", str(out)])
    text = out.read_text()
    assert "summary.csv" in text and "latency.svg" in text and "breakdown.csv" in text


def test_qbench_run_picks_the_cpu_preset_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = subprocess.run([sys.executable, "-m", "qbench.cli", "run", "--", "-n", "--directory", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA GPU found: running the CPU preset config/cpu.yaml" in proc.stdout
    assert "llama-tiny" in proc.stdout + proc.stderr
