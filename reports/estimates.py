"""Each run's own estimate beside its measurement (records with ``estimate``: ``run.estimate``), so
an efficiency table carries its check: predicted training memory and step time over measured."""

from __future__ import annotations

from .load import Results, Run
from .tables import DASH, Table, fmt_seconds, ok_methods

GIB = 1024  # MB in a GiB: estimates are in GiB, measured peaks in MB (2^20)


def _ratio(predicted: float | None, measured: float | None) -> str:
    return f"{predicted / measured:.2f}" if predicted and measured else DASH


def _row(run: Run) -> list[str]:
    est = run.get("estimate") or {}
    train_mb = run.get("memory", "phases", "train", "peak_mb") or run.get("memory", "peak_mb")
    p50 = run.get("time", "step_p50_s")
    predicted_mb = est["train_gb"] * GIB if est.get("train_gb") is not None else None
    return [f"`{run.method}`", str(est.get("device", DASH)),
            f"{predicted_mb / GIB:.2f} GB" if predicted_mb else DASH,
            f"{train_mb / GIB:.2f} GB" if train_mb else DASH, _ratio(predicted_mb, train_mb),
            fmt_seconds(est.get("step_s")), fmt_seconds(p50), _ratio(est.get("step_s"), p50),
            DASH if est.get("max_batch") is None else str(est["max_batch"])]


def estimates_section(results: Results) -> list[str]:
    runs = []
    for m in ok_methods(results):
        run = next((r for r in results.runs if r.method == m.method and r.status == "ok" and r.get("estimate")), None)
        if run is not None:
            runs.append(run)
    if not runs:
        return []
    table = Table(["Method", "Estimated for", "Training memory, predicted", "measured", "predicted / measured",
                   "Step, predicted", "measured (p50)", "predicted / measured", "Largest batch that fits"],
                  [_row(r) for r in runs], right=set(range(2, 9)))
    return ["### Estimate vs measurement", "", table.markdown(), "",
            "Predicted by `iisan-bench estimate` for the device each run used, from a trace of the method's "
            "training step on fake tensors (docs/estimates.md): memory as the device holds it (tensors, allocator "
            "slack, CUDA context), the step as a roofline on the device's peaks. Measured: the training phase's "
            "peak and the median step.", ""]
