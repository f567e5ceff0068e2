"""Reporter: turns ``DIR/results.jsonl`` into ``report.md``, ``report.html``, ``summary.csv`` and ``plots/*.png``.

Why decoupled: it reads only the results file (and the memory CSVs it names) and never imports
torch, ``benchmark`` or ``methods``, so a report can be rebuilt anywhere, quickly, from a copied
results directory.
"""

from __future__ import annotations

from pathlib import Path

from core.atomic import atomic_write_text

from .load import ReportError, load_results

__all__ = ["ReportError", "build_report"]


def build_report(out_dir: Path | str, reference: str | None = None) -> Path:
    """(Re)build ``DIR/report.md``, ``DIR/report.html``, ``DIR/summary.csv`` and ``DIR/plots/*.png``; return
    the markdown report's path.

    ``reference`` overrides ``config.resolved.tpme.reference`` (default ``fft``) for the relative
    cost. Raises ReportError on a missing or malformed results file or invalid TPME alphas.
    """
    from .header import header
    from .html import write_html
    from .markdown import render
    from .plots import build_plots
    from .summary import write_summary_csv
    from .tpme import compute_tpme

    out = Path(out_dir)
    if not out.is_dir():
        raise ReportError(f"{out}: results directory not found")
    results = load_results(out / "results.jsonl")
    tp = compute_tpme(results, reference)
    csv_path = write_summary_csv(out / "summary.csv", results, tp)
    write_html(out / "report.html", results, tp, csv_path.read_text(encoding="utf-8"), header(results, tp))
    plots = build_plots(results, tp, out)
    return atomic_write_text(out / "report.md", render(results, tp, plots))
