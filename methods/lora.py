"""LoRA (Hu et al. 2022) on both encoders through HF peft, starting from the backbone's weights.

peft wraps the existing query/value ``nn.Linear`` layers: the pretrained weight stays, and the
low-rank update B·A starts at zero (B = 0), so at initialisation the adapted encoder computes
exactly what the base encoder computes. The paper's code (loralib) replaced Q and V with freshly
initialised layers whose weights stay frozen and whose biases train, discarding the pretrained
attention weights: ``base_weights = "fresh"`` reproduces that for a reproduction; the default
keeps them, the LoRA a user comparing methods means (docs/protocol.md).

Defaults: r = 8, alpha = 16 (scaling alpha/r = 2), dropout 0.1 on the LoRA path, target
``query`` and ``value`` in every layer of both encoders, no bias training. The paper's 0.83M
trainable parameters for LoRA include the Q/V biases; ``bias = "lora_only"`` reproduces that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from core.errors import BenchError
from core.keys import bounded

from ._common import check_checkpointing, checkpointed, peft_tower, targets_for
from .base import PAPER_PEFT, BuildContext, ItemTower, Method
from .registry import register_method


@dataclass
class LoraOptions:
    r: int = bounded(8, 1, 1024)  # rank of the update
    alpha: int = bounded(16, 1, 65_536)  # lora_alpha: the update is scaled by alpha / r
    dropout: float = bounded(0.1, 0, 1, hi_open=True)  # dropout on the LoRA path's input
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])  # module name suffixes
    bias: Literal["none", "all", "lora_only"] = "none"  # which biases also train (peft's meaning)
    # pretrained: the targeted Linears keep the backbone's weights; fresh: as the paper's code, they are
    # re-initialised (nn.Linear's init), their weights frozen and their biases trained
    base_weights: Literal["pretrained", "fresh"] = "pretrained"

    def check(self, key: str) -> None:
        """What the fields' ranges cannot say, with errors naming ``key`` (its [methods.NAME] table)."""
        if not self.target_modules:
            raise BenchError(f"'{key}.target_modules' must name at least one module")


@register_method("lora")
class LoRA(Method):
    description = "LoRA (peft) on query/value of both encoders; starts from the backbone's weights."
    # the paper's run_lora.py: also fine_tune_lr_text 5e-5 / fine_tune_lr_image 1e-4, which reach
    # the targeted biases under base_weights = "fresh" (or bias = "all")
    paper_train = {**PAPER_PEFT, "lr_backbone": 5e-5, "lr_backbone_vision": 1e-4}
    paper_options = {"alpha": 1, "dropout": 0.0}  # the paper's code: scaling alpha / r = 1/8, no dropout
    Options = LoraOptions

    def build(self, ctx: BuildContext) -> ItemTower:
        from peft import LoraConfig

        o = self.opts

        def make(_kind, _resolved):
            return LoraConfig(r=o.r, lora_alpha=o.alpha, lora_dropout=o.dropout,
                              target_modules=list(o.target_modules), bias=o.bias)

        tower = peft_tower(ctx, make)
        if o.base_weights == "fresh":
            refresh_targets(tower)
        return tower

    def check_applies(self, encoders) -> None:
        for kind, model in encoders.items():  # every target spelled as this family spells it
            targets_for(model, list(self.opts.target_modules), kind)


def refresh_targets(tower: ItemTower) -> None:
    """The paper's LoRA base: every adapted Linear re-initialised as a new ``nn.Linear`` would be, its
    weight frozen and its bias trained (loralib's ``lora.Linear`` in place of the pretrained one)."""
    from peft.tuners.lora import LoraLayer

    for module in tower.modules():
        if isinstance(module, LoraLayer):
            base = module.get_base_layer()
            base.reset_parameters()
            base.weight.requires_grad_(False)
            if base.bias is not None:
                base.bias.requires_grad_(True)


@register_method("lora-gc", in_all=False)
class LoRACheckpointed(LoRA):
    description = "LoRA with gradient checkpointing on both encoders (the memory baseline)."

    def build(self, ctx: BuildContext) -> ItemTower:
        return checkpointed(super().build(ctx))

    def check_applies(self, encoders) -> None:
        super().check_applies(encoders)
        check_checkpointing(encoders)
