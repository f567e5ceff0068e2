"""A config key's range, declared once on its dataclass field, and the one check that reads it.

Why on the field: a bound that lives beside the key's default cannot be forgotten when a key is
added (``tests/test_bad_input_rules.py`` walks every numeric field of the config and of every
method's options and fails on one without a range), and the checker, the bench.toml comments'
test and the error text all read the same declaration. Upper bounds are what a real run could
need and no more: a value past them (``data.synthetic.users = 1e9``) used to hang or allocate
GBs before failing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from core.errors import BenchError


@dataclass(frozen=True)
class Range:
    """lo <= v <= hi (``hi_open``: v < hi); ``zero``: 0 is also allowed and means ``note``."""

    lo: float
    hi: float
    hi_open: bool = False
    zero: bool = False
    note: str = ""

    def ok(self, v: float) -> bool:
        if self.zero and v == 0:
            return True
        return self.lo <= v and (v < self.hi if self.hi_open else v <= self.hi)

    def text(self) -> str:
        span = f"in [{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if self.zero:
            return f"0 ({self.note}) or {span}"
        return f"{span}{f' ({self.note})' if self.note else ''}"

    def outside(self, is_int: bool) -> list[float]:
        """A value just past each end (tests walk every bound with them)."""
        step = 1 if is_int else max(abs(self.lo), 1.0) * 1e-3
        below = self.lo - step
        if self.zero and below <= 0:  # 0 itself is allowed: go between 0 and lo, or below 0
            below = -1 if is_int else self.lo / 2
        return [below, self.hi if self.hi_open else self.hi + step]


def _num(v: float) -> str:
    if v == 2**32:
        return "2^32"
    if isinstance(v, float) and not float(v).is_integer():
        return f"{v:g}"
    return f"{int(v):,}".replace(",", "_") if abs(v) >= 10_000 else str(int(v))


# What a key's value changes, which decides where it counts (one declaration, every consumer derived):
#   result  - what a run computes: in the resume hash, and runs must agree on it to share a report
#   variant - how a run is executed (device, isolation, processes): in the hash, but runs that differ
#             still share a report (the scaling table compares them)
#   sweep   - how the sweep goes (which methods, where, how often, side measurements): in neither
#   report  - read by the reporter alone (the TPME weights): in neither; changing it re-scores
ROLES = {"result": (True, True), "variant": (True, False), "sweep": (False, False), "report": (False, False)}


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, role: str = "result",
            flag: str | None = None, rng: Range | None = None, help: str = "") -> Any:
    """A config field with what it means beside its default: its role (``ROLES``), the CLI flag that
    sets it (click's parameter name), its range and its help text (``key_doc``)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    meta = {"role": role, "help": help, **({"flag": flag} if flag else {}), **({"range": rng} if rng else {})}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def bounded(default: Any, lo: float, hi: float, *, hi_open: bool = False, zero: str = "", note: str = "",
            role: str = "result", flag: str | None = None, factory: Any = dataclasses.MISSING, help: str = "") -> Any:
    """A numeric setting with its range: ``epochs: int = bounded(4, 1, 1000, flag="epochs")``."""
    return setting(default, factory=factory, role=role, flag=flag, rng=Range(lo, hi, hi_open, bool(zero), zero or note),
                   help=help)


def range_of(f: dataclasses.Field) -> Range | None:
    return f.metadata.get("range")


def key_doc(f: dataclasses.Field) -> str:
    """A key's documentation, as bench.toml's comment on it and the CLI's help say it: its range
    first (where it has one), then its help text."""
    rng, text = range_of(f), f.metadata.get("help", "")
    return f"range {rng.text()}; {text}" if rng is not None else text


def role_of(f: dataclasses.Field) -> str:
    return f.metadata.get("role", "result")


def in_hash(role: str) -> bool:
    return ROLES[role][0]


def compared(role: str) -> bool:
    return ROLES[role][1]


def check_ranges(obj: Any, prefix: str) -> tuple[str, str] | None:
    """The first field of ``obj`` (a dataclass, not recursing) outside its range or not finite:
    ``(dotted key, what it must be)``; None when every value is fine. Lists are checked element-wise."""
    for f in dataclasses.fields(obj):
        v, key = getattr(obj, f.name, None), f"{prefix}.{f.name}" if prefix else f.name
        values = v if isinstance(v, list) else [v]
        for x in values:
            if isinstance(x, float) and not math.isfinite(x):
                return key, f"a finite number, got {v!r}"
        rng = range_of(f)
        if rng is None:
            continue
        for x in values:
            if isinstance(x, (int, float)) and not isinstance(x, bool) and not rng.ok(x):
                return key, f"{rng.text()}, got {v!r}"
    return None


def check_options(obj: Any, prefix: str) -> None:
    """Raise BadValue for the first out-of-range field of an options dataclass (method tables)."""
    bad = check_ranges(obj, prefix)
    if bad is not None:
        raise BadValue((bad[0],), f"'{bad[0]}' must be {bad[1]}")


class BadValue(BenchError):
    """A value error about named keys; whoever knows where each key's value came from prefixes it
    (``BenchConfig.blame``), so a check never guesses the source."""

    def __init__(self, keys: tuple[str, ...], text: str):
        super().__init__(text)
        self.keys, self.text = keys, text
