"""``run.log_to``: runs sent to TensorBoard, MLflow and W&B, read back from their local files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from benchmark.config import load_config
from benchmark.launch import trackers
from benchmark.launch.sweep import run_benchmark
from core.errors import BenchError

HAVE = {name: importlib.util.find_spec(pkg) is not None for name, pkg in trackers.PACKAGES.items()}


def _sweep(out: Path, log_to: list[str]) -> dict:
    cfg = load_config(None, {"run": {"methods": ["fft"], "epochs": 2, "isolate": False, "out": str(out),
                                     "log_to": log_to},
                             "data": {"synthetic": {"users": 64, "items": 40}}, "train": {"max_steps_per_epoch": 2}})
    return json.loads(run_benchmark(cfg, progress=False, echo=lambda *_: None).read_text().splitlines()[0])


@pytest.mark.skipif(not (HAVE["tensorboard"] and HAVE["mlflow"]), reason="pip install 'iisan-bench[trackers]'")
def test_tensorboard_and_mlflow_hold_the_records_figures(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "out"
    rec = _sweep(out, ["tensorboard", "mlflow"])
    losses = [h["loss"] for h in rec["metrics"]["history"]]
    assert rec["status"] == "ok" and len(losses) == 2

    ev = EventAccumulator(str(out / "tensorboard" / "fft-r0"))
    ev.Reload()
    assert [s.value for s in ev.Scalars("train/loss")] == pytest.approx(losses)
    assert [s.step for s in ev.Scalars("train/loss")] == [h["epoch"] for h in rec["metrics"]["history"]]
    assert ev.Scalars("final/peak_mb")[0].value == pytest.approx(rec["memory"]["peak_mb"])
    assert ev.Scalars("final/test_ndcg@10")[0].value == pytest.approx(rec["metrics"]["test"]["ndcg@10"])

    client = MlflowClient(trackers.mlflow_uri(out))
    runs = client.search_runs([client.get_experiment_by_name("iisan-bench").experiment_id])
    assert [r.info.run_name for r in runs] == ["fft-r0"] and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert [m.value for m in sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)] \
        == pytest.approx(losses)
    assert run.data.metrics["final_epoch_s_median"] == pytest.approx(rec["time"]["epoch_s_median"])
    assert run.data.metrics["final_test_ndcg_at_10"] == pytest.approx(rec["metrics"]["test"]["ndcg@10"])
    assert run.data.params["train.max_steps_per_epoch"] == "2" and run.data.tags["method"] == "fft"


@pytest.mark.skipif(not HAVE["wandb"], reason="wandb not installed (pip install 'iisan-bench[trackers]')")
def test_wandb_logs_offline_without_a_login(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "out"
    rec = _sweep(out, ["wandb"])
    runs = list((out / "wandb").glob("offline-run-*"))
    files = list(runs[0].glob("run-*.wandb")) if len(runs) == 1 else []
    assert files, runs
    # wandb 0.31 ships no reader for its offline log (records are protobuf, with JSON values): the
    # summary's keys and JSON values are in it, as `wandb sync` will upload them
    import re
    import time

    deadline = time.monotonic() + 15  # wandb-core may still be flushing the log after finish()
    while b"epoch_s_median" not in (blob := files[0].read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    got = re.search(rb"epoch_s_median[^0-9]{1,8}([0-9][0-9.eE+-]*)", blob)
    assert got is not None and float(got.group(1)) == pytest.approx(rec["time"]["epoch_s_median"], rel=1e-9)
    assert b"fft-r0" in blob and b"train.max_steps_per_epoch" in blob


def test_a_tracker_without_its_package_is_refused_before_anything_runs(tmp_path: Path, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(BenchError, match=r"'run.log_to' names 'mlflow' but the mlflow package is not installed") as err:
        _sweep(tmp_path / "out", ["mlflow"])
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
    with pytest.raises(BenchError, match="run.log_to"):
        load_config(None, {"run": {"log_to": ["neptune"]}})


def test_log_to_flag_is_a_comma_list() -> None:
    from benchmark.cli import _overrides

    assert _overrides(log_to="tensorboard, mlflow") == {"run": {"log_to": ["tensorboard", "mlflow"]}}
