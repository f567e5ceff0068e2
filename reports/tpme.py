"""TPME (training time, parameter and memory efficiency) as defined in the IISAN paper.

Why min-max over the methods in this run: TPME is a *ranking* of the methods that were compared
together, so each term is normalised to [0, 1] across the ok methods and weighted by alphas that
sum to 1; lower is better. The relative cost (the paper's "22% of the relative costs") answers a
different question, how expensive a method is against one reference, so it divides by the
reference instead of normalising.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from core.names import TPME_FILE

from .load import MethodSummary, ReportError, Results

DEFAULT_ALPHAS = (0.45, 0.10, 0.45)
DEFAULT_REFERENCE = "fft"
SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class TpmeConfig:
    alpha_time: float = DEFAULT_ALPHAS[0]
    alpha_params: float = DEFAULT_ALPHAS[1]
    alpha_memory: float = DEFAULT_ALPHAS[2]
    reference: str = DEFAULT_REFERENCE
    source: str = "defaults"  # "file:line" whose config.resolved.tpme was used, for messages


@dataclass(frozen=True)
class Inputs:
    """The three raw quantities TPME is built from."""

    time_s: float  # training time per epoch (median over epochs, mean over repeats)
    params: float  # trainable parameters
    memory_mb: float  # peak memory


@dataclass(frozen=True)
class TpmeRow:
    norm_time: float
    norm_params: float
    norm_memory: float
    tpme: float


@dataclass(frozen=True)
class Relative:
    """Percentages of the reference method (100 = same cost as the reference)."""

    time_pct: float | None
    params_pct: float | None
    memory_pct: float | None
    cost_pct: float | None


@dataclass(frozen=True)
class TpmeResult:
    config: TpmeConfig
    rows: dict[str, TpmeRow]  # ok methods with all three inputs
    excluded: dict[str, str]  # method -> why it has no TPME
    relative: dict[str, Relative]  # empty when the reference did not run ok
    reference_note: str | None  # why relative numbers are omitted, if they are


def _alpha(tp: dict, key: str, default: float, where: str) -> float:
    val = tp.get(key, default)
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        raise ReportError(f"{where}: config.resolved.tpme.{key} must be a number, got {val!r}")
    if val < 0:
        raise ReportError(f"{where}: config.resolved.tpme.{key} must be >= 0, got {val!r}")
    return float(val)


def tpme_config(results: Results, reference: str | None = None) -> TpmeConfig:
    """Alphas (and reference) from ``tpme.json`` beside the results, which every sweep writes with
    its own ``[tpme]`` (the weights are the report's alone: a sweep with new weights trains nothing
    again, and this re-scores); else from the latest record's ``config.resolved.tpme`` (a re-run
    with a changed config appends after older lines)."""
    tp: dict = {}
    where = f"{results.path}"
    side = results.path.parent / TPME_FILE
    if side.is_file():
        try:
            tp, where = json.loads(side.read_text()), str(side)
        except (OSError, ValueError) as exc:
            raise ReportError(f"{side}: not readable JSON ({exc}); delete it to use the records' weights") from None
        if not isinstance(tp, dict):
            raise ReportError(f"{side}: expected a JSON object of TPME weights")
        where = str(tp.get("source") or side)
    for run in reversed(results.runs if not tp else []):
        cand = run.get("config", "resolved", "tpme")
        if isinstance(cand, dict):
            tp, where = cand, f"{results.path}:{run.line}"
            break
    cfg = TpmeConfig(
        alpha_time=_alpha(tp, "alpha_time", DEFAULT_ALPHAS[0], where),
        alpha_params=_alpha(tp, "alpha_params", DEFAULT_ALPHAS[1], where),
        alpha_memory=_alpha(tp, "alpha_memory", DEFAULT_ALPHAS[2], where),
        reference=reference or str(tp.get("reference") or DEFAULT_REFERENCE),
        source=where,
    )
    total = cfg.alpha_time + cfg.alpha_params + cfg.alpha_memory
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ReportError(
            f"{where}: TPME alphas must sum to 1 (alpha_time {cfg.alpha_time:g} + alpha_params "
            f"{cfg.alpha_params:g} + alpha_memory {cfg.alpha_memory:g} = {total:g}); fix [tpme] in the config"
        )
    return cfg


def inputs_of(m: MethodSummary) -> Inputs | str:
    """The TPME inputs of an ok method, or the reason it cannot be scored."""
    missing = [name for name, v in (("time/epoch", m.time_epoch_s.mean), ("trainable params", m.params_trainable),
                                    ("peak memory", m.peak_mb.mean)) if v is None]
    if missing:
        return "missing " + ", ".join(missing)
    return Inputs(float(m.time_epoch_s.mean), float(m.params_trainable), float(m.peak_mb.mean))  # type: ignore[arg-type]


def minmax(values: dict[str, float]) -> dict[str, float]:
    """(x - min) / (max - min); a term with max == min carries no information, so it is 0."""
    lo, hi = min(values.values()), max(values.values())
    if hi == lo:
        return {k: 0.0 for k in values}
    return {k: (v - lo) / (hi - lo) for k, v in values.items()}


def compute_tpme(results: Results, reference: str | None = None) -> TpmeResult:
    cfg = tpme_config(results, reference)
    inputs: dict[str, Inputs] = {}
    excluded: dict[str, str] = {}
    for m in results.methods:
        if not m.ok:
            excluded[m.method] = f"status {m.status}"
            continue
        got = inputs_of(m)
        if isinstance(got, str):
            excluded[m.method] = got
        else:
            inputs[m.method] = got
    rows: dict[str, TpmeRow] = {}
    if inputs:
        nt = minmax({k: v.time_s for k, v in inputs.items()})
        np_ = minmax({k: v.params for k, v in inputs.items()})
        nm = minmax({k: v.memory_mb for k, v in inputs.items()})
        for k in inputs:
            score = cfg.alpha_time * nt[k] + cfg.alpha_params * np_[k] + cfg.alpha_memory * nm[k]
            rows[k] = TpmeRow(nt[k], np_[k], nm[k], score)
    relative, note = _relative(results, inputs, cfg)
    return TpmeResult(cfg, rows, excluded, relative, note)


def _pct(x: float, ref: float) -> float | None:
    return None if ref == 0 else 100.0 * x / ref


def _relative(results: Results, inputs: dict[str, Inputs], cfg: TpmeConfig) -> tuple[dict[str, Relative], str | None]:
    ref_name = cfg.reference
    ref_sum = results.method(ref_name)
    if ref_sum is None:
        return {}, f"reference method '{ref_name}' is not in the results"
    if not ref_sum.ok:
        return {}, f"reference method '{ref_name}' did not run ok (status {ref_sum.status})"
    ref = inputs.get(ref_name)
    if ref is None:
        return {}, f"reference method '{ref_name}' has no TPME inputs ({inputs_of(ref_sum)})"
    out: dict[str, Relative] = {}
    for k, v in inputs.items():
        t, p, mem = _pct(v.time_s, ref.time_s), _pct(v.params, ref.params), _pct(v.memory_mb, ref.memory_mb)
        cost = None
        if None not in (t, p, mem):
            cost = cfg.alpha_time * t + cfg.alpha_params * p + cfg.alpha_memory * mem  # type: ignore[operator]
        out[k] = Relative(t, p, mem, cost)
    return out, None
