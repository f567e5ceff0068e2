"""``iisan-bench compare DIR...``: one report over several result folders (another device, commit or
config), rows keyed by method and folder, ratios to the first folder.

Why a refusal on some keys and not others: what a comparison across folders is *for* is a different
device, commit, precision or process count; what makes its numbers meaningless is other data, another
evaluation rule or other encoders. Those keys (``MUST_MATCH``) are compared as each folder's records
state them (``config.resolved``, and the data's content hash), and a mismatch is one line naming them.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_text
from core.plain import flatten

from .load import MethodSummary, ReportError, Results, load_results
from .stats import Spread
from .tables import DASH, Table, fmt_mb, fmt_params, fmt_seconds, fmt_spread, headline_metric, metric_label
from .tpme import TpmeResult, compute_tpme

# sections / keys of config.resolved two folders must share; a section name covers all its keys
MUST_MATCH = ("data", "backbone", "eval.masking", "eval.ks")
DESCRIBE = ("device", "git_sha", "torch")  # said per folder, never refused


@dataclass
class Folder:
    label: str
    path: Path
    results: Results
    tpme: TpmeResult

    def env(self, key: str) -> str:
        vals = sorted({str(v) for r in self.results.runs if (v := r.get("env", key)) is not None})
        return ", ".join(vals) or DASH

    @property
    def device(self) -> str:
        return self.env("device_name")


def must_match(results: Results) -> dict[str, Any]:
    """The settings that must agree, from the folder's first run (a folder already holds one config)."""
    run = results.runs[0]
    flat = flatten((run.get("config", "resolved") or {}))
    out = {k: v for k, v in flat.items() if any(k == m or k.startswith(m + ".") for m in MUST_MATCH)}
    out["data.content_sha256"] = run.get("data", "content_sha256")
    return out


def check_comparable(folders: list[Folder]) -> None:
    """One line naming every key that differs between the folders, with each folder's value."""
    base = must_match(folders[0].results)
    problems = []
    for f in folders[1:]:
        other = must_match(f.results)
        for key in sorted(set(base) | set(other)):
            a, b = base.get(key), other.get(key)
            if a is None or b is None:  # an older record without the key: nothing to hold against it
                continue
            if a != b:
                problems.append(f"{key} ({json.dumps(a)} in {folders[0].label}, {json.dumps(b)} in {f.label})")
    if problems:
        raise ReportError("cannot compare: the folders differ in " + "; ".join(problems)
                          + " (compare folders of the same data, evaluation and encoders)")


def load_folders(dirs: list[str | Path]) -> list[Folder]:
    if len(dirs) < 2:
        raise ReportError(f"compare needs two or more result folders, got {len(dirs)}")
    paths = [Path(d) for d in dirs]
    labels = [p.name or str(p) for p in paths]
    if len(set(labels)) < len(labels):  # same folder names from different places: their paths
        labels = [str(p) for p in paths]
    folders = []
    for label, p in zip(labels, paths):
        if not p.is_dir():
            raise ReportError(f"{p}: results directory not found")
        res = load_results(p / "results.jsonl")
        folders.append(Folder(label, p, res, compute_tpme(res)))
    check_comparable(folders)
    return folders


def _ratio(a: Spread | None, b: Spread | None) -> str:
    """b / a, marked when the two intervals overlap (the difference is within the noise)."""
    if a is None or b is None or not a.median:
        return DASH
    text = f"{b.median / a.median:.2f}×"
    return text + " (≈, intervals overlap)" if a.overlaps(b) else text


def rows_table(folders: list[Folder]) -> Table:
    key = headline_metric(folders[0].results)
    headers = ["Method", "Folder", "Device", "Trainable params", "Time / epoch", "Peak memory (training)",
               "TPME (within folder)"] + ([f"Test {metric_label(key)}"] if key else [])
    methods = _methods(folders)
    rows = []
    for name in methods:
        for f in folders:
            m = f.results.method(name)
            if m is None or not m.ok:
                continue
            row = [f"`{name}`", f.label, f.device, fmt_params(m.params_trainable),
                   fmt_spread(m.time_spread, m.time_epoch_s, fmt_seconds),
                   fmt_spread(m.peak_spread, m.peak_mb, fmt_mb),
                   f"{f.tpme.rows[name].tpme:.3f}" if name in f.tpme.rows else DASH]
            if key:
                st = m.metrics.get("test", {}).get(key)
                row.append(DASH if st is None or st.mean is None else f"{st.mean:.4f}")
            rows.append(row)
    return Table(headers, rows, right={3, 4, 5, 6, 7})


def _methods(folders: list[Folder]) -> list[str]:
    out: list[str] = []
    for f in folders:
        out += [m.method for m in f.results.methods if m.ok and m.method not in out]
    return out


def ratio_table(folders: list[Folder]) -> Table | None:
    """Each later folder against the first, per method both ran ok."""
    base = folders[0]
    rows = []
    for f in folders[1:]:
        for name in _methods(folders):
            a, b = base.results.method(name), f.results.method(name)
            if a is None or b is None or not (a.ok and b.ok):
                continue
            rows.append([f"`{name}`", f"{f.label} / {base.label}", _ratio(a.time_spread, b.time_spread),
                         _ratio(a.peak_spread, b.peak_spread), _params_ratio(a, b)])
    if not rows:
        return None
    return Table(["Method", "Folders", "Time / epoch", "Peak memory", "Trainable params"], rows, right={2, 3, 4})


def _params_ratio(a: MethodSummary, b: MethodSummary) -> str:
    if not a.params_trainable or b.params_trainable is None:
        return DASH
    return f"{b.params_trainable / a.params_trainable:.2f}×"


def differing(folders: list[Folder]) -> list[str]:
    """What differs between the folders (what the comparison is about): environment and settings."""
    lines = []
    for key, label in (("device_name", "Device"), ("git_sha", "Commit"), ("torch", "torch")):
        vals = [f.env(key) for f in folders]
        if len(set(vals)) > 1:
            lines.append(f"- **{label}:** " + "; ".join(f"{f.label}: {v}" for f, v in zip(folders, vals)))
    when = []
    for f in folders:
        stamps = sorted(str(r.record.timestamp) for r in f.results.runs)
        when.append(f"{f.label}: {stamps[0][:16]} … {stamps[-1][:16]}")
    lines.append("- **Measured:** " + "; ".join(when) + " (times measured apart carry the machine's drift: "
                 "for a code change, run both commits side by side)")
    flats = [flatten(f.results.runs[0].get("config", "resolved") or {}) for f in folders]
    keys = sorted({k for fl in flats for k in fl if not k.startswith(("run.out", "run.methods"))})
    for k in keys:
        vals = [json.dumps(fl.get(k)) for fl in flats]
        if len(set(vals)) > 1:
            lines.append(f"- `{k}`: " + "; ".join(f"{f.label}: {v}" for f, v in zip(folders, vals)))
    return lines


def render(folders: list[Folder]) -> str:
    lines = ["# iisan-bench comparison", "", "Folders: " + ", ".join(f"`{f.label}` ({f.path})" for f in folders), "",
             "## What differs", ""] + differing(folders) + ["", "## Runs", "", rows_table(folders).markdown(), "",
             "Time and memory: median [95% interval] as in each folder's report; TPME is normalised within each "
             "folder, so compare it within a folder, and the figures across folders.", ""]
    ratios = ratio_table(folders)
    if ratios is not None:
        lines += [f"## Ratios to `{folders[0].label}`", "", ratios.markdown(), "",
                  "≈: the two folders' intervals overlap, so the difference is within what repeats (or steps) "
                  "vary by; without intervals (one run and no step times) a ratio is unmarked.", ""]
    busy = [f"`{f.label}`" for f in folders if any(r.record.conditions and r.record.conditions.busy
                                                    for r in f.results.runs)]
    if busy:
        lines += [f"**Measured on a busy machine:** {', '.join(busy)} (see each folder's report).", ""]
    return "\n".join(lines).rstrip() + "\n"


def compare_csv(folders: list[Folder]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "folder", "device", "git_sha", "params_trainable", "time_epoch_s_median",
                "time_ci95_low", "time_ci95_high", "peak_mb_median", "peak_ci95_low", "peak_ci95_high", "tpme"])
    for name in _methods(folders):
        for f in folders:
            m = f.results.method(name)
            if m is None or not m.ok:
                continue
            t, p = m.time_spread, m.peak_spread
            w.writerow([name, f.label, f.device, f.env("git_sha"), m.params_trainable,
                        *(("", "", "") if t is None else (t.median, t.low or "", t.high or "")),
                        *(("", "", "") if p is None else (p.median, p.low or "", p.high or "")),
                        f.tpme.rows[name].tpme if name in f.tpme.rows else ""])
    return buf.getvalue()


def compare(dirs: list[str | Path], out: str | Path | None = None) -> tuple[str, Path | None]:
    """The comparison's markdown, written with ``compare.csv`` to ``out`` when given."""
    folders = load_folders(dirs)
    md = render(folders)
    if out is None:
        return md, None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.csv", compare_csv(folders))
    return md, atomic_write_text(out / "compare.md", md)
