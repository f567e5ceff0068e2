"""What one fit measured (``TrainOutcome``) and the record's timing section built from it.

Apart from the trainer so the timing rules (quantiles, the kept steps, the bounded epoch's
extrapolation) are one small module the runner and the trace both read.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from benchmark.training.compiling import WarmupReport

STEPS_KEPT = 2000  # step times a record keeps (Timing.step_s)


@dataclass
class TrainOutcome:
    epoch_s: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # optimizer steps of each epoch
    items_encoded: list[int] = field(default_factory=list)  # item-tower rows of each epoch (padding included)
    step_s: list[float] = field(default_factory=list)  # steady-state steps (warm-up excluded)
    warmup_s: float = 0.0
    compile: WarmupReport = field(default_factory=WarmupReport)  # before the first timed step
    staged_hits: int = 0  # timed steps whose item images were staged ahead (ItemInputs)
    staged_misses: int = 0  # ... and those that gathered and copied them on the spot
    full_steps: int = 0  # steps of an unbounded epoch (train.max_steps_per_epoch may bound them)
    samples: int = 0
    eval_s: list[float] = field(default_factory=list)
    item_table_s: list[float] = field(default_factory=list)  # per evaluation: all item embeddings
    rank_s: list[float] = field(default_factory=list)  # per split ranked: all its users x all items
    losses: list[float] = field(default_factory=list)
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    allreduce_s: list[float] = field(default_factory=list)  # data-parallel only: per epoch (distributed.CommStats)
    gather_s: list[float] = field(default_factory=list)

    def _full_epoch(self) -> dict:
        """A bounded epoch's time scaled to the full epoch's steps (``Timing.epoch_s_full_est``)."""
        bounded = self.steps and self.epoch_s and 0 < max(self.steps) < self.full_steps
        if not bounded:
            return {"full_epoch_steps": None, "epoch_s_full_est": None}
        return {"full_epoch_steps": self.full_steps,
                "epoch_s_full_est": statistics.median(self.epoch_s) * self.full_steps / max(self.steps)}

    def timing(self) -> dict:
        steps = sorted(self.step_s)
        q = (lambda f: steps[min(len(steps) - 1, int(f * len(steps)))]) if steps else (lambda f: None)
        total = sum(self.epoch_s)
        return {
            "epoch_s": self.epoch_s,
            "steps_per_epoch": max(self.steps) if self.steps else None,
            "items_encoded_per_epoch": max(self.items_encoded) if self.items_encoded else None,
            "epoch_s_median": statistics.median(self.epoch_s) if self.epoch_s else None,
            "samples_per_s": self.samples / total if total > 0 else None,
            "eval_s": statistics.mean(self.eval_s) if self.eval_s else None,
            "eval_item_table_s": statistics.mean(self.item_table_s) if self.item_table_s else None,
            "eval_rank_s": statistics.mean(self.rank_s) if self.rank_s else None,
            "step_p50_s": q(0.5), "step_p90_s": q(0.9), "step_p99_s": q(0.99), "step_max_s": steps[-1] if steps else None,
            "step_s": kept_steps(self.step_s), "warmup_s": self.warmup_s, "steps_timed": len(steps),
            **self._full_epoch(),
            "compile_s": self.compile.seconds or None, "compiled_shapes": self.compile.compiled_shapes or None,
            "compile_eager_shapes": self.compile.eager_shapes or None,
            "compile_calls_per_shape": self.compile.calls_per_shape or None, "compile_note": self.compile.note,
            "staged_hits": self.staged_hits if self.staged_hits or self.staged_misses else None,
            "staged_misses": self.staged_misses if self.staged_hits or self.staged_misses else None,
        }


def kept_steps(step_s: list[float], most: int = STEPS_KEPT) -> list[float]:
    """The steady steps in time order, evenly thinned to ``most`` and rounded to microseconds: what the
    report's step-time profile and single-run interval read (``reports.stats``)."""
    stride = max(1, -(-len(step_s) // most))
    return [round(v, 6) for v in step_s[::stride]]
