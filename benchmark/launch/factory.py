"""The one place a run's model is built: backbones -> the method's item tower -> SASRec recommender.

Why one place: the runner, ``iisan-bench params`` (on the meta device), the sampler benchmark and the
tests must all measure the same model; four copies of this sequence drifted once (the recommender's
architecture option reached only some of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from benchmark.config import BenchConfig
from benchmark.data.dataset import SeqDataset
from benchmark.models.recommender import SeqRecommender


@dataclass
class BuiltModel:
    model: SeqRecommender
    method: Any  # the methods.base.Method instance (its one-off costs are read after training)
    backbones: Any  # benchmark.models.backbones.Backbones (its info goes into the record)
    encoders: tuple[nn.Module | None, nn.Module | None]  # (text, vision) as loaded, before the method ran


def recommender(tower: nn.Module, cfg: BenchConfig) -> SeqRecommender:
    """SASRec over ``tower`` as ``cfg.train`` describes it."""
    t = cfg.train
    return SeqRecommender(tower, t.item_dim, cfg.data.max_seq_len, t.num_blocks, t.num_heads, t.dropout,
                          t.architecture)


def build_model(cfg: BenchConfig, name: str, data: SeqDataset, device: torch.device, *,
                out_dir: Path | None = None, phase: Callable[[str], None] | None = None) -> BuiltModel:
    """Load the backbones, let method ``name`` build its item tower, wrap it in the recommender and
    move it to ``device`` (left where it is on the meta device: parameter counting)."""
    from benchmark.models.backbones import load_backbones
    from methods.base import BuildContext
    from methods.registry import get_method_for, options_for

    backbones = load_backbones(cfg.backbone, cfg.data)
    encoders = (backbones.text, backbones.vision)
    method = get_method_for(name, cfg)(options_for(name, cfg))
    ctx = BuildContext(cfg=cfg, data=data, backbones=backbones, device=device, out_dir=out_dir,
                       phase=phase or (lambda _name: None))
    model = recommender(method.build(ctx), cfg)
    if device.type != "meta":
        model.to(device)
    return BuiltModel(model, method, backbones, encoders)


def count_params(model: nn.Module) -> dict[str, Any]:
    """Trainable and total parameters, each shared tensor once, and ``checkpoint_mb``: the trainable
    tensors in their stored dtype, i.e. the per-task checkpoint a user ships (the frozen backbone is
    shared by every task). Counted, not written: FFT's would be 780 MB."""
    seen: set[int] = set()
    trainable = total = checkpoint = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            checkpoint += p.numel() * p.element_size()
    return {"trainable": trainable, "total": total, "checkpoint_mb": checkpoint / 2**20}


def resident_mb(model: nn.Module) -> dict[str, float]:
    """MB the built model keeps on its device: parameters, and buffers (item inputs such as token
    ids and uint8 images, or the IISAN cache). Why: a resident image table is memory every
    uncached method carries whatever its training costs, and a reader must be able to see it."""
    def mb(ts) -> float:
        seen: dict[int, float] = {}
        for t in ts:
            seen.setdefault(id(t), t.numel() * t.element_size() / 2**20)
        return sum(seen.values())

    return {"params_mb": mb(model.parameters()), "buffers_mb": mb(model.buffers())}
