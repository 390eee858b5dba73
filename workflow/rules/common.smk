import json
import os
import re
import sys
from pathlib import Path

from snakemake.utils import validate

# The rules' scripts import qbench from this checkout, installed or not.
sys.path.insert(0, str(Path(workflow.basedir)))

from qbench.bytecode_cache import use as cache_bytecode

# Where the environment keeps no compiled bytecode (PYTHONDONTWRITEBYTECODE, packages
# installed without .pyc), every job's process would compile torch and Snakemake's modules
# from source again: cache it in the run's cache folder, for this process and every job.
cache_bytecode()

from qbench.config_schema import ConfigError, check_config
from qbench.lanes import lanes_in_use
from qbench.lanes import plan as lane_plan
from qbench.visible_gpus import visible_gpu_entries


def in_checkout(path):
    """`path` relative to the working directory if it exists there, else to the checkout,
    so `--directory elsewhere` still finds the default config and reference figures."""
    return path if os.path.exists(path) else os.path.join(workflow.basedir, path)


# Snakemake would deep-merge a --configfile into config/config.yaml, mixing the default's
# workloads and dtypes into a preset's; a preset is a whole experiment instead.
if not workflow.overwrite_configfiles:

    configfile: in_checkout("config/config.yaml")


def config_source():
    """Where this config came from, for error messages: the file(s) as the user knows them."""
    files = workflow.overwrite_configfiles or [in_checkout("config/config.yaml")]
    shown = [os.path.relpath(f) if not os.path.relpath(f).startswith("..") else str(f) for f in files]
    return ", ".join(shown) + (" and --config" if workflow.config_settings.config else "")


# A user's mistake is one short line per wrong key, before any job runs. The schema is
# checked here first (Snakemake's own validate prints the whole sub-schema), then
# Snakemake's validate only fills the defaults. The schema check does not import torch,
# so most mistakes are reported in a second. SystemExit, not WorkflowError: Snakemake
# prints a WorkflowError raised here with a "File common.smk, line N" trace pointing at
# this code rather than at the user's config; SystemExit prints the message alone.
try:
    check_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml", config_source())
    validate(config, schema="../schemas/config.schema.yaml")
    from qbench.config import Experiment

    EXPERIMENT = Experiment.from_config(config)
except ConfigError as exc:
    raise SystemExit(str(ConfigError(exc.problems, config_source())))

WORKLOADS = list(EXPERIMENT.workloads)
DTYPES = list(EXPERIMENT.dtypes)
BATCHES = [str(b) for b in EXPERIMENT.batch_sizes]
REPS = [str(r) for r in range(EXPERIMENT.repeats)]
SHARD = "results/shards/{workload}/dtype={dtype}/batch={batch}/rep={rep}.parquet"


def _alternatives(values):
    return "|".join(re.escape(v) for v in values)


wildcard_constraints:
    workload=_alternatives(WORKLOADS),
    dtype=_alternatives(DTYPES),
    batch=_alternatives(BATCHES),
    rep=_alternatives(REPS),


def sweep():
    """Every measurement of the sweep as (shard path, workload, dtype, batch, rep);
    repeats outermost and dtypes innermost, so that a sequential run interleaves dtypes
    rather than measuring one dtype after another."""
    return [
        (SHARD.format(workload=w, dtype=d, batch=b, rep=r), w, d, b, r)
        for r in REPS
        for w in WORKLOADS
        for b in BATCHES
        for d in DTYPES
    ]


def all_shards(wildcards=None):
    return [cell[0] for cell in sweep()]


# GPUs measured on at once (`--resources gpu=N`, at most the GPUs this machine shows), and
# each job's lane (GPU) and start rank (qbench.lanes): the dtypes of a repeat share a card.
_gpu = workflow.global_resources.get("gpu")  # a snakemake Resource (9.x) or a number
GPU_LANES = lanes_in_use(getattr(_gpu, "value", _gpu), len(visible_gpu_entries()))
_BLOCKS = {(w, b): i for i, (w, b) in enumerate((w, b) for w in WORKLOADS for b in BATCHES)}
MEASURE_PLAN = lane_plan(
    [(path, _BLOCKS[(w, b)], int(r)) for path, w, d, b, r in sweep()], EXPERIMENT.repeats, GPU_LANES
)


# A measurement that dies (killed, a driver hiccup) is tried twice more by the Snakemake
# that schedules it. A Snakemake started inside a cluster job runs it once: every level
# applies the rule's `retries:` (the job's Snakemake and the one srun starts), so a failing
# cell's first SLURM job alone tried it 6 times, and its 3 jobs 10 times instead of 3 (CI,
# 2026-11-27).
MEASURE_RETRIES = 2 if workflow.is_main_process else 0


def measure_priority(wildcards):
    """Lower rank runs first: the scheduler then follows the interleaved order (its own
    choice among equal priorities is arbitrary)."""
    rank, _ = MEASURE_PLAN.get(SHARD.format(**wildcards), (len(MEASURE_PLAN), 0))
    return len(MEASURE_PLAN) - rank


def measure_lane(wildcards):
    """The GPU this job waits for (a resource, not a param: a run with another
    `--resources gpu=N` must not re-measure what it has)."""
    return MEASURE_PLAN.get(SHARD.format(**wildcards), (0, 0))[1]


def expected_hashes(wildcards=None):
    """Each shard's path and the config hash its cell has in this run, so aggregate can
    refuse a shard measured with another config."""
    return {path: EXPERIMENT.cell(w, d, int(b), int(r)).config_hash() for path, w, d, b, r in sweep()}


def cell_config(wildcards):
    """One cell of the experiment, as a plain dict."""
    return EXPERIMENT.cell(
        wildcards.workload, wildcards.dtype, int(wildcards.batch), int(wildcards.rep)
    ).as_dict()


def measure_request(wildcards):
    """The measurement job's input besides its files and resources, as one JSON argument
    of its command (scripts/measure.py --request): its cell, where the GPU locks and the
    compile cache are, how many forwards to profile, the measure settings."""
    return json.dumps(
        {
            "cell": cell_config(wildcards),
            "lock_dir": ".qbench-cache/gpu-locks",
            "compile_cache": ".qbench-cache/inductor",
            "breakdown_forwards": breakdown_forwards(wildcards),
            "measure": config.get("measure") or {},
        },
        separators=(",", ":"),
    )


def measure_python():
    """The measure rule's interpreter, Snakemake's own, as `script:` would use,
    or the environment's `python` where jobs run in a conda env or container."""
    methods = getattr(workflow.deployment_settings, "deployment_method", None) or ()
    return "python" if any(getattr(m, "name", "") in ("CONDA", "APPTAINER") for m in methods) else sys.executable


def measure_command():
    """The measure rule's command, a plain process, not `script:`, whose preamble (unpickling
    the job, importing Snakemake) cost 0.04-0.08 s of every job on a 2-core VM
    (scripts/bench_snakemake.py; docs/PERFORMANCE.md, seventh session)."""
    command = (
        "{params.python:q} {params.script:q} --request {params.request:q} --output {output.shard:q} --log {log:q}"
        " --attempt {resources.qbench_attempt} --threads {threads}"
        " --gpu-lane {resources.qbench_gpu_lane} --gpu-lanes {resources.qbench_gpu_lanes}"
    )
    return command + (" --breakdown-output {output.breakdown:q}" if BREAKDOWN else "")


# The breakdown of a forward's time (config key breakdown; qbench.breakdown's table): each
# measurement job writes its cell's beside its shard, rule breakdown averages them.
BREAKDOWN = config["breakdown"]["enabled"]
BREAKDOWN_CELL = "results/breakdown/{workload}/dtype={dtype}/batch={batch}/rep={rep}.parquet"
BREAKDOWN_TABLES = ["results/breakdown.parquet", "results/breakdown.csv"]


def measure_extra_outputs():
    """Rule measure's outputs besides the shard: the cell's breakdown, when it is made."""
    return {"breakdown": BREAKDOWN_CELL} if BREAKDOWN else {}



def breakdown_forwards(wildcards):
    """Forwards to profile in this job: breakdown.forwards in the first breakdown.repeats
    repeats of a cell, none in the others (their tables are empty)."""
    if not BREAKDOWN or int(wildcards.rep) >= config["breakdown"]["repeats"]:
        return 0
    return config["breakdown"]["forwards"]


def all_breakdown_cells(wildcards=None):
    return [BREAKDOWN_CELL.format(workload=w, dtype=d, batch=b, rep=r) for _, w, d, b, r in sweep()]


def breakdown_table(wildcards=None):
    """The breakdown the charts and the report draw: the run's own, when it makes one."""
    return BREAKDOWN_TABLES[:1] if BREAKDOWN else []


def chart_names():
    """The charts this run draws: the speedup needs a dtype besides the baseline."""
    names = ["latency", "distributions"]
    if len(DTYPES) > 1:
        names.append("speedup")
    if breakdown_table():
        names.append("breakdown")
    return names


def plot_inputs(wildcards):
    """Each chart's tables: the summary, and the reference, shards or breakdown it draws."""
    inputs = {"summary": "results/summary.parquet"}
    if wildcards.chart == "latency":
        inputs["reference"] = reference_csv()
    elif wildcards.chart == "distributions":
        inputs["shards"] = all_shards()
    elif wildcards.chart == "breakdown":
        inputs["breakdown"] = breakdown_table()
    return inputs


def chart_files(wildcards=None):
    return expand("results/charts/{chart}.{ext}", chart=chart_names(), ext=["html", "svg", "png", "json"])


def reference_csv(wildcards=None):
    return [in_checkout(config["reference"])] if config.get("reference") else []


def run_command():
    """The command line that reproduces this run, for the report."""
    args = ["snakemake", "--cores", "1", "--resources", "gpu=1"]
    for f in workflow.overwrite_configfiles:
        args += ["--configfile", os.path.relpath(f)]
    return " ".join(args)
