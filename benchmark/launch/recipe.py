"""Which methods a sweep runs, and each one's config and first record: under
``[train] paper_protocol`` the IISAN paper's recipe for that kind of method."""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmark.config import PAPER_TRAIN, PAPER_TRAIN_CUDA, BenchConfig
from benchmark.launch.prepare import Prepared, repeat_shares
from core.errors import BenchError, nearest
from core.record import DataSummary, Env, Metrics, RunRecord


def method_names(cfg: BenchConfig) -> list[str]:
    from methods.registry import configured_extra, select

    return select(cfg.run.methods, extra=configured_extra(cfg))


def check_methods(cfg: BenchConfig, names: list[str], applicable: bool = True) -> None:
    """Validate every selected method's options, and every [methods.NAME] table, before anything runs;
    ``applicable``: also that each can apply to the run's encoders (``check_applicable``)."""
    from methods.registry import available, configured_extra, options_for

    known = set(available()) | set(configured_extra(cfg))
    for name in cfg.methods:
        if name not in known:
            raise BenchError(f"{cfg.where(f'methods.{name}')}: [methods.{name}] names no method{nearest(name, known)}")
    for name in names:
        options_for(name, cfg)
    if applicable:
        check_applicable(cfg, names)


def check_applicable(cfg: BenchConfig, names: list[str]) -> None:
    """Every method can apply to the run's encoders (BitFit needs biases, adapters their output
    projections, LoRA its targets, -gc checkpointing), checked on meta-device encoders: a method that
    cannot is one line before anything runs, naming the encoder, with the methods that can."""
    from benchmark.models.backbones import meta_encoders
    from methods.registry import get_method_for, options_for

    encoders = meta_encoders(cfg.backbone, cfg.data)
    refused: dict[str, str] = {}
    for name in names:
        try:
            get_method_for(name, cfg)(options_for(name, cfg)).check_applies(encoders)
        except BenchError as exc:
            refused[name] = str(exc)
    if refused:
        name, why = next(iter(refused.items()))
        others = [n for n in names if n not in refused]
        rest = f"; these can: --methods {','.join(others)}" if others else ""
        raise BenchError(f"{cfg.where('run.methods', 'backbone.preset')}: '{name}' cannot run on these backbones: {why}{rest}")


def method_config(cfg: BenchConfig, name: str) -> BenchConfig:
    """``cfg`` as method ``name`` runs it: under ``[train] paper_protocol`` with the IISAN paper's
    recipe for that kind of method (its class's ``paper_train`` and ``paper_options``; options the
    user set explicitly win), and on a CUDA device the paper's precision. The result's resolved
    config and config hash carry what was used."""
    from methods.registry import get_method_for

    if not cfg.train.paper_protocol:
        return cfg
    cls = get_method_for(name, cfg)
    cuda = PAPER_TRAIN_CUDA if on_cuda(cfg.run.device) else {}
    train = dataclasses.replace(cfg.train, **{**PAPER_TRAIN, **cuda, **cls.paper_train})
    methods = cfg.methods
    if cls.paper_options:
        methods = {**methods, name: {**cls.paper_options, **methods.get(name, {})}}
    if train == cfg.train and methods == cfg.methods:
        return cfg
    return dataclasses.replace(cfg, train=train, methods=methods)


def on_cuda(device: str) -> bool:
    """Whether ``run.device`` runs on a CUDA GPU (``auto``: when one is available)."""
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()


def run_hash(cfg: BenchConfig, name: str) -> str:
    """The resume key of method ``name``'s runs: its config as it runs (``method_config``) and its
    code version (``Method.version``)."""
    from methods.registry import get_method_for

    return method_config(cfg, name).hash_for(name, get_method_for(name, cfg).version)


def new_record(cfg: BenchConfig, name: str, description: str, prep: Prepared, env: Env,
               repeat: int) -> RunRecord:
    """The record every run starts from (also the one a crashed child's parent fills in)."""
    return RunRecord(method=name, description=description, repeat=repeat, config_hash=run_hash(cfg, name),
                     seed=cfg.run.seed, data=DataSummary(**prep.data.summary()), env=env,
                     config={"resolved": cfg.to_dict()},
                     metrics=Metrics(popularity=prep.popularity, target_repeats_history=repeat_shares(prep.split)))
