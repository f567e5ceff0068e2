"""Houlsby bottleneck adapters (Houlsby et al. 2019) through AdapterHub ``adapters``.

Two adapters per layer in both encoders: after the attention output and after the FFN output
(``DoubleSeqBnConfig``, AdapterHub's Houlsby configuration), each Linear(H -> b) -> non-linearity
-> Linear(b -> H) + residual, with b = 64 by default (``reduction_factor = H / b``). ``adapters``
supports BertModel and ViTModel natively (``adapters.init`` then ``add_adapter`` +
``train_adapter``); ``train_adapter`` freezes every pretrained weight, so only the adapters (and
the heads) train.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from iisan_util.errors import BenchError

from ._common import encoders, freeze, grouped_tower, param_ids
from .base import BuildContext, ItemTower, Method
from .registry import register_method

ADAPTER_NAME = "bench"


@dataclass
class AdapterOptions:
    bottleneck: int = 64  # adapter width b; reduction_factor = hidden / b
    non_linearity: str = "swish"  # AdapterHub's Houlsby default (relu, gelu, swish, tanh, ...)
    placement: Literal["houlsby", "pfeiffer"] = "houlsby"  # houlsby: after attention and FFN; pfeiffer: FFN only
    dropout: float = 0.0  # dropout inside the adapter

    def check(self, key: str) -> None:
        """Ranges, with errors naming ``key`` (the method's own [methods.NAME] table)."""
        if self.bottleneck <= 0:
            raise BenchError(f"'{key}.bottleneck' must be > 0, got {self.bottleneck}")
        if not 0.0 <= self.dropout < 1.0:
            raise BenchError(f"'{key}.dropout' must be in [0, 1), got {self.dropout}")


@register_method("adapter")
class Adapter(Method):
    description = "Houlsby bottleneck adapters (AdapterHub) after attention and FFN in both encoders."
    paper_train = {"batch_size": 32, "lr_head": 2e-4, "lr_peft": 4e-4}
    Options = AdapterOptions

    def build(self, ctx: BuildContext) -> ItemTower:
        from adapters import DoubleSeqBnConfig, SeqBnConfig

        o = self.opts
        encs = encoders(ctx.backbones, ctx.data)
        pretrained = param_ids(*encs.values())
        config_cls = DoubleSeqBnConfig if o.placement == "houlsby" else SeqBnConfig
        quiet = logging.getLogger("adapters.model_mixin")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "none are activated" fires before train_adapter
        try:
            for kind, model in encs.items():
                self._add(model, kind, config_cls)
        finally:
            quiet.setLevel(level)
        return grouped_tower(ctx, pretrained)

    def _add(self, model, kind: str, config_cls) -> None:
        import adapters

        o = self.opts
        hidden = model.config.hidden_size
        if o.bottleneck > hidden:
            raise BenchError(f"'methods.{self.name}.bottleneck' = {o.bottleneck} is wider than the {kind} "
                             f"encoder's hidden size {hidden}")
        freeze(model)
        adapters.init(model)
        model.add_adapter(ADAPTER_NAME, config=config_cls(reduction_factor=hidden / o.bottleneck,
                                                          non_linearity=o.non_linearity, dropout=o.dropout),
                          set_active=True)
        model.train_adapter(ADAPTER_NAME)  # freezes the model, activates and unfreezes the adapter
        widths = {m.adapter_down[0].out_features for n, m in model.named_modules()
                  if n.endswith(f"adapters.{ADAPTER_NAME}") and hasattr(m, "adapter_down")}
        if widths != {o.bottleneck}:
            raise BenchError(f"adapters built bottleneck widths {sorted(widths)} for the {kind} encoder, "
                             f"expected {o.bottleneck}")
