"""``iisan-bench params``: trainable and total parameters of every method, built on the meta device.

Nothing is allocated and no weights are read: the backbones are built from their configs under
``torch.device("meta")`` (random init, architecture only), each strategy builds its item tower on
them, and the counts come from the same ``count_params`` the runner records -- the whole model
the trainer optimises: encoders (frozen or not), the strategy's added weights, projections and
fusion, and the SASRec user encoder. The paper's numbers (IISAN's code, bert-base-uncased +
vit-base-patch16-224, item dim 64) are shown beside ours; docs/params.md explains each
difference.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from benchmark.commands.text import aligned
from core.errors import BenchError
from core.paper import PAPER_TRAINABLE

PAPER_IMAGE_SIZE = 224


def _fake_data(cfg):
    """Two items with the run's token and image shapes: parameter counts do not depend on the data."""
    from benchmark.data.dataset import SeqDataset

    T, S = cfg.data.text_tokens, cfg.data.image_size
    ds = SeqDataset("params", ["1", "2"], ["a", "b"], [[1, 2, 1]])
    ds.tokens = torch.zeros(3, T, dtype=torch.long)
    ds.attention_mask = torch.ones(3, T, dtype=torch.long)
    if cfg.data.images != "none":
        ds.images = torch.zeros(3, 3, S, S, dtype=torch.uint8)
        ds.image_mode = "synthetic"
    return ds


def count_method(cfg, name: str) -> dict[str, Any]:
    """Build ``name`` on the meta device and count its parameters (trainable by group, and total)."""
    from benchmark.launch.factory import build_model, count_params
    from methods.registry import get_method_for

    get_method_for(name, cfg)  # an unknown name fails here, before any build
    with torch.device("meta"):
        built = build_model(cfg, name, _fake_data(cfg), torch.device("meta"))
    model, backbones = built.model, built.backbones
    groups = {k: sum(p.numel() for p in ps) for k, ps in model.param_groups().items()}
    cache = cache_per_items(model, name, cfg)
    sasrec = sum(p.numel() for p in model.user_encoder.parameters())
    return {"method": name, **count_params(model), "backbone": groups.get("backbone", 0) + groups.get("backbone_vision", 0),
            "peft": groups.get("peft", 0), "head": groups.get("head", 0) - sasrec, "sasrec": sasrec,
            "paper": PAPER_TRAINABLE.get(name), "info": backbones.info, "cache": cache}


CACHE_ITEMS = 20_825  # Amazon Scientific's items: the cache of the paper's dataset


def cache_per_items(model, name: str, cfg) -> str | None:
    """A cached method's cache at Scientific's size: its tensors' shapes per item (from the meta
    build's buffers), their storage dtype, and where it would be written."""
    from methods.iisan.cache import cache_mb, cache_root

    source = getattr(model.item_tower, "source", None)
    if name != "iisan-cached" or source is None or not hasattr(source, "text_offset"):
        return None
    from methods.registry import options_for

    opts = options_for(name, cfg)
    shapes = {"text": (CACHE_ITEMS + 1, *source.text.shape[1:])}
    if source.has_image:
        shapes["vision"] = (CACHE_ITEMS + 1, *source.image.shape[1:])
    size = cache_mb(shapes, source.text.dtype)
    taps = ", ".join(f"{k} {s[1]} taps x {s[2]}" for k, s in shapes.items())
    return (f"{name}'s cache for {CACHE_ITEMS:,} items (Scientific): {_size(size * 2**20)} in {opts.cache_dtype} "
            f"({taps}), written under {cache_root(opts)} and held in device memory while training")


def params_config(cfg, image_size: int | None = None):
    """The config the counts use: random init (no weights needed), 224 px (the paper's, and the size of
    every pretrained image encoder a preset names) for presets with pretrained image weights."""
    from core.presets import PRESETS

    if image_size is not None and image_size <= 0:
        raise BenchError(f"--image-size must be > 0, got {image_size}")
    pretrained_vision = "vision" in PRESETS[cfg.backbone.preset]["weights"]
    size = image_size or (PAPER_IMAGE_SIZE if pretrained_vision else cfg.data.image_size)
    return dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, init="random"),
                               data=dataclasses.replace(cfg.data, image_size=size))


def paper_setting(cfg) -> bool:
    """The paper's numbers apply only to its setting: base encoders, both modalities, 224 px, item dim 64."""
    b, d = cfg.backbone, cfg.data
    return (b.preset == "base" and not b.text_model and not b.vision_model and d.images != "none"
            and d.image_size == PAPER_IMAGE_SIZE and cfg.train.item_dim == 64 and cfg.data.max_seq_len == 10
            and cfg.train.num_blocks == 2)


def count_all(cfg, names: list[str]) -> list[dict[str, Any]]:
    """Every method's counts; one that cannot apply to these encoders is a row with its reason."""
    rows = []
    for n in names:
        try:
            rows.append(count_method(cfg, n))
        except BenchError as exc:
            rows.append({"method": n, "refused": str(exc)})
    if not paper_setting(cfg):
        for r in rows:
            r["paper"] = None
    return rows


def _m(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def _size(n_bytes: float) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:,.1f} {unit}"
    return f"{n_bytes:.0f} B"


def _encoder_line(kind: str, e: dict[str, Any] | None) -> str | None:
    if not e:
        return None
    return (f"{kind}: {e['family']} ({e['model_type']}{', decoder-only' if e['decoder'] else ''}), {e['params']:,} "
            f"parameters, hidden {e['hidden_size']}, {e['layers']} layers, pooling {e['pooling']}")


def format_table(rows: list[dict[str, Any]], cfg, seconds: float | None = None) -> str:
    info = next((r["info"] for r in rows if "info" in r), {})
    vision = info.get("vision") or "no vision encoder (images = none)"
    head = (f"parameters: backbone preset '{cfg.backbone.preset}' ({info.get('text')} + {vision}, "
            f"architecture only, no poolers), text {cfg.data.text_tokens} tokens, "
            f"{f'images {cfg.data.image_size} px' if cfg.data.images != 'none' else 'text only'}, item dim {cfg.train.item_dim}, "
            f"SASRec {cfg.train.num_blocks} blocks")
    encoders = [x for x in (_encoder_line("text", info.get("text_encoder")),
                            _encoder_line("vision", info.get("vision_encoder"))) if x]
    cols = ["method", "trainable", "total", "encoders", "added", "proj+fusion", "SASRec", "checkpoint", "paper"]
    table = [cols]
    refused = []
    for r in rows:
        if "refused" in r:
            table.append([r["method"]] + ["n/a"] * (len(cols) - 1))
            refused.append(f"{r['method']}: {r['refused']}")
            continue
        table.append([r["method"], f"{r['trainable']:,}", f"{r['total']:,}", f"{r['backbone']:,}", f"{r['peft']:,}",
                      f"{r['head']:,}", f"{r['sasrec']:,}", _size(r["checkpoint_mb"] * 2**20), _m(r["paper"])])
    caches = [r["cache"] for r in rows if r.get("cache")]
    lines = [head, *encoders, "", *aligned(table), *([""] + refused if refused else []), *caches]
    lines += ["",
              "trainable = encoders (pretrained weights that train) + added (LoRA/adapters/side network) "
              "+ proj+fusion + SASRec; total adds the frozen encoder weights in the trained model "
              "(iisan-cached trains without the encoders). checkpoint = what a fine-tuned model adds to store: "
              "its trainable weights as stored (the frozen encoders are the shared pretrained files). "
              "paper = trainable parameters in IISAN's paper "
              "(shown only for its setting: --backbone base, 224 px, item dim 64); see docs/params.md for "
              "each difference."]
    if seconds is not None:
        lines.append(f"built on the meta device in {seconds:.1f}s")
    return "\n".join(lines)


def params_command(cfg, names: list[str], image_size: int | None = None) -> str:
    t0 = time.perf_counter()
    pcfg = params_config(cfg, image_size)
    rows = count_all(pcfg, names)
    return format_table(rows, pcfg, time.perf_counter() - t0)
