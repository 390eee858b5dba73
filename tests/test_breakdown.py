"""The breakdown made for real on the CPU: profiled forwards of small models (qbench.
profile_parts), the cell's table beside its shard, the tables averaged over repeats
(qbench.breakdown), and the workflow with the switch off and with a cell out of memory."""

import json
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

import qbench.measure
import qbench.profile_parts
from qbench import schemes
from qbench.breakdown import (
    CELL_SCHEMA,
    COLUMNS,
    PARTS,
    BreakdownError,
    cell_table,
    check_breakdown,
    collect_cells,
    read_breakdown,
    summarize_cells,
)
from qbench.charts import breakdown_chart
from qbench.config import CellConfig
from qbench.profile_parts import CellBreakdown, profile_parts
from qbench.schemes import DtypeConfig
from qbench.shards import write_shard
from qbench.timing import TimingConfig
from qbench.workloads import WorkloadConfig, build_model, make_input
from tests.conftest import TINY_GEMM, TINY_LLAMA

CPU = torch.device("cpu")
# the CPU preset's decoder: ops big enough that the profiler's overhead is a fraction
SMALL = WorkloadConfig(name="small", model="llama", hidden=128, intermediate=512, heads=4, kv_heads=2, layers=2,
                       seq_len=32)  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads can wait on each other
    for tens of milliseconds, and the timings compared here are a millisecond."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def model_and_input(scheme, impl="eager", workload=SMALL, batch=2):
    with torch.inference_mode():
        model = schemes.apply_scheme(build_model(workload, CPU, torch.float16, 0), scheme)
        x = make_input(workload, batch, CPU, schemes.activation_dtype(scheme), 0)
    if impl == "compile":
        model = schemes.compile_model(model)
    return model, x


def forward_ms(model, x, n=15) -> float:
    """Median wall time of an unprofiled forward."""
    times = []
    with torch.inference_mode():
        for i in range(n + 3):
            t = time.perf_counter()
            model(x)
            if i >= 3:
                times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[n // 2]


def test_fp16_parts_add_up_to_the_forward():
    model, x = model_and_input("fp16")
    plain = forward_ms(model, x)
    p = profile_parts(lambda: model(x), CPU, 3, model)
    assert p.source == "cpu ops" and p.forwards == 3 and p.requested == 3 and p.dropped == []
    assert list(p.ms) == PARTS
    assert p.ms["gemm"] > 0 and p.ms["attention"] > 0 and p.ms["elementwise"] > 0
    assert p.ms["quantization"] == 0  # nothing is quantized in fp16
    # on the CPU the parts hold every microsecond of the profiled forward, host time included ...
    assert p.total_ms == pytest.approx(p.wall_ms, rel=0.01)
    # ... which is the forward's time, give or take the profiler's own overhead
    assert 0.5 * plain < p.total_ms < 4 * plain, (p.total_ms, plain)
    assert p.top["gemm"][0][0] == "aten::linear"
    assert p.top["attention"][0][0] == "aten::scaled_dot_product_attention"
    assert {name for name, _, _ in p.top["elementwise"]} & {"aten::mean", "aten::pow", "aten::mul", "aten::add"}


def test_the_naive_int8_path_shows_its_quantization():
    model, x = model_and_input("w8a8-int8")
    p = profile_parts(lambda: model(x), CPU, 3, model)
    assert p.ms["quantization"] > 0.1 * p.total_ms, p.ms
    assert p.top["gemm"][0][0] == "aten::_int_mm"
    quant = {name for name, _, _ in p.top["quantization"]}
    # the eager quantization's ops, and the host time inside the quantized layers
    assert quant & {"aten::abs", "aten::amax", "aten::div", "aten::round", "aten::clamp", "aten::to"}, quant
    assert "qbench::quantized_layer" in quant
    # every layer's hooks are gone afterwards: the model is as it was timed
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.slow
def test_a_compiled_model_is_profiled_without_recompiling():
    """The quantized-layer hooks do not run inside compiled code and trigger no recompile;
    on the CPU Inductor's C++ kernels are not visible one by one (their time is the wrapper's,
    other), its calls to aten (here `_int_mm`) are."""
    from torch._dynamo.utils import counters

    model, x = model_and_input("w8a8-int8", impl="compile", workload=TINY_GEMM)
    with torch.inference_mode():
        model(x)
    before = dict(counters["stats"])
    p = profile_parts(lambda: model(x), CPU, 3, model)
    assert dict(counters["stats"]) == before
    assert p.ms["gemm"] > 0 and p.top["gemm"][0][0] == "aten::_int_mm"
    assert p.total_ms == pytest.approx(p.wall_ms, rel=0.01)


def cell(scheme, rep=0, batch=2):
    timing = TimingConfig(warmup=1, warmup_ms=0, min_iterations=3, max_iterations=3)
    return CellConfig(TINY_LLAMA, DtypeConfig(scheme.split("-")[0], scheme, "eager"), batch, rep, timing, 0, "cpu")


def test_the_cells_table_has_the_shards_keys():
    probe = CellBreakdown(2)
    shard = qbench.measure.run_cell(cell("w8a8-int8"), after_timing=probe)
    table = probe.table(shard)
    assert table.schema.equals(CELL_SCHEMA)
    df = table.to_pandas()
    first = shard.to_pandas().iloc[0]
    assert df["part"].tolist() == PARTS
    for key in ("workload", "dtype", "batch", "rep", "status", "config_hash", "device", "torch"):
        assert (df[key] == first[key]).all(), key
    assert (df["forwards"] == 2).all() and (df["forwards_dropped"] == 0).all() and (df["source"] == "cpu ops").all()
    assert df["ms"].sum() == pytest.approx(df["total_ms"].iloc[0])
    assert df.set_index("part").loc["quantization", "ms"] > 0
    top = json.loads(df.set_index("part").loc["gemm", "top_events"])
    assert top[0]["name"] == "aten::_int_mm" and top[0]["ms"] > 0 and top[0]["events"] >= 1


def test_a_cell_out_of_memory_has_an_empty_table(monkeypatch):
    """The model call raises torch.OutOfMemoryError (simulated as in test_faults: a CPU
    cannot raise it); the shard says oom, the hook is never called, the table is empty."""
    real_build = qbench.measure.build_model

    def build_model_that_runs_out_of_memory(*args, **kwargs):
        model = real_build(*args, **kwargs)

        def forward(*_, **__):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB (simulated)")

        model.forward = forward
        return model

    monkeypatch.setattr(qbench.measure, "build_model", build_model_that_runs_out_of_memory)
    probe = CellBreakdown(2)
    shard = qbench.measure.run_cell(cell("fp16"), after_timing=probe)
    assert shard.column("status").to_pylist() == ["oom"] and probe.profile is None
    table = probe.table(shard)
    assert table.num_rows == 0 and table.schema.equals(CELL_SCHEMA)


def test_a_profiler_failure_costs_the_cell_nothing_but_its_breakdown(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("CUPTI_ERROR_INSUFFICIENT_PRIVILEGES (simulated)")

    monkeypatch.setattr(qbench.profile_parts, "profile_parts", broken)
    probe = CellBreakdown(2)
    shard = qbench.measure.run_cell(cell("fp16"), after_timing=probe)
    assert set(shard.column("status").to_pylist()) == {"ok"} and shard.num_rows == 3
    assert probe.table(shard).num_rows == 0
    assert "profiling failed; this cell has no breakdown" in caplog.text


@pytest.fixture(scope="module")
def cell_files(tmp_path_factory):
    """Real breakdown tables of two dtypes x two repeats, and an empty one (a cell not timed)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cells")
    paths = []
    for rep in (0, 1):
        for scheme in ("fp16", "w8a8-int8"):
            probe = CellBreakdown(2)
            shard = qbench.measure.run_cell(cell(scheme, rep), after_timing=probe)
            paths.append(out / f"{scheme}-{rep}.parquet")
            write_shard(probe.table(shard), paths[-1])
    paths.append(out / "oom.parquet")
    write_shard(cell_table([]), paths[-1])
    return paths


def test_cells_are_averaged_over_repeats(cell_files, tmp_path):
    cells = collect_cells(cell_files)
    assert len(cells) == 4 * len(PARTS)
    summary = summarize_cells(cells)
    assert summary[COLUMNS].columns.tolist() == COLUMNS
    assert len(summary) == 2 * len(PARTS) and (summary["n_repeats"] == 2).all()
    assert summary["dtype"].unique().tolist() == ["fp16", "w8a8"]  # the order they came in
    assert summary[summary["dtype"] == "fp16"]["part"].tolist() == PARTS
    mean = cells.groupby(["dtype", "part"])["ms"].mean()
    for row in summary.itertuples():
        assert row.ms == pytest.approx(mean[(row.dtype, row.part)])
        assert row.ms_min <= row.ms <= row.ms_max
    by = summary.set_index(["dtype", "part"])
    assert by.loc[("fp16", "quantization"), "ms"] == 0 and by.loc[("w8a8", "quantization"), "ms"] > 0
    assert by.groupby("dtype")["share"].sum().round(6).tolist() == [1.0, 1.0]
    assert json.loads(by.loc[("w8a8", "gemm"), "top_events"])[0]["name"] == "aten::_int_mm"
    # the contract the chart and the report read, from Parquet and CSV
    summary.to_csv(tmp_path / "breakdown.csv", index=False)
    summary.to_parquet(tmp_path / "breakdown.parquet", index=False)
    for name in ("breakdown.csv", "breakdown.parquet"):
        got = read_breakdown(tmp_path / name)
        assert len(got) == len(summary)
    spec = breakdown_chart(check_breakdown(summary, "summary")).to_dict()
    assert spec["spec"]["encoding"]["color"]["scale"]["domain"] == PARTS


def test_no_cell_profiled_is_an_empty_table_and_a_chart_that_says_so(cell_files, tmp_path):
    summary = summarize_cells(collect_cells(cell_files[-1:]))
    assert summary.empty and COLUMNS == summary.columns.tolist()[: len(COLUMNS)]
    summary.to_parquet(tmp_path / "breakdown.parquet", index=False)
    empty = read_breakdown(tmp_path / "breakdown.parquet", allow_empty=True)
    assert "No cell of this run could be profiled" in json.dumps(breakdown_chart(empty).to_dict())
    with pytest.raises(BreakdownError, match="no rows"):
        read_breakdown(tmp_path / "breakdown.parquet")


def test_a_bad_cell_table_is_named(cell_files, tmp_path):
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(cell_files[0].read_bytes()[:100])
    with pytest.raises(BreakdownError, match=f"{truncated}: not a readable Parquet file"):
        collect_cells([cell_files[0], truncated])
    other = tmp_path / "other.parquet"
    pq.write_table(pq.read_table(cell_files[0]).drop(["part"]), other)
    with pytest.raises(BreakdownError, match=rf"{other}: missing columns \['part'\]"):
        collect_cells([other])


# --- the workflow ----------------------------------------------------------------------


def _tiny(**breakdown):
    from tests.test_faults import tiny_config

    return tiny_config(dtypes=("fp16", "w8a8"), batches=(2,), breakdown=breakdown)


@pytest.mark.workflow
def test_the_workflow_with_a_cell_out_of_memory(tmp_path):
    """The w8a8 cell ran out of memory: its shard (status oom) and its empty breakdown table
    are placed as measure writes them. The breakdown has the other cell's parts only, and
    the chart and the report are made."""
    from tests.test_faults import experiment, shard_table, snakemake, write_config

    cfg = _tiny(enabled=True, forwards=2)
    work = tmp_path / "work"
    cfg_path = write_config(work, cfg)
    oom = work / "results" / "shards" / "tiny" / "dtype=w8a8" / "batch=2" / "rep=0.parquet"
    write_shard(shard_table(experiment(cfg).cell("tiny", "w8a8", 2, 0), status="oom"), oom)
    write_shard(cell_table([]), work / "results" / "breakdown" / "tiny" / "dtype=w8a8" / "batch=2" / "rep=0.parquet")

    snakemake(work, cfg_path)
    breakdown = pd.read_parquet(work / "results" / "breakdown.parquet")
    assert breakdown["dtype"].unique().tolist() == ["fp16"] and breakdown["part"].tolist() == PARTS
    assert "1 of 2 measurement jobs profiled" in (work / "logs" / "breakdown.log").read_text()
    assert "parts" in (work / "results" / "charts" / "breakdown.json").read_text()
    html = (work / "results" / "report.html").read_text()
    assert 'id="chart-breakdown"' in html and "No breakdown was measured" not in html


@pytest.mark.workflow
def test_the_workflow_with_the_switch_off(tmp_path):
    from tests.test_faults import snakemake, write_config

    work = tmp_path / "work"
    snakemake(work, write_config(work, _tiny(enabled=False)))
    results = work / "results"
    assert (results / "report.html").exists() and (results / "summary.csv").exists()
    assert not list(results.glob("breakdown*")) and not list((results / "charts").glob("breakdown.*"))
    html = (results / "report.html").read_text()
    assert "No breakdown was measured in this run" in html and 'id="chart-breakdown"' not in html
