"""BitFit (Ben Zaken et al. 2022): only the encoders' bias terms (and the heads) train.

Every parameter whose name ends in ``bias`` trains: attention Q/K/V/output, FFN, LayerNorm and,
for the ViT, the patch-projection bias; in Qwen2 only Q/K/V have biases. An encoder with none at all
(Llama, Mistral, Gemma, Qwen3, ModernBERT) is refused in one line naming it. They are pretrained weights, so they train at
``lr_backbone``.
"""

from __future__ import annotations

from core.errors import BenchError

from ._common import encoders, family_of, grouped_tower, param_ids
from .base import PAPER_BASELINE, BuildContext, ItemTower, Method
from .registry import register_method


@register_method("bitfit")
class BitFit(Method):
    description = "BitFit: only the encoders' biases (plus projections, fusion and SASRec) train."
    paper_train = {**PAPER_BASELINE, "lr_backbone": 5e-5, "lr_backbone_vision": 1e-4}

    def build(self, ctx: BuildContext) -> ItemTower:
        encs = encoders(ctx.backbones, ctx.data)
        self.check_applies(encs)
        for model in encs.values():
            for name, p in model.named_parameters():
                p.requires_grad_(is_bias(name))
        return grouped_tower(ctx, param_ids(*encs.values()))

    def check_applies(self, encoders) -> None:
        for kind, model in encoders.items():
            if not any(is_bias(name) for name, _ in model.named_parameters()):
                raise BenchError(f"bitfit does not apply: the {kind} encoder ({family_of(model.config).name}, "
                                 f"{type(model).__name__}) has no bias terms; use a family with biases (BERT, "
                                 f"Qwen2, ViT, ...) or another method")


def is_bias(name: str) -> bool:
    return name == "bias" or name.endswith(".bias")
