"""Where the fork server's start goes: each preloaded module's import time in this fresh
process, and whether Python could use (or write) cached bytecode for it, which decides
whether an import reads a .pyc or compiles the source again.

On the H100 machine the server's imports took 14-23 s (2026-11-27), against 3.9 s on a
2-core CPU VM: this says which modules and why.

    python scripts/bench_imports.py [--optional] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path


def bytecode_state(name: str) -> dict:
    """For an imported module: its source, whether its cached .pyc exists, and whether
    the folder that .pyc goes to is writable (no: every process compiles it again)."""
    mod = sys.modules.get(name)
    src = getattr(mod, "__file__", None)
    if not src or not src.endswith(".py"):
        return {"source": src}
    cached = importlib.util.cache_from_source(src)
    folder = Path(cached).parent
    probe = folder if folder.exists() else folder.parent
    return {"source": src, "pyc_exists": os.path.exists(cached), "pyc_dir_writable": os.access(probe, os.W_OK)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--optional", action="store_true", help="also the server's optional preloads")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    t_start = time.perf_counter()
    from qbench import fork_server  # torch-free

    names = fork_server.PRELOAD + (fork_server.PRELOAD_OPTIONAL if args.optional else ())
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    rows = []
    for name in names:
        before = set(sys.modules)
        t = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional module this torch lacks
            rows.append({"module": name, "error": f"{exc.__class__.__name__}: {exc}"})
            continue
        new = set(sys.modules) - before
        states = [bytecode_state(n) for n in new]
        py = [s for s in states if "pyc_exists" in s]
        rows.append({
            "module": name, "s": round(time.perf_counter() - t, 3), "new_modules": len(new), "py_modules": len(py),
            "pyc_missing": sum(not s["pyc_exists"] for s in py),
            "pyc_dir_not_writable": sum(not s["pyc_dir_writable"] for s in py),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    total = time.perf_counter() - t_start
    facts = {
        "total_s": round(total, 2), "python": sys.version.split()[0], "executable": sys.executable,
        "dont_write_bytecode": sys.flags.dont_write_bytecode, "pycache_prefix": sys.pycache_prefix,
        "cpus": os.cpu_count(), "env": {k: v for k, v in os.environ.items() if k.startswith("PYTHON")},
    }  # fmt: skip
    print(json.dumps(facts), flush=True)
    if args.json:
        json.dump({"facts": facts, "rows": rows}, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
