"""report.html: the report as one self-contained interactive page, beside report.md.

Why one file with its data inlined and hand-written JS/SVG (``report.js``, ``report.css``) rather
than a plotting library: the page must open from a copied folder with no server and no network at
view time, and a charting bundle (plotly.js is 3.5 MB) would be most of the file. What it shows is
built from the same rows as ``summary.csv`` (``summary_rows``), so the page and the CSV cannot
disagree; the CSV itself is inlined for its download button.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_text

from .load import Results
from .summary import summary_rows
from .tables import headline_metric, ok_methods, popularity
from .timeline import read_samples
from .tpme import TpmeResult

HERE = Path(__file__).resolve().parent
TIMELINE_POINTS = 400  # samples a run's memory timeline keeps on the page (bucket maxima)


def _decimate(t: list[float], mb: list[float], phase: list[str], n: int = TIMELINE_POINTS) -> dict[str, list]:
    """At most ``n`` points, each bucket's maximum: a peak never disappears from the page."""
    if len(t) <= n:
        return {"t": t, "mb": mb, "phase": phase}
    step = len(t) / n
    out: dict[str, list] = {"t": [], "mb": [], "phase": []}
    for i in range(n):
        lo, hi = int(i * step), max(int((i + 1) * step), int(i * step) + 1)
        j = max(range(lo, min(hi, len(t))), key=lambda k: mb[k])
        out["t"].append(t[j]), out["mb"].append(mb[j]), out["phase"].append(phase[j])
    return out


def _timelines(results: Results) -> dict[str, Any]:
    out = {}
    for m in ok_methods(results):
        if m.samples_csv:
            tl = read_samples(results.path.parent / m.samples_csv)
            if tl is not None:
                out[m.method] = _decimate(tl.t, tl.mb, tl.phase)
    return out


def _ranks(results: Results) -> list[dict[str, Any]]:
    rows = []
    for ms in [results.methods, *results.scaling.values()]:
        for m in ms:
            if m.distributed is None:
                continue
            for r in m.distributed.ranks:
                rows.append({"method": m.method, "world_size": m.distributed.world_size, "rank": r.rank,
                             "epoch_s_median": r.epoch_s_median, "peak_mb": r.peak_mb,
                             "allreduce_s_per_epoch": r.allreduce_s_per_epoch, "status": r.status})
    return rows


def _steps(results: Results) -> list[dict[str, Any]]:
    return [{"method": m.method, "repeat": rep, "steps": p.n, "p50_s": p.p50, "p90_s": p.p90, "p99_s": p.p99,
             "max_s": p.max, "flags": "; ".join(p.flags)} for m in ok_methods(results) for rep, p in m.steps]


def page_data(results: Results, tp: TpmeResult, csv_text: str, header_md: list[str]) -> dict[str, Any]:
    """Everything the page draws, as plain JSON."""
    fields, rows = summary_rows(results, tp)
    key = headline_metric(results)
    pop = ((popularity(results) or {}).get("test") or {}).get(key) if key else None
    return {"fields": fields, "rows": rows, "csv": csv_text, "metric": key, "popularity": pop,
            "header": [ln[2:] for ln in header_md if ln.startswith("- ")],
            "timelines": _timelines(results), "ranks": _ranks(results), "steps": _steps(results)}


def render_html(data: dict[str, Any]) -> str:
    blob = json.dumps(data, allow_nan=False, default=str).replace("</", "<\\/")  # no early </script>
    css = (HERE / "report.css").read_text(encoding="utf-8")
    js = (HERE / "report.js").read_text(encoding="utf-8")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>iisan-bench report</title>\n<style>\n{css}</style></head>\n<body>\n"
            "<h1>iisan-bench report</h1>\n<ul id=\"header\"></ul>\n"
            "<p id=\"filter\"></p>\n"
            "<h2>Efficiency</h2>\n<div id=\"efficiency\"></div>\n"
            "<h2>Quality vs TPME</h2>\n<div id=\"pareto\"></div>\n"
            "<h2>Quality</h2>\n<div id=\"quality\"></div>\n"
            "<h2>Step times</h2>\n<div id=\"steps\"></div>\n"
            "<h2>Memory over time</h2>\n<div id=\"memory\"></div>\n"
            "<h2>Ranks (data-parallel runs)</h2>\n<div id=\"ranks\"></div>\n"
            "<p><button id=\"csv\" type=\"button\">Download summary.csv</button></p>\n"
            f"<script type=\"application/json\" id=\"data\">{blob}</script>\n<script>\n{js}</script>\n"
            "</body></html>\n")


def write_html(path: Path, results: Results, tp: TpmeResult, csv_text: str, header_md: list[str]) -> Path:
    return atomic_write_text(path, render_html(page_data(results, tp, csv_text, header_md)))
