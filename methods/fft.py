"""Full fine-tuning: every backbone weight and every head trains."""

from __future__ import annotations

from ._common import check_checkpointing, checkpointed, end_to_end_tower
from .base import BuildContext, ItemTower, Method
from .registry import register_method


@register_method("fft")
class FullFineTuning(Method):
    description = "Full fine-tuning: both encoders and all heads train (the reference)."
    paper_train = {"batch_size": 32, "lr_head": 1e-4, "lr_backbone": 5e-5, "lr_backbone_vision": 1e-4}

    def build(self, ctx: BuildContext) -> ItemTower:
        for module in (ctx.backbones.text, ctx.backbones.vision):
            if module is not None:
                module.requires_grad_(True)
        return end_to_end_tower(ctx, lambda _name: "backbone")


@register_method("fft-gc", in_all=False)
class FullFineTuningCheckpointed(FullFineTuning):
    description = "Full fine-tuning with gradient checkpointing on both encoders (the memory baseline)."

    def build(self, ctx: BuildContext) -> ItemTower:
        return checkpointed(super().build(ctx))

    def check_applies(self, encoders) -> None:
        check_checkpointing(encoders)
