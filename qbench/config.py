"""The experiment as the workflow hands it to the library: typed, checked, hashable.

The JSON schema (workflow/schemas/config.schema.yaml, checked by qbench.config_schema)
checks types and fills defaults; `Experiment.from_config` checks what a schema cannot (a
baseline among the dtypes, heads that divide the hidden size) and turns the dict into
small dataclasses. Both report every mistake as `config key <path>: <problem>`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from qbench.config_schema import ConfigError
from qbench.specs import (
    DEFAULT_TOLERANCE,
    DtypeConfig,
    MeasureConfig,
    StatsConfig,
    TimingConfig,
    WorkloadConfig,
    is_group_size,
)


__all__ = ["CellConfig", "ConfigError", "Experiment"]


@dataclass(frozen=True)
class CellConfig:
    """Everything one measurement job needs, and nothing of the rest of the sweep."""

    workload: WorkloadConfig
    dtype: DtypeConfig
    batch: int
    rep: int
    timing: TimingConfig
    seed: int
    device: str

    @property
    def tolerance(self) -> float:
        return self.dtype.tolerance if self.dtype.tolerance is not None else DEFAULT_TOLERANCE[self.dtype.scheme]

    def as_dict(self) -> dict:
        return {
            "workload": asdict(self.workload),
            "dtype": asdict(self.dtype),
            "batch": self.batch,
            "rep": self.rep,
            "timing": asdict(self.timing),
            "seed": self.seed,
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "CellConfig":
        return cls(
            workload=WorkloadConfig(**d["workload"]),
            dtype=DtypeConfig(**d["dtype"]),
            batch=int(d["batch"]),
            rep=int(d["rep"]),
            timing=TimingConfig(**d["timing"]),
            seed=int(d["seed"]),
            device=d["device"],
        )

    def config_hash(self) -> str:
        """Hash of what determines the cell's numbers (not the repeat index): shards of one
        cell from one config share it, and a changed config shows in it."""
        d = self.as_dict()
        d.pop("rep")
        for key in ("smoothquant", "act_group_size", "requantize"):  # added later: unset keeps earlier runs' hashes
            if d["dtype"].get(key) in (None, False):
                d["dtype"].pop(key, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Experiment:
    workloads: dict[str, WorkloadConfig]
    dtypes: dict[str, DtypeConfig]
    batch_sizes: list[int]
    repeats: int
    baseline: str
    timing: TimingConfig
    stats: StatsConfig
    seed: int
    device: str
    measure: MeasureConfig = MeasureConfig()

    @classmethod
    def from_config(cls, config: dict) -> "Experiment":
        problems: list[str] = []
        workloads, dtypes = {}, {}
        for name, spec in (config.get("workloads") or {}).items():
            try:
                w = WorkloadConfig.from_dict(name, spec)
            except (TypeError, ValueError) as exc:
                problems.append(str(exc))
                continue
            problems += w.problems()
            workloads[name] = w
        for name, spec in (config.get("dtypes") or {}).items():
            try:
                d = DtypeConfig.from_dict(name, spec)
            except (TypeError, ValueError) as exc:
                problems.append(str(exc))
                continue
            problems += d.problems()
            dtypes[name] = d
        if not workloads:
            problems.append("workloads: at least one workload is needed")
        if not dtypes:
            problems.append("dtypes: at least one dtype is needed")
        batches = list(config.get("batch_sizes") or [])
        if not batches:
            problems.append("batch_sizes: at least one batch size is needed")
        dupes = sorted({b for b in batches if batches.count(b) > 1})
        if dupes:
            problems.append(f"batch_sizes: duplicate values {dupes}")
        if any(not isinstance(b, int) or b <= 0 for b in batches):
            problems.append(f"batch_sizes: every batch size must be an integer > 0, got {batches}")
        baseline = config.get("baseline", "fp16")
        if dtypes and baseline not in dtypes:
            problems.append(f"baseline: {baseline!r} is not among the dtypes {sorted(dtypes)}")
        for d in dtypes.values():  # a group is one SiLU*mul tile's width: it must divide the layer's
            g = d.act_group_size
            for w in workloads.values():
                # an invalid one is DtypeConfig.problems' to name
                if is_group_size(g) and w.model == "llama" and w.intermediate % g:
                    problems.append(f"dtypes.{d.name}.act_group_size: {g} does not divide workload "
                                    f"{w.name}'s intermediate size {w.intermediate}")  # fmt: skip
        repeats = config.get("repeats", 5)
        if not isinstance(repeats, int) or repeats < 1:
            problems.append(f"repeats: must be an integer >= 1, got {repeats!r}")
        if problems:
            raise ConfigError([f"config key {p}" for p in problems])
        return cls(
            workloads=workloads,
            dtypes=dtypes,
            batch_sizes=batches,
            repeats=repeats,
            baseline=baseline,
            timing=TimingConfig.from_dict(config.get("timing") or {}),
            stats=StatsConfig.from_dict(config.get("stats") or {}),
            seed=int(config.get("seed", 0)),
            device=config.get("device", "auto"),
            measure=MeasureConfig.from_dict(config.get("measure") or {}),
        )

    def cell(self, workload: str, dtype: str, batch: int, rep: int) -> CellConfig:
        return CellConfig(
            workload=self.workloads[workload],
            dtype=self.dtypes[dtype],
            batch=int(batch),
            rep=int(rep),
            timing=self.timing,
            seed=self.seed,
            device=self.device,
        )
