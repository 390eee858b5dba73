"""The report in a real browser: Debian's chromium, driven by Playwright, opens the report
of a real CPU run of the workflow from a file:// URL, offline. No console errors; every
chart is drawn as SVG with one mark per timed cell or sample; a screenshot is kept.

Setup: `bash tests/system/install_browser.sh` (root; installs /usr/bin/chromium). Without
chromium the tests skip on a workstation and fail in CI (the CI variable is set)."""

import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from qbench.charts import build_chart
from qbench.report import render_report
from qbench.shards import make_table, read_shards, write_shard
from qbench.stats import StatsConfig, summarize
from tests.conftest import REPO, run_snakemake

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]  # fmt: skip
INSTALL = "bash tests/system/install_browser.sh"

pytestmark = pytest.mark.workflow


def _unavailable(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"{why}: the browser test must run in CI; run `{INSTALL}` (and pip install -e '.[test]') first")
    pytest.skip(f"{why} (run `{INSTALL}`)")


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"{CHROMIUM} is missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the Python package playwright is missing")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory):
    """The CPU preset, smaller (2 repeats of 5 forwards), run for real; returns its directory."""
    work = tmp_path_factory.mktemp("browser-run")
    cfg = yaml.safe_load(open(REPO / "config" / "cpu.yaml"))
    cfg["repeats"] = 2
    cfg["timing"].update(min_iterations=5, max_iterations=5)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    run_snakemake(["--cores", "2", "--resources", "gpu=1", "--configfile", str(work / "config.yaml"), "--directory", str(work)])
    return work


def open_page(browser, path: Path, artifact: str, tmp_path):
    """Open `path`, wait for the charts, and return (page, console errors, screenshot path)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(f"network request {r.url}") if not r.url.startswith(("file:", "data:")) else None)
    page.goto(path.as_uri())
    page.wait_for_selector("#chart-distributions svg g.role-mark", timeout=20000)
    shot = tmp_path / f"{artifact}.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("QBENCH_ARTIFACTS"):
        dest = Path(os.environ["QBENCH_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / shot.name)
    return page, errors, shot


def marks(page, chart: str, name: str) -> int:
    """How many marks the layer `name` drew (Altair numbers a name repeated across panels: name_0_marks)."""
    return page.locator(f'#chart-{chart} svg g.role-mark[class*=" {name}_"] > path').count()


def test_report_renders_in_a_real_browser(browser, cpu_report, tmp_path):
    summary = pd.read_csv(cpu_report / "results" / "summary.csv")
    page, errors, shot = open_page(browser, cpu_report / "results" / "report.html", "report-cpu", tmp_path)
    assert errors == []
    timed = summary[summary["mean_ms"].notna()]
    assert len(timed) == 4  # 2 dtypes x 2 batch sizes
    assert marks(page, "latency", "bars") == len(timed)
    assert marks(page, "latency", "reference") == 0  # the CPU preset sets no reference
    assert marks(page, "speedup", "points") == timed["speedup"].notna().sum() == 2
    assert marks(page, "distributions", "samples") == timed["n_samples"].sum() == 4 * 2 * 5
    assert marks(page, "distributions", "repeat_means") == 4 * 2
    breakdown = pd.read_csv(cpu_report / "results" / "breakdown.csv")
    assert len(breakdown) == 4 * 5  # 2 dtypes x 2 batch sizes x 5 parts, zero-height bars included
    assert marks(page, "breakdown", "parts") == len(breakdown)
    assert page.locator("#no-breakdown").count() == 0
    assert page.locator("#answers li").count() == 2  # one sentence per variant and batch size
    assert "--configfile" in page.locator("#command").inner_text()
    assert shot.stat().st_size > 50_000  # a real picture, not a blank page
    page.close()


def test_untimed_cells_are_marked_in_the_browser(browser, cpu_report, tmp_path):
    """An out-of-memory cell (a shard with status oom, as measure writes it) is labelled."""
    shards = sorted((cpu_report / "results" / "shards").rglob("*.parquet"))
    row = pq.read_table(shards[0]).to_pylist()[0]
    row.update(dtype="w8a8", scheme="w8a8-int8", batch=64, tokens=64 * 32, iteration=None, latency_ms=None,
               status="oom", status_detail="out of memory (test)")  # fmt: skip
    oom = tmp_path / "oom.parquet"
    write_shard(make_table([row]), oom)
    samples = read_shards(shards + [oom])
    summary = summarize(samples, "fp16", StatsConfig(resamples=200))
    charts = {name: build_chart(name, summary, samples=samples) for name in ("latency", "speedup", "distributions")}
    config = yaml.safe_load(open(cpu_report / "config.yaml"))
    html = render_report(summary, samples, {n: {"spec": c.to_dict(), "svg": ""} for n, c in charts.items()}, config, "snakemake")
    (tmp_path / "report.html").write_text(html)
    page, errors, _ = open_page(browser, tmp_path / "report.html", "report-oom", tmp_path)
    assert errors == []
    assert marks(page, "latency", "bars") == 4
    for chart in ("latency", "speedup", "distributions"):
        assert page.locator(f'#chart-{chart} svg g.role-mark[class*=" missing_"] > text').all_text_contents() == ["OOM"], chart
    assert "w8a8 vs fp16 at batch 64: no comparison — w8a8 oom." in page.locator("#answers").inner_text()
    assert page.locator("#no-breakdown").inner_text().startswith("No breakdown was measured")  # none given
    page.close()


def test_snakemake_report_zip(cpu_report, tmp_path):
    """Snakemake's own report (the HTML one is checked in test_workflow.py) as a .zip."""
    import zipfile

    out = tmp_path / "workflow-report.zip"
    run_snakemake(["--cores", "1", "--configfile", str(cpu_report / "config.yaml"), "--directory", str(cpu_report),
                   "--report", str(out)])  # fmt: skip
    names = "\n".join(zipfile.ZipFile(out).namelist())
    for figure in ("latency.svg", "speedup.svg", "distributions.svg", "summary.csv", "report.html"):
        assert figure in names
