"""Houlsby bottleneck adapters (Houlsby et al. 2019), our own small module.

Why not AdapterHub: ``adapters`` 1.3 (the newest) pins transformers 4.57, a release line with known
advisories (issue #14); the adapter itself is a dozen lines. Two adapters per layer in both
encoders, after the attention sub-layer's output projection and after the FFN's (``placement =
"houlsby"``; ``"pfeiffer"``: the FFN only), each x + Linear(b -> H)(act(Linear(H -> b)(x))), b = 64.
Each wraps the output projection (``attention.output.dense`` / ``output.dense`` in BERT,
``attention.o_proj`` / ``mlp.fc2`` in transformers 5's ViT and DINOv2, ``self_attn.out_proj`` /
``mlp.fc2`` in CLIP and SigLIP, ``attn.Wo`` / ``mlp.Wo`` in ModernBERT, ``self_attn.o_proj`` /
``mlp.down_proj`` in the LLMs, whose pre-norm blocks add it to the residual stream right after) and
acts after that sub-layer's dropout
and before its residual and LayerNorm: dense -> dropout -> adapter, as in the paper's code
(``BertAdaptedSelfOutput``) and AdapterHub's Houlsby config (``order = "dropout_first"``, the
default; ``"adapter_first"``, dense -> adapter -> dropout, is what this module did before version
2). The order matters where the sub-layer has dropout (BERT: 0.1; ViT-base: 0). Every pretrained
weight is frozen (the LayerNorms too), only the adapters (and the heads) train. Default init and
activation are the paper's code: weights N(0, 0.01), zero biases, ReLU, so an adapter starts close
to the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from core.errors import BenchError
from core.keys import bounded

from ._common import encoder_layers, encoders, freeze, grouped_tower, param_ids
from .base import PAPER_PEFT, BuildContext, ItemTower, Method
from .registry import register_method

# the output projection of each sub-layer, by architecture (first match per layer wins)
# BERT/RoBERTa; ViT and DINOv2 (transformers 5); CLIP and SigLIP; ModernBERT; the LLMs (Llama, Mistral, Gemma, Qwen)
ATTENTION_OUT = ("attention.output.dense", "attention.o_proj", "self_attn.out_proj", "attention.out_proj",
                 "attn.Wo", "self_attn.o_proj")
FFN_OUT = ("output.dense", "mlp.fc2", "mlp.Wo", "mlp.down_proj")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "swish": nn.SiLU, "tanh": nn.Tanh}


@dataclass
class AdapterOptions:
    bottleneck: int = bounded(64, 1, 4096)  # adapter width b
    non_linearity: Literal["relu", "gelu", "swish", "tanh"] = "relu"  # the paper's code: ReLU
    placement: Literal["houlsby", "pfeiffer"] = "houlsby"  # houlsby: after attention and FFN; pfeiffer: FFN only
    dropout: float = bounded(0.0, 0, 1, hi_open=True)  # dropout inside the adapter
    init_std: float = bounded(0.01, 1e-6, 1)  # N(0, init_std) weights, zero biases (the paper's code)
    # dropout_first: dense -> the sub-layer's dropout -> adapter (the paper's code, AdapterHub);
    # adapter_first: dense -> adapter -> dropout (this module before version 2)
    order: Literal["dropout_first", "adapter_first"] = "dropout_first"


class Bottleneck(nn.Module):
    """x + up(dropout(act(down(x))))."""

    def __init__(self, hidden: int, o: AdapterOptions):
        super().__init__()
        self.down = nn.Linear(hidden, o.bottleneck)
        self.act = ACTIVATIONS[o.non_linearity]()
        self.drop = nn.Dropout(o.dropout)
        self.up = nn.Linear(o.bottleneck, hidden)
        for lin in (self.down, self.up):
            nn.init.normal_(lin.weight, std=o.init_std)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.drop(self.act(self.down(x))))


class Adapted(nn.Module):
    """A frozen output projection followed by its adapter (``base`` keeps the pretrained weights);
    ``drop``: the sub-layer's dropout, moved here so it acts between the two (``order``)."""

    def __init__(self, base: nn.Linear, adapter: Bottleneck, drop: nn.Module | None = None):
        super().__init__()
        self.base = base
        self.drop = drop if drop is not None else nn.Identity()
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.drop(self.base(x)))


def output_projection(layer: nn.Module, candidates: tuple[str, ...], kind: str, what: str) -> tuple[nn.Module, str]:
    """(parent module, attribute) of the first of ``candidates`` that ``layer`` has, as an nn.Linear."""
    for path in candidates:
        *parents, leaf = path.split(".")
        owner = layer
        for name in parents:
            owner = getattr(owner, name, None)
        if owner is not None and isinstance(getattr(owner, leaf, None), nn.Linear):
            return owner, leaf
    have = sorted(n for n, m in layer.named_modules() if isinstance(m, nn.Linear))
    raise BenchError(f"adapter: the {kind} encoder ({type(layer).__name__}) has no {what} output projection "
                     f"(looked for {', '.join(candidates)}); its Linear modules: {', '.join(have)}")


def add_adapters(model: nn.Module, kind: str, o: AdapterOptions, key: str) -> None:
    """Wrap the output projections of every layer of ``model`` with adapters (``key``: the method's
    [methods.NAME] table, for errors)."""
    check_width(model, kind, o, key)
    for layer in encoder_layers(model):
        shared = _layer_dropout(layer, len(sites(o))) if o.order == "dropout_first" else None
        for what, candidates in sites(o):
            owner, leaf = output_projection(layer, candidates, kind, what)
            base = getattr(owner, leaf)
            adapter = Bottleneck(base.out_features, o).to(device=base.weight.device, dtype=base.weight.dtype)
            drop = None
            if o.order == "dropout_first":
                drop = _take_dropout(owner) or (nn.Dropout(shared.p) if shared is not None else None)
            setattr(owner, leaf, Adapted(base, adapter, drop))
        if shared is not None:
            layer.dropout = nn.Identity()  # each adapted sub-layer now applies it before its adapter


def sites(o: AdapterOptions) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(sub-layer, its output projection's names) the placement adapts."""
    return (("attention", ATTENTION_OUT), ("FFN", FFN_OUT)) if o.placement == "houlsby" else (("FFN", FFN_OUT),)


def check_width(model: nn.Module, kind: str, o: AdapterOptions, key: str) -> None:
    hidden = model.config.hidden_size
    if o.bottleneck > hidden:
        raise BenchError(f"'{key}.bottleneck' = {o.bottleneck} is wider than the {kind} encoder's "
                         f"hidden size {hidden}")


def _take_dropout(owner: nn.Module) -> nn.Dropout | None:
    """The dropout that follows ``owner``'s output projection (BERT's SelfOutput / Output), replaced
    there by an identity: the adapter wrapper applies it instead."""
    drop = getattr(owner, "dropout", None)
    if not isinstance(drop, nn.Dropout):
        return None
    owner.dropout = nn.Identity()
    return drop


def _layer_dropout(layer: nn.Module, n_sites: int) -> nn.Dropout | None:
    """A dropout the layer applies after each sub-layer (transformers 5's ViT), movable only when
    both sub-layers are adapted (houlsby); under pfeiffer it stays after the FFN's adapter (ViT-base's
    is p = 0)."""
    drop = getattr(layer, "dropout", None)
    return drop if isinstance(drop, nn.Dropout) and n_sites == 2 else None


@register_method("adapter")
class Adapter(Method):
    description = "Houlsby bottleneck adapters (our own module) after attention and FFN in both encoders."
    paper_train = PAPER_PEFT
    version = 2  # 2: the sub-layer's dropout before the adapter (order = "dropout_first")
    Options = AdapterOptions

    def check_applies(self, encoders) -> None:
        for kind, model in encoders.items():  # both sites exist in this family's blocks, and b fits
            check_width(model, kind, self.opts, f"methods.{self.name}")
            for what, candidates in sites(self.opts):
                output_projection(encoder_layers(model)[0], candidates, kind, what)

    def build(self, ctx: BuildContext) -> ItemTower:
        encs = encoders(ctx.backbones, ctx.data)
        pretrained = param_ids(*encs.values())
        for kind, model in encs.items():
            freeze(model)
            add_adapters(model, kind, self.opts, f"methods.{self.name}")
        return grouped_tower(ctx, pretrained)
