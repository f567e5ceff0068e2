"""Builders the tests share: small configs, a model built through the one factory, a CPU trainer.

Kept here (not in a test module) so no test module imports another."""

from __future__ import annotations

import dataclasses
import json

import torch

from benchmark.config import load_config
from benchmark.launch.factory import build_model
from benchmark.launch.prepare import prepare, seed_everything
from benchmark.training.trainer import Trainer

CPU = torch.device("cpu")
SMALL = {"data": {"synthetic": {"users": 240, "items": 120}}, "run": {"epochs": 1, "isolate": False},
         "train": {"max_steps_per_epoch": 3}}


def small_cfg(tmp_path, name="out", **extra):
    """A one-epoch fft sweep writing to ``tmp_path/name``; ``extra`` replaces whole sections."""
    over = {**SMALL, "run": {**SMALL["run"], "out": str(tmp_path / name), "methods": ["fft"]}}
    over.update(extra)
    return load_config(None, over)


def small(tmp_path=None, train: dict | None = None, **methods):
    """A 64-user synthetic config for building models; ``methods`` are [methods.NAME] tables."""
    over = {"run": {"isolate": False, "epochs": 1},
            "data": {"synthetic": {"users": 64, "items": 40}},
            "train": {"max_steps_per_epoch": 2, **(train or {})},
            "methods": {"iisan-cached": {"cache_dir": str(tmp_path or "/nonexistent")}, **methods}}
    return load_config(None, over)


_PREP: dict = {}


def prep_for(cfg):
    """``prepare(cfg)``, once per data section."""
    key = json.dumps(cfg.data.__dict__, default=str, sort_keys=True)
    if key not in _PREP:
        _PREP[key] = prepare(cfg)
    return _PREP[key]


def build(cfg, name: str, seed: int = 0):
    """(model, (text, vision) encoders as loaded, prepared data) for method ``name`` on CPU."""
    prep = prep_for(cfg)
    seed_everything(seed)
    built = build_model(cfg, name, prep.data, CPU)
    return built.model, built.encoders, prep


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainer_for(name="fft", cache_dir=None, **train):
    """A CPU trainer for a small model; ``train`` overrides TrainConfig fields (the model sees them too)."""
    cfg = small(cache_dir)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))
    model, _, prep = build(cfg, name)
    return Trainer(model, prep.split, cfg.train, cfg.eval, CPU, seed=1, progress=False), prep


def tower_and_base(cfg, name: str):
    """(method ``name``'s item tower in eval mode, copies of the text and vision encoders as loaded,
    prepared data): for checks that a method starts from the frozen encoders."""
    import copy

    from benchmark.models.backbones import load_backbones
    from methods.base import BuildContext
    from methods.registry import get_method_for, options_for

    prep = prep_for(cfg)
    seed_everything(0)
    backbones = load_backbones(cfg.backbone, cfg.data)
    base = copy.deepcopy(backbones.text).eval(), copy.deepcopy(backbones.vision).eval()
    method = get_method_for(name, cfg)(options_for(name, cfg))
    tower = method.build(BuildContext(cfg=cfg, data=prep.data, backbones=backbones, device=CPU)).eval()
    return tower, base, prep
