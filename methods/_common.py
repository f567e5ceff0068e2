"""Helpers shared by the strategies that wrap the backbones (lora, peft tuners, adapter, bitfit)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

from benchmark.data.dataset import SeqDataset
from benchmark.models.backbones import Backbones
from benchmark.training.trainer import compute_dtype

from .base import BuildContext, EncoderTower


def encoders(backbones: Backbones, data: SeqDataset) -> dict[str, nn.Module]:
    """The encoders a run uses: text always, vision unless the run is text-only (images = none)."""
    out = {"text": backbones.text}
    if backbones.vision is not None and data.images is not None:
        out["vision"] = backbones.vision
    return out


def freeze(*modules: nn.Module | None) -> None:
    for m in modules:
        if m is not None:
            m.requires_grad_(False)


def frozen_in_compute_dtype(models: dict[str, nn.Module], precision: str) -> torch.dtype:
    """Cast frozen encoders to the compute dtype once, and return the dtype they now run in.

    Why: under autocast every matmul casts its fp32 weight to bf16/fp16 again at every call; a
    frozen encoder never needs its fp32 copy (no optimizer step reads it). On an H100 the frozen
    forward of 277 items with bf16 weights took 44.8 ms; that is the floor of every method that
    runs the frozen encoders each step. Only for decoupled methods: weights that train keep fp32.
    """
    dtype = compute_dtype(precision)
    for m in models.values():
        if any(p.requires_grad for p in m.parameters()):
            raise ValueError("frozen_in_compute_dtype: the encoder has trainable weights")
        m.to(dtype)
    return dtype


def is_meta(module: nn.Module) -> bool:
    """True for a model built on the meta device (parameter counting without weights)."""
    return any(p.is_meta for p in module.parameters())


def end_to_end_tower(ctx: BuildContext, group_of: Callable[[str], str | None], backbones: Backbones | None = None) -> EncoderTower:
    """The ``EncoderTower`` of a run (``ctx``: a ``BuildContext``), with the heads its
    ``train.architecture`` asks for."""
    return EncoderTower(backbones or ctx.backbones, ctx.data, ctx.cfg.train.item_dim, group_of,
                        gelu=ctx.cfg.train.architecture == "paper")


def grouped_tower(ctx: BuildContext, pretrained: set[int], replace: dict[str, nn.Module] | None = None) -> EncoderTower:
    """An ``EncoderTower`` whose trainable backbone parameters are grouped by origin.

    ``pretrained`` holds ``id()`` of every parameter the backbones had before a strategy added
    its own: those train at lr_backbone ('backbone'), the added ones at lr_peft ('peft').
    ``replace`` swaps encoders for wrapped versions (e.g. a peft model around the text encoder).
    """
    backbones = dataclasses.replace(ctx.backbones, **replace) if replace else ctx.backbones
    names: dict[str, str] = {}
    tower = end_to_end_tower(ctx, names.get, backbones)
    for name, p in tower.named_parameters():
        names[name] = "backbone" if id(p) in pretrained else "peft"
    return tower


def param_ids(*modules: nn.Module | None) -> set[int]:
    return {id(p) for m in modules if m is not None for p in m.parameters()}


def first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:240]



def peft_tower(ctx, make_config: Callable[[str, object | None], object]) -> EncoderTower:
    """Wrap each encoder with an HF peft tuner (``get_peft_model``) and build the encoder tower.

    ``make_config(kind, text_config)`` returns a fresh peft config for encoder ``kind``; for the
    vision encoder it also receives the text encoder's config after peft resolved it (so module
    names peft chose by default for BERT can be reused for the ViT, whose layers share them).
    The base weights are kept: peft adds modules around them and freezes everything else.
    """
    from peft import get_peft_model

    encs = encoders(ctx.backbones, ctx.data)
    pretrained = param_ids(*encs.values())
    wrapped: dict[str, nn.Module] = {}
    resolved = None
    for kind, model in encs.items():
        freeze(model)
        pm = get_peft_model(model, make_config(kind, resolved))
        if resolved is None:
            resolved = pm.peft_config["default"]
        wrapped[kind] = pm
    return grouped_tower(ctx, pretrained, wrapped)
