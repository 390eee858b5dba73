import copy
import hashlib
import json

import pytest
import yaml

from qbench.config import ConfigError, Experiment
from tests.conftest import REPO


def default_config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_and_cpu_configs_parse():
    for name in ("config.yaml", "cpu.yaml"):
        exp = Experiment.from_config(yaml.safe_load((REPO / "config" / name).read_text()))
        assert exp.baseline in exp.dtypes


def test_default_is_the_reference_grid():
    exp = Experiment.from_config(default_config())
    assert exp.batch_sizes == [128, 256, 512, 1024] and exp.repeats == 5
    assert {d.scheme for d in exp.dtypes.values()} == {"fp16", "w8a8-int8"}
    assert all(d.impl == "compile" for d in exp.dtypes.values())
    (w,) = exp.workloads.values()
    assert (w.hidden, w.intermediate, w.heads, w.kv_heads, w.layers, w.seq_len) == (2048, 8192, 32, 8, 16, 128)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(baseline="int4"), "baseline: 'int4' is not among the dtypes"),
        (lambda c: c.update(batch_sizes=[128, 128]), "batch_sizes: duplicate values [128]"),
        (lambda c: c.update(batch_sizes=[]), "batch_sizes: at least one"),
        (lambda c: c.update(repeats=0), "repeats: must be an integer >= 1"),
        (lambda c: c["dtypes"]["w8a8"].update(scheme="w4a16"), "dtypes.w8a8.scheme: 'w4a16' is not one of"),
        (lambda c: c["workloads"]["llama-1b"].update(heads=30), "not divisible by heads"),
    ],
)
def test_config_errors_name_the_key(change, message):
    cfg = copy.deepcopy(default_config())
    change(cfg)
    with pytest.raises(ConfigError) as err:
        Experiment.from_config(cfg)
    assert message in str(err.value)


def test_cell_hash_tracks_what_changes_numbers():
    exp = Experiment.from_config(default_config())
    a = exp.cell("llama-1b", "fp16", 128, 0)
    assert a.config_hash() == exp.cell("llama-1b", "fp16", 128, 3).config_hash()  # repeats share it
    assert a.config_hash() != exp.cell("llama-1b", "w8a8", 128, 0).config_hash()
    assert a.config_hash() != exp.cell("llama-1b", "fp16", 256, 0).config_hash()
    assert type(a).from_dict(a.as_dict()) == a


def test_activation_groups_change_the_hash_and_leaving_them_unset_does_not():
    """A dtype's act_group_size changes its numbers, so its cells' hash; the key came
    later, so a cell without it hashes as before it existed (earlier shards still match)."""
    cfg = copy.deepcopy(default_config())
    cfg["dtypes"]["w8a8"] = {"scheme": "w8a8-fp8", "impl": "triton"}
    plain = Experiment.from_config(cfg).cell("llama-1b", "w8a8", 128, 0)
    d = plain.as_dict()
    d.pop("rep")
    for later in ("act_group_size", "smoothquant", "requantize"):  # the dtype keys added after the first runs
        d["dtype"].pop(later)
    assert plain.config_hash() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    cfg["dtypes"]["w8a8"]["act_group_size"] = 128
    grouped = Experiment.from_config(cfg).cell("llama-1b", "w8a8", 128, 0)
    assert grouped.dtype.act_group_size == 128 and grouped.config_hash() != plain.config_hash()
    assert type(grouped).from_dict(grouped.as_dict()) == grouped
    cfg["dtypes"]["w8a8"]["requantize"] = True
    requantized = Experiment.from_config(cfg).cell("llama-1b", "w8a8", 128, 0)
    assert requantized.config_hash() not in (plain.config_hash(), grouped.config_hash())
    assert type(requantized).from_dict(requantized.as_dict()) == requantized
