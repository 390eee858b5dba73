"""The fork server (qbench.fork_server, qbench.fork_client) with real processes: real
Snakemake runs of a tiny experiment on the CPU, a real server, real kills. Nothing stands
in for the server; the only thing a test fakes is nothing at all, it only kills things
(the child, the job, the server) at the moment a real failure would."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import torch

from qbench import fork_client
from qbench.fork_server import fork_problem
from qbench.shards import SCHEMA
from tests.conftest import REPO, run_snakemake
from tests.test_faults import (
    LONG_JOBS,
    measure_process,
    shards_in,
    snakemake,
    start_snakemake,
    tiny_config,
    wait_for,
    write_config,
)

SERVER_DIR = Path(".qbench-cache/fork-server")
LOG = "logs/measure/tiny/dtype=fp16/batch=2/rep=0.log"
# The target of runs that check shards and the server: the charts and the report (30-40 s
# a run on a CI machine) are tested in test_workflow and test_charts_report.
SUMMARY = "results/summary.csv"


def is_fork_server(p: psutil.Process) -> bool:
    """A server or one of its children (which carry its command line)."""
    try:
        return "qbench.fork_server" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def servers_in(folder: Path) -> list[psutil.Process]:
    """Live fork servers started in `folder` (their working directory), not their children."""
    found = []
    for p in psutil.process_iter():
        try:
            if is_fork_server(p) and Path(p.cwd()).resolve() == folder.resolve() and not is_fork_server(p.parent()):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def no_server_left(tmp_path):
    """Stop whatever server a test started under tmp_path, even when it fails."""
    yield
    for p in psutil.process_iter(["cmdline"]):
        try:
            if "qbench.fork_server" in " ".join(p.info["cmdline"] or []) and str(tmp_path) in p.cwd():
                p.kill()
        except psutil.Error:
            continue


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def server_log(work: Path) -> str:
    return "".join(p.read_text() for p in (work / SERVER_DIR).glob("*.log"))


def child_pid(work: Path) -> int:
    """The fork-server child measuring now (the last one the server's log announced)."""
    for line in reversed(server_log(work).splitlines()):
        if ": child " in line and "(attempt" in line:
            return int(line.split(": child ")[1].split(":")[0])
    raise AssertionError("no child announced in the server's log")


def launch(path: Path) -> str:
    return pq.read_schema(path).metadata[b"qbench.launch"].decode()


def ping(folder: Path) -> dict:
    """Connect to the folder's server (starting one if none runs) and ask its pid."""
    sock = fork_client.ensure_server(30.0, folder)
    with sock:
        fork_client.send(sock, {"op": "ping"})
        return fork_client.LineReader(sock).read(10.0)


# --- through Snakemake -----------------------------------------------------------------


@pytest.mark.workflow
def test_a_shard_through_the_server_is_like_one_made_in_process(tmp_path, no_server_left):
    """The same cells, once through the server and once with `measure.fork_server: false`:
    the shards have the same schema, columns and metadata keys, and say how they were
    made; the config key off starts no server; the server leaves when the run is over."""
    cfg = tiny_config(dtypes=("fp16", "w8a8"))
    on, off = tmp_path / "on", tmp_path / "off"
    snakemake(on, write_config(on, cfg), SUMMARY)
    snakemake(off, write_config(off, {**cfg, "measure": {"fork_server": False}}), SUMMARY)

    on_shards, off_shards = shards_in(on), shards_in(off)
    assert [p.relative_to(on) for p in on_shards] == [p.relative_to(off) for p in off_shards] and len(on_shards) == 2
    for a, b in zip(on_shards, off_shards):
        ta, tb = pq.read_table(a), pq.read_table(b)
        assert ta.schema.remove_metadata().equals(SCHEMA) and tb.schema.remove_metadata().equals(SCHEMA)
        assert set(ta.schema.metadata) == set(tb.schema.metadata)
        assert ta.schema.metadata[b"qbench.cell_config"] == tb.schema.metadata[b"qbench.cell_config"]
        assert (launch(a), launch(b)) == ("fork_server", "in_process")
        # both ways, the job set the compiler's environment before torch (qbench.compile_env)
        for t in (ta, tb):
            assert json.loads(t.schema.metadata[b"qbench.inductor_env"]) == {"TORCHINDUCTOR_DYNAMIC_SCALE_RBLOCK": "0"}
        da, db = ta.to_pandas(), tb.to_pandas()
        assert len(da) == len(db) == 3 and (da["status"] == "ok").all() and (db["status"] == "ok").all()
        assert da["config_hash"].iloc[0] == db["config_hash"].iloc[0]  # the key is not in the cell's hash
        assert da["rel_error"].iloc[0] == pytest.approx(db["rel_error"].iloc[0], abs=1e-6)
        assert 0 < da["startup_s"].iloc[0] < 60 and 0 < db["startup_s"].iloc[0] < 60
    assert "attempt 1 (fork server)" in (on / LOG).read_text()
    assert "attempt 1 (in process)" in (off / LOG).read_text()
    assert not (off / SERVER_DIR).exists()
    wait_for(lambda: not servers_in(on), timeout=30, what="the server to leave after the run")
    assert "exiting: the Snakemake run it served is over; served 2 jobs" in server_log(on)


@pytest.mark.workflow
def test_a_failing_child_fails_the_job_and_leaves_no_shard(tmp_path, no_server_left):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    work = tmp_path / "work"
    proc = snakemake(work, write_config(work, tiny_config(device="cuda")), check=False)
    assert proc.returncode == 1
    log = (work / LOG).read_text()
    assert "attempt 3 (fork server)" in log  # each try ran in a child
    assert "ERROR qbench.measure: config key device is 'cuda' but torch sees no CUDA GPU" in log
    assert "Traceback" not in log and not shards_in(work)


@pytest.mark.workflow
def test_a_killed_child_fails_its_try_and_the_retry_measures(tmp_path, no_server_left):
    work = tmp_path / "work"
    run = start_snakemake(work, write_config(work, tiny_config(timing=LONG_JOBS)), SUMMARY)
    wait_for(lambda: (work / SERVER_DIR).exists() and ": child " in server_log(work), timeout=120, what="a child")
    pid = child_pid(work)
    os.kill(pid, signal.SIGKILL)
    assert run.wait(timeout=180) == 0, open(run.out_path).read()
    assert "Trying to restart job" in open(run.out_path).read()
    assert f"child {pid}: tiny/fp16/batch=2/rep=0 ended with status 137" in server_log(work)
    (shard,) = shards_in(work)
    assert pq.read_table(shard).column("attempt").to_pylist()[0] == 2 and launch(shard) == "fork_server"


@pytest.mark.workflow
def test_a_job_that_goes_away_takes_its_child_with_it(tmp_path, no_server_left):
    """Snakemake or a user kills the job: its child is terminated too (not left measuring
    beside the retry), and the retry measures."""
    work = tmp_path / "work"
    run = start_snakemake(work, write_config(work, tiny_config(timing=LONG_JOBS)), SUMMARY)
    wait_for(lambda: (work / SERVER_DIR).exists() and ": child " in server_log(work), timeout=120, what="a child")
    pid = child_pid(work)
    measure_process(run).kill()
    wait_for(lambda: gone(pid), timeout=15, what="the child to be terminated")
    assert run.wait(timeout=180) == 0, open(run.out_path).read()
    assert f"child {pid}: its job went away; terminating it" in server_log(work)
    (shard,) = shards_in(work)
    assert pq.read_table(shard).column("attempt").to_pylist()[0] == 2


@pytest.mark.workflow
def test_a_server_killed_during_a_job_falls_back_to_the_job_itself(tmp_path, no_server_left):
    """The server dies mid-measurement: its child dies with it (PR_SET_PDEATHSIG), and the
    job measures in its own process instead of hanging."""
    work = tmp_path / "work"
    run = start_snakemake(work, write_config(work, tiny_config(timing=LONG_JOBS)), SUMMARY)
    wait_for(lambda: (work / SERVER_DIR).exists() and ": child " in server_log(work), timeout=120, what="a child")
    pid = child_pid(work)
    (server,) = servers_in(work)
    server.kill()
    wait_for(lambda: gone(pid), timeout=10, what="the child to die with its server")
    assert run.wait(timeout=180) == 0, open(run.out_path).read()
    log = (work / LOG).read_text()
    assert f"fork server not used: the fork server died while child {pid} measured; measuring in this process" in log
    (shard,) = shards_in(work)
    assert launch(shard) == "in_process" and pq.read_table(shard).column("attempt").to_pylist()[0] == 1


@pytest.mark.workflow
def test_jobs_at_once_are_children_of_one_server(tmp_path, no_server_left):
    """`--resources gpu=2`: two jobs run at once, each in its own child of the one server."""
    work = tmp_path / "work"
    timing = {**LONG_JOBS, "min_time_s": 3.0, "max_time_s": 3.0}
    cfg_path = write_config(work, tiny_config(dtypes=("fp16", "w8a8"), timing=timing))
    run_snakemake(["--cores", "2", "--resources", "gpu=2", "--configfile", str(cfg_path), "--directory", str(work),
                   "results/summary.csv"])  # fmt: skip
    assert len(shards_in(work)) == 2 and all(launch(p) == "fork_server" for p in shards_in(work))
    events = [line.split(": child ")[1] for line in server_log(work).splitlines() if ": child " in line]
    started = [e for e in events if "(attempt" in e]
    assert len(started) == 2 and "ended" not in events[1]  # the second started before the first ended
    assert len({e.split(":")[0] for e in started}) == 2


# --- the client and the server alone --------------------------------------------------


def test_a_stale_socket_is_replaced_by_a_new_server(tmp_path, no_server_left, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = ping(SERVER_DIR)["pid"]
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: gone(first), timeout=10, what="the server to die")
    (sock,) = SERVER_DIR.glob("*.sock")  # left behind: nobody removed it
    second = ping(SERVER_DIR)["pid"]
    assert second != first and not gone(second)
    assert [p.pid for p in servers_in(tmp_path)] == [second]


def test_two_jobs_starting_together_get_one_server(tmp_path, no_server_left):
    code = (
        "from pathlib import Path; from qbench import fork_client as c\n"
        "s = c.ensure_server(30.0, Path('.qbench-cache/fork-server'))\n"
        "c.send(s, {'op': 'ping'}); print(c.LineReader(s).read(10.0)['pid'])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}) for _ in range(3)]  # fmt: skip
    pids = {int(p.communicate(timeout=180)[0].strip()) for p in procs}
    assert len(pids) == 1
    assert [p.pid for p in servers_in(tmp_path)] == list(pids)


def test_the_server_exits_after_its_idle_timeout(tmp_path, no_server_left, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sock = fork_client.ensure_server(1.5, SERVER_DIR)
    sock.close()
    (server,) = servers_in(tmp_path)
    wait_for(lambda: gone(server.pid), timeout=30, what="the idle server to exit")
    assert not list(SERVER_DIR.glob("*.sock"))  # it removed its socket
    assert "exiting: idle for 2 s; served 0 jobs" in server_log(tmp_path)


def test_a_job_gone_before_its_child_started_leaves_nothing_running(tmp_path, no_server_left, monkeypatch):
    """The job asks and goes away at once (killed as the server forks): the child is
    terminated and reaped, and the server, idle again, exits on time."""
    import json
    import socket

    from qbench.measure_job import JobRequest
    from tests.test_faults import experiment

    monkeypatch.chdir(tmp_path)
    cell = experiment(tiny_config(timing=LONG_JOBS)).cell("tiny", "fp16", 2, 0)
    job = JobRequest(cell=cell.as_dict(), output="s.parquet", log="job.log", attempt=1, threads=1, lock_dir="locks")
    fork_client.ensure_server(3.0, SERVER_DIR).close()
    (server,) = servers_in(tmp_path)
    (path,) = SERVER_DIR.glob("*.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        s.sendall(json.dumps({"op": "measure", "job": job.as_dict(), "cwd": str(tmp_path), "env": dict(os.environ),
                              "run": None}).encode() + b"\n")  # fmt: skip
    wait_for(lambda: gone(server.pid), timeout=40, what="the server to reap the child and leave when idle")
    assert "its job went away; terminating it" in server_log(tmp_path)
    assert "ended with status" in server_log(tmp_path) and not (tmp_path / "s.parquet").exists()


def test_the_server_refuses_to_fork_with_a_thread_running():
    """A fork keeps only the forking thread: a server with another one must refuse."""
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert "threads" in (fork_problem() or "")
    finally:
        stop.set()
        t.join()


def test_while_preloading_the_gpu_count_comes_from_device_files(monkeypatch, caplog):
    """An import that asks torch.cuda for GPUs during the preload gets the count of
    /dev/nvidiaN files (capped by CUDA_VISIBLE_DEVICES) without a driver call; the
    caller is logged, and torch's own functions are back afterwards."""
    import logging

    import torch

    from qbench import fork_server

    originals = torch.cuda.device_count, torch.cuda.is_available
    monkeypatch.setattr(fork_server, "visible_gpu_count", lambda: 3)
    with caplog.at_level(logging.INFO, logger="qbench.fork_server"):
        with fork_server.gpus_counted_from_device_files():
            assert torch.cuda.device_count() == 3 and torch.cuda.is_available() is True
    assert (torch.cuda.device_count, torch.cuda.is_available) == originals
    assert "asked for the GPU count during the imports (test_fork_server.py:" in caplog.text
    assert not torch.cuda.is_initialized()


def test_the_visible_gpu_count_honours_cuda_visible_devices(monkeypatch):
    from qbench import fork_server

    monkeypatch.setattr(fork_server.os, "listdir", lambda d: ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert fork_server.visible_gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert fork_server.visible_gpu_count() == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert fork_server.visible_gpu_count() == 0


def test_a_run_is_named_by_its_start_tick_not_by_the_rounded_boot_time():
    """The server's 'is the run it served still alive?': the start tick decides, exactly,
    so a boot time read 1 s apart by job and server (NTP at work) cannot end a live run;
    without a tick, psutil's create_time is trusted to its whole-second rounding only."""
    from qbench.fork_server import _alive
    from qbench.startup import process_start

    me = psutil.Process()
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert _alive(me.pid, {"start": process_start(me.pid), "create_time": me.create_time() + 1.0})
    assert not _alive(me.pid, {"start": process_start(me.pid) + tick, "create_time": me.create_time()})
    assert _alive(me.pid, {"start": None, "create_time": me.create_time() + 1.0})
    assert not _alive(me.pid, {"start": None, "create_time": me.create_time() + 5.0})
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    run = {"start": process_start(child.pid), "create_time": psutil.Process(child.pid).create_time()}
    child.wait()
    assert not _alive(child.pid, run)  # reaped: gone
    found = fork_client._start_ticks(me.pid)
    assert found == process_start(me.pid)


def test_the_server_preloads_what_first_calls_import_and_can_still_fork():
    """PRELOAD_OPTIONAL lands in the server, which may still fork (no thread, no CUDA);
    QBENCH_PRELOAD_OPTIONAL=0 leaves it to the children and names another server."""
    probe = ("import sys, json; from qbench import fork_server as fs; fs.preload(); "
             "print(json.dumps({'loaded': [m for m in fs.PRELOAD_OPTIONAL if m in sys.modules], "
             "'problem': fs.fork_problem()}))")  # fmt: skip
    got = {}
    for value in ("1", "0"):
        env = {**os.environ, "QBENCH_PRELOAD_OPTIONAL": value, "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        got[value] = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert got["1"]["problem"] is None and got["0"]["problem"] is None
    assert "torch.distributed.tensor.experimental" in got["1"]["loaded"]
    assert len(got["1"]["loaded"]) >= len(got["0"]["loaded"]) + 10
    assert "torch.distributed.tensor.experimental" not in got["0"]["loaded"]


def test_the_preload_switch_is_part_of_the_server_key(monkeypatch):
    monkeypatch.delenv("QBENCH_PRELOAD_OPTIONAL", raising=False)
    default = fork_client.server_key()
    monkeypatch.setenv("QBENCH_PRELOAD_OPTIONAL", "0")
    assert fork_client.server_key() != default


def test_the_first_call_names_what_it_imported_without_generated_code(caplog):
    from qbench.measure import log_first_call_imports

    with caplog.at_level("INFO", logger="qbench.measure"):
        log_first_call_imports({"torch.export._trace", "c7dfz625zttucafxgzgam6mo2irpugxzuwp5jtmjzhgiacdne62g.kernel",
                                "torch._inductor.runtime.compile_tasks.crllm3vh2pg244o43m5xdoe2i6piflyw5xtyktlqlnqnrdjlxmfr"})
        log_first_call_imports(set())
    assert [r.getMessage() for r in caplog.records] == ["first call imported 1 module(s): torch.export._trace"]
