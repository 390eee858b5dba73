"""A user's mistake in the config, seen as the user sees it: `snakemake` on the command
line stops before any job runs and prints one line per wrong key, naming the key and
what is allowed, with no Python traceback. The whole output is compared."""

import copy

import pytest
import yaml

from tests.conftest import REPO, run_snakemake

pytestmark = pytest.mark.workflow
CPU = yaml.safe_load((REPO / "config" / "cpu.yaml").read_text())
TOP_KEYS = str(sorted(["aggregate", "baseline", "batch_sizes", "breakdown", "device", "dtypes", "measure", "reference", "repeats",
                       "seed", "stats", "timing", "workloads"]))  # fmt: skip


def _set(path, value):
    """A change to the CPU preset: set the key at `path` (a dotted path) to `value`."""

    def change(cfg):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return change


def _drop(path):
    def change(cfg):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        del node[last]

    return change


def _rename_workload(cfg):
    cfg["workloads"]["llama tiny"] = cfg["workloads"].pop("llama-tiny")


CASES = {
    "unknown key": (_set("batchsize", [2]), [f"config key batchsize: not a known key; allowed: {TOP_KEYS}"]),
    "unknown nested key": (
        _set("dtypes.w8a8.precision", "int8"),
        ["config key dtypes.w8a8.precision: not a known key; allowed: ['act_group_size', 'impl', 'requantize', 'scheme', 'smoothquant', 'tolerance']"],
    ),
    "fork server switch not a boolean": (
        _set("measure.fork_server", "yes"),
        ["config key measure.fork_server: must be true or false, got 'yes'"],
    ),
    "unknown measure key": (
        _set("measure.fork_server_idle", 5),
        ["config key measure.fork_server_idle: not a known key; allowed: ['fork_server', 'fork_server_idle_s']"],
    ),
    "wrong type (string for integer)": (
        _set("repeats", "three"),
        ["config key repeats: must be an integer, got 'three'"],
    ),
    "wrong type (scalar for list)": (_set("batch_sizes", 8), ["config key batch_sizes: must be a list, got 8"]),
    "empty list": (_set("batch_sizes", []), ["config key batch_sizes: needs at least 1 item(s), got an empty list"]),
    "empty mapping": (_set("dtypes", {}), ["config key dtypes: needs at least 1 entry, got none"]),
    "duplicate batch sizes": (
        _set("batch_sizes", [2, 8, 2]),
        ["config key batch_sizes: duplicate values [2]; give each value once"],
    ),
    "batch sizes <= 0": (
        _set("batch_sizes", [0, -8]),
        ["config key batch_sizes[0]: must be >= 1, got 0", "config key batch_sizes[1]: must be >= 1, got -8"],
    ),
    "unknown scheme": (
        _set("dtypes.w8a8.scheme", "w4a16"),
        ["config key dtypes.w8a8.scheme: 'w4a16' is not one of ['fp16', 'bf16', 'w8a8-int8', 'w8a8-fp8']"],
    ),
    "missing scheme": (_drop("dtypes.w8a8.scheme"), ["config key dtypes.w8a8.scheme: required but missing"]),
    "unknown workload model": (
        _set("workloads.llama-tiny.model", "mistral"),
        ["config key workloads.llama-tiny.model: 'mistral' is not one of ['llama', 'gemm']"],
    ),
    "bad workload name": (
        _rename_workload,
        ["config key workloads: name 'llama tiny' must start with a letter or digit and hold only letters, "
         "digits, _ . -"],
    ),
    "baseline not among dtypes": (
        _set("baseline", "int4"),
        ["config key baseline: 'int4' is not among the dtypes ['fp16', 'w8a8']"],
    ),
    "repeats 0": (_set("repeats", 0), ["config key repeats: must be >= 1, got 0"]),
    "tolerance <= 0": (_set("dtypes.w8a8.tolerance", 0), ["config key dtypes.w8a8.tolerance: must be > 0, got 0"]),
    "heads do not divide hidden": (
        _set("workloads.llama-tiny.heads", 6),
        ["config key workloads.llama-tiny: hidden (128) is not divisible by heads (6)"],
    ),
    "kv_heads do not divide heads": (
        _set("workloads.llama-tiny.kv_heads", 3),
        ["config key workloads.llama-tiny: heads (4) is not divisible by kv_heads (3)"],
    ),
    "unknown impl": (
        _set("dtypes.w8a8.impl", "cuda"),
        ["config key dtypes.w8a8.impl: 'cuda' is not one of ['eager', 'compile', 'triton', 'torchao']"],
    ),
    "quantizing impl on a 16-bit scheme": (
        _set("dtypes.fp16.impl", "triton"),
        ["config key dtypes.fp16.impl: 'triton' quantizes, so it needs a w8a8 scheme, not 'fp16'"],
    ),
    "smoothquant alpha out of range": (
        _set("dtypes.w8a8.smoothquant", 1.5),
        ["config key dtypes.w8a8.smoothquant: must be < 1, got 1.5"],
    ),
    "smoothquant on a 16-bit scheme": (
        _set("dtypes.fp16.smoothquant", True),
        ["config key dtypes.fp16.smoothquant: smoothing is for w8a8 schemes, not 'fp16'"],
    ),
    "activation groups outside the triton impl": (
        _set("dtypes.w8a8.act_group_size", 128),
        ["config key dtypes.w8a8.act_group_size: groups are the triton impl's, not 'eager''s"],
    ),
    "activation groups not a power of two": (
        _set("dtypes.w8a8", {"scheme": "w8a8-fp8", "impl": "triton", "act_group_size": 48}),
        ["config key dtypes.w8a8.act_group_size: must be a power of two >= 32 (e.g. 128), got 48"],
    ),
    "activation groups that do not divide the layer": (
        _set("dtypes.w8a8", {"scheme": "w8a8-fp8", "impl": "triton", "act_group_size": 1024}),
        ["config key dtypes.w8a8.act_group_size: 1024 does not divide workload llama-tiny's intermediate size 512"],
    ),
    "requantized groups without groups": (
        _set("dtypes.w8a8", {"scheme": "w8a8-fp8", "impl": "triton", "requantize": True}),
        ["config key dtypes.w8a8.requantize: rescales the groups of act_group_size, which is not set"],
    ),
    "unknown device": (_set("device", "gpu"), ["config key device: 'gpu' is not one of ['auto', 'cuda', 'cpu']"]),
    "unknown on_bad_shard": (
        _set("aggregate", {"on_bad_shard": "ignore"}),
        ["config key aggregate.on_bad_shard: 'ignore' is not one of ['stop', 'skip']"],
    ),
    "breakdown switch not true or false": (
        _set("breakdown.enabled", "yes"),
        ["config key breakdown.enabled: must be true or false, got 'yes'"],
    ),
    "breakdown of no forwards": (_set("breakdown.forwards", 0), ["config key breakdown.forwards: must be >= 1, got 0"]),
    "two mistakes, two lines": (
        lambda c: (_set("repeats", 0)(c), _set("batch_sizes", [2, 2])(c)),
        ["config key batch_sizes: duplicate values [2]; give each value once",
         "config key repeats: must be >= 1, got 0"],
    ),
}


def user_view(proc) -> str:
    """What the terminal shows, less Snakemake's note that it read the profile."""
    lines = (proc.stdout + proc.stderr).splitlines()
    return "\n".join(line for line in lines if not line.startswith("Using workflow specific profile"))


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_naming_the_key(case, tmp_path):
    change, expected = CASES[case]
    cfg = copy.deepcopy(CPU)
    change(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg, sort_keys=False))
    work = tmp_path / "work"
    work.mkdir()
    # not a dry run: the mistake must stop it before any job runs
    proc = run_snakemake(["--cores", "1", "--configfile", str(bad), "--directory", str(work)], check=False)
    assert proc.returncode == 1
    assert user_view(proc) == "\n".join([f"invalid config ({bad}):"] + expected)
    assert not (work / "results").exists() and not (work / "logs").exists()


def test_a_mistake_given_with_config_names_the_command_line(tmp_path):
    proc = run_snakemake(
        ["-n", "--cores", "1", "--configfile", str(REPO / "config" / "cpu.yaml"), "--config", "repeats=0",
         "--directory", str(tmp_path)],
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert user_view(proc) == (
        f"invalid config ({REPO / 'config' / 'cpu.yaml'} and --config):\nconfig key repeats: must be >= 1, got 0"
    )
