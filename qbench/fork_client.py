"""The measurement job's side of the fork server (qbench.fork_server): find the server or
start it, hand it the job, wait for the child's exit status.

Torch-free: a job the server serves never imports torch itself. Whenever the server
cannot be used, `run_job` raises `Unavailable` with the reason before any child exists,
and the job measures in its own process instead. Once a child runs, the job waits for it;
if the server dies meanwhile the child dies with it (PR_SET_PDEATHSIG), and the job falls
back too, once the child is gone.

The wire protocol: one JSON object per line over a Unix stream socket. The job sends
{"op": "measure", ...}; the server answers {"event": "started", "pid": ...} right after the
fork and {"event": "exit", "returncode": ...} when the child has been reaped. A job that
goes away (killed by Snakemake or by hand) closes the socket, and the server kills the
job's child.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from qbench.startup import process_start

log = logging.getLogger("qbench.measure")  # the job's log speaks of its measurement

SERVER_DIR = ".qbench-cache/fork-server"  # relative: Unix socket paths may hold 107 bytes at most
START_TIMEOUT_S = 180.0  # the server imports torch, Dynamo and Inductor first: slow on a busy machine
ACK_TIMEOUT_S = 30.0  # connect to "started": a fork takes milliseconds
CHILD_GONE_GRACE_S = 30.0  # child gone but no status from a live server: give up after this

# Environment read when torch is imported (the server has imported it already): a job whose
# value differs needs a server of its own. Variables read later (CUDA_VISIBLE_DEVICES at CUDA
# start, the compile caches' folders) are set in the child and so are left out.
IMPORT_TIME_ENV = ("TORCH", "PYTORCH", "TRITON", "OMP_", "MKL_", "KMP_", "LD_", "PYTHON", "CUDA_MODULE", "QBENCH_PRELOAD")
LAZY_ENV = {"TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "PYTORCH_CUDA_ALLOC_CONF", "PYTHONUNBUFFERED"}


class Unavailable(RuntimeError):
    """The fork server cannot be used for this job; the message says why."""


def server_dir() -> Path:
    """Where the socket lives: the run's cache folder, or, under SLURM, the node's /tmp, one
    folder per SLURM job, so that a server never serves a job of another allocation (its
    cgroup, its GPUs)."""
    if os.environ.get("SLURM_JOB_ID"):
        return Path(f"/tmp/qbench-fork-server-{os.getuid()}/slurm-{os.environ['SLURM_JOB_ID']}")
    return Path(SERVER_DIR)


def server_key() -> str:
    """Names the server: a job uses only a server with its interpreter, its torch, its
    qbench source and its import-time environment, so a changed checkout or venv gets a
    new one (the old one exits when idle)."""
    h = hashlib.sha256()
    h.update(os.path.realpath(sys.executable).encode() + sys.version.encode())
    qbench_dir = Path(__file__).resolve().parent
    for f in sorted(qbench_dir.glob("*.py")):
        h.update(str(f).encode() + f.read_bytes())
    spec = importlib.util.find_spec("torch")  # finds torch without importing it
    if spec is not None and spec.origin:
        torch_dir = Path(spec.origin).parent
        version = torch_dir / "version.py"
        h.update(str(torch_dir).encode() + (version.read_bytes() if version.exists() else b""))
    for k in sorted(os.environ):
        if k.startswith(IMPORT_TIME_ENV) and k not in LAZY_ENV:
            h.update(f"{k}={os.environ[k]}\n".encode())
    return h.hexdigest()[:12]


def socket_path(key: str, folder: Path | None = None) -> Path:
    return (folder or server_dir()) / f"{key}.sock"


def unusable_path(path: Path) -> Path:
    return path.with_suffix(".unusable")


def mark_unusable(path: Path, reason: str) -> None:
    """A server that cannot serve here says so once, for every later job of its key, rather
    than being started (and importing torch) again by each of them."""
    with contextlib.suppress(OSError):
        unusable_path(path).write_text(reason + "\n")


def send(sock: socket.socket, msg: dict) -> None:
    sock.sendall(json.dumps(msg).encode() + b"\n")


class LineReader:
    """JSON lines from a socket; `read` returns None at end of stream."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    def read(self, timeout: float | None) -> dict | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.sock], [], [], left)[0]:
                raise TimeoutError
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


def connect(path: Path, remove_stale: bool = False) -> socket.socket | None:
    """A connection to a live server at `path`, or None. With `remove_stale` (only under
    the start lock, so no job removes a socket a new server has just put in place), a
    socket file nobody listens on, a dead server's, is removed."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return sock
    except OSError as exc:
        sock.close()
        if remove_stale and exc.errno == errno.ECONNREFUSED:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # stale: its server died without cleaning up
        return None


def _start_ticks(pid: int) -> float | None:
    """The process's start in seconds since boot, exact to the tick (qbench.startup), which
    names a process for its whole life. psutil's create_time adds /proc/stat's boot time,
    which each process reads once, in whole seconds, and which moves while NTP corrects the
    clock: a server and a job that read it 1 s apart disagree on whether the run lives.
    The likely cause of a server that exited after its first two jobs on a freshly started
    2 × H200 VM (2026-11-26: a second server started, 14 s more wall time)."""
    try:
        return process_start(pid)
    except (OSError, ValueError, IndexError):
        return None


def snakemake_run() -> dict | None:
    """The Snakemake process this job belongs to (the outermost one among its ancestors),
    so the server can exit when the run is over; None outside Snakemake."""
    try:
        import psutil

        found = None
        for p in psutil.Process().parents():
            with contextlib.suppress(psutil.Error):
                if any("snakemake" in part for part in p.cmdline()[:3]):
                    found = {"pid": p.pid, "create_time": p.create_time(), "start": _start_ticks(p.pid)}
        return found
    except Exception:  # only a hint for the server's lifetime
        return None


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float):
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Unavailable(f"another job held {path} for {timeout:.0f} s")
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def start_server(path: Path, key: str, idle_s: float) -> subprocess.Popen:
    """Start a server in its own session (so that killing the job or Snakemake's process
    group leaves it alone), logging to <key>.log beside the socket."""
    import qbench

    env = dict(os.environ)
    root = str(Path(qbench.__file__).resolve().parents[1])  # this checkout's qbench, installed or not
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(path.with_suffix(".log"), "a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "qbench.fork_server", "--socket", str(path), "--key", key, "--idle-s", str(idle_s)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip


def ensure_server(idle_s: float, folder: Path | None = None, start_timeout_s: float = START_TIMEOUT_S) -> socket.socket:
    """A connection to this machine's server, starting one if none runs. Race-free: jobs
    that start together take turns on a lock file, and the first starts the server while
    the others wait for it; the server also holds a lock of its own while it lives."""
    key = server_key()
    path = socket_path(key, folder)
    sock = connect(path)
    if sock is not None:
        return sock
    if unusable_path(path).exists():
        reason = unusable_path(path).read_text().strip()
        raise Unavailable(f"{reason} (found earlier; delete {unusable_path(path)} to try again)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.parent / "start.lock", start_timeout_s):
        sock = connect(path, remove_stale=True)  # another job may have started it while this one waited
        if sock is not None:
            return sock
        proc = start_server(path, key, idle_s)
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            sock = connect(path)
            if sock is not None:
                return sock
            if proc.poll() is not None:
                why = unusable_path(path).read_text().strip() if unusable_path(path).exists() else "see its log"
                raise Unavailable(f"the fork server exited with status {proc.returncode} before it was ready: {why} "
                                  f"({path.with_suffix('.log')})")  # fmt: skip
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, 9)
        log_path = path.with_suffix(".log")
        raise Unavailable(f"the fork server was not ready after {start_timeout_s:.0f} s (see {log_path})")


def _process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")  # a zombie has exited
    except FileNotFoundError:
        return True


def run_job(request: dict, idle_s: float, folder: Path | None = None) -> int:
    """Have the server measure `request` (a JobRequest as a dict) in a fresh child; the
    child's exit status (a signal N as 128 + N). Raises Unavailable, the reason in its
    message, whenever the job should measure in its own process instead."""
    try:
        sock = ensure_server(idle_s, folder)
    except OSError as exc:
        raise Unavailable(f"cannot reach the fork server: {exc}") from exc
    with sock:
        reader = LineReader(sock)
        try:
            send(sock, {"op": "measure", "job": request, "cwd": os.getcwd(), "env": dict(os.environ),
                        "run": snakemake_run()})  # fmt: skip
            msg = reader.read(ACK_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"the fork server did not take the job ({exc.__class__.__name__}: {exc})") from exc
        if msg is None or msg.get("event") != "started":
            reason = (msg or {}).get("reason", "it closed the connection")
            raise Unavailable(f"the fork server refused the job: {reason}")
        pid = msg["pid"]
        log.info("measuring in fork-server child %d (server %d)", pid, msg.get("server_pid", -1))
        gone_since = None
        while True:
            try:
                msg = reader.read(2.0)
            except TimeoutError:
                if _process_gone(pid):  # the server should report within a moment
                    gone_since = gone_since or time.monotonic()
                    if time.monotonic() - gone_since > CHILD_GONE_GRACE_S:
                        log.error("fork-server child %d is gone and the server did not say how it ended", pid)
                        return 1
                continue
            except (OSError, ValueError):
                msg = None
            if msg is None:  # the server died: its child gets SIGKILL from the kernel
                deadline = time.monotonic() + CHILD_GONE_GRACE_S
                while not _process_gone(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not _process_gone(pid):
                    log.error("the fork server died and its child %d is still running; not measuring twice", pid)
                    return 1
                raise Unavailable(f"the fork server died while child {pid} measured")
            if msg.get("event") == "exit":
                return int(msg["returncode"])
