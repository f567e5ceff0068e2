"""The one typed run record: what a (method, repeat) cost and scored, built in one place.

Why typed: the record crosses a process boundary (isolated child -> parent) and is read back by a
reporter that must never import this package, so its shape is declared once here, serialised with
``to_dict()`` / ``from_dict()`` and versioned (``schema_version``). Free-form context (dataset
summary, environment, resolved config, metrics, FLOPs) stays a plain dict; what the efficiency
table is made of (time, memory per phase, params, energy, one-off cache costs) is typed.

``docs/results-schema.md`` describes every field. Schema 1 records (before phases) have no
``schema_version``: their ``memory.peak_mb`` spans the whole run, evaluation included.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sys
import traceback as tb
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

from iisan_util.errors import DivergedError

SCHEMA_VERSION = 2
# A run's phases: setup, cache_build (only where a method builds a cache), train and eval (once per
# epoch), trace (only with [train] profile_steps). The headline memory is the train phase.
HEADLINE_PHASE = "train"
TRANSIENT = {"transient": True}  # never serialised: runner-only state (traceback, timeline)


@dataclass
class Params:
    trainable: int
    total: int
    # MB of the trainable tensors as stored (fp32 during training): what a per-task checkpoint holds,
    # the file a user ships per task (safetensors adds only a small header)
    checkpoint_mb: float | None = None


@dataclass
class Timing:
    """Seconds. ``epoch_s`` covers training steps only; evaluation and one-off costs are apart."""

    epoch_s: list[float] = field(default_factory=list)
    epoch_s_median: float | None = None
    steps_per_epoch: int | None = None
    batch_size: int | None = None  # sequences a step trained on: train.batch_size, or every training user if fewer
    items_encoded_per_epoch: int | None = None  # rows the item tower encoded (train.encoder_workload, buckets)
    samples_per_s: float | None = None
    step_p50_s: float | None = None
    step_p90_s: float | None = None
    warmup_s: float | None = None
    steps_timed: int | None = None  # steady-state steps behind step_p50_s / step_p90_s (warm-up excluded)
    # bounded epochs (train.max_steps_per_epoch): the full epoch's time extrapolated as
    # epoch_s_median x full_epoch_steps / steps_per_epoch (the bounded steps' mean rate); None when not bounded
    full_epoch_steps: int | None = None
    epoch_s_full_est: float | None = None
    compile_s: float | None = None  # compiling (and recording CUDA graphs of) step shapes, before the clock
    compiled_shapes: int | None = None
    compile_eager_shapes: int | None = None  # shapes left eager: past train.compile_budget_s, or a failed compile
    compile_calls_per_shape: int | None = None  # warm-up calls a shape (3 under CUDA graphs: warm-up, record, replay)
    compile_note: str | None = None  # why some shapes run eagerly
    staged_hits: int | None = None  # timed steps whose images were staged a step ahead (None: nothing staged)
    staged_misses: int | None = None  # ... and those gathered and copied on the spot
    eval_s: float | None = None
    eval_item_table_s: float | None = None
    eval_rank_s: float | None = None
    setup_s: float | None = None  # model build, one-off costs (cache build) excluded
    cache_build_s: float | None = None
    cache_load_s: float | None = None


@dataclass
class PhaseMemory:
    """Peaks of one phase (MB), each reset at the phase's edges; ``peak_mb`` is its headline."""

    peak_mb: float | None = None  # cuda: reserved + context at the phase's end; cpu: RSS peak
    allocated_peak_mb: float | None = None  # caching allocator: tensors
    reserved_peak_mb: float | None = None  # caching allocator: segments held
    context_mb: float | None = None  # CUDA context measured when the phase ended
    nvml_process_peak_mb: float | None = None  # sampled from outside, phase-tagged
    rss_peak_mb: float | None = None  # max(sampled RSS, the kernel's VmHWM reset at the phase start)
    seconds: float = 0.0


@dataclass
class Check:
    """A cross-check between two memory readings of one phase (kept when it fails, too)."""

    phase: str
    check: str
    ok: bool
    detail: str


@dataclass
class Memory:
    peak_mb: float | None = None  # the headline: the train phase's peak (what the card must hold to train)
    source: str | None = None  # cuda | cuda-reserved | nvml-process | nvml-device | cpu-rss
    phase: str | None = None  # which phase the headline comes from
    phases: dict[str, PhaseMemory] = field(default_factory=dict)
    context_mb: float | None = None  # CUDA context when CUDA started
    context_end_mb: float | None = None  # ... and when training ended (lazy modules, cuBLAS/cuDNN workspaces)
    context_source: str | None = None
    nvml_process_peak_mb: float | None = None  # whole run
    nvml_device_peak_mb: float | None = None
    rss_peak_mb: float | None = None
    hwm_mb: float | None = None
    ru_maxrss_mb: float | None = None
    alloc_conf: str | None = None  # PYTORCH_CUDA_ALLOC_CONF the run trained under
    checks: list[Check] = field(default_factory=list)
    samples_csv: str | None = None
    samples_source: str | None = None
    sample_interval_s: float | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


@dataclass
class Energy:
    epoch_j: float | None = None
    per_epoch_j: list[float] | None = None


@dataclass
class CacheCost:
    """One-off cost of a method's cache (iisan-cached): paid once per dataset and weights."""

    status: str  # built | loaded
    reason: str
    build_s: float  # 0 when loaded; its peak memory is memory.phases["cache_build"]
    load_s: float
    batch_size: int | None = None  # items encoded at once while building
    path: str | None = None


@dataclass
class RankFigures:
    """One data-parallel rank's own measurements (seconds, MB)."""

    rank: int
    pid: int | None = None
    epoch_s: list[float] = field(default_factory=list)
    epoch_s_median: float | None = None
    eval_s: float | None = None
    peak_mb: float | None = None  # this rank's train-phase headline (memory.source)
    allreduce_s_per_epoch: float | None = None  # DDP's gradient all-reduces, host-observed, overlaps merged
    gather_s_per_epoch: float | None = None  # the in-batch item embeddings all-gathered
    status: str = "ok"
    error: str | None = None
    failed_at: float | None = None  # unix time this rank raised (the run's cause is the earliest)


@dataclass
class Distributed:
    """A run trained by ``world_size`` DDP processes. The record's ``time`` and ``memory`` are the
    slowest rank's epoch times and the busiest rank's memory (what each device must hold)."""

    world_size: int
    backend: str
    threads_per_rank: int | None = None  # CPU: torch threads of each rank (cores / world size)
    allreduce_mb_per_step: float | None = None  # gradient bytes DDP all-reduces per step (trainable fp32)
    epoch_s_spread: float | None = None  # max - min over ranks of their median epoch
    peak_mb_spread: float | None = None  # max - min over ranks of their peak
    allreduce_s_per_epoch: float | None = None  # max over ranks
    ranks: list[RankFigures] = field(default_factory=list)


@dataclass
class Timeline:
    """Memory samples and phase marks of one run (written to memory/<run>.csv, never to JSON)."""

    t0: float
    marks: list[tuple[float, str]]
    samples: list[Any]


@dataclass
class RunRecord:
    method: str
    description: str = ""
    status: str = "ok"  # ok | oom | diverged | failed
    error: str | None = None
    repeat: int = 0
    config_hash: str | None = None
    seed: int | None = None
    timestamp: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    data: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    backbone: dict[str, Any] | None = None
    params: Params | None = None
    resident: dict[str, float] | None = None
    time: Timing | None = None
    memory: Memory | None = None
    energy: Energy = field(default_factory=Energy)
    cache: CacheCost | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    flops: dict[str, Any] | None = None  # run.estimate: traced FLOPs a step, the device's peak, MFU
    estimate: dict[str, Any] | None = None  # run.estimate: iisan-bench estimate for the device it ran on
    trace: dict[str, Any] | None = None
    isolation: dict[str, Any] | None = None
    distributed: Distributed | None = None  # only for runs under DDP (run.nproc > 1)
    log: str | None = None
    schema_version: int = SCHEMA_VERSION
    traceback: str | None = field(default=None, metadata=TRANSIENT)
    timeline: Timeline | None = field(default=None, metadata=TRANSIENT)

    def fail(self, exc: BaseException, trace: str | None = None) -> "RunRecord":
        """The one place an exception becomes a result: ``oom`` (the peak reached is still
        recorded) or ``failed``, with the exception's last line and the traceback for the log."""
        self.status, self.error = classify(exc)
        if hasattr(exc, "last_finite"):  # a diverged run keeps its last finite loss
            self.metrics["last_finite_loss"] = exc.last_finite
        self.traceback = trace if trace is not None else "".join(tb.format_exception(exc))
        return self

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        return _from_plain(cls, d)


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, error) of a run that raised ``exc``: ``oom`` for out-of-memory, ``diverged`` for a
    non-finite loss, else ``failed``."""
    if isinstance(exc, DivergedError):
        return "diverged", last_line(exc)
    torch = sys.modules.get("torch")  # by type, without importing torch here (records stay stdlib-only)
    oom_types = (MemoryError,) + ((torch.OutOfMemoryError,) if torch is not None else ())
    oom = isinstance(exc, oom_types)
    return ("oom" if oom else "failed"), last_line(exc)


def last_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".strip()


# --------------------------------------------------------------------------- (de)serialisation


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("transient")}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _convert(tp: Any, value: Any) -> Any:
    """A plain JSON value as the annotated type: dataclasses, and dicts/lists of them, rebuilt."""
    tp = _strip_optional(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return _from_plain(tp, value)
    origin, args = get_origin(tp), get_args(tp)
    if origin is dict and dataclasses.is_dataclass(args[1]) and isinstance(value, dict):
        return {k: _from_plain(args[1], v) for k, v in value.items()}
    if origin is list and dataclasses.is_dataclass(args[0]) and isinstance(value, list):
        return [_from_plain(args[0], v) for v in value]
    if origin is list and args and get_origin(args[0]) is tuple and isinstance(value, list):
        return [tuple(v) for v in value]
    return value


def _from_plain(cls: type, d: dict[str, Any]) -> Any:
    """Build ``cls`` from a plain dict; keys this version does not know are ignored (newer records)."""
    hints = get_type_hints(cls)
    kwargs = {f.name: _convert(hints[f.name], d[f.name]) for f in dataclasses.fields(cls)
              if f.name in d and not f.metadata.get("transient")}
    return cls(**kwargs)
