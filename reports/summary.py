"""summary.csv: one raw row per method with every number the report's tables show, unformatted,
enough to recompute TPME."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from core.atomic import atomic_write_text
from core.paper import paper_figures
from core.record import Distributed

from .load import CV_THRESHOLD, Results
from .tables import metric_keys, popularity
from .tpme import TpmeResult


def _num(x: float | None) -> float | str:
    return "" if x is None else x


def summary_rows(results: Results, tp: TpmeResult) -> tuple[list[str], list[dict[str, object]]]:
    """One raw row per method (any status) and world size (``run.nproc``; TPME within each), plus a
    popularity-floor row; enough to recompute TPME."""
    from .tpme import compute_tpme

    splits = {s: metric_keys(results, s) for s in ("valid", "test")}
    rows = [_row(m, tp, splits, results.world) for m in results.methods]
    for n in sorted(results.scaling):
        tp_n = compute_tpme(results.at_world(n))
        rows += [_row(m, tp_n, splits, n) for m in results.scaling[n]]
    pop = popularity(results)
    if pop:
        prow: dict[str, object] = {"method": "popularity", "status": "floor"}
        for split, keys in splits.items():
            for k in keys:
                prow[f"{split}_{k}"] = _num((pop.get(split) or {}).get(k))
        rows.append(prow)
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    return fields, rows


def _row(m, tp: TpmeResult, splits: dict[str, list[str]], world: int) -> dict[str, object]:
    cfg = tp.config
    t = tp.rows.get(m.method)
    rel = tp.relative.get(m.method)
    pct_total = (100.0 * m.params_trainable / m.params_total
                 if m.params_trainable is not None and m.params_total else None)
    d = m.distributed or Distributed(world_size=world, backend="")
    row: dict[str, object] = {
        "method": m.method, "world_size": world, "status": m.status,
        "error": m.last_error or "", "repeats": m.n_ok, "runs": m.n_runs,
        "params_trainable": _num(m.params_trainable), "params_total": _num(m.params_total),
        "params_trainable_pct_of_total": _num(pct_total), "checkpoint_mb": _num(m.checkpoint_mb),
        "time_epoch_s_mean": _num(m.time_epoch_s.mean), "time_epoch_s_std": _num(m.time_epoch_s.std),
        "time_epoch_s_cv": _num(m.time_epoch_s.cv), "time_cv_flag": int(m.time_epoch_s.noisy),
        "peak_mb_mean": _num(m.peak_mb.mean), "peak_mb_std": _num(m.peak_mb.std),
        "peak_mb_cv": _num(m.peak_mb.cv), "memory_cv_flag": int(m.peak_mb.noisy),
        "memory_source": m.memory_source or "", "memory_phase": m.memory_phase or "whole run",
        "eval_peak_mb_mean": _num(m.eval_peak_mb.mean), "cache_status": m.cache_status or "",
        "cache_build_peak_mb_mean": _num(m.cache_build_peak_mb.mean),
        "memory_check_failures": len(m.check_failures),
        "energy_epoch_j_mean": _num(m.energy_epoch_j.mean), "energy_epoch_j_std": _num(m.energy_epoch_j.std),
        "samples_per_s_mean": _num(m.samples_per_s.mean), "setup_s_mean": _num(m.setup_s.mean),
        "eval_s_mean": _num(m.eval_s.mean), "cache_build_s_mean": _num(m.cache_build_s.mean), "mfu_mean": _num(m.mfu.mean),
        "eval_item_table_s_mean": _num(m.eval_item_table_s.mean), "eval_rank_s_mean": _num(m.eval_rank_s.mean),
        "batch_size": _num(m.batch_size),
        "alpha_time": cfg.alpha_time, "alpha_params": cfg.alpha_params, "alpha_memory": cfg.alpha_memory,
        "norm_time": _num(t.norm_time if t else None), "norm_params": _num(t.norm_params if t else None),
        "norm_memory": _num(t.norm_memory if t else None), "tpme": _num(t.tpme if t else None),
        "reference": cfg.reference,
        "rel_time_pct": _num(rel.time_pct if rel else None),
        "rel_params_pct": _num(rel.params_pct if rel else None),
        "rel_memory_pct": _num(rel.memory_pct if rel else None),
        "rel_cost_pct": _num(rel.cost_pct if rel else None),
        "paper_time_pct": _num(pf.time.pct if (pf := paper_figures(m.method)) else None),
        "paper_memory_pct": _num(pf.memory.pct if pf else None),
        "best_epochs": ";".join(str(b) for b in m.best_epochs),
        "cv_threshold": CV_THRESHOLD,
        "allreduce_mb_per_step": _num(d.allreduce_mb_per_step),
        "allreduce_s_per_epoch": _num(d.allreduce_s_per_epoch),
        "epoch_s_spread_over_ranks": _num(d.epoch_s_spread),
        "peak_mb_spread_over_ranks": _num(d.peak_mb_spread),
    }
    row.update(_spread_columns(m))
    for split, keys in splits.items():
        for k in keys:
            st = m.metrics.get(split, {}).get(k)
            row[f"{split}_{k}"] = _num(st.mean if st else None)
            row[f"{split}_{k}_std"] = _num(st.std if st else None)
    row["description"] = m.description
    return row


def _spread_columns(m) -> dict[str, object]:
    """The report's bracketed intervals and the worst step profile over repeats, raw."""
    out: dict[str, object] = {}
    for name, sp in (("time_epoch_s", m.time_spread), ("peak_mb", m.peak_spread)):
        out[f"{name}_median"] = _num(sp.median if sp else None)
        out[f"{name}_ci95_low"] = _num(sp.low if sp else None)
        out[f"{name}_ci95_high"] = _num(sp.high if sp else None)
        out[f"{name}_ci95_basis"] = sp.basis if sp else ""
    worst = max((p for _, p in m.steps), key=lambda p: p.tail, default=None)
    for q in ("p50", "p90", "p99", "max"):
        out[f"step_{q}_s"] = _num(getattr(worst, q) if worst else None)
    out["step_flags"] = "; ".join(f for _, p in m.steps for f in p.flags)
    return out


def write_summary_csv(path: Path, results: Results, tp: TpmeResult) -> Path:
    fields, rows = summary_rows(results, tp)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())
