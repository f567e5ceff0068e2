"""torch.compile of the loss, warmed before the clock, within a time budget, never losing a run.

Why a dispatcher: a compiled function meeting a shape it has not seen compiles it on the spot,
inside a timed step. Every step shape of the planned epochs is therefore compiled before the
clock; what the budget (``train.compile_budget_s``) leaves uncompiled, or what fails to compile,
runs the eager loss instead, so the clock only ever sees compiled replays or eager steps.

Why three calls a shape under CUDA graphs: cudagraph trees (``mode="reduce-overhead"``) run a
function's first call eagerly as a warm-up and record the graph on the next; one call a shape
would leave the recording inside a timed step (inflating ``epoch_s``, understating
``compile_s``). The third call is the first replay, so a shape is known to replay before timing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from benchmark.models.kernels import first_line

CUDA_GRAPH_CALLS = 3  # cudagraph trees: warm-up run, recording, first replay
PLAIN_CALLS = 1  # inductor without graphs: the first call compiles


def warmup_calls(graphs: bool) -> int:
    """Calls of each step shape before the clock: enough that its graph is recorded (and replayed)."""
    return CUDA_GRAPH_CALLS if graphs else PLAIN_CALLS


def allow_recompiles(n_shapes: int) -> None:
    """Let dynamo keep a graph for every step shape: past its limit (8) it would silently run the
    rest eagerly, and a bucketed epoch can hold more shapes than that on a large item set."""
    import torch._dynamo.config as dyn

    for name in ("recompile_limit", "cache_size_limit"):  # the newer name, and the older one
        if hasattr(dyn, name):
            setattr(dyn, name, max(getattr(dyn, name), n_shapes + 2))


@dataclass
class CompiledLoss:
    """The compiled loss for the shapes warmed before the clock, the eager loss for the rest."""

    eager: Callable
    compiled: Callable
    ready: set[tuple[int, int]] = field(default_factory=set)

    def pick(self, shape: tuple[int, int]) -> Callable:
        return self.compiled if shape in self.ready else self.eager


@dataclass
class WarmupReport:
    """What the warm-up did, for the record (``time.compile_*``)."""

    seconds: float = 0.0
    compiled_shapes: int = 0
    eager_shapes: int = 0  # left eager: past the budget, or after a failed compile
    calls_per_shape: int = 0
    note: str | None = None  # why some shapes run eagerly


def warm_up(loss: CompiledLoss, shapes: dict[tuple[int, int], object], step: Callable[[Callable, object], None],
            calls: int, budget_s: float, clock: Callable[[], float] = time.perf_counter) -> WarmupReport:
    """Run ``step(loss.compiled, batch)`` ``calls`` times for each shape, shapes in order, while
    the time spent is under ``budget_s``; mark each finished shape ready. A compile that raises
    (anything but an interrupt) leaves every shape eager: a half-built graph set is not trusted."""
    allow_recompiles(len(shapes))
    t0 = clock()
    report = WarmupReport(calls_per_shape=calls)
    for i, (shape, batch) in enumerate(shapes.items()):
        if clock() - t0 >= budget_s:
            report.note = (f"compile budget {budget_s:g} s (train.compile_budget_s) spent after {i} of "
                           f"{len(shapes)} step shapes; the other {len(shapes) - i} run eagerly")
            break
        try:
            for _ in range(calls):
                step(loss.compiled, batch)
        except Exception as exc:  # noqa: BLE001 - a compile never loses the run
            loss.ready.clear()
            report.note = (f"compiling step shape {shape} failed ({type(exc).__name__}: {first_line(exc)}); "
                           "every shape runs eagerly")
            break
        loss.ready.add(shape)
    report.seconds = clock() - t0
    report.compiled_shapes = len(loss.ready)
    report.eager_shapes = len(shapes) - len(loss.ready)
    return report
