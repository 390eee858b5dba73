"""Where a measurement job's first compiled call goes (1.3-2.2 s a job on an H100 with a
warm Inductor cache, docs/PERFORMANCE.md), and whether the fork server could take part of
it before forking.

Each round starts fresh processes that do what the fork server does before it forks
(qbench.fork_server.preload: imports, compile keys, frozen heap), then build the cell's
model on the GPU, wrap it with torch.compile as a job does, and time its first call and
its second:
  child    : the server's PRELOAD only (a child of a server with QBENCH_PRELOAD_OPTIONAL=0);
  optional : PRELOAD and PRELOAD_OPTIONAL, the modules first calls were seen to import
             (the server's default since 2026-11-26's fifth session);
  norblock : as optional, with TORCHINDUCTOR_DYNAMIC_SCALE_RBLOCK=0 (what qbench's jobs
             run with since 2026-11-27, qbench.compile_env): torch 2.11's Inductor
             benchmarks the configs _dynamic_scale_rblock adds in every process, as its
             autotune cache cannot keep them (pytorch#189121); it compiles into a cache of
             its own (the setting is in Inductor's cache key), filled first;
  prewarm  : PRELOAD, then an Inductor compile of a tiny *CPU* function, which the server
             could run once before forking, so that what the first compile of a process
             loads and builds is in memory already (on the H100 it started CUDA).
The variants (--variants) alternate; the first process of each cache only fills it.
--profile prints the cProfile of one `optional` first call (top functions by cumulative
time). Each row also counts the modules the first call imported and times 20 more
forwards (`steady_ms`, their mean), which a variant's kernels may change.

    python scripts/bench_first_call.py --scheme w8a8-int8 --batch 128 --rounds 3 --variants child,optional
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def child(args) -> None:
    t0 = time.perf_counter()
    from qbench import fork_server

    # what the server does before it forks (imports, compile keys, frozen heap), with or
    # without its optional preloads
    os.environ[fork_server.OPTIONAL_ENV] = "1" if args.child in ("optional", "norblock") else "0"
    fork_server.preload()
    import torch

    out = {"variant": args.child, "imports_s": time.perf_counter() - t0}
    if args.child == "prewarm":
        t = time.perf_counter()
        fn = torch.compile(lambda a: torch.nn.functional.silu(a @ a) * 2.0, dynamic=False)
        with torch.inference_mode():
            fn(torch.ones(8, 8))
        out["prewarm_s"] = time.perf_counter() - t
        out["cuda_started_by_prewarm"] = torch.cuda.is_initialized()
    from qbench import schemes
    from qbench.measure import named_modules
    from qbench.workloads import WorkloadConfig, build_model, make_input

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    wl = WorkloadConfig(name="llama-1b", model="llama")
    if dev.type == "cpu":  # a smoke run off the GPU: a small model
        wl = WorkloadConfig(name="s", model="llama", hidden=256, intermediate=1024, heads=8, kv_heads=2, layers=16,
                            seq_len=32)  # fmt: skip
    with torch.inference_mode():
        model = build_model(wl, dev, torch.float16, 0)
        x = make_input(wl, args.batch, dev, torch.float16, 0)
        model(x[:1])  # the job's reference forward: CUDA libraries are loaded before the first compiled call
        model = schemes.apply_scheme(model, args.scheme, "compile")
        x = x.to(schemes.activation_dtype(args.scheme, "compile"))
        model = schemes.compile_model(model)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        sync()
        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        modules = set(sys.modules)
        t = time.perf_counter()
        model(x)
        sync()
        out["first_call_s"] = time.perf_counter() - t
        out["first_call_imports"] = len(named_modules(set(sys.modules) - modules))
        if prof is not None:
            prof.disable()
            import io
            import pstats

            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(args.profile_lines)
            print(buf.getvalue(), file=sys.stderr)
        t = time.perf_counter()
        model(x)
        sync()
        out["second_call_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(20):
            model(x)
        sync()
        out["steady_ms"] = (time.perf_counter() - t) / 20 * 1e3
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scheme", default="w8a8-int8")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--profile-lines", type=int, default=40)
    ap.add_argument("--cache", help="Inductor cache folder (default: a fresh temporary one)")
    ap.add_argument("--json", help="append the results here, one line per process")
    ap.add_argument("--variants", default="child,optional", help="comma-separated: child, optional, norblock, prewarm")
    ap.add_argument("--child", choices=["child", "optional", "norblock", "prewarm"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    cache = args.cache or tempfile.mkdtemp(prefix="qbench-first-call-")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    base = [sys.executable, __file__, "--scheme", args.scheme, "--batch", str(args.batch),
            "--profile-lines", str(args.profile_lines)]  # fmt: skip
    variants = args.variants.split(",")
    fills = ["child"] + (["norblock"] if "norblock" in variants else [])  # one per cache
    plan = [(v, False, True) for v in fills] + [
        (v, args.profile and r == 0 and v == "optional", False) for r in range(args.rounds) for v in variants]
    for variant, profile, fills_cache in plan:
        cmd = base + ["--child", variant] + (["--profile"] if profile else [])
        own = {"TORCHINDUCTOR_DYNAMIC_SCALE_RBLOCK": "0"} if variant == "norblock" else {}
        done = subprocess.run(cmd, env={**env, **own}, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{variant}: exit {done.returncode}\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        row = {"scheme": args.scheme, "batch": args.batch, "fills_cache": fills_cache,
               **json.loads(done.stdout.strip().splitlines()[-1])}  # fmt: skip
        print(json.dumps(row), flush=True)
        if profile:
            print(done.stderr, file=sys.stderr)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
