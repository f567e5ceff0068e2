"""Tables: human-formatted cells for report.md (the raw rows of summary.csv are ``reports.summary``,
built from the same summaries, so the two cannot drift apart)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from core.paper import PAPER_REFERENCE, paper_figures

from .load import MethodSummary, Results, Stat
from .stats import Spread
from .tpme import TpmeResult

AT_FLOOR = "▽"  # marks a quality figure at or below the popularity floor's
NOISY = "⚠"  # marks a time/memory whose coefficient of variation over repeats exceeds 5%
DASH = "—"
_METRIC_ORDER = {"hr": 0, "recall": 1, "ndcg": 2, "mrr": 3}
_METRIC_LABEL = {"hr": "HR", "ndcg": "NDCG", "mrr": "MRR", "recall": "Recall"}


# ---------------------------------------------------------------- number formatting


def _sig(x: float, digits: int = 3) -> str:
    """``digits`` significant digits without exponent notation (4.11, 19.5, 195)."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    mag = math.floor(math.log10(abs(x)))
    if abs(float(f"{x:.{max(0, digits - 1 - mag)}f}")) >= 10 ** (mag + 1):
        mag += 1  # 0.9996 rounds to 1.00, not 1.000
    return f"{x:.{max(0, digits - 1 - mag)}f}"


Units = list[tuple[float, float, str]]  # (from value, scale, suffix), largest first


def _scaled(x: float, units: Units) -> tuple[float, str]:
    """Pick the largest unit the value reaches (once rounded to 3 significant digits)."""
    for start, scale, suffix in units:
        if abs(x) >= start * 0.9995:
            return scale, suffix
    return units[-1][1], units[-1][2]


_PARAM_UNITS: Units = [(1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e3, 1e3, "K"), (1.0, 1.0, "")]
_MB_UNITS: Units = [(1024.0**2, 1024.0**2, " TB"), (1024.0, 1024.0, " GB"), (1.0, 1.0, " MB")]
# seconds up to 1000 s read fine; minutes up to 100 min; hours beyond
_TIME_UNITS: Units = [(6000.0, 3600.0, " h"), (1000.0, 60.0, " min"), (1.0, 1.0, " s"), (1e-3, 1e-3, " ms")]
_UNIT_SCALE = {u.strip(): scale for units in (_MB_UNITS, _TIME_UNITS) for _, scale, u in units}
_ENERGY_UNITS: Units = [(1e6, 1e6, " MJ"), (1e3, 1e3, " kJ"), (1.0, 1.0, " J")]


def fmt_params(n: float | None) -> str:
    """4110000 -> 4.11M, 195000 -> 195K, 512 -> 512."""
    if n is None:
        return DASH
    if abs(n) < 1000:
        return f"{int(round(n))}"
    scale, suffix = _scaled(n, _PARAM_UNITS)
    return _sig(n / scale) + suffix


def _fmt_unit(mean: float | None, std: float | None, units: Units, fixed: tuple[float, str] | None = None) -> str:
    """``mean`` in a readable unit (``fixed``: this one), with ``± std`` in the same unit and precision."""
    if mean is None:
        return DASH
    scale, suffix = fixed or _scaled(mean, units)
    m = _sig(mean / scale)
    if std is None:
        return m + suffix
    decimals = len(m.split(".")[1]) if "." in m else 0
    s = f"{std / scale:.{decimals}f}"
    if float(s) == 0 and std > 0:
        s = _sig(std / scale, 1)
    return f"{m} ± {s}{suffix}"


def fmt_mb(mb: float | None, std: float | None = None, unit: tuple[float, str] | None = None) -> str:
    """812 -> 812 MB, 1843 -> 1.80 GB (binary: 1 GB = 1024 MB, as peak_mb is reported); ``unit``
    (from ``mb_unit``) fixes the unit, so one table's column reads in one unit."""
    return _fmt_unit(mb, std, _MB_UNITS, unit)


def mb_unit(values: list[float | None]) -> tuple[float, str] | None:
    """The unit the largest of ``values`` reads best in (None when there is none)."""
    vals = [abs(v) for v in values if v is not None]
    return _scaled(max(vals), _MB_UNITS) if vals else None


def fmt_seconds(s: float | None, std: float | None = None) -> str:
    """0.0123 -> 12.3 ms, 1.15 -> 1.15 s, 4000 -> 66.7 min."""
    return _fmt_unit(s, std, _TIME_UNITS)


def fmt_energy(j: float | None, std: float | None = None) -> str:
    return _fmt_unit(j, std, _ENERGY_UNITS)


def fmt_pct(x: float | None) -> str:
    """22% for large shares, 2.1% / 0.052% for small ones so tiny parameter shares are not 0%."""
    if x is None:
        return DASH
    if x == 0:
        return "0%"
    if abs(x) >= 10:
        return f"{x:.0f}%"
    if abs(x) >= 1:
        return f"{x:.1f}%"
    return _sig(x, 2) + "%"


def fmt_stat(stat: Stat, fmt) -> str:
    """A Stat with its spread: the median and 95% interval over repeats (``fmt_spread``), else the mean
    (± std); flagged when the coefficient of variation is above 5%."""
    if stat.spread is not None and stat.spread.has_interval:
        return fmt_spread(stat.spread, stat, fmt)
    text = fmt(stat.mean, stat.std)
    if stat.noisy:
        text += f" {NOISY} CV {100 * stat.cv:.0f}%"  # type: ignore[operator]
    return text


def fmt_spread(spread: Spread | None, stat: Stat, fmt) -> str:
    """Median with its 95% interval in one unit (``11.0 s [10.0–12.0]``), the CV flag kept; a figure
    without an interval falls back to the mean (``fmt_stat``)."""
    if spread is None or not spread.has_interval:
        return fmt_stat(stat, fmt)
    text = fmt(spread.median)
    num, unit = (text.rsplit(" ", 1) + [""])[:2] if " " in text else (text, "")
    decimals = len(num.split(".")[1]) if "." in num else 0
    scale = _UNIT_SCALE.get(unit, 1.0)
    lo, hi = (f"{v / scale:.{decimals}f}" for v in (spread.low, spread.high))  # type: ignore[operator]
    text = f"{num}{' ' + unit if unit else ''} [{lo}–{hi}]"
    if stat.noisy:
        text += f" {NOISY} CV {100 * stat.cv:.0f}%"  # type: ignore[operator]
    return text


def overlapping(results: Results, attr: str) -> list[tuple[str, str]]:
    """Pairs of ok methods whose ``attr`` intervals (``time_spread`` / ``peak_spread``) overlap: their
    difference is within the measured noise."""
    oks = [(m.method, getattr(m, attr)) for m in ok_methods(results)]
    return [(a, b) for i, (a, sa) in enumerate(oks) for b, sb in oks[i + 1:]
            if sa is not None and sb is not None and sa.overlaps(sb)]


def fmt_metric(x: float | None) -> str:
    return DASH if x is None else f"{x:.4f}"


# ---------------------------------------------------------------- metric keys


def metric_sort_key(key: str) -> tuple[int, int, str]:
    """hr@5, ndcg@5, mrr@5, hr@10, ... : grouped by K, then the usual HR/NDCG/MRR order."""
    m = re.fullmatch(r"([A-Za-z_]+)@(\d+)", key)
    if not m:
        return (10**9, 99, key)
    return (int(m.group(2)), _METRIC_ORDER.get(m.group(1).lower(), 50), key)


def metric_label(key: str) -> str:
    m = re.fullmatch(r"([A-Za-z_]+)@(\d+)", key)
    if not m:
        return key
    return f"{_METRIC_LABEL.get(m.group(1).lower(), m.group(1))}@{m.group(2)}"


def metric_keys(results: Results, split: str) -> list[str]:
    keys: set[str] = set()
    for m in results.methods:
        keys |= set(m.metrics.get(split, {}))
    pop = popularity(results)
    if pop:
        keys |= set(pop.get(split) or {})
    return sorted(keys, key=metric_sort_key)


def popularity(results: Results) -> dict[str, dict[str, float]] | None:
    """The popularity floor (identical data for every method, so the first one found is used)."""
    return next((m.popularity for m in results.methods if m.popularity), None)


def headline_metric(results: Results) -> str | None:
    """The test metric the Pareto plot uses: ndcg@10, else NDCG at the first K, else any."""
    keys = [k for k in metric_keys(results, "test") if any(k in m.metrics.get("test", {}) for m in results.methods)]
    if "ndcg@10" in keys:
        return "ndcg@10"
    ndcg = [k for k in keys if k.lower().startswith("ndcg@")]
    return (ndcg or keys or [None])[0]


# ---------------------------------------------------------------- markdown tables


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)  # right-aligned (numeric) columns

    def markdown(self) -> str:
        def esc(c: str) -> str:
            return c.replace("|", "\\|")

        lines = ["| " + " | ".join(esc(h) for h in self.headers) + " |"]
        lines.append("|" + "|".join("---:" if i in self.right else ":---" for i in range(len(self.headers))) + "|")
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


def ok_methods(results: Results) -> list[MethodSummary]:
    return [m for m in results.methods if m.ok]


def _params_cell(m: MethodSummary) -> str:
    text = fmt_params(m.params_trainable)
    if m.params_trainable is not None and m.params_total:
        text += f" ({fmt_pct(100.0 * m.params_trainable / m.params_total)})"
    return text


def memory_unit(results: Results) -> tuple[float, str] | None:
    """One unit for every memory figure of the efficiency table."""
    vals = [v for m in ok_methods(results) for v in (m.peak_mb.mean, m.eval_peak_mb.mean, m.cache_build_peak_mb.mean)]
    return mb_unit(vals)


def one_off_cell(m: MethodSummary, unit: tuple[float, str] | None) -> str:
    """A method's one-off cache: build time and peak memory, or that an existing cache was loaded."""
    if m.cache_status is None:
        return DASH
    size = f"; cache {fmt_mb(m.cache.size_mb)}" if m.cache is not None and m.cache.size_mb is not None else ""
    if m.cache_status == "loaded":
        c = m.cache
        if c is None or c.built_s is None:
            return f"loaded; its build's cost is unknown (built before iisan-bench kept it){size}"
        peak = f", {fmt_mb(c.built_peak_mb, unit=unit)} peak" if c.built_peak_mb is not None else ", peak unknown"
        where = f" on {c.built_on}" if c.built_on else ""
        when = f", {str(c.built_at)[:10]}" if c.built_at else ""
        return f"loaded; built earlier{where}{when}: {fmt_seconds(c.built_s)}{peak}{size}"
    peak = m.cache_build_peak_mb
    mb = lambda mean, std=None: fmt_mb(mean, std, unit)  # noqa: E731
    return (fmt_stat(m.cache_build_s, fmt_seconds) + (f", {fmt_stat(peak, mb)} peak" if peak.mean is not None else "")
            + size)


def efficiency_table(results: Results, tp: TpmeResult) -> Table:
    """Cost of each ok method; columns for energy, repeats and relative cost only when they exist."""
    oks = ok_methods(results)
    show_energy = any(m.energy_epoch_j.mean is not None for m in oks)
    show_mfu = any(m.mfu.mean is not None for m in oks)
    show_repeats = any(m.n_ok > 1 for m in oks)
    show_eval = any(m.eval_peak_mb.mean is not None for m in oks)
    show_once = any(m.cache_status for m in oks)
    ref = tp.config.reference
    show_rel = bool(tp.relative)
    show_batch = batch_differs(results)
    unit = memory_unit(results)
    phased = all(m.memory_phase for m in oks)
    headers = ["Method"] + (["Batch"] if show_batch else []) + [
        "Trainable params (% of total)", "Time / epoch", "Peak memory (training)" if phased else "Peak memory"]
    headers += (["Eval peak"] if show_eval else []) + (["One-off: cache build"] if show_once else [])
    if show_energy:
        headers.append("Energy / epoch")
    if show_mfu:
        headers.append("MFU")
    headers.append("TPME ↓")
    if show_rel:
        headers.append(f"Relative cost ↓ (% of {ref})")
    if show_repeats:
        headers.append("Repeats")
    best = min((r.tpme for r in tp.rows.values()), default=None)
    rows = []
    mb = lambda mean, std=None: fmt_mb(mean, std, unit)  # noqa: E731
    for m in oks:
        row = [f"`{m.method}`"] + ([DASH if m.batch_size is None else str(m.batch_size)] if show_batch else []) + [
            _params_cell(m), fmt_spread(m.time_spread, m.time_epoch_s, fmt_seconds),
            fmt_spread(m.peak_spread, m.peak_mb, mb)]
        row += ([fmt_stat(m.eval_peak_mb, mb)] if show_eval else []) + ([one_off_cell(m, unit)] if show_once else [])
        if show_energy:
            row.append(fmt_stat(m.energy_epoch_j, fmt_energy))
        if show_mfu:
            row.append(fmt_pct(None if m.mfu.mean is None else 100.0 * m.mfu.mean))
        t = tp.rows.get(m.method)
        cell = DASH if t is None else f"{t.tpme:.3f}"
        if t is not None and len(tp.rows) > 1 and t.tpme == best:
            cell = f"**{cell}**"
        row.append(cell)
        if show_rel:
            rel = tp.relative.get(m.method)
            row.append(fmt_pct(rel.cost_pct if rel else None))
        if show_repeats:
            row.append(str(m.n_ok) if m.n_ok == m.n_runs else f"{m.n_ok} of {m.n_runs}")
        rows.append(row)
    return Table(headers, rows, right=set(range(1, len(headers))))


def relative_table(results: Results, tp: TpmeResult) -> Table | None:
    """Each cost as a share of the reference method; None when the reference did not run ok.

    With ``fft`` as the reference, the IISAN paper's shares of FFT sit next to ours (core.paper).
    """
    if not tp.relative:
        return None
    ref = tp.config.reference
    shown = [m for m in ok_methods(results) if m.method in tp.relative]
    paper = show_paper(tp, [m.method for m in shown])
    headers = ["Method", f"Time / epoch (% of {ref})"] + (["Paper time (% of FFT)"] if paper else []) + [
        f"Trainable params (% of {ref})", f"Peak memory (% of {ref})"] + (
        ["Paper memory (% of FFT)"] if paper else []) + [f"Relative cost (% of {ref})"]
    rows = []
    for m in shown:
        rel = tp.relative[m.method]
        pf = paper_figures(m.method)
        row = [f"`{m.method}`", fmt_pct(rel.time_pct)]
        if paper:
            row.append(pf.time.text if pf else DASH)
        row += [fmt_pct(rel.params_pct), fmt_pct(rel.memory_pct)]
        if paper:
            row.append(pf.memory.text if pf else DASH)
        rows.append(row + [fmt_pct(rel.cost_pct)])
    return Table(headers, rows, right=set(range(1, len(headers))))


def show_paper(tp: TpmeResult, methods: list[str]) -> bool:
    """Paper columns only against fft (the paper's reference) and when a listed method has figures."""
    return tp.config.reference == PAPER_REFERENCE and any(paper_figures(m) for m in methods)


def eval_cost_table(results: Results) -> Table | None:
    """Evaluation cost split into the item-embedding table and the ranking; None when unrecorded."""
    oks = ok_methods(results)
    if not any(m.eval_item_table_s.mean is not None or m.eval_rank_s.mean is not None for m in oks):
        return None
    headers = ["Method", "Item embeddings (all items)", "Ranking (all users of one split × all items)"]
    rows = [[f"`{m.method}`", fmt_stat(m.eval_item_table_s, fmt_seconds), fmt_stat(m.eval_rank_s, fmt_seconds)]
            for m in oks]
    return Table(headers, rows, right={1, 2})


def checkpoint_table(results: Results) -> Table | None:
    """Per-task checkpoint size of each ok method; None when no record carries it (older records)."""
    oks = [m for m in ok_methods(results) if m.checkpoint_mb is not None]
    if not oks:
        return None
    rows = [[f"`{m.method}`", fmt_params(m.params_trainable), fmt_mb(m.checkpoint_mb)] for m in oks]
    return Table(["Method", "Trainable params", "Checkpoint per task"], rows, right={1, 2})


def batch_sizes(results: Results) -> dict[str, int | None]:
    """Effective training batch size of each ok method (None when its records do not say)."""
    return {m.method: m.batch_size for m in ok_methods(results)}


def batch_differs(results: Results) -> bool:
    """True when the ok methods do not all share one known batch size (and at least one is known)."""
    sizes = list(batch_sizes(results).values())
    return any(b is not None for b in sizes) and len(set(sizes)) > 1


def best_epochs(m: MethodSummary) -> str:
    """"3" when every repeat peaked at the same epoch, else one per repeat ("2, 3")."""
    if not m.best_epochs:
        return DASH
    if len(set(m.best_epochs)) == 1:
        return str(m.best_epochs[0])
    return ", ".join(str(b) for b in m.best_epochs)


def quality_table(results: Results, split: str) -> Table | None:
    """HR/NDCG/MRR at every K for one split, best per column in bold, popularity floor last."""
    keys = metric_keys(results, split)
    if not keys:
        return None
    oks = [m for m in ok_methods(results) if m.metrics.get(split)]
    headers = ["Method", "Best epoch"] + [metric_label(k) for k in keys]
    best = {k: max((m.metrics[split][k].mean for m in oks
                    if k in m.metrics[split] and m.metrics[split][k].mean is not None), default=None)
            for k in keys}
    pop = (popularity(results) or {}).get(split)
    rows = []
    for m in oks:
        row = [f"`{m.method}`", best_epochs(m)]
        for k in keys:
            st = m.metrics[split].get(k)
            v = st.mean if st else None
            cell = fmt_metric(v)
            if v is not None and len(oks) > 1 and v == best[k]:
                cell = f"**{cell}**"
            if v is not None and pop and pop.get(k) is not None and v <= pop[k]:
                cell += f" {AT_FLOOR}"
            row.append(cell)
        rows.append(row)
    if pop:
        rows.append(["*popularity (floor)*", DASH] + [fmt_metric(pop.get(k)) for k in keys])
    return Table(headers, rows, right=set(range(1, len(headers))))
