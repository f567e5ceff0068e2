"""One exception type for every user-facing failure.

The CLI prints ``BenchError`` as a single line and exits non-zero, so every message must name the
file, line or key that is wrong and, where possible, what would be valid instead.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """A user error: bad config, bad data, unavailable device or model."""


class DivergedError(RuntimeError):
    """Training produced a non-finite loss: the run is ``diverged``, not ok (its metrics mean nothing)."""

    def __init__(self, epoch: int, loss: float, last_finite: float | None):
        last = "none" if last_finite is None else f"{last_finite:.6g}"
        super().__init__(f"the training loss became {loss} in epoch {epoch} (last finite epoch loss: {last})")
        self.last_finite = last_finite


def nearest(name: str, valid: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint, or the list of valid names when nothing is close."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid: {', '.join(valid)})"
