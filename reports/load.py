"""Read ``results.jsonl`` and group repeats of each method.

Why a separate loader: the reporter must only depend on the results file (never on torch or the
runner), and every malformed input must fail with one line naming ``file:line`` so the user can
fix or delete that record instead of getting a stack trace from deep inside a table builder. Each
line is read through the one record schema (``core.record``: ``RunRecord.from_dict``, its
``SCHEMA_VERSION`` and the declared type of every value), the one the runner writes with.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from core.errors import BenchError
from core.record import CacheCost, Distributed, RunRecord, newer_schema, type_problem

from .stats import Spread, StepProfile, over_repeats, over_steps, step_profile

CV_THRESHOLD = 0.05


class ReportError(BenchError):
    """A results file that cannot be reported on (missing, malformed, inconsistent config): bad input,
    one line and exit 2 like any other."""


@dataclass(frozen=True)
class Run:
    """One line of results.jsonl: one (method, repeat), as the typed record."""

    line: int
    record: RunRecord

    @property
    def method(self) -> str:
        return self.record.method

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def repeat(self) -> int:
        return self.record.repeat

    @property
    def error(self) -> str | None:
        return self.record.error

    @property
    def world(self) -> int:
        """Data-parallel processes the run trained with (1 unless ``run.nproc`` > 1)."""
        return self.record.distributed.world_size if self.record.distributed else 1

    def get(self, *keys: str) -> Any:
        """Nested lookup by field names (``run.get("time", "setup_s")``): a section the record lacks
        is None, but a name the schema does not declare raises, so a renamed field fails loudly."""
        cur: Any = self.record
        for k in keys:
            if cur is None:
                return None
            if is_dataclass(cur):
                if k not in {f.name for f in fields(cur)}:
                    raise AttributeError(f"{type(cur).__name__} has no field {k!r} (core.record)")
                cur = getattr(cur, k)
            elif isinstance(cur, dict):
                cur = cur.get(k)
            else:
                return None
        return cur


@dataclass(frozen=True)
class Stat:
    """Mean and sample spread of one quantity over the ok repeats of a method, and (two or more
    repeats) its median with a 95% bootstrap interval, which the tables show (``reports.stats``)."""

    mean: float | None
    std: float | None  # sample std (ddof=1); None with fewer than two values
    n: int
    spread: Spread | None = None

    @property
    def cv(self) -> float | None:
        if self.mean is None or self.std is None or self.mean == 0:
            return None
        return self.std / abs(self.mean)

    @property
    def noisy(self) -> bool:
        return self.cv is not None and self.cv > CV_THRESHOLD

    @staticmethod
    def of(values: list[float | None]) -> "Stat":
        vals = [float(v) for v in values if v is not None]
        if not vals:
            return Stat(None, None, 0)
        std = statistics.stdev(vals) if len(vals) > 1 else None
        return Stat(statistics.fmean(vals), std, len(vals), over_repeats(vals) if len(vals) > 1 else None)


@dataclass
class MethodSummary:
    """Everything the tables need about one method, aggregated over its repeats."""

    method: str
    description: str
    status: str  # ok when at least one repeat finished ok, else the last repeat's status
    n_ok: int
    n_runs: int
    failures: list[Run]  # repeats that ended oom/failed (listed in the report)
    params_trainable: int | None = None
    params_total: int | None = None
    checkpoint_mb: float | None = None  # the trainable tensors: the per-task checkpoint
    time_epoch_s: Stat = field(default_factory=lambda: Stat(None, None, 0))
    peak_mb: Stat = field(default_factory=lambda: Stat(None, None, 0))  # training phase (schema 1: whole run)
    eval_peak_mb: Stat = field(default_factory=lambda: Stat(None, None, 0))  # evaluation phase
    cache_build_peak_mb: Stat = field(default_factory=lambda: Stat(None, None, 0))  # one-off cache build
    cache_status: str | None = None  # built | loaded (methods with a one-off cache)
    cache: CacheCost | None = None  # the first ok repeat's: a loaded cache's own build cost is in built_*
    memory_phase: str | None = None  # the phase the headline comes from; None = whole run (schema 1)
    check_failures: list[str] = field(default_factory=list)  # memory cross-checks that failed
    energy_epoch_j: Stat = field(default_factory=lambda: Stat(None, None, 0))
    samples_per_s: Stat = field(default_factory=lambda: Stat(None, None, 0))
    setup_s: Stat = field(default_factory=lambda: Stat(None, None, 0))
    eval_s: Stat = field(default_factory=lambda: Stat(None, None, 0))
    eval_item_table_s: Stat = field(default_factory=lambda: Stat(None, None, 0))  # all item embeddings, once
    eval_rank_s: Stat = field(default_factory=lambda: Stat(None, None, 0))  # all users of one split × all items
    cache_build_s: Stat = field(default_factory=lambda: Stat(None, None, 0))
    mfu: Stat = field(default_factory=lambda: Stat(None, None, 0))  # model FLOPs utilisation (fft on a known GPU)
    batch_size: int | None = None  # effective train.batch_size of the first ok repeat (per method under paper_protocol)
    paper_protocol: bool = False  # config.resolved.train.paper_protocol of any ok repeat
    memory_source: str | None = None
    samples_csv: str | None = None  # relative to the results dir; from the first ok repeat with one
    metrics: dict[str, dict[str, Stat]] = field(default_factory=dict)  # split -> key -> Stat
    distributed: Distributed | None = None  # the first ok repeat's DDP figures (run.nproc > 1)
    best_epochs: list[int] = field(default_factory=list)
    popularity: dict[str, dict[str, float]] | None = None
    # median and 95% interval: over repeats, or (one run) its epoch time over its own steps (reports.stats)
    time_spread: Spread | None = None
    peak_spread: Spread | None = None
    steps: list[tuple[int, StepProfile]] = field(default_factory=list)  # (repeat, its step-time profile)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def last_error(self) -> str | None:
        for run in reversed(self.failures):
            if run.error:
                return str(run.error)
        return None


@dataclass
class Results:
    """The parsed results file: runs in file order and per-method summaries in first-seen order."""

    path: Path
    runs: list[Run]  # the main tables' runs: one world size (the smallest in the file)
    methods: list[MethodSummary]
    world: int = 1
    # other world sizes (``run.nproc`` > 1) in the same file: the report's scaling table
    scaling: dict[int, list[MethodSummary]] = field(default_factory=dict)

    def method(self, name: str) -> MethodSummary | None:
        return next((m for m in self.methods if m.method == name), None)

    def at_world(self, n: int) -> "Results":
        """The ``n``-process methods as results of their own, so TPME is normalised within them;
        ``runs`` stay the main ones, whose config gives the TPME weights every world size shares."""
        return replace(self, methods=self.scaling[n], world=n, scaling={})


def _fail(path: Path, line: int, msg: str) -> ReportError:
    return ReportError(f"{path}:{line}: {msg}")


def _number(path: Path, run_line: int, value: Any, what: str) -> float | None:
    """A JSON number or null; anything else is a malformed record."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, run_line, f"'{what}' must be a number or null, got {value!r}")
    if not math.isfinite(value):
        raise _fail(path, run_line, f"'{what}' must be finite, got {value!r}")
    return float(value)


def read_runs(path: Path) -> list[Run]:
    """Parse every non-blank line; the first bad one raises ReportError naming ``file:line``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: results file not found (run the benchmark first)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read results file: {exc}") from None
    runs: list[Run] = []
    lines = text.splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            hint = ""
            if lineno == len(lines) and not text.endswith("\n"):
                hint = "; the last line is incomplete: is a run still writing?"
            raise _fail(path, lineno, f"malformed JSON ({exc.msg} at column {exc.colno}){hint}") from None
        if not isinstance(obj, dict):
            raise _fail(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        method, status = obj.get("method"), obj.get("status")
        if not isinstance(method, str) or not method:
            raise _fail(path, lineno, "missing or non-string 'method'")
        if not isinstance(status, str) or not status:
            raise _fail(path, lineno, "missing or non-string 'status'")
        repeat = obj.get("repeat", 0)
        if isinstance(repeat, bool) or not isinstance(repeat, int):
            raise _fail(path, lineno, f"'repeat' must be an integer, got {repeat!r}")
        problem = newer_schema(obj) or type_problem(obj)
        if problem:
            raise _fail(path, lineno, problem)
        runs.append(Run(lineno, RunRecord.from_dict(obj)))
    if not runs:
        raise ReportError(f"{path}: results file is empty (no finished runs)")
    return runs


def _latest_per_repeat(runs: list[Run]) -> list[Run]:
    """A re-run (method, repeat) supersedes the earlier line: the file is append-only."""
    latest: dict[tuple[str, int, int], Run] = {}
    for run in runs:
        latest[(run.method, run.repeat, run.world)] = run
    return sorted(latest.values(), key=lambda r: r.line)


def _epoch_time(path: Path, run: Run) -> float | None:
    med = _number(path, run.line, run.get("time", "epoch_s_median"), "time.epoch_s_median")
    if med is not None:
        return med
    epochs = run.get("time", "epoch_s")
    if isinstance(epochs, list) and epochs:
        vals = [_number(path, run.line, v, "time.epoch_s[]") for v in epochs]
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None
    return None


def _metrics(path: Path, ok: list[Run]) -> dict[str, dict[str, Stat]]:
    out: dict[str, dict[str, Stat]] = {}
    for split in ("valid", "test"):
        keys: list[str] = []
        for run in ok:
            d = run.get("metrics", split)
            if isinstance(d, dict):
                keys += [k for k in d if k not in keys]
        if keys:
            out[split] = {
                k: Stat.of([_number(path, r.line, (r.get("metrics", split) or {}).get(k), f"metrics.{split}.{k}")
                            for r in ok])
                for k in keys
            }
    return out


def summarise(path: Path, method: str, runs: list[Run]) -> MethodSummary:
    """Aggregate the repeats of one method: mean/std over ok repeats, failures kept for the report."""
    ok = [r for r in runs if r.status == "ok"]
    bad = [r for r in runs if r.status != "ok"]
    desc = next((r.record.description for r in runs if r.record.description), "")
    s = MethodSummary(
        method=method, description=desc, status="ok" if ok else runs[-1].status,
        n_ok=len(ok), n_runs=len(runs), failures=bad,
    )
    if not ok:
        return s
    first = ok[0]
    trainable = _number(path, first.line, first.get("params", "trainable"), "params.trainable")
    total = _number(path, first.line, first.get("params", "total"), "params.total")
    s.params_trainable = None if trainable is None else int(trainable)
    s.params_total = None if total is None else int(total)
    s.checkpoint_mb = _number(path, first.line, first.get("params", "checkpoint_mb"), "params.checkpoint_mb")
    num = lambda r, *k: _number(path, r.line, r.get(*k), ".".join(k))  # noqa: E731
    s.time_epoch_s = Stat.of([_epoch_time(path, r) for r in ok])
    s.peak_mb = Stat.of([num(r, "memory", "peak_mb") for r in ok])
    s.eval_peak_mb = Stat.of([num(r, "memory", "phases", "eval", "peak_mb") for r in ok])
    s.cache_build_peak_mb = Stat.of([num(r, "memory", "phases", "cache_build", "peak_mb") for r in ok])
    s.cache_status = next((str(v) for r in ok if (v := r.get("cache", "status"))), None)
    s.cache = next((r.record.cache for r in ok if r.record.cache is not None), None)
    s.memory_phase = first.get("memory", "phase")
    s.check_failures = [f"repeat {r.repeat}, {c.phase}: {c.check} ({c.detail})"
                        for r in ok if r.record.memory for c in r.record.memory.violations]
    s.energy_epoch_j = Stat.of([num(r, "energy", "epoch_j") for r in ok])
    s.samples_per_s = Stat.of([num(r, "time", "samples_per_s") for r in ok])
    s.setup_s = Stat.of([num(r, "time", "setup_s") for r in ok])
    s.eval_s = Stat.of([num(r, "time", "eval_s") for r in ok])
    s.eval_item_table_s = Stat.of([num(r, "time", "eval_item_table_s") for r in ok])
    s.eval_rank_s = Stat.of([num(r, "time", "eval_rank_s") for r in ok])
    s.cache_build_s = Stat.of([num(r, "time", "cache_build_s") for r in ok])
    s.mfu = Stat.of([num(r, "flops", "mfu") for r in ok])
    batch = num(first, "time", "batch_size")  # the batch used (older records: the configured one)
    batch = num(first, "config", "resolved", "train", "batch_size") if batch is None else batch
    s.batch_size = None if batch is None else int(batch)
    s.paper_protocol = any(r.get("config", "resolved", "train", "paper_protocol") is True for r in ok)
    s.memory_source = first.get("memory", "source")
    s.distributed = first.record.distributed
    s.samples_csv = next((r.get("memory", "samples_csv") for r in ok if r.get("memory", "samples_csv")), None)
    s.metrics = _metrics(path, ok)
    s.best_epochs = [int(b) for r in ok if isinstance(b := r.get("metrics", "best_epoch"), (int, float))]
    pop = next((r.get("metrics", "popularity") for r in ok if isinstance(r.get("metrics", "popularity"), dict)), None)
    s.popularity = pop
    _spreads(s, ok, [_epoch_time(path, r) for r in ok], [num(r, "memory", "peak_mb") for r in ok])
    return s


def _spreads(s: MethodSummary, ok: list[Run], epochs: list[float | None], peaks: list[float | None]) -> None:
    """Each figure's median and interval: over repeats when there are several, else over the one run's steps."""
    s.steps = [(r.repeat, p) for r in ok if (p := step_profile(list(r.get("time", "step_s") or []))) is not None]
    s.time_spread = over_repeats(epochs)
    s.peak_spread = over_repeats(peaks)
    one = s.time_spread is not None and s.time_spread.n == 1 and len(ok) == 1
    steps = list(ok[0].get("time", "step_s") or []) if one else []
    if one and len(steps) > 1:
        s.time_spread = over_steps(s.time_spread.median, steps)


def load_results(path: Path | str) -> Results:
    """Read and group a results file; raises ReportError on anything malformed."""
    path = Path(path)
    runs = read_runs(path)
    current = _latest_per_repeat(runs)
    worlds = sorted({r.world for r in current})
    by_world = {w: _summaries(path, [r for r in current if r.world == w]) for w in worlds}
    main = worlds[0]  # the reference: one process when the file has it
    return Results(path=path, runs=[r for r in current if r.world == main], methods=by_world.pop(main),
                   world=main, scaling=by_world)


def _summaries(path: Path, runs: list[Run]) -> list[MethodSummary]:
    order: list[str] = []
    for r in runs:
        if r.method not in order:
            order.append(r.method)
    return [summarise(path, m, [r for r in runs if r.method == m]) for m in order]
