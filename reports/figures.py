"""What every report plot shares: the Plot record, a pyplot-free figure, atomic saving, units, colours.

Why Figure + FigureCanvasAgg instead of pyplot: no global backend switch and no pyplot state, so
building a report inside another program (a notebook, the test-suite) cannot change how that
program draws, and nothing needs a display.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.atomic import atomic_write

from .load import Results

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

DPI = 130


@dataclass
class Plot:
    """One plot: the file when drawn, or why it was skipped; notes go under it in the report."""

    name: str
    title: str
    path: Path | None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


def figure(w: float, h: float) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig: "Figure", path: Path) -> Path:
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI, bbox_inches="tight"))


def colors(results: Results) -> dict[str, str]:
    """One colour per method, the same in every plot."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    return {m.method: palette[i % len(palette)] for i, m in enumerate(results.methods)}


def unit_scale(values: list[float], fmt) -> tuple[float, str]:
    """Scale and unit for an axis from how the largest value formats (e.g. 1843 MB -> GB)."""
    biggest = max(values)
    unit = fmt(biggest).split(" ")[-1]
    num = float(fmt(biggest).split(" ")[0])
    return (biggest / num if num else 1.0), unit
