"""The memory timeline plot: one panel per method, phases shaded, one y scale for all panels.

Apart from ``plots.py`` because it reads the per-run sample CSVs the runner wrote (the other plots
read only the summaries); ``report.html`` draws the same series (``reports.html``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .figures import Plot, figure, save, unit_scale
from .load import MethodSummary, Results
from .tables import fmt_mb, ok_methods

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

PHASE_COLORS = {"startup": "#eeeeee", "setup": "#fde2b8", "cache_build": "#f7b6b2", "train": "#c8e6c9",
                "eval": "#bbdefb", "trace": "#e1bee7"}


@dataclass
class Timeline:
    t: list[float]
    mb: list[float]
    phase: list[str]

    def spans(self) -> list[tuple[float, float, str]]:
        """(start, end, phase) of each run of equal phases."""
        out: list[tuple[float, float, str]] = []
        for i, (t, ph) in enumerate(zip(self.t, self.phase)):
            end = self.t[i + 1] if i + 1 < len(self.t) else t
            if out and out[-1][2] == ph:
                out[-1] = (out[-1][0], end, ph)
            else:
                out.append((t, end, ph))
        return out


def read_samples(path: Path) -> Timeline | None:
    """(t_s, mb, phase) columns of a memory samples CSV; None when unreadable or without usable rows."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"t_s", "mb"} <= set(reader.fieldnames):
                return None
            tl = Timeline([], [], [])
            for row in reader:
                try:
                    t, mb = float(row["t_s"]), float(row["mb"])
                except (TypeError, ValueError):
                    continue
                tl.t.append(t)
                tl.mb.append(mb)
                tl.phase.append(row.get("phase") or "")
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return tl if tl.t else None


def _timeline_panel(ax: "Axes", tl: Timeline, scale: float, color: str, name: str) -> set[str]:
    """One run's memory over time from its own start, its phases shaded; the phases it shows."""
    shown = set()
    for start, end, ph in tl.spans():
        if ph in PHASE_COLORS:
            ax.axvspan(start, end, color=PHASE_COLORS[ph], lw=0)
            shown.add(ph)
    ax.plot(tl.t, [v / scale for v in tl.mb], color=color, lw=1.4)
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return shown


def plot_memory(results: Results, out_dir: Path, path: Path, cmap: dict[str, str]) -> Plot:
    """Memory over time, one panel per method (time from each run's own start), phases shaded,
    from the CSVs the runner names in memory.samples_csv."""
    from matplotlib.patches import Patch

    title = "Memory timeline"
    series: dict[str, Timeline] = {}
    missing: list[str] = []
    ms: list[MethodSummary] = ok_methods(results)
    for m in ms:
        if not m.samples_csv:
            continue
        got = read_samples(out_dir / m.samples_csv)
        if got is None:
            missing.append(f"`{m.method}` ({m.samples_csv} missing or unreadable)")
        else:
            series[m.method] = got
    if not series:
        why = "no method recorded a memory timeline (memory.samples_csv)"
        return Plot("memory", title, None, skipped=why, notes=[f"Skipped: {', '.join(missing)}."] if missing else [])
    scale, unit = unit_scale([max(tl.mb) for tl in series.values()], fmt_mb)
    fig = figure(9, 1.0 + 1.35 * len(series))
    # one y scale for every panel: 400 MB must not look like another method's 786 MB
    axes = fig.subplots(len(series), 1, squeeze=False, sharey=True)[:, 0]
    phases: set[str] = set()
    for ax, (name, tl) in zip(axes, series.items()):
        phases |= _timeline_panel(ax, tl, scale, cmap[name], name)
    top = max(max(tl.mb) for tl in series.values()) / scale
    for ax in axes:
        ax.set_ylim(0, top * 1.08)
    axes[-1].set_xlabel("time since the run's start (s)")
    sources = sorted({m.memory_source for m in ms if m.method in series and m.memory_source})
    fig.suptitle(f"Memory over time per method, {unit} from 0, one scale for all panels "
                 f"({', '.join(sources) or 'source unknown'})", fontsize=11)
    order = [p for p in PHASE_COLORS if p in phases]
    fig.legend(handles=[Patch(color=PHASE_COLORS[p], label=p.replace("_", " ")) for p in order],
               loc="lower center", ncol=len(order), frameon=False, fontsize=8)
    pad = 0.35 / fig.get_figheight()  # inches of room for the title and the phase legend
    fig.tight_layout(rect=(0, 1.2 * pad, 1, 1 - pad))
    notes = []
    no_csv = [f"`{m.method}`" for m in ms if not m.samples_csv]
    if no_csv:
        notes.append(f"No timeline recorded for {', '.join(no_csv)}.")
    if missing:
        notes.append(f"Skipped: {', '.join(missing)}.")
    return Plot("memory", title, save(fig, path), notes=notes)
