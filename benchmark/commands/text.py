"""Plain-text tables for the terminal commands (``params``, ``estimate``)."""

from __future__ import annotations


def aligned(table: list[list[str]]) -> list[str]:
    """Rows as lines: the first column left-aligned, the rest right-aligned, a rule under the header."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for j, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines
