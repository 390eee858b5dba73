"""Nothing lost, nothing misleading: bad shards, out-of-memory cells, device mistakes,
interruptions, retries and two runs at once, each on the CPU with real Snakemake runs of
a tiny experiment in a temporary directory.

What is simulated, and why: a CPU allocation failure is a plain RuntimeError, never
torch.OutOfMemoryError, so the OOM tests raise torch.OutOfMemoryError from the model
call (unit) or place an `oom` shard made by qbench.shards.make_table (workflow). Bad
shards are written by the tests. Everything else (kills, retries, locks) is real."""

import base64
import math
import os
import re
import signal
import subprocess
import time

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from snakemake.utils import validate

import qbench.measure
from qbench.config import Experiment
from qbench.shards import (
    SCHEMA,
    SCHEMA_VERSION,
    ShardError,
    check_shard,
    collect_shards,
    make_table,
    validate_table,
    with_attempt,
    write_shard,
)
from tests.conftest import REPO, run_snakemake, snakemake_exe

SCHEMA_FILE = REPO / "workflow" / "schemas" / "config.schema.yaml"
SHARD = "results/shards/{w}/dtype={d}/batch={b}/rep={r}.parquet"


# --- helpers -------------------------------------------------------------------------


def tiny_config(dtypes=("fp16",), batches=(2,), repeats=1, **extra) -> dict:
    all_dtypes = {"fp16": {"scheme": "fp16", "impl": "eager"}, "w8a8": {"scheme": "w8a8-int8", "impl": "eager"}}
    cfg = {
        "workloads": {"tiny": {"model": "llama", "hidden": 64, "intermediate": 128, "heads": 4, "kv_heads": 2,
                               "layers": 2, "seq_len": 8}},
        "dtypes": {d: all_dtypes[d] for d in dtypes},
        "baseline": "fp16",
        "batch_sizes": list(batches),
        "repeats": repeats,
        "device": "cpu",
        "timing": {"warmup": 1, "warmup_ms": 0, "min_iterations": 3, "max_iterations": 3},
        "stats": {"resamples": 200},
        "reference": None,
    }  # fmt: skip
    cfg.update(extra)
    return cfg


# Jobs that time for a fixed while, so a test can act while one runs (on a loaded CI
# machine the start of a second Snakemake alone takes seconds).
LONG_JOBS = {"warmup": 1, "warmup_ms": 0, "min_iterations": 3, "max_iterations": 10**6,
             "target_rsd": 0.0, "target_rse": 0.0, "min_time_s": 8.0, "max_time_s": 8.0}  # fmt: skip


def experiment(cfg) -> Experiment:
    """The experiment exactly as the workflow sees it (schema defaults filled)."""
    import copy

    cfg = copy.deepcopy(cfg)
    validate(cfg, str(SCHEMA_FILE))
    return Experiment.from_config(cfg)


def shard_table(cell, latencies=(1.0, 1.1, 0.9), status="ok", **overrides) -> pa.Table:
    """A shard of `cell` with the given latencies (one row, no latency, for a failed status)."""
    wl, dt = cell.workload, cell.dtype
    base = {"schema_version": SCHEMA_VERSION, "workload": wl.name, "model": wl.model, "dtype": dt.name,
            "scheme": dt.scheme, "impl": dt.impl, "batch": cell.batch, "rep": cell.rep, "attempt": 1,
            "tokens": wl.tokens(cell.batch), "status": status, "device": "cpu", "config_hash": cell.config_hash(),
            "seed": cell.seed, "tolerance": cell.tolerance, "flops": 1e9}  # fmt: skip
    if status in ("ok", "inaccurate"):
        rows = [{**base, "iteration": i, "latency_ms": ms, **overrides} for i, ms in enumerate(latencies)]
    else:
        rows = [{**base, "status_detail": "CUDA out of memory. Tried to allocate 64.00 GiB", **overrides}]
    return make_table(rows, cell.as_dict())


def write_config(work, cfg):
    work.mkdir(parents=True, exist_ok=True)
    path = work / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(work, cfg_path, *args, check=True):
    return run_snakemake(["--cores", "1", "--configfile", str(cfg_path), "--directory", str(work), *args], check=check)


def start_snakemake(work, cfg_path, *args):
    """A run in the background, in its own process group (as a terminal would start it)."""
    out = open(work / f"snakemake-{time.monotonic_ns()}.out", "w")
    cmd = snakemake_exe() + ["--snakefile", str(REPO / "Snakefile"), "--cores", "1", "--configfile", str(cfg_path),
                             "--directory", str(work), *args]  # fmt: skip
    # SIGINT as a terminal gives it: a pytest started in the background (`cmd &` in a
    # script) has SIGINT ignored, and Snakemake would inherit that and never stop on it
    restore_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=restore_sigint)  # fmt: skip
    proc.out_path = out.name
    return proc


def wait_for(condition, timeout=120, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def jobs_run(text) -> dict:
    """Snakemake's 'Job stats' table: how many jobs of each rule ran."""
    stats = text.split("Job stats:")[-1]
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M) if rule != "total"}


def shards_in(work):
    return sorted((work / "results" / "shards").rglob("*.parquet"))


def mtimes(paths):
    return {str(p): os.stat(p).st_mtime_ns for p in paths}


# --- shards: each problem named, with the file ----------------------------------------


@pytest.fixture
def cell():
    return experiment(tiny_config()).cell("tiny", "fp16", 2, 0)


def test_a_good_shard_passes(cell, tmp_path):
    write_shard(shard_table(cell), tmp_path / "s.parquet")
    check_shard(tmp_path / "s.parquet", cell.config_hash())


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("truncate", "not a readable Parquet file"),
        ("garbage", "not a readable Parquet file"),
        ("version", f"schema_version [99], this qbench reads {SCHEMA_VERSION} (written by another qbench version)"),
        ("old columns", "missing columns ['attempt']"),
        ("hash", "differs from this run's"),
        ("nan", "3 timed samples have no latency (NaN)"),
        ("zero", "latencies must be > 0, found [0.0]"),
        ("negative", "latencies must be > 0, found [-1.0]"),
        ("inf", "latencies must be finite, found [inf]"),
        ("no rows", "no rows"),
    ],
)
def test_a_bad_shard_is_named_with_its_problem(cell, tmp_path, damage, problem):
    path = tmp_path / "rep=0.parquet"
    table = {
        "version": lambda: shard_table(cell, schema_version=99),
        "old columns": lambda: shard_table(cell).drop_columns(["attempt"]),
        "hash": lambda: shard_table(cell, config_hash="0123456789abcdef"),
        "nan": lambda: shard_table(cell, latency_ms=math.nan),
        "zero": lambda: shard_table(cell, latencies=(1.0, 0.0)),
        "negative": lambda: shard_table(cell, latencies=(-1.0, 1.0)),
        "inf": lambda: shard_table(cell, latencies=(1.0, math.inf)),
        "no rows": lambda: shard_table(cell).slice(0, 0),
    }.get(damage, lambda: shard_table(cell))()
    pq.write_table(table, path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_text("this is not parquet\n")
    with pytest.raises(ShardError) as err:
        check_shard(path, cell.config_hash())
    assert str(err.value).startswith(f"{path}: ") and problem in str(err.value)


def test_skip_leaves_bad_shards_out_and_says_why(tmp_path):
    exp = experiment(tiny_config(repeats=3))
    paths = []
    for rep in range(3):
        paths.append(tmp_path / f"rep={rep}.parquet")
        write_shard(shard_table(exp.cell("tiny", "fp16", 2, rep)), paths[-1])
    paths[1].write_bytes(b"PAR1 cut off")
    hashes = {str(p): exp.cell("tiny", "fp16", 2, 0).config_hash() for p in paths}
    with pytest.raises(ShardError, match=re.escape(str(paths[1]))):
        collect_shards(paths, hashes, "stop")
    samples, skipped = collect_shards(paths, hashes, "skip")
    assert sorted(samples["rep"].unique()) == [0, 2]
    assert skipped["path"].tolist() == [str(paths[1])] and "not a readable Parquet file" in skipped["problem"][0]


def test_attempt_is_stamped_keeping_the_cell_config(cell):
    table = with_attempt(shard_table(cell), 3)
    assert table.column("attempt").to_pylist() == [3, 3, 3]
    assert table.schema.metadata == shard_table(cell).schema.metadata
    assert table.schema.remove_metadata().equals(SCHEMA)


# --- out of memory --------------------------------------------------------------------


def test_out_of_memory_in_the_model_becomes_an_oom_shard(monkeypatch, cell):
    """Simulated: the model call raises torch.OutOfMemoryError (a CPU cannot raise it);
    run_cell's conversion into a one-row `oom` shard is the real code."""
    real_build = qbench.measure.build_model

    def build_model_that_runs_out_of_memory(*args, **kwargs):
        model = real_build(*args, **kwargs)

        def forward(*_, **__):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB (simulated)\nmore text")

        model.forward = forward
        return model

    monkeypatch.setattr(qbench.measure, "build_model", build_model_that_runs_out_of_memory)
    table = qbench.measure.run_cell(cell)
    validate_table(table, "oom shard", cell.config_hash())
    df = table.to_pandas()
    assert len(df) == 1 and df["status"][0] == "oom" and pd.isna(df["latency_ms"][0])
    assert df["status_detail"][0] == "CUDA out of memory. Tried to allocate 64.00 GiB (simulated)"


@pytest.mark.workflow
def test_an_oom_cell_is_marked_and_the_sweep_goes_on(tmp_path):
    """The w8a8 cell at batch 8 ran out of memory (its `oom` shard is placed, as measure
    writes it); the other cells are measured for real, and the summary and the report say
    which cell it was. A temp file of an interrupted write lies beside the shards and is
    not read."""
    cfg = tiny_config(dtypes=("fp16", "w8a8"), batches=(2, 8))
    exp = experiment(cfg)
    work = tmp_path / "work"
    cfg_path = write_config(work, cfg)
    oom = work / SHARD.format(w="tiny", d="w8a8", b=8, r=0)
    write_shard(shard_table(exp.cell("tiny", "w8a8", 8, 0), status="oom"), oom)
    (oom.parent / ".rep=0.parquet.k2j3.tmp").write_bytes(b"PAR1 half a file")
    before = os.stat(oom).st_mtime_ns

    proc = snakemake(work, cfg_path)  # the report too: it warns about the cell
    assert jobs_run(proc.stdout + proc.stderr)["measure"] == 3  # the oom cell is not measured again
    assert os.stat(oom).st_mtime_ns == before
    summary = pd.read_csv(work / "results" / "summary.csv").set_index(["dtype", "batch"])
    assert summary.loc[("w8a8", 8), "status"] == "oom" and pd.isna(summary.loc[("w8a8", 8), "mean_ms"])
    assert summary.loc[("w8a8", 8), "n_failed_repeats"] == 1
    assert (summary.drop(index=("w8a8", 8))["status"] == "ok").all()
    assert summary.loc[("w8a8", 2), "speedup"] > 0  # the rest of the sweep is compared as usual
    html = (work / "results" / "report.html").read_text()
    assert "tiny / w8a8 / batch 8: not measured — oom (CUDA out of memory" in html  # the report's warning


# --- bad shards in the workflow -------------------------------------------------------


def placed_shards(work, exp):
    """Every shard of the experiment, written as measure would (fake latencies)."""
    paths = []
    for rep in range(exp.repeats):
        for d in exp.dtypes:
            cell = exp.cell("tiny", d, 2, rep)
            paths.append(work / SHARD.format(w="tiny", d=d, b=2, r=rep))
            write_shard(shard_table(cell, latencies=(1.0 + rep * 0.01, 1.02, 0.98)), paths[-1])
    return paths


@pytest.mark.workflow
def test_aggregate_stops_on_a_bad_shard_naming_it(tmp_path):
    cfg = tiny_config(dtypes=("fp16", "w8a8"), repeats=3)
    work = tmp_path / "work"
    cfg_path = write_config(work, cfg)
    paths = placed_shards(work, experiment(cfg))
    paths[1].write_bytes(paths[1].read_bytes()[:100])  # truncated
    other = experiment(tiny_config(dtypes=("fp16", "w8a8"), repeats=3, seed=7))
    write_shard(shard_table(other.cell("tiny", "fp16", 2, 2)), paths[4])  # measured with another seed
    before = mtimes(paths)

    proc = snakemake(work, cfg_path, "results/summary.csv", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    rel = os.path.relpath(paths[1], work)
    assert f"ERROR qbench.aggregate: {rel}: not a readable Parquet file" in out  # the log, shown under the error
    assert "aggregate.on_bad_shard: skip" in out and "Traceback" not in out
    assert not (work / "results" / "summary.csv").exists()
    assert mtimes(paths) == before and "measure" not in jobs_run(out)

    paths[1].unlink()  # as the message says: delete it, and it is measured again
    proc = snakemake(work, cfg_path, "results/summary.csv", check=False)
    out = proc.stdout + proc.stderr
    rel = os.path.relpath(paths[4], work)
    assert proc.returncode == 1 and jobs_run(out) == {"measure": 1, "aggregate": 1}
    assert re.search(rf"ERROR qbench.aggregate: {re.escape(rel)}: config_hash \w+ differs from this run's \w+", out)


@pytest.mark.workflow
def test_skip_leaves_bad_shards_out_and_lists_them(tmp_path):
    cfg = tiny_config(dtypes=("fp16", "w8a8"), repeats=3, aggregate={"on_bad_shard": "skip"})
    work = tmp_path / "work"
    cfg_path = write_config(work, cfg)
    exp = experiment(cfg)
    paths = placed_shards(work, exp)
    write_shard(shard_table(exp.cell("tiny", "w8a8", 2, 1), latencies=(1.0, -2.0)), paths[3])

    snakemake(work, cfg_path, "results/summary.csv")
    skipped = pd.read_csv(work / "results" / "skipped_shards.csv")
    assert skipped.to_dict("records") == [
        {"path": os.path.relpath(paths[3], work), "problem": "latencies must be > 0, found [-2.0]"}
    ]
    summary = pd.read_csv(work / "results" / "summary.csv").set_index("dtype")
    assert summary.loc["w8a8", "n_repeats"] == 2 and summary.loc["fp16", "n_repeats"] == 3
    assert "left out" in (work / "logs" / "aggregate.log").read_text()


# --- the device -----------------------------------------------------------------------


@pytest.mark.workflow
def test_cuda_without_a_gpu_fails_the_job_with_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    work = tmp_path / "work"
    cfg_path = write_config(work, tiny_config(device="cuda"))
    proc = snakemake(work, cfg_path, check=False)
    out = proc.stdout + proc.stderr
    log = "logs/measure/tiny/dtype=fp16/batch=2/rep=0.log"
    assert proc.returncode == 1 and f"log: {log} (check log file(s) for error details)" in out
    assert "ERROR qbench.measure: config key device is 'cuda' but torch sees no CUDA GPU" in out
    lines = (work / log).read_text().splitlines()
    assert [line.split(" qbench.measure: ")[1] for line in lines][-1].startswith("config key device is 'cuda'")
    assert not any("Traceback" in line for line in lines) and not shards_in(work)


# --- interruption, retries, two runs --------------------------------------------------


@pytest.mark.workflow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_an_interrupted_run_loses_nothing(tmp_path, sig):
    """Kill the run while the second of three measurement jobs runs. The next run keeps the
    finished shard (same mtime), measures only the two others, and aggregates whole
    shards only: after SIGKILL a half-written file is put at the killed job's path, and
    Snakemake (rerun-incomplete) measures that cell again instead of reading it."""
    cfg = tiny_config(repeats=3, timing=LONG_JOBS)
    work = tmp_path / "work"
    cfg_path = write_config(work, cfg)
    run = start_snakemake(work, cfg_path, "results/summary.csv")
    logs = work / "logs" / "measure"
    wait_for(lambda: len(shards_in(work)) == 1 and len(list(logs.rglob("*.log"))) == 2, what="the second job")
    shard_of = lambda log: (work / "results" / "shards" / log.relative_to(logs)).with_suffix(".parquet")  # noqa: E731
    (killed_shard,) = [shard_of(log) for log in logs.rglob("*.log") if not shard_of(log).exists()]
    os.killpg(run.pid, sig)
    run.wait(timeout=60)
    assert run.returncode != 0
    (done,) = shards_in(work)
    before = mtimes([done])
    assert not (work / "results" / "summary.csv").exists()
    assert not killed_shard.exists()  # written atomically: no partial file at its path
    if sig == signal.SIGINT:
        assert "Terminating processes on user request" in open(run.out_path).read()

    if sig == signal.SIGKILL:
        # nobody cleaned up: the lock is left, and Snakemake says what to do
        proc = snakemake(work, cfg_path, "results/summary.csv", check=False)
        assert proc.returncode == 1 and "Directory cannot be locked" in proc.stdout + proc.stderr
        assert "--unlock" in proc.stdout + proc.stderr
        snakemake(work, cfg_path, "--unlock")
        # Snakemake marked the killed job's output incomplete when it started the job
        marker = base64.b64encode(str(killed_shard.relative_to(work)).encode()).decode()
        assert (work / ".snakemake" / "incomplete" / marker).exists()
        killed_shard.write_bytes(b"PAR1 half a file")  # as a non-atomic writer would leave it
    proc = snakemake(work, cfg_path, "results/summary.csv")
    out = proc.stdout + proc.stderr
    assert jobs_run(out) == {"measure": 2, "aggregate": 1}
    assert mtimes([done]) == before
    check_shard(killed_shard)
    if sig == signal.SIGKILL:  # rerun-incomplete (profiles/default) forces the job again
        (block,) = [b for b in out.split("localrule measure:") if f"output: {killed_shard.relative_to(work)}\n" in b]
        assert "reason: Forced execution" in block
    summary = pd.read_csv(work / "results" / "summary.csv")
    assert summary["n_repeats"].tolist() == [3]
    assert not list((work / "results").rglob("*.tmp"))


def measure_process(run):
    """The Python process running rule measure's script under this Snakemake, or None."""
    try:
        children = psutil.Process(run.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if any(arg.endswith("measure.py") for arg in cmd) and "python" in os.path.basename(cmd[0]):
            return child
    return None


@pytest.mark.workflow
def test_a_killed_job_is_retried_and_the_shard_says_so(tmp_path):
    """A real transient failure: the measurement process is killed (as by the OOM killer
    or a preempted node) while Snakemake runs on. Snakemake starts the job again."""
    work = tmp_path / "work"
    cfg_path = write_config(work, tiny_config())
    run = start_snakemake(work, cfg_path, "results/summary.csv")
    wait_for(lambda: measure_process(run) is not None, what="the measurement process")
    measure_process(run).kill()
    run.wait(timeout=120)
    out = open(run.out_path).read()
    assert run.returncode == 0, out
    assert "Trying to restart job" in out
    (shard,) = shards_in(work)
    assert pq.read_table(shard).column("attempt").to_pylist() == [2, 2, 2]
    assert "attempt 2" in (work / "logs/measure/tiny/dtype=fp16/batch=2/rep=0.log").read_text()


@pytest.mark.workflow
def test_a_second_run_in_the_same_directory_is_refused(tmp_path):
    work = tmp_path / "work"
    cfg_path = write_config(work, tiny_config(repeats=2, timing=LONG_JOBS))
    first = start_snakemake(work, cfg_path, "results/summary.csv")
    logs = work / "logs" / "measure"
    wait_for(lambda: len(shards_in(work)) == 1 and len(list(logs.rglob("*.log"))) == 2, what="the second job")
    before = mtimes(shards_in(work))

    # The first run is paused (its job runs on) while the second starts: however slow
    # that start is on a loaded machine, the first still holds the directory's lock.
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second = snakemake(work, cfg_path, "results/summary.csv", check=False)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out = second.stdout + second.stderr
    assert second.returncode == 1 and "Directory cannot be locked" in out
    assert first.wait(timeout=120) == 0
    assert mtimes(list(before)) == before and len(shards_in(work)) == 2
    assert pd.read_csv(work / "results" / "summary.csv")["n_repeats"].tolist() == [2]
