"""The compiler's environment for a measurement job, set before torch is imported (in the
job, and so in the fork server it starts, whose key includes these variables).

- TORCHINDUCTOR_CACHE_DIR: one Inductor cache for every job of the run, so a repeat reuses
  what the first repeat of its cell compiled.
- TORCHINDUCTOR_DYNAMIC_SCALE_RBLOCK=0: Inductor's `_dynamic_scale_rblock` adds a halved
  RBLOCK config to single-config reductions and benchmarks the two in every process; its
  autotune cache cannot keep that choice (pytorch#189121), so each fresh process pays for
  the benchmark in its first call and may pick the other of two near-tied kernels, which
  is then a difference between repeats. Off, the choice is the same in every process. On
  an H100 (torch 2.11, 2026-11-27, scripts/bench_first_call.py) it took a job's first
  compiled call from 0.90-1.07 s to 0.51-0.70 s, and the forward was no slower (63.1-63.2
  vs 63.4 ms, w8a8 batch 128).
A value the user set wins. Torch-free.
"""

from __future__ import annotations

import os


def set_defaults(cache_dir: str) -> dict[str, str]:
    """Set the variables above where the environment does not; returns their values."""
    wanted = {"TORCHINDUCTOR_CACHE_DIR": os.path.abspath(cache_dir), "TORCHINDUCTOR_DYNAMIC_SCALE_RBLOCK": "0"}
    return {k: os.environ.setdefault(k, v) for k, v in wanted.items()}


def kernel_settings() -> dict[str, str]:
    """The Inductor variables in this process's environment that change the kernels it
    generates (every TORCHINDUCTOR_* but the cache's folder): what a shard records."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("TORCHINDUCTOR_") and k != "TORCHINDUCTOR_CACHE_DIR"}
