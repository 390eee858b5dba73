"""The workflow through a real SLURM cluster: Debian's slurm-wlm, munge and slurmdbd on
localhost (tests/system/slurm/), two fake GPUs, driven by `--profile profiles/slurm`.

Two runs share the cluster and go at the same time to save CI time: a small CPU
experiment that must complete with every measurement submitted through sbatch, and one
whose only measurement fails (`device: cuda` without a GPU), which must be retried per
the profile, reported with its logs, and leave no shard.

Without root (or without the packages and apt-get) these tests are skipped, unless CI is
set: then they must run, and fail loudly when they cannot."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from qbench.shards import SCHEMA
from qbench.stats import SUMMARY_COLUMNS
from tests.conftest import REPO, snakemake_exe

pytestmark = [pytest.mark.slurm, pytest.mark.workflow, pytest.mark.slow]

SCRIPTS = REPO / "tests" / "system" / "slurm"
PROFILE = REPO / "profiles" / "slurm"
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
RUN_TIMEOUT_S = 480  # one workflow run; each SLURM job costs about 12 s here
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


def _cannot_run(reason):
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the SLURM tests cannot run: {reason}")
    pytest.skip(reason)


def _run(cmd, env=None, timeout=60):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{tail}")
    return proc.stdout


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _a_dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node SLURM cluster with accounting, installed if missing, stopped by pid files
    at the end; yields the environment its clients need (SLURM_CONF)."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _cannot_run("snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')")
    if os.geteuid() != 0:
        _cannot_run("starting SLURM daemons and fake GPU devices needs root")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        _cannot_run("SLURM is not installed and there is no apt-get to install it")
    _run(["bash", str(SCRIPTS / "install.sh")], timeout=900)

    state = Path(tempfile.mkdtemp(prefix="qbench-slurm-"))  # short: socket paths are limited
    env = dict(os.environ, SLURM_CONF=str(state / "slurm.conf"))
    # A link left by a cluster killed before stop.sh (as a cancelled CI run leaves it):
    # start.sh must see that no slurmctld runs there and take its place.
    dead = None
    if not os.path.lexists("/run/slurm/conf"):
        dead = Path(tempfile.mkdtemp(prefix="qbench-slurm-dead-"))
        (dead / "slurmctld.pid").write_text(f"{_a_dead_pid()}\n")
        os.makedirs("/run/slurm", exist_ok=True)
        os.symlink(dead, "/run/slurm/conf")
    started = time.monotonic()
    try:
        # five fake GPUs: the four measurements of one run and the failing one of the other start at once
        _run(["bash", str(SCRIPTS / "start.sh"), str(state)], env=dict(os.environ, QBENCH_SLURM_GPUS="5"), timeout=180)
    except BaseException:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(state)], timeout=120)
        raise
    assert os.readlink("/run/slurm/conf") == str(state)
    print(f"SLURM cluster up in {time.monotonic() - started:.1f} s ({state})")
    pids = {name: int((state / f"{name}.pid").read_text()) for name in DAEMONS}
    yield {"env": env, "state": state}

    stop = subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(state)], capture_output=True, text=True, timeout=180)
    left = {name: pid for name, pid in pids.items() if _alive(pid)}
    assert stop.returncode == 0 and not left, f"daemons still running after stop.sh: {left}\n{stop.stderr}"
    assert not list(state.glob("*.pid")) and not os.path.lexists("/run/slurm/conf")
    shutil.rmtree(state, ignore_errors=True)
    if dead:
        shutil.rmtree(dead, ignore_errors=True)


def _small_experiment(path, **overrides):
    """The CPU preset cut down: every SLURM job costs about 12 s on a CI machine."""
    cfg = yaml.safe_load((REPO / "config" / "cpu.yaml").read_text())
    cfg.update({"batch_sizes": [2], "repeats": 2, **overrides})
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start_run(work, configfile, gpus, env):
    cmd = snakemake_exe() + [
        "--snakefile", str(REPO / "Snakefile"), "--profile", str(PROFILE), "--directory", str(work),
        "--configfile", str(configfile),
        "--resources", f"gpu={gpus}",  # the workflow profile's gpu=1 would let one measurement run at a time
        "--set-resources", "measure:mem_mb=1000",  # the test node offers 4000 MB; the rule asks 16000
        # poll SLURM every few seconds, not after the plugin's 40 s meant for busy clusters
        "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
    ]  # fmt: skip
    log = open(work / "snakemake.out", "w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def _finish(proc, log, deadline):
    try:
        proc.wait(timeout=max(1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        raise AssertionError(f"snakemake through SLURM did not finish within {RUN_TIMEOUT_S} s; see {log.name}")
    finally:
        log.close()
    return proc.returncode, Path(log.name).read_text()


@pytest.fixture(scope="module")
def slurm_runs(slurm_cluster, tmp_path_factory):
    ok_dir, bad_dir = tmp_path_factory.mktemp("slurm-ok"), tmp_path_factory.mktemp("slurm-failing")
    ok_cfg = _small_experiment(ok_dir / "experiment.yaml")
    bad_cfg = _small_experiment(bad_dir / "experiment.yaml", device="cuda", repeats=1,
                                dtypes={"fp16": {"scheme": "fp16", "impl": "eager"}})  # fmt: skip
    env = slurm_cluster["env"]
    started = time.monotonic()
    deadline = started + RUN_TIMEOUT_S
    ok_proc, ok_log = _start_run(ok_dir, ok_cfg, 4, env)  # all four measurements at once, one fake GPU each
    bad_proc, bad_log = _start_run(bad_dir, bad_cfg, 1, env)
    ok_rc, ok_out = _finish(ok_proc, ok_log, deadline)
    bad_rc, bad_out = _finish(bad_proc, bad_log, deadline)
    print(f"both SLURM runs done in {time.monotonic() - started:.1f} s")
    return {"ok": (ok_dir, ok_rc, ok_out), "failing": (bad_dir, bad_rc, bad_out), "env": env}


def _sacct(env, job_ids):
    """SLURM's own record of the jobs, from its accounting database."""
    fields = "JobID,State,AllocTRES,Comment"
    out = _run(["sacct", "-X", "-n", "-P", "-S", "2000-01-01", "-j", ",".join(job_ids), "-o", fields], env=env)
    rows = [line.split("|") for line in out.strip().splitlines()]
    return {r[0]: {"state": r[1], "tres": r[2], "comment": r[3]} for r in rows}


def test_every_measurement_went_through_sbatch(slurm_runs):
    work, rc, out = slurm_runs["ok"]
    assert rc == 0, out[-6000:]
    cfg = yaml.safe_load((work / "experiment.yaml").read_text())
    n_cells = len(cfg["dtypes"]) * len(cfg["batch_sizes"]) * cfg["repeats"]

    submitted = {job_id: log for job_id, log in SUBMITTED.findall(out)}
    assert len(submitted) == n_cells, "only measurements go to SLURM; aggregate, plot and report are local rules"
    assert all("/rule_measure/" in log for log in submitted.values())

    shards = sorted((work / "results" / "shards").rglob("*.parquet"))
    assert len(shards) == n_cells
    shard_jobs = set()
    for path in shards:
        table = pq.read_table(path)
        assert table.schema.remove_metadata().equals(SCHEMA), path
        ids = set(table.column("slurm_job_id").to_pylist())
        assert len(ids) == 1 and None not in ids, (path, ids)
        shard_jobs |= ids
    # one SLURM job per shard, each of them one that Snakemake submitted
    assert shard_jobs == set(submitted)

    jobs = _sacct(slurm_runs["env"], sorted(submitted))
    assert set(jobs) == set(submitted)
    for job_id, job in jobs.items():
        assert job["state"] == "COMPLETED", (job_id, job)
        assert "gres/gpu=1" in job["tres"], (job_id, job)  # the rule's gpu=1 became a GPU request
        assert job["comment"].startswith("rule_measure"), (job_id, job)


def test_the_summary_matches_the_schema(slurm_runs):
    work, rc, out = slurm_runs["ok"]
    assert rc == 0, out[-6000:]
    summary = pd.read_parquet(work / "results" / "summary.parquet")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert list(pd.read_csv(work / "results" / "summary.csv").columns) == SUMMARY_COLUMNS
    assert sorted(summary["dtype"]) == ["fp16", "w8a8"] and (summary["n_repeats"] == 2).all()
    assert (summary["ci_low_ms"] <= summary["mean_ms"]).all() and (summary["mean_ms"] <= summary["ci_high_ms"]).all()
    assert (work / "results" / "report.html").stat().st_size > 0
    assert (work / "results" / "charts" / "latency.svg").exists()


def test_a_failing_measurement_is_retried_then_reported_and_leaves_no_shard(slurm_runs):
    work, rc, out = slurm_runs["failing"]
    assert rc != 0
    # the rule's own `retries:` wins over the profile's
    common = (REPO / "workflow" / "rules" / "common.smk").read_text()
    retries = int(re.search(r"^MEASURE_RETRIES = (\d+) if workflow.is_main_process else 0$", common, flags=re.M)[1])
    attempts = SUBMITTED.findall(out)
    assert len(attempts) == retries + 1, out[-6000:]
    # and only the submitting Snakemake retries: each SLURM job measured once
    for _, slurm_log in attempts:
        assert Path(slurm_log).read_text().count("localrule measure:") == 1, slurm_log

    jobs = _sacct(slurm_runs["env"], [job_id for job_id, _ in attempts])
    assert [jobs[job_id]["state"] for job_id, _ in attempts] == ["FAILED"] * (retries + 1)

    # the report names the rule's log and the SLURM log of the last attempt, and both say why
    last_id, slurm_log = attempts[-1]
    rule_log = "logs/measure/llama-tiny/dtype=fp16/batch=2/rep=0.log"
    assert "Error in rule measure" in out and rule_log in out and slurm_log in out
    assert f"SLURM-job '{last_id}' failed" in out
    reason = "config key device is 'cuda' but torch sees no CUDA GPU"
    assert reason in (work / rule_log).read_text()
    assert reason in out  # show-failed-logs prints the rule's log
    assert "Error in rule measure" in Path(slurm_log).read_text()  # kept, as the plugin does for failed jobs

    # nothing half-written is left for a later run to aggregate
    shards = work / "results" / "shards"
    assert not shards.exists() or not [p for p in shards.rglob("*") if p.is_file()]
