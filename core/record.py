"""The one typed run record: what a (method, repeat) cost and scored, declared once for both sides.

Why here, in the bottom layer (stdlib only): the runner builds it, an isolated child sends it to its
parent (``to_dict()`` / ``from_dict()``), and the reporter, which imports nothing of the benchmark,
reads every results line back through ``RunRecord.from_dict`` and ``check_types``: a renamed field
fails the reporter and its tests, not a silent ``None`` in a table. One ``SCHEMA_VERSION`` serves
the writer and the reader. Typed: every section a report reads (time, memory per phase, params,
energy, cache, environment, data, backbone, metrics, FLOPs, DDP figures). Still plain dicts: the
resolved config (``BenchConfig.to_dict()``, declared by the config's dataclasses), ``estimate``
(``iisan-bench estimate --format json``'s object), ``trace`` and ``isolation`` (no report reads them).

``docs/results-schema.md`` describes every field. Schema 1 records (before phases) have no
``schema_version``: their ``memory.peak_mb`` spans the whole run, evaluation included.
"""

from __future__ import annotations

import datetime as dt
import sys
import traceback as tb
from dataclasses import dataclass, field
from typing import Any

from core import plain
from core.errors import DivergedError
from core.inputs import BackboneInfo, DataSummary, EncoderInfo  # noqa: F401 - part of the record

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
    step_p99_s: float | None = None
    step_max_s: float | None = None
    # the steady steps' own times in order (every one, or evenly thinned to 2000): the report's step profile
    step_s: list[float] = field(default_factory=list)
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
    size_mb: float | None = None  # the cached states in their storage dtype (on disk, and in memory while training)
    # the build's own cost, kept with the cache (core.oneoff), also when this run only loaded it
    built_s: float | None = None
    built_peak_mb: float | None = None
    built_memory_source: str | None = None
    built_on: str | None = None  # device name
    built_at: str | None = None


@dataclass
class RankFigures:
    """One data-parallel rank's own measurements (seconds, MB)."""

    rank: int
    pid: int | None = None
    host: str | None = None  # the machine this rank ran on
    node: int | None = None  # its node's rank in the job (torchrun's GROUP_RANK; 0 under --nproc)
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
    nodes: int | None = None  # machines the ranks ran on (torchrun --nnodes; 1 under --nproc)
    ranks_per_node: int | None = None
    launcher: str | None = None  # nproc (iisan-bench forks the ranks) | torchrun


@dataclass
class Timeline:
    """Memory samples and phase marks of one run (written to memory/<run>.csv, never to JSON)."""

    t0: float
    marks: list[tuple[float, str]]
    samples: list[Any]


@dataclass
class Snapshot:
    """The machine at one edge of a run (``benchmark.measure.conditions``)."""

    when: str  # start | end
    load_1m: float | None = None  # the kernel's 1-minute load average (earlier runs of a sweep count in it)
    cpu_count: int | None = None
    cpu_mhz: float | None = None
    gpu_others: list[str] | None = None  # other compute processes on the run's GPU (NVML): "pid: MB"
    gpu: dict[str, Any] | None = None  # clocks, power limit, memory, driver (``Nvml.device_state``)


@dataclass
class Conditions:
    """Whether the run shared its machine: ``busy`` with its evidence, from the CPU time every other
    process used between the run's start and end, and the GPU's other processes at both edges."""

    busy: bool = False
    evidence: list[str] = field(default_factory=list)
    others_cores: float | None = None  # CPU other processes used over the run, on average, in cores
    span_s: float | None = None  # the span that average covers (the run's start to its end)
    others_top: list[str] = field(default_factory=list)  # "pid name: cores", busiest first
    threads: dict[str, Any] = field(default_factory=dict)  # torch intra-op threads, OMP/MKL settings
    snapshots: list[Snapshot] = field(default_factory=list)


@dataclass
class Env:
    """Where and with what a run ran (``benchmark.measure.results.env_info``, completed by the runner)."""

    device: str | None = None  # cpu | cuda
    device_name: str | None = None
    cpu_count: int | None = None
    torch_threads: int | None = None  # intra-op threads of the run's process: CPU times scale with it
    python: str | None = None
    torch: str | None = None
    transformers: str | None = None
    peft: str | None = None
    cuda: str | None = None
    git_sha: str | None = None
    platform: str | None = None
    pid: int | None = None  # the process that trained (an isolated child's)
    parent_pid: int | None = None
    compile: str | None = None  # train.compile as resolved for the device
    sdpa: dict[str, Any] | None = None  # the attention kernel: backend, chosen_by, note
    grad_scaler: bool | None = None  # a GradScaler scaled the loss (fp16 on CUDA)
    # reproducibility (``benchmark.measure.results.build_info``)
    cpu_model: str | None = None
    git_commit: str | None = None  # the full commit; git_sha is its short form, "-dirty" when changed
    git_dirty: bool | None = None
    torch_config_sha: str | None = None  # sha256 of torch.__config__.show(): the build's flags, 16 hex
    cudnn: int | None = None
    nccl: str | None = None
    driver: str | None = None  # the NVIDIA driver (NVML)
    gpu_memory_mb: float | None = None
    packages: dict[str, str] = field(default_factory=dict)  # numpy, tokenizers, safetensors, ... versions


@dataclass
class Metrics:
    """Ranking quality and what it was measured under."""

    valid: dict[str, float] = field(default_factory=dict)  # at the best epoch: hr@K, ndcg@K, mrr@K
    test: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: loss, valid metrics
    popularity: dict[str, dict[str, float]] | None = None  # the popularity floor, per split
    target_repeats_history: dict[str, float] | None = None  # share of targets repeating a history item
    last_finite_loss: float | None = None  # a diverged run's last finite loss


@dataclass
class Flops:
    """Traced FLOPs of a typical step and the model FLOPs utilisation of the measured median step."""

    per_step: float | None = None
    source: str | None = None
    device_peak: float | None = None
    precision: str | None = None
    mfu: float | None = None


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
    data: DataSummary = field(default_factory=DataSummary)
    env: Env = field(default_factory=Env)
    config: dict[str, Any] = field(default_factory=dict)  # {"resolved": BenchConfig.to_dict()}
    backbone: BackboneInfo | None = None
    params: Params | None = None
    resident: dict[str, float] | None = None
    time: Timing | None = None
    memory: Memory | None = None
    energy: Energy = field(default_factory=Energy)
    cache: CacheCost | None = None
    metrics: Metrics = field(default_factory=Metrics)
    flops: Flops | None = None  # run.estimate: traced FLOPs a step, the device's peak, MFU
    estimate: dict[str, Any] | None = None  # run.estimate: iisan-bench estimate for the device it ran on
    trace: dict[str, Any] | None = None
    isolation: dict[str, Any] | None = None
    distributed: Distributed | None = None  # only for runs under DDP (run.nproc > 1)
    conditions: Conditions | None = None  # other load on the machine at the run's start and end
    log: str | None = None
    schema_version: int = SCHEMA_VERSION
    traceback: str | None = field(default=None, metadata=TRANSIENT)
    timeline: Timeline | None = field(default=None, metadata=TRANSIENT)

    def fail(self, exc: BaseException, trace: str | None = None) -> "RunRecord":
        """The one place an exception becomes a result: ``oom`` (the peak reached is still
        recorded) or ``failed``, with the exception's last line and the traceback for the log."""
        self.status, self.error = classify(exc)
        if hasattr(exc, "last_finite"):  # a diverged run keeps its last finite loss
            self.metrics.last_finite_loss = exc.last_finite
        self.traceback = trace if trace is not None else "".join(tb.format_exception(exc))
        return self

    def to_dict(self) -> dict[str, Any]:
        return plain.to_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        return plain.from_plain(cls, d)


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


# --------------------------------------------------------------------------- reading results back


def newer_schema(obj: dict[str, Any]) -> str | None:
    """Why a results line cannot be read by this version (its ``schema_version`` is newer or not an
    integer), or None. One rule for the sweep's resume and the reporter."""
    version = obj.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version > SCHEMA_VERSION:
        return f"schema_version {version!r} is newer than this iisan-bench reads ({SCHEMA_VERSION}); update iisan-bench"
    return None


def type_problem(obj: dict[str, Any]) -> str | None:
    """The first value of a results line its declared type refuses (``core.plain.type_problem``)."""
    return plain.type_problem(obj, RunRecord)
