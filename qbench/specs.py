"""The experiment's parts as small, typed, torch-free dataclasses: a workload's shape, a
dtype entry, the timing loop's settings. Kept apart from the modules that build and time
models so that reading and checking a config (every Snakemake start, every dry run, every
SLURM job) does not import torch."""

from __future__ import annotations

from dataclasses import dataclass, fields

MODELS = ("llama", "gemm")


def check_keys(cls, where: str, spec: dict, exclude: tuple[str, ...] = ()) -> dict:
    """`spec` if every key is a field of the dataclass `cls`; else a ValueError naming
    the config section `where`, the unknown keys and the allowed ones."""
    known = {f.name for f in fields(cls)} - set(exclude)
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(known)}")
    return spec


@dataclass(frozen=True)
class WorkloadConfig:
    """Shape of one workload, as written under `workloads:` in the config."""

    name: str
    model: str
    seq_len: int = 128
    hidden: int = 2048
    intermediate: int = 8192
    heads: int = 32
    kv_heads: int = 8
    layers: int = 16
    rope_theta: float = 500000.0
    # gemm only: the linear layer is (in_features -> out_features)
    in_features: int = 4096
    out_features: int = 4096

    @classmethod
    def from_dict(cls, name: str, spec: dict) -> "WorkloadConfig":
        return cls(name=name, **check_keys(cls, f"workloads.{name}", spec, exclude=("name",)))

    def problems(self) -> list[str]:
        """Shape errors a schema cannot express, each naming the key."""
        where = f"workloads.{self.name}"
        out = []
        if self.model not in MODELS:
            out.append(f"{where}.model: {self.model!r} is not one of {list(MODELS)}")
        if self.model == "llama":
            if self.hidden % self.heads:
                out.append(f"{where}: hidden ({self.hidden}) is not divisible by heads ({self.heads})")
            elif (self.hidden // self.heads) % 2:
                out.append(f"{where}: head size hidden/heads ({self.hidden // self.heads}) must be even for rotary embeddings")
            if self.heads % self.kv_heads:
                out.append(f"{where}: heads ({self.heads}) is not divisible by kv_heads ({self.kv_heads})")
        return out

    def tokens(self, batch: int) -> int:
        return batch * self.seq_len

    def describe(self) -> str:
        if self.model == "gemm":
            return f"gemm {self.in_features}->{self.out_features}, {self.seq_len} tokens per batch item"
        return (
            f"llama decoder: {self.layers} layers, hidden {self.hidden}, intermediate {self.intermediate}, "
            f"{self.heads} heads / {self.kv_heads} KV heads, prefill of {self.seq_len} tokens"
        )


SCHEMES = ("fp16", "bf16", "w8a8-int8", "w8a8-fp8")
# eager: plain torch ops (the naive path); compile: torch.compile; triton: qbench's fused
# Triton kernels (W8A8 only); torchao: torchao's quantize_ (W8A8 only, optional extra)
IMPLS = ("eager", "compile", "triton", "torchao")
W8A8_ONLY_IMPLS = ("triton", "torchao")
DEFAULT_SMOOTHQUANT_ALPHA = 0.5


def is_group_size(g) -> bool:
    """Whether `g` can be an act_group_size: a power of two >= 32 (an 8-bit dot's K step)."""
    return isinstance(g, int) and not isinstance(g, bool) and g >= 32 and not g & (g - 1)


@dataclass(frozen=True)
class DtypeConfig:
    """One entry under `dtypes:` in the config: the name is the `dtype` wildcard."""

    name: str
    scheme: str
    impl: str = "compile"
    tolerance: float | None = None  # relative error vs the fp16 model; None: the scheme's default
    # SmoothQuant's migration strength alpha, or None for no smoothing; `true` means 0.5
    smoothquant: float | None = None
    # impl triton: the down projection's input quantized per token and per group of this
    # many channels, in the SiLU*mul GEMM's epilogue (DeepSeek-V3's 1x128 activation
    # tiles); None: one scale per token, by a kernel of its own
    act_group_size: int | None = None
    # with act_group_size: a pass over the 8-bit codes rescales the groups to one scale per
    # token (qbench.triton_kernels.requantize_groups), so the down GEMM keeps its per-token
    # mainloop, which runs faster than one that scales each group's partial sums (on
    # Hopper in fp8 the pass costs about what that saves over the Gluon kernel)
    requantize: bool = False

    @classmethod
    def from_dict(cls, name: str, spec: dict) -> "DtypeConfig":
        spec = dict(check_keys(cls, f"dtypes.{name}", spec, exclude=("name",)))
        sq = spec.get("smoothquant")
        if sq is True:
            spec["smoothquant"] = DEFAULT_SMOOTHQUANT_ALPHA
        elif sq is False:
            spec["smoothquant"] = None
        return cls(name=name, **spec)

    def problems(self) -> list[str]:
        out = []
        if self.scheme not in SCHEMES:
            out.append(f"dtypes.{self.name}.scheme: {self.scheme!r} is not one of {list(SCHEMES)}")
        if self.impl not in IMPLS:
            out.append(f"dtypes.{self.name}.impl: {self.impl!r} is not one of {list(IMPLS)}")
        elif self.impl in W8A8_ONLY_IMPLS and not self.scheme.startswith("w8a8"):
            out.append(f"dtypes.{self.name}.impl: {self.impl!r} quantizes, so it needs a w8a8 scheme, not {self.scheme!r}")
        if self.tolerance is not None and not self.tolerance > 0:
            out.append(f"dtypes.{self.name}.tolerance: must be > 0, got {self.tolerance}")
        if self.smoothquant is not None:
            if not self.scheme.startswith("w8a8"):
                out.append(f"dtypes.{self.name}.smoothquant: smoothing is for w8a8 schemes, not {self.scheme!r}")
            if isinstance(self.smoothquant, bool) or not isinstance(self.smoothquant, (int, float)) or not 0 < self.smoothquant < 1:
                out.append(f"dtypes.{self.name}.smoothquant: alpha must be a number in (0, 1) or true, got {self.smoothquant!r}")
        g = self.act_group_size
        if g is not None:
            if self.impl != "triton":
                out.append(f"dtypes.{self.name}.act_group_size: groups are the triton impl's, not {self.impl!r}'s")
            if not is_group_size(g):
                out.append(f"dtypes.{self.name}.act_group_size: must be a power of two >= 32 (e.g. 128), got {g!r}")
        if not isinstance(self.requantize, bool):
            out.append(f"dtypes.{self.name}.requantize: must be true or false, got {self.requantize!r}")
        elif self.requantize and g is None:
            out.append(f"dtypes.{self.name}.requantize: rescales the groups of act_group_size, which is not set")
        return out


# Relative error (Frobenius norm) of the output against the fp16 model that each scheme
# is expected to stay under on the default decoder; the config can override per dtype.
DEFAULT_TOLERANCE = {"fp16": 1e-2, "bf16": 5e-2, "w8a8-int8": 0.1, "w8a8-fp8": 0.15}


@dataclass(frozen=True)
class TimingConfig:
    # Warm-up: at least this many untimed forwards and this much time. By time, not count:
    # on an H100 at its 700 W cap the power controller needs about a second of load to
    # settle (the first samples after 0.6 s of warm-up were 4-8% slow at batch 128), while
    # ten forwards at batch 1024 (4.9 s) were more than anything needed.
    warmup: int = 3
    warmup_ms: float = 1000.0
    # The CUDA-graph capture is part of the warm-up: its time counts towards warmup_ms, and
    # its forward on a side stream and its checking replay are the first two warm-up
    # forwards; they load the GPU as any warm-up forward does. False starts the warm-up
    # after the capture (before 2026-11-27; 0.5 s more a job at batch 1024 on an H100).
    warmup_counts_capture: bool = True
    min_iterations: int = 10
    max_iterations: int = 1000
    target_rsd: float = 0.005  # stop when the samples' relative standard deviation is below this,
    target_rse: float = 0.002  # or the mean's relative standard error is below this
    # Timed time before stopping is considered: two periods of the clock's swing under a
    # power cap, so a loop cannot stop on a few steady samples at the start of its first
    # swing (a 2 s-limit check on 2 x H100 stopped after 0.57 s with min_time_s 0.1).
    min_time_s: float = 2.0
    # Timed time after which the loop stops regardless. Under a power cap the clock swings
    # with a ~1 s period (latency RSD 1-4% at batch 128-512 on an H100), so neither target
    # is met and a repeat's mean is as good as the number of periods it spans.
    max_time_s: float = 8.0
    cuda_graph: bool = True
    flush_l2: bool = False  # cold: flush L2 before each sample
    throttle_clock_fraction: float = 0.75

    @classmethod
    def from_dict(cls, spec: dict) -> "TimingConfig":
        return cls(**check_keys(cls, "timing", spec))


@dataclass(frozen=True)
class MeasureConfig:
    """How measurement jobs get their fresh process (`measure:` in the config). Not part
    of a cell's config hash: it changes the start-up cost, not what is timed (each shard's
    metadata says which way it was made)."""

    fork_server: bool = True  # fork each job from a server that has torch imported (qbench.fork_server)
    fork_server_idle_s: float = 120.0  # the server exits after this long without a job

    @classmethod
    def from_dict(cls, spec: dict) -> "MeasureConfig":
        return cls(**check_keys(cls, "measure", spec))


@dataclass(frozen=True)
class StatsConfig:
    """How summaries are computed (`stats:` in the config; qbench.stats uses it). Here, not
    in qbench.stats, so that reading a config (Snakemake's parse) imports no scipy."""

    confidence: float = 0.95
    resamples: int = 10000
    seed: int = 0
    threshold: float = 0.01  # smallest relative effect called faster/slower
    target_halfwidth: float = 0.005  # repeats advice: interval of the mean within ±this × mean
    exclude_throttled: bool = True  # samples the harness marked throttled stay out of the statistics
    paired_speedup: bool = True  # speedup intervals paired by repeat where the repeats ran as blocks (pairable)

    @classmethod
    def from_dict(cls, spec: dict) -> "StatsConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"stats: unknown key(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**spec)
        if not 0 < cfg.confidence < 1:
            raise ValueError(f"stats.confidence: must lie strictly between 0 and 1, got {cfg.confidence!r}")
        if not cfg.target_halfwidth > 0:
            raise ValueError(f"stats.target_halfwidth: must be > 0, got {cfg.target_halfwidth!r}")
        return cfg
