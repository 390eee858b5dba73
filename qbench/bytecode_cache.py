"""Compiled Python bytecode for the run's processes where the environment keeps none.

Container images often set PYTHONDONTWRITEBYTECODE=1, and uv (by default) or
`pip install --no-compile` install packages without .pyc files. Then every Python process
compiles torch, Dynamo and Inductor from source again. On the H100 machine (torch 2.11,
2026-11-27, `scripts/bench_imports.py`), 688 of the 795 modules that `import torch` loads
had no .pyc, and the fork server's imports took 12.8-16.4 s, against 3.9 s on a 2-core
CPU VM whose packages had theirs. Each job's own process (Snakemake's script preamble)
and each aggregate, plot and report job paid the same for what it imported.

`use(folder)` points this process, and every process it starts, at a bytecode cache in
the run's cache folder (PYTHONPYCACHEPREFIX): the first process that imports a module
compiles it and writes its .pyc there; later ones read it. No source tree is written to.
It does so only where torch's bytecode is neither there nor going to be written (a
package with its .pyc files is read as it is), never over a PYTHONPYCACHEPREFIX the user
set; QBENCH_BYTECODE_CACHE=0 turns it off, =1 on wherever the user set no prefix.
Torch-free: it finds torch without importing it.
"""

from __future__ import annotations

import importlib.util
import os
import sys

SWITCH = "QBENCH_BYTECODE_CACHE"  # "0": never; "1": always (unless the user set a prefix); unset: where needed
FOLDER = ".qbench-cache/pycache"


def _writable(path: str) -> bool:
    """Whether a .pyc could be written at `path`: its folder, or the first existing parent
    (Python creates the missing __pycache__), is writable."""
    folder = os.path.dirname(path)
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    return bool(folder) and os.access(folder, os.W_OK)


def uncached_reason(probe: str = "torch") -> str | None:
    """Why this process (and those it starts) would compile `probe`'s package from source
    every time: it has no .pyc and Python will not write one. None where its bytecode is
    cached, or where the user chose the cache's place."""
    if os.environ.get("PYTHONPYCACHEPREFIX") or sys.pycache_prefix:
        return None
    spec = importlib.util.find_spec(probe)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    pyc = importlib.util.cache_from_source(spec.origin)
    if os.path.exists(pyc):
        return None
    if sys.dont_write_bytecode or os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return f"{probe} has no compiled bytecode and PYTHONDONTWRITEBYTECODE is set"
    if not _writable(pyc):
        return f"{probe} has no compiled bytecode and its folder is read-only"
    return None


def use(folder: str = FOLDER, probe: str = "torch") -> str | None:
    """Cache bytecode under `folder` for this process and those it starts, where
    `uncached_reason` says it is needed, or always with QBENCH_BYTECODE_CACHE=1; returns
    why (None: nothing changed)."""
    switch = os.environ.get(SWITCH)
    if switch == "0" or os.environ.get("PYTHONPYCACHEPREFIX") or sys.pycache_prefix:
        return None
    reason = f"{SWITCH}=1" if switch == "1" else uncached_reason(probe)
    if reason is None:
        return None
    prefix = os.path.abspath(folder)
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.pycache_prefix = prefix  # this process's later imports, too
    sys.dont_write_bytecode = False
    return reason
