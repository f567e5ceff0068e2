"""The plain-PyTorch floor of each method's work: how fast the same step can go with no harness.

Why: a benchmark that reports 44 s for an FFT epoch should say whether that is FFT or the harness.
On the same machine, for the same shapes as the run (the config's backbones, precision, batch and
bucketed item count), three bare loops are timed, each with fixed shapes, inputs already on the
device, fused Adam, and the device synchronised only around the timed block:

* ``fft_step``: both encoders forward and backward over N items' CLS vectors + Adam on all weights;
* ``frozen_forward``: both encoders without gradients in the compute dtype (bf16 weights under
  bf16), the floor of every method that runs the frozen encoders each step (iisan);
* ``cached_step``: the IISAN side network on N cached states, the SASRec user encoder and the
  in-batch loss + Adam: eager, and on a GPU also captured as one CUDA graph.

Each floor times steps, and an epoch floor is that times the run's steps per epoch. The report
reads ``floors.json`` beside ``results.jsonl`` (``iisan-bench floors``; ``run`` writes it on a GPU).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from benchmark.config import BenchConfig
from benchmark.models.families import pool
from benchmark.training.batches import typical_items
from benchmark.training.precision import autocast_for, compute_dtype
from core.cuda import synchronize
from core.errors import BenchError

FLOORS_FILE = "floors.json"


def time_steps(step: Callable[[], Any], device: torch.device, steps: int, warmup: int = 3) -> float:
    """Mean seconds per call over ``steps`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - t0) / steps


def _encoder_inputs(kind: str, data, n: int, device) -> dict[str, torch.Tensor]:
    """The first ``n`` items' own inputs (titles with their padding; images, synthetic or real)."""
    from methods.base import pixel_values

    ids = torch.arange(n) % data.n_items + 1
    if kind == "text":
        return {"input_ids": data.tokens[ids].to(device), "attention_mask": data.attention_mask[ids].to(device)}
    return {"pixel_values": pixel_values(data.images[ids].to(device))}


def fft_step_floor(encs: dict[str, nn.Module], inputs: dict[str, dict], pooling: dict[str, str], device,
                   precision: str, steps: int) -> float:
    params = [p for e in encs.values() for p in e.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-5, fused=True)
    for e in encs.values():
        e.train()

    def step():
        with autocast_for(device.type, precision):
            # the run's pooled vector (``Backbones.pooling``): under causal attention (the LLMs) position 0
            # alone would skip the backward through every later token
            loss = sum(pool(e(**inputs[k]).last_hidden_state, inputs[k].get("attention_mask"),
                            pooling[k]).float().pow(2).mean() for k, e in encs.items())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return time_steps(step, device, steps)


def frozen_forward_floor(encs: dict[str, nn.Module], inputs: dict[str, dict], device, precision: str,
                         steps: int) -> float:
    dtype = compute_dtype(precision)
    for e in encs.values():
        e.eval().requires_grad_(False).to(dtype)
    cast = {k: {n: (t.to(dtype) if t.is_floating_point() else t) for n, t in kw.items()}  # once, not per step
            for k, kw in inputs.items()}

    @torch.no_grad()
    def step():
        with autocast_for(device.type, precision):
            for k, e in encs.items():
                e(**cast[k])

    return time_steps(step, device, steps)


def cached_step(side: nn.Module, user: nn.Module, states: dict[str, torch.Tensor], ids: torch.Tensor,
                uniq_n: int, device, precision: str, capturable: bool):
    """One cached-IISAN step (closure) on fixed tensors: gather, side network, SASRec, loss, Adam."""
    from benchmark.models.recommender import inbatch_loss

    params = list(side.parameters()) + list(user.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, fused=True, capturable=capturable)
    rows = torch.randint(1, states["text"].size(0), (uniq_n,), device=device)
    inverse = torch.randint(0, uniq_n, (ids.numel(),), device=device)
    log_pop = torch.zeros(int(ids.max()) + 1, device=device)
    mask = (ids[:, :-1] != 0).float()

    def step():
        with autocast_for(device.type, precision):
            text = states["text"][rows].float()
            image = states["vision"][rows].float() if "vision" in states else None
            emb = side(text, image)[inverse]
            seq = emb.view(ids.size(0), ids.size(1), -1)[:, :-1]
            loss = inbatch_loss(user(seq, mask), emb, ids, log_pop)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # graphs need the same .grad tensors every replay
        return loss

    return step


def graph_of(step: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """``step`` captured as one CUDA graph (warm-up on a side stream first, as the CUDA docs ask)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def _attempt(what: str, fn: Callable[[], dict[str, Any]], echo) -> dict[str, Any]:
    try:
        out = fn()
    except (RuntimeError, torch.OutOfMemoryError) as exc:  # one floor failing leaves the others
        out = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"}
    echo(f"floor {what}: {out}")
    return out


def measure_floors(cfg: BenchConfig, device: torch.device, steps: int = 10, echo=print) -> dict[str, Any]:
    """Time the three floors for ``cfg`` on ``device``; the dict ``floors.json`` holds."""
    from benchmark.launch.prepare import prepare, seed_everything
    from benchmark.measure.results import env_info
    from benchmark.models.backbones import load_backbones
    from benchmark.models.recommender import SASRec
    from methods.iisan import build_side
    from methods.registry import options_for

    from benchmark.measure.conditions import Watch

    watch = Watch.start(device, cfg.run.quiet_check)  # the floors carry their own load, as runs do
    t, prep = cfg.train, prepare(cfg)
    train = prep.split.train
    per_epoch = -(-train.size(0) // t.batch_size)
    per_epoch = min(per_epoch, t.max_steps_per_epoch) if t.max_steps_per_epoch else per_epoch
    n = typical_items(train, t.batch_size, t.item_bucket, prep.data.n_items)
    seed_everything(cfg.run.seed)
    b = load_backbones(cfg.backbone, cfg.data)
    encs = {"text": b.text, **({"vision": b.vision} if b.vision is not None and prep.data.images is not None else {})}
    for e in encs.values():
        e.to(device)
    inputs = {k: _encoder_inputs(k, prep.data, n, device) for k in encs}
    epoch = lambda s: {"step_s": s, "epoch_s": s * per_epoch}  # noqa: E731
    out: dict[str, Any] = {"items": n, "steps_per_epoch": per_epoch, "batch_size": t.batch_size,
                           "precision": t.precision, "backbone": b.info, "env": env_info(device),
                           "data_sha256": prep.data.content_sha256, "floors": {}}
    floors = out["floors"]
    floors["fft_step"] = _attempt(
        "fft_step", lambda: epoch(fft_step_floor(encs, inputs, b.pooling, device, t.precision, steps)), echo)
    side, taps = build_side(options_for("iisan", cfg), encs, t)
    floors["frozen_forward"] = _attempt(
        "frozen_forward", lambda: epoch(frozen_forward_floor(encs, inputs, device, t.precision, steps)), echo)
    states = {k: torch.randn(prep.data.n_items + 1, len(taps[k]), e.config.hidden_size, device=device,
                             dtype=torch.float16) for k, e in encs.items()}
    encs = inputs = b = None  # the encoders are not needed for the cached step
    if device.type == "cuda":
        torch.cuda.empty_cache()
    user = SASRec(t.item_dim, cfg.data.max_seq_len, t.num_blocks, t.num_heads, t.dropout, t.architecture).to(device)
    side.to(device)
    ids = train[:t.batch_size].to(device)

    def cached() -> dict[str, Any]:
        step = cached_step(side, user, states, ids, n, device, t.precision, capturable=device.type == "cuda")
        res = {"eager_step_s": time_steps(step, device, steps * 5)}
        if device.type == "cuda":
            res["graph_step_s"] = time_steps(graph_of(step, device), device, steps * 5)
        best = min(v for v in res.values())
        return {**res, **epoch(best)}

    floors["cached_step"] = _attempt("cached_step", cached, echo)
    cond = watch.finish()
    out["conditions"] = None if cond is None else cond.__dict__ | {"snapshots": [vars(s) for s in cond.snapshots]}
    out["measured_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return out


def wants_floors(cfg) -> bool:
    """``run.floors``: on, off, or (auto) on a GPU."""
    from benchmark.launch.prepare import resolve_device

    return cfg.run.floors == "on" or (cfg.run.floors == "auto" and resolve_device(cfg.run.device).type == "cuda")


def floors_command(cfg: BenchConfig, out_dir: Path, steps: int, echo=print) -> Path:
    """``iisan-bench floors``: measure and write ``OUT/floors.json`` (the report picks it up)."""
    from benchmark.launch.prepare import resolve_device
    from core.atomic import atomic_write_text

    if steps <= 0:
        raise BenchError(f"--steps must be > 0, got {steps}")
    device = resolve_device(cfg.run.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = measure_floors(cfg, device, steps, echo)
    path = out_dir / FLOORS_FILE
    atomic_write_text(path, json.dumps(res, indent=1, default=str))
    return path
