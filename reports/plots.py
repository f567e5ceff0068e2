"""PNG plots for the report: efficiency bars and the quality-vs-TPME Pareto scatter (the memory
timelines are ``timeline.py``; what they share is ``figures.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .figures import Plot, colors, figure, save, unit_scale
from .load import Results
from .tables import fmt_mb, fmt_params, fmt_seconds, headline_metric, metric_label, ok_methods, popularity
from .timeline import plot_memory
from .tpme import TpmeResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

# ---------------------------------------------------------------- efficiency bars


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
    fig = figure(13, max(2.8, 1.6 + 0.42 * len(ms)))
    axes = fig.subplots(1, 3, sharey=True)

    t = [m.time_epoch_s.mean for m in ms]
    t_scale, t_unit = unit_scale(t, fmt_seconds)
    _bars(axes[0], names, [v / t_scale for v in t], [(m.time_epoch_s.std or 0) / t_scale for m in ms], cols,
          [fmt_seconds(m.time_epoch_s.mean) for m in ms])
    axes[0].set_xlabel(f"training time per epoch ({t_unit})")
    axes[0].set_title("Time / epoch ↓", fontsize=11)

    mem = [m.peak_mb.mean for m in ms]
    m_scale, m_unit = unit_scale(mem, fmt_mb)
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
    return Plot("efficiency", title, save(fig, path))


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
    fig = figure(7.5, 5.2)
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
    return Plot("pareto", title, save(fig, path), notes=notes)


def build_plots(results: Results, tp: TpmeResult, out_dir: Path) -> list[Plot]:
    """Draw every plot into ``out_dir/plots``; a stale file of a plot skipped this time is removed."""
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_efficiency(results, plots_dir / "efficiency.png"),
        plot_pareto(results, tp, plots_dir / "pareto.png"),
        plot_memory(results, out_dir, plots_dir / "memory.png", colors(results)),
    ]
    for p in plots:
        if p.path is None:
            (plots_dir / f"{p.name}.png").unlink(missing_ok=True)
    return plots

