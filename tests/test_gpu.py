"""GPU-only checks of the harness; run on a CUDA machine (skipped elsewhere)."""

import json

import pytest
import torch

from qbench.config import CellConfig
from qbench.measure import run_cell
from qbench.profile_parts import CellBreakdown
from qbench.schemes import DtypeConfig
from qbench.timing import TimingConfig, time_forward
from qbench.workloads import WorkloadConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SMALL = WorkloadConfig(name="s", model="llama", seq_len=64, hidden=512, intermediate=1024, heads=8, kv_heads=2, layers=2)


def cfg(**kw):
    return TimingConfig(**{"warmup": 3, "min_iterations": 10, "max_iterations": 10, **kw})


def test_graph_replay_times_the_gpu_work():
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    s = time_forward(lambda: a @ a, torch.device("cuda"), cfg())
    assert s.method == "cuda_graph" and s.note is None
    tflops = 2 * 4096**3 / (min(s.latency_ms) * 1e-3) / 1e12
    assert 50 < tflops < 2000, tflops  # a real GEMM's rate, not the host's launch time


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_model_on_another_gpu_than_the_current_one_is_captured():
    """The capture stream is the current device's: on 2 x H100 every cell on GPU 1 fell
    back to launches until capture ran under the model's device."""
    dev = torch.device("cuda", torch.cuda.device_count() - 1)
    a = torch.randn(2048, 2048, device=dev, dtype=torch.float16)
    assert torch.cuda.current_device() != dev.index
    s = time_forward(lambda: a @ a, dev, cfg())
    assert s.method == "cuda_graph", s.note


@pytest.mark.parametrize("counts", [True, False])
def test_the_capture_is_warm_up_when_configured(counts, monkeypatch):
    """warmup_counts_capture: the capture's time is in warmup_s, and its side-stream
    forward and checking replay are the first two warm-up forwards; off, the warm-up
    starts after the capture."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    calls = []

    def fn():
        calls.append(1)  # host calls: the capture's side-stream forward and its recording
        return a @ a

    replays = []
    replay = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: (replays.append(1), replay(self))[1])
    s = time_forward(fn, torch.device("cuda"), cfg(warmup=3, warmup_ms=0, warmup_counts_capture=counts))
    assert s.method == "cuda_graph" and len(calls) == 2
    assert s.warmup_iterations == 3  # the capture's two forwards and one replay, or three replays
    # the capture's checking replay, the warm-up's, the 10 timed
    assert len(replays) == 1 + (1 if counts else 3) + 10
    assert s.warmup_s >= 3 * min(s.latency_ms) / 1e3 * 0.9


def test_capture_failure_falls_back_with_a_reason():
    a = torch.randn(256, device="cuda")

    def syncs():
        return float(a.sum())  # .item()-style host sync: not capturable

    s = time_forward(syncs, torch.device("cuda"), cfg())
    assert s.method == "cuda_launch" and "capture failed" in s.note


@pytest.mark.parametrize(
    "scheme,impl",
    [(s, i) for s in ("fp16", "w8a8-int8", "w8a8-fp8") for i in ("eager", "compile")]
    + [("w8a8-int8", "triton"), ("w8a8-fp8", "triton")],
)
def test_cells_on_gpu(scheme, impl):
    cell = CellConfig(SMALL, DtypeConfig("d", scheme, impl), 4, 0, cfg(flush_l2=True), 0, "cuda")
    df = run_cell(cell).to_pandas()
    assert (df["status"] == "ok").all(), df["status_detail"].iloc[0]
    assert df["timing_method"].iloc[0] == "cuda_graph", df["timing_note"].iloc[0]
    assert df["l2"].iloc[0] == "cold" and df["gpu_uuid"].iloc[0]
    assert df["sm_clock_mhz"].notna().all() and df["peak_reserved_bytes"].iloc[0] > 0


@pytest.mark.parametrize("impl", ["eager", "compile"])
@pytest.mark.parametrize("scheme", ["fp16", "w8a8-int8", "w8a8-fp8"])
def test_breakdown_on_gpu(scheme, impl):
    """Every kernel lands in a part (other: only the runtime's copies and fills), quantized
    schemes show quantization and fp16 none, eager int8's casts and multiplies are linked
    to their quantized layer, and the kernel time is about the timed latency. Run with -s
    to see the table."""
    probe = CellBreakdown(3)
    cell = CellConfig(SMALL, DtypeConfig("d", scheme, impl), 4, 0, cfg(), 0, "cuda")
    table = run_cell(cell, after_timing=probe)
    shard = table.to_pandas()
    if shard["status"].iloc[0] == "unsupported":
        pytest.skip(shard["status_detail"].iloc[0])
    df = probe.table(table).to_pandas().set_index("part")
    print(f"\n{scheme} {impl}:\n" + df[["ms", "events", "top_events"]].to_string(max_colwidth=400))
    assert probe.profile.source == "cuda kernels" and probe.profile.forwards == 3
    assert df.loc["gemm", "ms"] > 0 and df.loc["attention", "ms"] > 0 and df.loc["elementwise", "ms"] > 0
    assert (df.loc["quantization", "ms"] > 0) == (scheme != "fp16")
    other = [e["name"] for e in json.loads(df.loc["other", "top_events"])]
    assert all(name.startswith(("Memcpy", "Memset")) for name in other), other
    if scheme == "w8a8-int8" and impl == "eager":
        quant = " ".join(e["name"] for e in json.loads(df.loc["quantization", "top_events"]))
        # generic elementwise kernels (casts, multiplies, divides, abs, clamp, round), in the
        # quantization part because they ran in a quantized layer's range; which five are
        # the largest varies (H100 2026-11-27: max-reduce, clamp, div, round, abs)
        generic = ("copy", "Mul", "mul", "Div", "Abs", "clamp", "round")
        assert any(name in quant for name in generic), quant
    timed = shard["latency_ms"].mean()
    assert 0.5 < df["total_ms"].iloc[0] / timed < 1.3, (df["total_ms"].iloc[0], timed)


# One measurement job in a fresh process, as Snakemake starts it: CUDA untouched until
# the job has its GPU.
_JOB = """
import json, sys, torch
from qbench.measure_job import JobRequest, measure
job = JobRequest.from_dict(json.loads(sys.argv[1]))
status = measure(job, "in_process")
print(json.dumps({"status": status, "count": torch.cuda.device_count(), "current": torch.cuda.current_device()}))
"""


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_job_on_the_second_gpu_sees_it_alone_and_records_it(tmp_path):
    """Repeat 1 prefers GPU 1: the job runs on it as cuda:0 (one compile cache for all
    GPUs), and the shard names it by its position among the run's GPUs and its UUID."""
    import subprocess
    import sys

    import pandas as pd

    from qbench.measure_job import JobRequest

    cell = CellConfig(SMALL, DtypeConfig("d", "fp16", "compile"), 4, 1, cfg(), 0, "cuda")
    job = JobRequest(cell=cell.as_dict(), output=str(tmp_path / "s.parquet"), log=str(tmp_path / "job.log"),
                     attempt=1, threads=1, lock_dir=str(tmp_path / "locks"))  # fmt: skip
    env = {k: v for k, v in __import__("os").environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")
    done = subprocess.run([sys.executable, "-c", _JOB, json.dumps(job.as_dict())], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"status": 0, "count": 1, "current": 0}
    df = pd.read_parquet(tmp_path / "s.parquet")
    assert (df["gpu_index"] == 1).all() and (df["timing_method"] == "cuda_graph").all()
    assert df["gpu_uuid"].iloc[0] == str(torch.cuda.get_device_properties(1).uuid)
    assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == ["visible-0.lock", "visible-1.lock"]
