"""The report's step-time section: each run's steady-state step distribution and its flags.

Why per run and not per method: a stall hits one repeat (another process sharing the cores), and a
mean over repeats would hide which one; the flags (``reports.stats.StepProfile.flags``) say what is
unusual so a reader does not have to read quantiles.
"""

from __future__ import annotations

from .load import Results
from .stats import GROUP_GAP, GROUP_SHARE, TAIL_RATIO
from .tables import DASH, Table, fmt_seconds, ok_methods, overlapping


def step_table(results: Results) -> Table | None:
    rows = []
    for m in ok_methods(results):
        for repeat, p in m.steps:
            rows.append([f"`{m.method}`", str(repeat), str(p.n), fmt_seconds(p.p50), fmt_seconds(p.p90),
                         fmt_seconds(p.p99), fmt_seconds(p.max), f"{p.tail:.2f}", "; ".join(p.flags) or DASH])
    if not rows:
        return None
    return Table(["Method", "Repeat", "Steps", "p50", "p90", "p99", "Max", "p90/p50", "Flags"], rows,
                 right=set(range(1, 8)))


def step_section(results: Results) -> list[str]:
    table = step_table(results)
    if table is None:
        return []
    flagged = [m.method for m in ok_methods(results) for _, p in m.steps if p.flags]
    lines = ["### Step times", "", table.markdown(), "",
             f"Steady-state steps (warm-up excluded). Flagged: p90/p50 above {TAIL_RATIO:g}, or two groups of "
             f"steps each holding {100 * GROUP_SHARE:.0f}% or more with a gap of {GROUP_GAP:g}× or more between "
             "them (a machine shared with another process gives both)."]
    if flagged:
        lines.append("**Unusual step times** in " + ", ".join(f"`{m}`" for m in dict.fromkeys(flagged))
                     + ": their epoch times carry that noise.")
    return lines + [""]


def interval_lines(results: Results) -> list[str]:
    """What the bracketed intervals are, and which differences they do not resolve."""
    oks = ok_methods(results)
    bases = {s.basis for m in oks for s in (m.time_spread, m.peak_spread) if s is not None and s.has_interval}
    if not bases:
        return []
    how = {"repeats": "a bootstrap of the median over repeats",
           "steps": "one run: its epoch time scaled by a bootstrap interval of its step median (memory has none)"}
    lines = ["Time and memory in brackets: the median's 95% interval, from "
             + " and ".join(how[b] for b in sorted(bases)) + " (1000 seeded resamples)."]
    for attr, what in (("time_spread", "time"), ("peak_spread", "memory")):
        pairs = overlapping(results, attr)
        if pairs:
            lines.append(f"Not resolved by these runs ({what} intervals overlap): "
                         + ", ".join(f"`{a}` ≈ `{b}`" for a, b in pairs) + ".")
    return lines
