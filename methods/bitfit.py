"""BitFit (Ben Zaken et al. 2022): only the encoders' bias terms (and the heads) train.

Every parameter whose name ends in ``bias`` trains: attention Q/K/V/output, FFN, LayerNorm and,
for the ViT, the patch-projection bias. They are pretrained weights, so they train at
``lr_backbone``.
"""

from __future__ import annotations

from ._common import encoders, grouped_tower, param_ids
from .base import PAPER_BASELINE, BuildContext, ItemTower, Method
from .registry import register_method


@register_method("bitfit")
class BitFit(Method):
    description = "BitFit: only the encoders' biases (plus projections, fusion and SASRec) train."
    paper_train = {**PAPER_BASELINE, "lr_backbone": 5e-5, "lr_backbone_vision": 1e-4}

    def build(self, ctx: BuildContext) -> ItemTower:
        encs = encoders(ctx.backbones, ctx.data)
        for model in encs.values():
            for name, p in model.named_parameters():
                p.requires_grad_(name == "bias" or name.endswith(".bias"))
        return grouped_tower(ctx, param_ids(*encs.values()))
