"""Where a training step's time goes: a torch.profiler trace of a few steps, written beside results.

Why: the paper-scale targets (MFU, uncached IISAN at <= 35% of FFT's time) are met or explained
with a profile, not guessed. The trace runs *after* training and evaluation, so the measured
epoch times never include the profiler's overhead; the record says that a trace was taken.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from benchmark.training.outcome import TrainOutcome
from benchmark.training.trainer import Trainer
from core.atomic import atomic_write_text

TRACE_EPOCH = 10_000  # an epoch number no real epoch has (epoch 1 splits off warm-up steps)


def trace_steps(trainer: Trainer, n_steps: int, out_dir: Path, stem: str) -> dict[str, Any]:
    """Profile ``n_steps`` training steps; write ``traces/<stem>.txt`` (the operators ranked by
    self time on the device, or on the CPU) and ``traces/<stem>.json`` (a Chrome trace)."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    callbacks, trainer.callbacks = trainer.callbacks, []  # per-epoch energy/peaks must not see this
    try:
        with profile(activities=activities) as prof:
            trainer.train_epoch(TRACE_EPOCH, TrainOutcome(), max_steps=n_steps)
    finally:
        trainer.callbacks = callbacks
    folder = Path(out_dir) / "traces"
    folder.mkdir(parents=True, exist_ok=True)
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    averages = prof.key_averages()
    try:
        table = averages.table(sort_by=sort, row_limit=40)
    except (AttributeError, KeyError, ValueError):  # torch before 2.4 names device time "cuda"
        sort = "self_cuda_time_total"
        table = averages.table(sort_by=sort, row_limit=40)
    txt, chrome = folder / f"{stem}.txt", folder / f"{stem}.json"
    header = (f"# torch.profiler: {n_steps} training steps after training and evaluation, "
              f"device {trainer.device}, torch {torch.__version__}; sorted by {sort}\n")
    atomic_write_text(txt, header + table + "\n")
    prof.export_chrome_trace(str(chrome))
    rel = lambda p: os.path.relpath(p, out_dir)  # noqa: E731 - OUT-relative, like samples_csv
    return {"steps": n_steps, "sort_by": sort, "table": rel(txt), "chrome_trace": rel(chrome)}
