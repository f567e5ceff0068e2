"""``run.log_to``: each finished run sent to TensorBoard, MLflow or W&B, from the sweep's parent only.

Why from the parent and from the finished record: the record is the one complete account of a run
(config, per-epoch history, efficiency figures, every rank combined), so a tracker shows exactly what
results.jsonl holds, and no child or rank ever opens a tracker connection (a DDP run logs once). The
packages are optional extras (``pip install 'iisan-bench[trackers]'``): a tracker named without its
package is refused in one line before any run starts.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from core.plain import flatten
from core.record import RunRecord

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
EXPERIMENT = "iisan-bench"


def check_trackers(cfg) -> None:
    """Every tracker in ``run.log_to`` importable, else one line naming the key and the package."""
    for name in cfg.run.log_to:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise cfg.blame(("run.log_to",), f"'run.log_to' names {name!r} but the {PACKAGES[name]} package is "
                                              "not installed: pip install 'iisan-bench[trackers]'")


def final_figures(rec: RunRecord) -> dict[str, float]:
    """The efficiency and quality figures a tracker's summary holds (numbers only)."""
    t, m, p = rec.time, rec.memory, rec.params
    out = {"epoch_s_median": t.epoch_s_median if t else None, "step_p50_s": t.step_p50_s if t else None,
           "step_p90_s": t.step_p90_s if t else None, "peak_mb": m.peak_mb if m else None,
           "params_trainable": p.trainable if p else None, "params_total": p.total if p else None,
           "checkpoint_mb": p.checkpoint_mb if p else None, "best_epoch": rec.metrics.best_epoch}
    out.update({f"test_{k}": v for k, v in rec.metrics.test.items()})
    out.update({f"valid_{k}": v for k, v in rec.metrics.valid.items()})
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def epochs(rec: RunRecord) -> list[tuple[int, dict[str, float]]]:
    """(epoch, {loss, valid_hr@10, ...}) per evaluated epoch of the record's history."""
    out = []
    for h in rec.metrics.history:
        vals = {"loss": h.get("loss")}
        for split in ("valid", "test"):
            vals.update({f"{split}_{k}": v for k, v in (h.get(split) or {}).items()})
        out.append((int(h.get("epoch", len(out))), {k: float(v) for k, v in vals.items()
                                                    if isinstance(v, (int, float)) and not isinstance(v, bool)}))
    return out


def flat_config(rec: RunRecord) -> dict[str, str]:
    """The resolved config as dotted keys with string values (trackers take flat string parameters)."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in flatten(rec.config.get("resolved") or {}).items()}


def run_name(rec: RunRecord) -> str:
    world = f"-{rec.distributed.world_size}p" if rec.distributed is not None else ""
    return f"{rec.method}-r{rec.repeat}{world}"


def _tensorboard(rec: RunRecord, out: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(out / "tensorboard" / run_name(rec))) as w:
        w.add_text("config", "\n".join(f"    {k} = {v}" for k, v in flat_config(rec).items()))
        w.add_text("status", f"{rec.status}: {rec.error or ''}")
        for epoch, vals in epochs(rec):
            for k, v in vals.items():
                w.add_scalar(k.replace("_", "/", 1) if "_" in k else f"train/{k}", v, epoch)
        for k, v in final_figures(rec).items():
            w.add_scalar(f"final/{k}", v, 0)


def mlflow_uri(out: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(out / 'mlflow.db').resolve()}"


def _mlflow(rec: RunRecord, out: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri(out))
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    tags = {"method": rec.method, "repeat": str(rec.repeat), "status": rec.status,
            "device": str(rec.env.device_name), "git_sha": str(rec.env.git_sha)}
    run = client.create_run(exp_id, run_name=run_name(rec), tags=tags)
    rid = run.info.run_id
    from mlflow.entities import Metric, Param

    name = lambda k: k.replace("@", "_at_")  # noqa: E731 - MLflow refuses '@' in metric names
    params = [Param(k, v[:6000]) for k, v in flat_config(rec).items()]
    metrics = [Metric(name(k), v, 0, step) for step, vals in epochs(rec) for k, v in vals.items()]
    metrics += [Metric(name(f"final_{k}"), v, 0, 0) for k, v in final_figures(rec).items()]
    for i in range(0, max(len(params), len(metrics)), 100):  # the API's batch limit
        client.log_batch(rid, metrics=metrics[i:i + 100], params=params[i:i + 100])
    client.set_terminated(rid, "FINISHED" if rec.status == "ok" else "FAILED")


def _wandb(rec: RunRecord, out: Path) -> None:
    import wandb

    mode = os.environ.get("WANDB_MODE", "offline")  # no login, no network unless the user asks for it
    run = wandb.init(mode=mode, dir=str(out), project=os.environ.get("WANDB_PROJECT", EXPERIMENT),
                     name=run_name(rec), config=flat_config(rec), reinit="finish_previous")
    for epoch, vals in epochs(rec):
        run.log(vals, step=epoch)
    run.summary.update({**final_figures(rec), "status": rec.status})
    run.finish(exit_code=0 if rec.status == "ok" else 1)


SENDERS = {"tensorboard": _tensorboard, "mlflow": _mlflow, "wandb": _wandb}


def log_run(cfg, rec: RunRecord, out: Path, echo=print) -> None:
    """Send one finished run to every tracker of ``run.log_to``; a tracker's failure is a warning
    (the results file already holds the run), never a lost sweep."""
    for name in cfg.run.log_to:
        try:
            SENDERS[name](rec, out)
        except Exception as exc:  # noqa: BLE001 - a tracker's own error must not end the sweep
            echo(f"warning: {name}: could not log {run_name(rec)}: {type(exc).__name__}: {exc}")

