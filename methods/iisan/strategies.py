"""The two IISAN strategies: ``iisan`` (encoders run every step) and ``iisan-cached`` (encoders run
once, to build the cache)."""

from __future__ import annotations

import gc

import torch
from torch import nn

from core.record import CacheCost
from methods._common import encoders, freeze, frozen_in_compute_dtype, is_meta
from methods.base import BuildContext, ItemInputs, ItemTower, Method
from methods.registry import register_method

from .options import IISANCachedOptions, IISANOptions, resolve_taps
from .side import SideNetwork, build_side
from .taps import BackboneTaps, CachedTaps


class IISANTower(ItemTower):
    """Item index -> tapped states (live or cached) -> side network -> item embedding."""

    def __init__(self, source: nn.Module, side: SideNetwork, lr_groups: str = "side"):
        super().__init__()
        self.source = source
        self.side = side
        self.lr_groups = lr_groups  # IISANOptions.lr_groups

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        text, image = self.source(ids)
        return self.side(text, image)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return self.side.param_groups(self.lr_groups)


# --------------------------------------------------------------------------- the two strategies

# the paper's run script for IISAN: batch 64, lr 2e-4, adapter rates 1e-4, fine_tune_lr_text 5e-5 and
# fine_tune_lr_image 1e-4 (which its name-based grouping gives to side-network parameters: lr_groups)
PAPER_IISAN = {"batch_size": 64, "lr_head": 2e-4, "lr_peft": 1e-4, "lr_backbone": 5e-5, "lr_backbone_vision": 1e-4}
PAPER_IISAN_OPTIONS = {"lr_groups": "paper"}


@register_method("iisan")
class IISAN(Method):
    description = "IISAN: side network over frozen encoders' tapped pooled states (encoders run every step)."
    paper_train = PAPER_IISAN
    paper_options = PAPER_IISAN_OPTIONS
    Options = IISANOptions

    def check_applies(self, encoders) -> None:
        resolve_taps(self.opts, encoders)  # taps in range of both encoders, or grouped ones that exist

    def build(self, ctx: BuildContext) -> ItemTower:
        models = encoders(ctx.backbones, ctx.data)
        freeze(*models.values())
        side, taps = build_side(self.opts, models, ctx.cfg.train)
        frozen_in_compute_dtype(models, ctx.cfg.train.precision)
        # architecture = "paper": the encoders' dropout is active while training, as in the paper's code
        # (its cached variant, like ours, reads states computed without it: the two then differ)
        live = BackboneTaps(models, ItemInputs(ctx.data), taps, dropout=ctx.cfg.train.architecture == "paper",
                            pooling=ctx.backbones.pooling)
        return IISANTower(live, side, self.opts.lr_groups)


@register_method("iisan-cached")
class IISANCached(Method):
    description = "IISAN trained from a cache of the tapped pooled states (encoders run once, at cache build)."
    paper_train = PAPER_IISAN  # the same training, from cached states
    paper_options = PAPER_IISAN_OPTIONS
    check_applies = IISAN.check_applies
    # a step is ~3 ms of GPU work behind ~1,000 kernel launches: CUDA graphs (torch.compile's
    # cudagraph trees, one graph per bucketed step shape, all captured before the clock)
    auto_compile = "reduce-overhead"
    Options = IISANCachedOptions

    def __init__(self, options):
        super().__init__(options)
        self.cache_info = None
        self.rebuild = False  # build the cache anew even when a valid one exists (``iisan-bench cache --rebuild``)

    def build(self, ctx: BuildContext) -> ItemTower:
        from methods.iisan.cache import ensure_cache

        models = encoders(ctx.backbones, ctx.data)
        freeze(*models.values())
        side, taps = build_side(self.opts, models, ctx.cfg.train)  # before the cache: same init as iisan
        self.taps = taps
        frozen_in_compute_dtype(models, ctx.cfg.train.precision)  # the cache holds what live iisan computes
        if is_meta(models["text"]):  # parameter counting on the meta device: no states to cache
            n = ctx.data.n_items + 1
            from methods.iisan.cache import DTYPES

            dtype = DTYPES[self.opts.cache_dtype]  # as stored: the counts' and estimates' cache size
            caches = {k: (torch.empty(n, len(taps[k]), m.config.hidden_size, device="meta", dtype=dtype),
                          torch.empty(len(taps[k]), m.config.hidden_size, device="meta")) for k, m in models.items()}
        else:
            source = BackboneTaps(models, ItemInputs(ctx.data), taps, pooling=ctx.backbones.pooling)
            caches, self.cache_info = ensure_cache(ctx, source, taps, self.opts, rebuild=self.rebuild)
            del source
            release_backbones(ctx)
        return IISANTower(CachedTaps(caches["text"], caches.get("vision")), side, self.opts.lr_groups)

    def one_off(self) -> CacheCost | None:
        i = self.cache_info
        if i is None:
            return None
        cost = CacheCost(status="built" if i.built else "loaded", reason=i.reason, build_s=i.build_s,
                         load_s=i.load_s, batch_size=i.batch_size if i.built else None, path=str(i.path),
                         size_mb=i.size_mb)
        if i.earlier is not None:  # loaded: the build's own cost, from beside the cache
            e = i.earlier
            cost.built_s, cost.built_peak_mb, cost.built_memory_source = e.build_s, e.peak_mb, e.memory_source
            cost.built_on, cost.built_at = e.device, e.at
        return cost


def release_backbones(ctx: BuildContext) -> None:
    """The cached strategy never runs the encoders again: move them off the device and drop them."""
    device = ctx.device
    for attr in ("text", "vision"):
        model = getattr(ctx.backbones, attr)
        if model is not None and device.type != "cpu":
            model.to("cpu")
        setattr(ctx.backbones, attr, None)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
