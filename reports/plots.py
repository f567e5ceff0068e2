"""PNG plots for the report: efficiency bars, quality-vs-TPME Pareto scatter, memory timelines.

Why Figure + FigureCanvasAgg instead of pyplot: no global backend switch and no pyplot state, so
building a report inside another program (a notebook, the test-suite) cannot change how that
program draws, and nothing needs a display.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.atomic import atomic_write

from .load import MethodSummary, Results
from .tables import fmt_mb, fmt_params, fmt_seconds, headline_metric, metric_label, ok_methods, popularity
from .tpme import TpmeResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
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


def _figure(w: float, h: float) -> "Figure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: "Figure", path: Path) -> Path:
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI, bbox_inches="tight"))


def colors(results: Results) -> dict[str, str]:
    """One colour per method, the same in every plot."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    return {m.method: palette[i % len(palette)] for i, m in enumerate(results.methods)}


# ---------------------------------------------------------------- efficiency bars


def _unit_scale(values: list[float], fmt) -> tuple[float, str]:
    """Scale and unit for an axis from how the largest value formats (e.g. 1843 MB -> GB)."""
    biggest = max(values)
    unit = fmt(biggest).split(" ")[-1]
    num = float(fmt(biggest).split(" ")[0])
    return (biggest / num if num else 1.0), unit


def _tick_params(v: float) -> str:
    """Log-axis tick labels: 1K, 10K, 1M rather than 1.00K, 10.0K, 1.00M."""
    text = fmt_params(v)
    num = text.rstrip("KMB")
    if "." in num:
        num = num.rstrip("0").rstrip(".")
    return num + text[len(text.rstrip("KMB")):]


def _bars(ax: "Axes", names: list[str], vals: list[float], errs: list[float], cols: list[str],
          labels: list[str], log: bool = False) -> None:
    ys = list(range(len(names)))
    has_err = any(e > 0 for e in errs)
    ax.barh(ys, vals, xerr=errs if has_err else None, color=cols, height=0.6,
            error_kw={"capsize": 3, "elinewidth": 1, "ecolor": "#333"})
    ax.set_yticks(ys, names)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3, which="both" if not log else "major")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    top = max(v + e for v, e in zip(vals, errs))
    if log:
        ax.set_xscale("log")
        lo = min(v for v in vals if v > 0)
        ax.set_xlim(lo / 4, top * 10)
    else:
        ax.set_xlim(0, top * 1.35 if top > 0 else 1)
    left = ax.get_xlim()[0]
    for y, v, e, lab in zip(ys, vals, errs, labels):  # value just past the bar (or its error bar)
        ax.annotate(lab, (max(v + e, left), y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8.5)


def plot_efficiency(results: Results, path: Path) -> Plot:
    """Three panels sharing the method axis: time/epoch, peak memory, trainable params (log)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    title = "Efficiency"
    ms = [m for m in ok_methods(results)
          if None not in (m.time_epoch_s.mean, m.peak_mb.mean, m.params_trainable)]
    if not ms:
        return Plot("efficiency", title, None, skipped="no method finished ok with time, memory and parameters")
    names = [m.method for m in ms]
    cmap = colors(results)
    cols = [cmap[n] for n in names]
    fig = _figure(13, max(2.8, 1.6 + 0.42 * len(ms)))
    axes = fig.subplots(1, 3, sharey=True)

    t = [m.time_epoch_s.mean for m in ms]
    t_scale, t_unit = _unit_scale(t, fmt_seconds)
    _bars(axes[0], names, [v / t_scale for v in t], [(m.time_epoch_s.std or 0) / t_scale for m in ms], cols,
          [fmt_seconds(m.time_epoch_s.mean) for m in ms])
    axes[0].set_xlabel(f"training time per epoch ({t_unit})")
    axes[0].set_title("Time / epoch ↓", fontsize=11)

    mem = [m.peak_mb.mean for m in ms]
    m_scale, m_unit = _unit_scale(mem, fmt_mb)
    _bars(axes[1], names, [v / m_scale for v in mem], [(m.peak_mb.std or 0) / m_scale for m in ms], cols,
          [fmt_mb(m.peak_mb.mean) for m in ms])
    sources = sorted({m.memory_source for m in ms if m.memory_source})
    axes[1].set_xlabel(f"peak memory ({m_unit}; {', '.join(sources) or 'source unknown'})")
    axes[1].set_title("Peak memory ↓", fontsize=11)

    p = [float(m.params_trainable) for m in ms]  # type: ignore[arg-type]
    log = any(v > 0 for v in p)  # a log axis needs at least one positive value
    _bars(axes[2], names, p, [0.0] * len(p), cols, [fmt_params(v) for v in p], log=log)
    if log:
        axes[2].xaxis.set_major_locator(LogLocator(base=10, numticks=12))
        axes[2].xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    axes[2].xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _tick_params(v)))
    axes[2].set_xlabel("trainable parameters" + (" (log scale)" if log else ""))
    axes[2].set_title("Trainable params ↓", fontsize=11)

    repeats = max(m.n_ok for m in ms)
    sub = f"mean ± sample std over {repeats} repeats" if repeats > 1 else "single run per method"
    fig.suptitle(f"Efficiency per method ({sub}; lower is better)", fontsize=12)
    fig.tight_layout()
    return Plot("efficiency", title, _save(fig, path))


# ---------------------------------------------------------------- Pareto scatter


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Methods no other method beats on both axes (lower x = TPME, higher y = quality), by x."""
    order = sorted(points, key=lambda k: (points[k][0], -points[k][1]))
    front, best_y = [], float("-inf")
    for k in order:
        if points[k][1] > best_y:
            front.append(k)
            best_y = points[k][1]
    return front


def frontier_steps(points: dict[str, tuple[float, float]], front: list[str], x_end: float) -> tuple[list[float], list[float]]:
    """The attainable frontier as a step: from each frontier method's cost rightwards its quality holds
    until a dearer method is better (no straight line through combinations nobody measured)."""
    xs, ys = [], []
    for i, k in enumerate(front):
        x, y = points[k]
        nxt = points[front[i + 1]][0] if i + 1 < len(front) else x_end
        xs += [x, nxt]
        ys += [y, y]
    return xs, ys


def _label_candidates() -> list[tuple[float, float]]:
    """Offsets in points: hugging the marker first, then rings further out (with a leader line)."""
    near = [(5, 3), (5, -3), (-5, 3), (-5, -3), (0, 7), (0, -8)]
    far = []
    for r in (22, 36, 52):
        far += [(r * 0.7, r * 0.7), (r * 0.7, -r * 0.7), (-r * 0.7, r * 0.7), (-r * 0.7, -r * 0.7),
                (r, 0), (-r, 0), (0, r), (0, -r)]
    return near + far


def _place_labels(ax: "Axes", pts: dict[str, tuple[float, float]]) -> None:
    """Greedy label placement: first candidate offset that overlaps no marker, label or axes edge.

    Why not a fixed offset: methods with similar cost and quality (lora/adapter/bitfit) sit on top
    of each other and their labels would be unreadable; far labels get a leader line to their point.
    """
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    ax_box = ax.get_window_extent(renderer)
    r = 0.6 * ax.figure.dpi / 72 * 8  # marker radius in pixels, with a margin
    taken = []
    for x, y in pts.values():
        px, py = ax.transData.transform((x, y))
        taken.append(Bbox.from_extents(px - r, py - r, px + r, py + r))
    cands = _label_candidates()
    # crowded points first: they have the fewest free spots
    def crowd(k: str) -> float:
        px, py = ax.transData.transform(pts[k])
        return sum(1 for o in pts.values() if abs(ax.transData.transform(o)[0] - px) < 60
                   and abs(ax.transData.transform(o)[1] - py) < 30)
    for name in sorted(pts, key=crowd, reverse=True):
        x, y = pts[name]
        placed = False
        for dx, dy in cands:
            far = abs(dx) > 8 or abs(dy) > 10
            ann = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=9,
                              ha="left" if dx > 0 else "right" if dx < 0 else "center",
                              va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                              arrowprops={"arrowstyle": "-", "color": "#777", "lw": 0.7,
                                          "shrinkA": 1, "shrinkB": 4} if far else None)
            ann.update_positions(renderer)
            bb = Text.get_window_extent(ann, renderer).expanded(1.06, 1.2)  # the text only, not the leader
            inside = bb.x0 >= ax_box.x0 and bb.x1 <= ax_box.x1 and bb.y0 >= ax_box.y0 and bb.y1 <= ax_box.y1
            if inside and not any(bb.overlaps(o) for o in taken):
                taken.append(bb)
                placed = True
                break
            ann.remove()
        if not placed:  # nowhere free: accept an overlap rather than drop the name
            ax.annotate(name, (x, y), xytext=cands[0], textcoords="offset points", fontsize=9)


def plot_pareto(results: Results, tp: TpmeResult, path: Path) -> Plot:
    """Test quality against TPME; the frontier shows which methods are worth their cost."""
    key = headline_metric(results)
    title = "Quality vs TPME"
    if key is None:
        return Plot("pareto", title, None, skipped="no test metrics in the results")
    pts: dict[str, tuple[float, float]] = {}
    for m in ok_methods(results):
        row, st = tp.rows.get(m.method), m.metrics.get("test", {}).get(key)
        if row is not None and st is not None and st.mean is not None:
            pts[m.method] = (row.tpme, st.mean)
    if not pts:
        return Plot("pareto", title, None, skipped=f"no ok method has both a TPME and test {metric_label(key)}")
    front = pareto_front(pts)
    cmap = colors(results)
    fig = _figure(7.5, 5.2)
    ax = fig.subplots()
    ys = [y for _, y in pts.values()]
    pop = ((popularity(results) or {}).get("test") or {}).get(key)
    lo, hi = min(ys + ([pop] if pop is not None else [])), max(ys + ([pop] if pop is not None else []))
    pad = (hi - lo) * 0.15 or max(abs(hi) * 0.1, 0.01)
    ax.set_xlim(-0.08, 1.08)
    ax.set_ylim(0.0 if lo >= 0 else lo - pad, hi + pad)  # quality from 0: a gap reads as its true size
    if len(front) > 1:
        fx, fy = frontier_steps(pts, front, 1.08)
        ax.plot(fx, fy, "--", color="#555", lw=1.2, zorder=1, label="Pareto frontier (attainable quality per cost)")
    for name, (x, y) in pts.items():
        on = name in front
        ax.scatter([x], [y], s=80 if on else 50, color=cmap[name], zorder=3, alpha=0.9,
                   edgecolors="black" if on else "white", linewidths=1.2 if on else 0.8)
    if pop is not None:
        ax.axhline(pop, color="#999", ls=":", lw=1.2, label="popularity floor")
    ax.set_xlabel("TPME (0 = cheapest in this run, 1 = most expensive)  ← better")
    ax.set_ylabel(f"test {metric_label(key)} (fraction of users, from 0; higher is better) →")
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"Quality vs cost: test {metric_label(key)} against TPME\n"
                 "(black-edged points are on the Pareto frontier; best is top-left)", fontsize=11)
    if len(front) > 1 or pop is not None:
        ax.legend(loc="lower right", fontsize=8.5, frameon=False)
    fig.tight_layout()
    fig.canvas.draw()
    _place_labels(ax, pts)
    notes = [f"Pareto frontier: {', '.join(f'`{k}`' for k in front)}."]
    return Plot("pareto", title, _save(fig, path), notes=notes)


# ---------------------------------------------------------------- memory timelines


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


def plot_memory(results: Results, out_dir: Path, path: Path) -> Plot:
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
    cmap = colors(results)
    scale, unit = _unit_scale([max(tl.mb) for tl in series.values()], fmt_mb)
    fig = _figure(9, 1.0 + 1.35 * len(series))
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
    return Plot("memory", title, _save(fig, path), notes=notes)


def build_plots(results: Results, tp: TpmeResult, out_dir: Path) -> list[Plot]:
    """Draw every plot into ``out_dir/plots``; a stale file of a plot skipped this time is removed."""
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_efficiency(results, plots_dir / "efficiency.png"),
        plot_pareto(results, tp, plots_dir / "pareto.png"),
        plot_memory(results, out_dir, plots_dir / "memory.png"),
    ]
    for p in plots:
        if p.path is None:
            (plots_dir / f"{p.name}.png").unlink(missing_ok=True)
    return plots

