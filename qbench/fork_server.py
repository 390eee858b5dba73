"""A per-machine fork server for measurement jobs: it imports torch, Dynamo, Inductor and
qbench once, and forks a child per job before any CUDA call.

Each child is a fresh process for everything that matters to a measurement: the CUDA
context, the allocator, compiled code, the GPU lock; what it inherits is imported Python
modules. So a repeat is still one fresh process (docs/PERFORMANCE.md), minus the 5-10 s
of imports that every job paid before. The rules that keep forking safe:
- the server never touches CUDA (checked before every fork: torch's CUDA state and any
  open /dev/nvidia* file, which NVML or the driver would leave),
- it runs no thread (checked before every fork: /proc/self/task), so no lock is held by
  a thread that the child would not have; OpenBLAS (numpy) is kept to one thread,
- it starts no pool (Inductor's compile workers start in the child, as they did in a job).
If a check fails the job is refused with the reason, measures in its own process, and
the server exits.

Lifetime: started by the first job (qbench.fork_client), it exits when idle for
`--idle-s`, when the Snakemake run(s) it served are gone, when its socket is removed or
replaced, on SIGTERM, or on {"op": "stop"}. A job that goes away takes its child with it
(SIGTERM, SIGKILL after a grace); a server that dies takes its children with it
(PR_SET_PDEATHSIG).

    python -m qbench.fork_server --socket .qbench-cache/fork-server/KEY.sock --key KEY --idle-s 120
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import gc
import importlib
import logging
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from qbench.fork_client import LineReader, mark_unusable, send
from qbench.startup import process_start
from qbench.visible_gpus import visible_gpu_entries

log = logging.getLogger("qbench.fork_server")

# Imported once here, inherited by every child: what a job spent its first seconds on.
PRELOAD = (
    "numpy", "pandas", "pyarrow", "pyarrow.parquet", "psutil",
    "torch", "torch._dynamo", "torch._inductor", "torch._inductor.compile_fx", "torch._inductor.codecache",
    "torch._inductor.lowering", "torch._inductor.graph", "torch._functorch.aot_autograd",
    "qbench.config", "qbench.device", "qbench.measure", "qbench.measure_job", "qbench.shards", "qbench.logs",
)  # fmt: skip
# What a child's first compiled call still imported after PRELOAD (a 4-layer model with
# w8a8-int8 compile, torch 2.13 CPU, 2026-11-26): Dynamo's backend registry, Inductor's
# codegen backends for every device, torch.export passes, and through Dynamo's check for
# local_map HOPs torch.distributed.tensor.experimental, whose import registers two custom
# ops (0.46 s of an H100 job's first call in its cProfile, 2026-11-26). All device-free
# Python; optional because torch versions differ in what exists.
PRELOAD_OPTIONAL = (
    "torch._dynamo.backends.inductor", "torch._dynamo.backends.cudagraphs", "torch._dynamo.backends.distributed",
    "torch._dynamo.backends.onnxrt", "torch._dynamo.backends.tensorrt", "torch._dynamo.backends.torchxla",
    "torch._dynamo.backends.tvm", "torch._dynamo.dce_extra_outputs",
    "torch._export.passes.add_runtime_assertions_for_constraints_pass", "torch._export.passes.collect_tracepoints_pass",
    "torch._functorch._aot_autograd.subclass_codegen", "torch._higher_order_ops.passes.inline_invoke_subgraph",
    "torch._inductor.codegen.cpp_wrapper_cpu_array_ref", "torch._inductor.codegen.cpp_wrapper_gpu",
    "torch._inductor.codegen.cpp_wrapper_mps", "torch._inductor.codegen.cuda_combined_scheduling",
    "torch._inductor.codegen.cutedsl.cutedsl_scheduling", "torch._inductor.codegen.cutlass.scheduling",
    "torch._inductor.codegen.halide", "torch._inductor.codegen.memory_planning", "torch._inductor.codegen.mps",
    "torch._inductor.codegen.nv_universal_gemm", "torch._inductor.codegen.pallas",
    "torch._inductor.codegen.python_wrapper_mtia", "torch._inductor.codegen.rocm.rocm_cpp_scheduling",
    "torch._inductor.codegen.wrapper_fxir", "torch._inductor.codegen.xpu.xpu_combined_scheduling",
    "torch._inductor.hooks", "torch._subclasses.schema_check_mode", "torch.distributed.tensor.experimental",
    "torch.export._trace", "torch.export._unlift", "torch.fx.experimental.validator", "torch.utils.cpp_extension",
    "torch.utils.file_baton",
    # still imported by every H100 job's first call after the above (2026-11-27 sweep's logs)
    "multiprocessing.synchronize", "torch._inductor.fx_passes.apply_gumbel_max_trick",
    "torch._inductor.fx_passes.efficient_conv_bn_eval", "torch._inductor.fx_passes.freezing_patterns",
    "torch._inductor.fx_passes.quantization", "triton.tools.tensor_descriptor",
)  # fmt: skip
OPTIONAL_ENV = "QBENCH_PRELOAD_OPTIONAL"  # "0": leave them to the children (an A/B; part of the server's key)
KILL_GRACE_S = 5.0  # SIGTERM to SIGKILL, for the child of a job that went away
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def preload() -> None:
    # No thread may run at fork time: one OpenBLAS thread (numpy's BLAS measures nothing
    # here), and no jemalloc background thread (pyarrow starts one on import otherwise).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
    # Any torch.cuda.is_available() asks NVML, not the CUDA runtime, which would poison forks.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    optional = PRELOAD_OPTIONAL if os.environ.get(OPTIONAL_ENV, "1") != "0" else ()
    missing, t_optional = [], 0.0
    with gpus_counted_from_device_files():  # imports torch first
        for name in PRELOAD + optional:
            before, t = nvidia_fds(), time.perf_counter()
            try:
                importlib.import_module(name)
            except Exception:  # an optional module this torch lacks, or cannot import: the child imports what it needs
                if name not in optional:
                    raise
                missing.append(name)
            if name in optional:
                t_optional += time.perf_counter() - t
            if nvidia_fds() - before:  # say which import did it: the next check refuses to fork
                log.info("importing %s opened %s", name, ", ".join(sorted(nvidia_fds() - before)))
    if optional:
        log.info("optional preloads: %d of %d imported in %.2f s%s", len(optional) - len(missing), len(optional),
                 t_optional, f" (not in this torch: {', '.join(missing)})" if missing else "")  # fmt: skip
    warm_compile_keys()
    release_nvml()
    gc.collect()
    gc.freeze()  # children do not copy the preloaded objects' pages when the collector runs


def warm_compile_keys() -> None:
    """Compute once, for every child, the keys a process's first compile hashes from
    files on disk: Triton's (its source files; 0.49 s of a job's 2.2 s first call on the
    H100, cProfile, 2026-11-26) and torch's. Both are cached per process and touch no GPU."""
    keys = (  # Triton's own cached function (torch 2.11 calls it directly), torch's wrapper, torch's key
        ("torch._inductor.runtime.triton_compat", "triton_key"),
        ("torch._inductor.codecache", "triton_key"),
        ("torch._inductor.codecache", "torch_key"),
    )
    for module, name in keys:
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        t = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # a child computes it then, as before
            log.info("%s not precomputed: %s", name, exc)
        else:
            log.info("%s.%s precomputed in %.2f s", module, name, time.perf_counter() - t)


def visible_gpu_count() -> int:
    """How many GPUs CUDA would see, from /dev/nvidiaN and CUDA_VISIBLE_DEVICES alone:
    no driver call."""
    return len(visible_gpu_entries())


@contextlib.contextmanager
def gpus_counted_from_device_files():
    """While the server imports, torch.cuda.device_count() and is_available() answer from
    the device files. Asking NVML is not harmless: on the H100 driver (580) nvmlInit
    starts CUDA's driver too (/dev/nvidia-uvm and a `cuda…` thread stay after
    nvmlShutdown), so the server could never fork; an import of torch._inductor.compile_fx
    asked. Module-level caches get the same count the driver would give. Each caller is
    logged once; the originals are back before any job is forked."""
    import torch

    count, seen = visible_gpu_count(), set()

    def device_count() -> int:
        where = " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(traceback.extract_stack()[-5:-1]))
        if where not in seen:
            seen.add(where)
            log.info("torch.cuda asked for the GPU count during the imports (%s): %d, from /dev", where, count)
        return count

    saved = {name: getattr(torch.cuda, name) for name in ("device_count", "is_available")}
    torch.cuda.device_count = device_count
    torch.cuda.is_available = lambda: device_count() > 0
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.cuda, name, fn)


def nvidia_fds() -> set[str]:
    """The NVIDIA device files this process holds open."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("/dev/nvidia"):
                out.add(target)
    return out


def release_nvml() -> None:
    """An import that asks torch.cuda.is_available() (or reads a device count) starts NVML
    (PYTORCH_NVML_BASED_CUDA_CHECK) and leaves it running, holding /dev/nvidiactl. NVML,
    unlike a CUDA context, can be shut down again: do so, as many times as it was started,
    so the server forks without an NVIDIA handle (seen on the H100: every job fell back
    to measuring in its own process). CUDA itself is never touched here."""
    torch = sys.modules.get("torch")
    if not nvidia_fds() or (torch is not None and torch.cuda.is_initialized()):
        return
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return
    for _ in range(16):  # NVML counts nvmlInit calls; each needs its nvmlShutdown
        if not nvidia_fds() or nvml.nvmlShutdown() != 0:
            break
    log.info("NVML shut down after the imports; NVIDIA files still open: %s", sorted(nvidia_fds()) or "none")


def fork_problem() -> str | None:
    """Why forking now would give a child that is not a fresh process, or None."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA is initialized in the fork server"
    held = nvidia_fds()
    if held:
        return f"the fork server holds {min(held)} open (CUDA or NVML was started)"
    tasks = os.listdir("/proc/self/task")
    if len(tasks) > 1:
        names = []
        for t in tasks:
            with contextlib.suppress(OSError), open(f"/proc/self/task/{t}/comm") as fh:
                names.append(fh.read().strip())
        return f"the fork server runs {len(tasks)} threads ({', '.join(names)}); a fork keeps only one"
    return None


def exit_status(wait_status: int) -> int:
    """A shell's view of a wait status: the exit code, or 128 + N for signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


# --- the child ------------------------------------------------------------------------


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds, so a shard being written is removed, not left half


def child_main(msg: dict, server_pid: int, close_fds: list[int]) -> int:
    """Runs in the forked child: become the job's process, measure, return the status."""
    os.setsid()  # its own process group: the server can kill it with its compile workers
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    libc.prctl(PR_SET_NAME, b"qbench-measure")  # in ps and top, apart from its server
    if os.getppid() != server_pid:  # the server died before prctl took effect
        return 1
    for fd in close_fds:  # the listener, other jobs' sockets, the server's lock
        with contextlib.suppress(OSError):
            os.close(fd)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(msg["cwd"])
    os.environ.clear()
    os.environ.update(msg["env"])  # the job's environment: CUDA_VISIBLE_DEVICES, caches, SLURM_*

    from qbench.logs import log_to
    from qbench.measure_job import LAUNCH_FORK_SERVER, JobRequest, measure

    job = JobRequest.from_dict(msg["job"])
    fd = os.open(job.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)  # native messages (torch's C++ warnings, Triton) go to the job's log too
    os.dup2(fd, 2)
    os.close(fd)
    log_to(job.log)
    try:
        return measure(job, LAUNCH_FORK_SERVER)
    except SystemExit as exc:
        logging.getLogger("qbench.measure").error("terminated (status %s)", exc.code)
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        logging.getLogger("qbench.measure").error("measurement failed:\n%s", traceback.format_exc())
        return 1


def fork_child(msg: dict, close_fds: list[int]) -> int:
    """Fork; in the child, run the job and leave with os._exit (no interpreter teardown:
    the shard is written and fsynced, the log is line-buffered)."""
    server_pid = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = child_main(msg, server_pid, close_fds)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# --- the server -----------------------------------------------------------------------


@dataclass
class Child:
    pid: int
    label: str
    conn: socket.socket | None
    pidfd: int | None
    started: float
    kill_at: float | None = None  # SIGKILL deadline once its job went away


class Server:
    def __init__(self, path: Path, key: str, idle_s: float, lock_fd: int):
        self.path, self.key, self.idle_s, self.lock_fd = path, key, idle_s, lock_fd
        self.sel = selectors.DefaultSelector()
        self.children: dict[int, Child] = {}
        self.runs: dict[int, dict] = {}  # Snakemake runs served: pid -> {"start", "create_time"}
        self.last_busy = time.monotonic()
        self.served = 0
        self.stop: str | None = None
        self.listener = self._listen()

    def _listen(self) -> socket.socket:
        """Bind beside the final path, then rename: a job that can connect finds a server
        that is ready, and never one half started."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(tmp))
        sock.listen(128)
        os.replace(tmp, self.path)
        self.inode = os.stat(self.path).st_ino
        self.sel.register(sock, selectors.EVENT_READ, ("accept", None))
        return sock

    # the loop

    def serve(self) -> str:
        log.info("ready: pid %d, socket %s, idle timeout %.0f s", os.getpid(), self.path, self.idle_s)
        poll = not hasattr(os, "pidfd_open")
        while self.stop is None:
            for key, _ in self.sel.select(0.05 if poll else 1.0):
                kind, child = key.data
                if kind == "accept":
                    self._accept()
                elif kind == "conn":
                    self._job_readable(child)
                elif kind == "pidfd":
                    self._reap(child)
            if poll:
                for child in list(self.children.values()):
                    self._reap(child, block=False)
            self._kill_overdue()
            self.stop = self.stop or self._why_stop()
        return self.stop

    def _why_stop(self) -> str | None:
        try:
            if os.stat(self.path).st_ino != self.inode:
                return "its socket was replaced"
        except FileNotFoundError:
            return "its socket was removed"
        if self.children:
            return None
        idle = time.monotonic() - self.last_busy
        if idle > self.idle_s:
            return f"idle for {idle:.0f} s"
        if self.runs and not any(_alive(pid, run) for pid, run in self.runs.items()):
            return "the Snakemake run it served is over"
        return None

    # jobs

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(5.0)
        try:
            msg = LineReader(conn).read(5.0)
        except (OSError, TimeoutError, ValueError):
            conn.close()
            return
        op = (msg or {}).get("op")
        if op == "ping":
            send(conn, {"event": "pong", "pid": os.getpid(), "key": self.key, "children": len(self.children),
                        "served": self.served})  # fmt: skip
            conn.close()
        elif op == "stop":
            self.stop = "asked to stop"
            send(conn, {"event": "stopping", "pid": os.getpid()})
            conn.close()
        elif op == "measure":
            self._start_job(conn, msg)
        else:
            conn.close()

    def _start_job(self, conn: socket.socket, msg: dict) -> None:
        problem = fork_problem()
        if problem:
            log.error("refusing a job and exiting: %s", problem)
            mark_unusable(self.path, problem)
            with contextlib.suppress(OSError):
                send(conn, {"event": "refused", "reason": problem})
            conn.close()
            self.stop = problem
            return
        cell = msg["job"]["cell"]
        label = f"{cell['workload']['name']}/{cell['dtype']['name']}/batch={cell['batch']}/rep={cell['rep']}"
        keep = [self.listener.fileno(), self.sel.fileno(), self.lock_fd]
        others = [c.conn.fileno() for c in self.children.values() if c.conn is not None]
        others += [c.pidfd for c in self.children.values() if c.pidfd is not None]
        pid = fork_child(msg, keep + others + [conn.fileno()])
        self.served += 1
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
        child = Child(pid, label, conn, pidfd, time.monotonic())
        self.children[pid] = child
        run = msg.get("run")
        if run:
            self.runs[int(run["pid"])] = run
        log.info("child %d: %s (attempt %s)", pid, label, msg["job"].get("attempt"))
        if pidfd is not None:  # before anything can fail: a child never reaped would keep the server alive
            self.sel.register(pidfd, selectors.EVENT_READ, ("pidfd", child))
        try:
            send(conn, {"event": "started", "pid": pid, "server_pid": os.getpid()})
        except OSError:
            self._job_gone(child)
            return
        conn.setblocking(False)
        self.sel.register(conn, selectors.EVENT_READ, ("conn", child))

    def _job_readable(self, child: Child) -> None:
        """The job sends nothing after its request: readable means it went away."""
        try:
            data = child.conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._job_gone(child)

    def _job_gone(self, child: Child) -> None:
        log.warning("child %d: its job went away; terminating it", child.pid)
        self._close_conn(child)
        _signal_group(child.pid, signal.SIGTERM)
        child.kill_at = time.monotonic() + KILL_GRACE_S

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if child.kill_at is not None and now >= child.kill_at and not _exited(child.pid):
                log.warning("child %d: still alive %.0f s after SIGTERM; SIGKILL", child.pid, KILL_GRACE_S)
                _signal_group(child.pid, signal.SIGKILL)
                child.kill_at = float("inf")

    def _reap(self, child: Child, block: bool = True) -> None:
        pid, status = os.waitpid(child.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        code = exit_status(status)
        log.info("child %d: %s ended with status %d after %.1f s", child.pid, child.label, code,
                 time.monotonic() - child.started)  # fmt: skip
        if child.conn is not None:
            with contextlib.suppress(OSError):
                child.conn.setblocking(True)
                send(child.conn, {"event": "exit", "returncode": code})
            self._close_conn(child)
        if child.pidfd is not None:
            self.sel.unregister(child.pidfd)
            os.close(child.pidfd)
        del self.children[child.pid]
        self.last_busy = time.monotonic()

    def _close_conn(self, child: Child) -> None:
        if child.conn is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(child.conn)
        child.conn.close()
        child.conn = None

    def close(self) -> None:
        """Leave nothing behind: children of a server that stops are its jobs' children."""
        for child in list(self.children.values()):
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        while self.children and time.monotonic() < deadline:
            for child in list(self.children.values()):
                self._reap(child, block=False)
            time.sleep(0.05)
        for child in self.children.values():
            _signal_group(child.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                self.path.unlink()
        self.listener.close()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the child and the compile workers it started
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)  # not yet in its own group


def _exited(pid: int) -> bool:
    """Exited and waiting to be reaped (a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def _alive(pid: int, run: dict) -> bool:
    """Whether the process `run` describes still lives: same pid, same start. The start
    tick is exact (see fork_client._start_ticks); psutil's create_time, where /proc gave no
    tick, can be off by the boot time's whole-second rounding, hence its tolerance."""
    if run.get("start") is not None:
        try:
            return process_start(pid) == float(run["start"])
        except (OSError, ValueError, IndexError):
            return False
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - float(run["create_time"])) < 1.5
    except psutil.Error:
        return False


def _lifetime_lock(path: Path, wait_s: float = 10.0) -> int | None:
    """One server per socket: held for the server's life. A server that found its socket
    gone is on its way out, so wait a little for its lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", required=True, type=Path)
    ap.add_argument("--key", default="")
    ap.add_argument("--idle-s", type=float, default=120.0)
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")  # fmt: skip
    lock_fd = _lifetime_lock(args.socket.with_suffix(".lock"))
    if lock_fd is None:
        log.error("another fork server holds %s; exiting", args.socket.with_suffix(".lock"))
        return 3
    t0 = time.perf_counter()
    preload()
    log.info("preloaded %d modules in %.1f s (bytecode: %s)", len(PRELOAD), time.perf_counter() - t0,
             f"cached in {sys.pycache_prefix}" if sys.pycache_prefix else "not written" if sys.dont_write_bytecode
             else "beside the sources")  # fmt: skip
    problem = fork_problem()
    if problem:
        log.error("cannot serve: %s", problem)
        mark_unusable(args.socket, problem)
        return 4
    server = Server(args.socket, args.key, args.idle_s, lock_fd)

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    reason = "?"
    try:
        reason = server.serve()
    except SystemExit as exc:
        reason = f"signal (status {exc.code})"
    finally:
        server.close()
        log.info("exiting: %s; served %d jobs", reason, server.served)
    return 0


if __name__ == "__main__":
    sys.exit(main())
