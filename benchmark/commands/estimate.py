"""``iisan-bench estimate``: each method's predicted memory, step time and largest batch on a named
GPU (or this CPU), from a trace of its real training step on fake tensors (``launch.estimate``)."""

from __future__ import annotations

import json
import time

import torch

from benchmark.commands.text import aligned
from benchmark.config import BenchConfig
from benchmark.launch import estimate as E
from benchmark.launch.estimator import estimate_all
from core.errors import BenchError


def format_table(rows: list[E.MethodEstimate], cfg: BenchConfig, seconds: float) -> str:
    gpu = rows[0].device if rows else "?"
    head = (f"estimate for {gpu}: {cfg.backbone.preset} backbones, {cfg.data.text_tokens} tokens, "
            f"{cfg.data.image_size if cfg.data.images != 'none' else 'no'} px images, batch {cfg.train.batch_size}, "
            f"{rows[0].precision if rows else ''}; memory in GB (2^30 B): training peak "
            f"{rows[0].allowance if rows else ''}; per phase the tensors alone")
    cols = ["method", "train GB", "weights", "grads", "optim", "activ", "temp", "setup", "eval", "cache build",
            "items", "step s", "epoch s", "TFLOP/step", "max batch"]
    table = [cols]
    f = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        c = r.phases["train"].categories
        table.append([r.method, f(r.train_gb), f(c["weights"]), f(c["gradients"]), f(c["optimizer"]),
                      f(c["activations"]), f(c["temporary"]), f(r.phases["setup"].peak_gb), f(r.phases["eval"].peak_gb),
                      f(r.phases["cache_build"].peak_gb) if "cache_build" in r.phases else "-",
                      f"{r.items_traced}", f(r.step_s, 3), f(r.epoch_s, 1), f(r.flops_per_step / 1e12, 2),
                      "-" if r.max_batch is None else f"{r.max_batch}"])
    lines = [head, "", *aligned(table)]
    lines += ["", "items: distinct items of the traced step (the epoch's largest, bucketed); step s: roofline at "
              "the typical step on the GPU's peaks; max batch: the largest batch whose training fits the card. "
              "Traced on fake tensors (docs/estimates.md).", f"estimated in {seconds:.1f}s"]
    return "\n".join(lines)


def estimate_command(cfg: BenchConfig, names: list[str], gpu_name: str | None, fmt: str) -> str:
    from benchmark.launch.prepare import resolve_device
    from benchmark.measure.devices import GPUS, gpu_named, gpu_of

    if gpu_name:
        gpu = gpu_named(gpu_name)
        if gpu is None:
            raise BenchError(f"--gpu: '{gpu_name}' is not a known GPU; known: {', '.join(GPUS)}")
    elif resolve_device(cfg.run.device).type == "cuda":  # this machine's own card
        gpu = gpu_of(torch.cuda.get_device_name())
        if gpu is None:
            raise BenchError(f"--gpu: this machine's '{torch.cuda.get_device_name()}' is not in the table; "
                             f"name the nearest: {', '.join(GPUS)}")
    else:
        gpu = None  # this CPU: tensor memory only
    t0 = time.perf_counter()
    rows = estimate_all(cfg, names, gpu)
    if fmt == "json":
        return json.dumps([E.summary(r) for r in rows], indent=2)
    return format_table(rows, cfg, time.perf_counter() - t0)
