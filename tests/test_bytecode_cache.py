"""The run's bytecode cache (qbench.bytecode_cache), in real Python processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qbench import bytecode_cache

ROOT = Path(__file__).resolve().parents[1]


def make_package(where: Path) -> Path:
    pkg = where / "pkgx"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "first.py").write_text("A = 1\n")
    (pkg / "second.py").write_text("B = 2\n")
    return pkg


def env_for(tmp_path: Path, **extra) -> dict:
    drop = ("PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE", bytecode_cache.SWITCH)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", **extra)
    return env


# use() in a process where bytecode is not written; then an import there and one in a child
SCRIPT = """
import subprocess, sys
from qbench.bytecode_cache import use
print(use(sys.argv[1], probe="pkgx"))
import pkgx.first
subprocess.run([sys.executable, "-c", "import pkgx.second"], check=True)
"""


def test_without_bytecode_writing_the_run_caches_it_for_itself_and_its_children(tmp_path):
    pkg = make_package(tmp_path / "site")
    prefix = tmp_path / "cache" / "pycache"
    env = env_for(tmp_path / "site", PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(prefix)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pkgx has no compiled bytecode and PYTHONDONTWRITEBYTECODE is set"
    cached = {p.name.split(".")[0] for p in prefix.rglob("*.pyc")}
    assert {"first", "second"} <= cached  # this process's import and its child's
    assert not (pkg / "__pycache__").exists()  # the source tree is left alone


def test_a_users_own_settings_win(tmp_path, monkeypatch):
    make_package(tmp_path / "site")
    env = env_for(tmp_path / "site", PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=str(tmp_path / "mine"))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "ours")], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None" and not (tmp_path / "ours").exists()
    env = env_for(tmp_path / "site", PYTHONDONTWRITEBYTECODE="1", **{bytecode_cache.SWITCH: "0"})
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "ours")], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "None" and not (tmp_path / "ours").exists()


def test_bytecode_that_python_caches_itself_is_left_alone(tmp_path, monkeypatch):
    pkg = make_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delenv("PYTHONPYCACHEPREFIX", raising=False)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    assert bytecode_cache.uncached_reason("pkgx") is None  # no .pyc yet, but Python may write one
    monkeypatch.setattr(bytecode_cache.os, "access", lambda path, mode: False)  # a read-only install
    assert bytecode_cache.uncached_reason("pkgx") == "pkgx has no compiled bytecode and its folder is read-only"
    assert bytecode_cache.uncached_reason("no_such_package_here") is None
    # a package installed with its .pyc files is read as it is, bytecode writing or not
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(pkg)], check=True)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    assert bytecode_cache.uncached_reason("pkgx") is None
    monkeypatch.setenv(bytecode_cache.SWITCH, "1")  # unless asked for
    assert bytecode_cache.use(str(tmp_path / "ours"), probe="pkgx") == "QBENCH_BYTECODE_CACHE=1"
    assert os.environ["PYTHONPYCACHEPREFIX"] == str(tmp_path / "ours") and sys.pycache_prefix == str(tmp_path / "ours")
    assert "PYTHONDONTWRITEBYTECODE" not in os.environ and not sys.dont_write_bytecode
    # use() set it, not monkeypatch: delenv here would record use()'s value and put it back
    # after the test, so every later test's processes would share this cache
    del os.environ["PYTHONPYCACHEPREFIX"]  # monkeypatch restores sys's attributes
