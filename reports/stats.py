"""Uncertainty of the report's figures: bootstrap intervals of medians and step-time profiles.

Why a bootstrap of the median (stdlib only, seeded): time and memory over a handful of repeats are
neither normal nor symmetric (one stalled repeat drags a mean); the median with a percentile
bootstrap interval is what benchmark suites (MLPerf's dropped outliers, pyperf's medians) lean on,
needs no distribution, and is reproducible because the resampling is seeded. With one run, the
interval of its epoch time comes from its own steps (the epoch scaled by the step median's interval),
and the report says which basis each interval has.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

LEVEL = 0.95
RESAMPLES = 1000
TAIL_RATIO = 1.5  # p90 / p50 above this: a step-time tail worth a flag
GROUP_SHARE = 0.10  # each of two step groups holds at least this share of the steps ...
GROUP_GAP = 1.5  # ... and the slower group's fastest step is at least this many times the faster's slowest


@dataclass(frozen=True)
class Spread:
    """A median with its 95% interval; ``basis`` says what was resampled."""

    median: float
    low: float | None
    high: float | None
    n: int
    basis: str  # "repeats" | "steps" | "single"

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    def overlaps(self, other: "Spread") -> bool:
        """True when the two intervals share a point (the difference is not resolved)."""
        if not (self.has_interval and other.has_interval):
            return False
        return self.low <= other.high and other.low <= self.high  # type: ignore[operator]


def bootstrap_ci(values: list[float], level: float = LEVEL, resamples: int = RESAMPLES,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the median of ``values``; None with fewer than two values."""
    if len(values) < 2:
        return None
    rng = random.Random(seed)
    n = len(values)
    meds = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples))
    tail = (1.0 - level) / 2.0
    lo = meds[int(tail * (resamples - 1))]
    hi = meds[int(round((1.0 - tail) * (resamples - 1)))]
    return lo, hi


def over_repeats(values: list[float | None]) -> Spread | None:
    """Median and interval over a method's repeats (None when no repeat has the figure)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    ci = bootstrap_ci(vals)
    if ci is None:
        return Spread(vals[0], None, None, 1, "single")
    return Spread(statistics.median(vals), ci[0], ci[1], len(vals), "repeats")


def over_steps(epoch_s: float, step_s: list[float]) -> Spread:
    """One run's epoch time with the interval of its steps' median, scaled to the epoch."""
    ci = bootstrap_ci(step_s)
    med = statistics.median(step_s) if step_s else 0.0
    if ci is None or med <= 0:
        return Spread(epoch_s, None, None, 1, "single")
    return Spread(epoch_s, epoch_s * ci[0] / med, epoch_s * ci[1] / med, len(step_s), "steps")


@dataclass(frozen=True)
class StepProfile:
    """The distribution of one run's steady-state step times (seconds) and what is unusual in it."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float
    bimodal: str | None  # why the steps fall in two groups, or None

    @property
    def tail(self) -> float:
        return self.p90 / self.p50 if self.p50 > 0 else 0.0

    @property
    def flags(self) -> list[str]:
        out = [self.bimodal] if self.bimodal else []
        if self.tail > TAIL_RATIO:
            out.append(f"long tail: p90/p50 {self.tail:.2f} > {TAIL_RATIO:g}")
        return out


def quantile(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank quantile (the trainer's rule: index min(n-1, int(q·n)))."""
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def bimodality(step_s: list[float]) -> str | None:
    """Two groups of steps split at the widest ratio between neighbours: flagged when each group
    holds ``GROUP_SHARE`` of the steps and the gap is at least ``GROUP_GAP``× (a machine shared with
    another process gives such groups: 0.23 s steps among 5 s ones)."""
    s = sorted(v for v in step_s if v > 0)
    n = len(s)
    least = max(2, int(GROUP_SHARE * n + 0.999))
    if n < 2 * least:
        return None
    cut = max(range(least, n - least + 1), key=lambda i: s[i] / s[i - 1])
    gap = s[cut] / s[cut - 1]
    if gap < GROUP_GAP:
        return None
    slow = n - cut
    return (f"bimodal: {slow} of {n} steps at ≥ {s[cut]:.3g} s, {gap:.1f}× the other {cut} "
            f"(≤ {s[cut - 1]:.3g} s)")


def step_profile(step_s: list[float]) -> StepProfile | None:
    if not step_s:
        return None
    s = sorted(step_s)
    return StepProfile(len(s), quantile(s, 0.5), quantile(s, 0.9), quantile(s, 0.99), s[-1], bimodality(s))
