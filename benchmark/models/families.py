"""What differs between encoder families, in one table: the methods and towers ask here.

A family is named by the transformers ``model_type`` of its config. For each: whether it encodes
text or images, whether it is a decoder-only language model (causal attention: its last token has
read the whole title, its first token only itself), and the pooling that gives one vector per item
by default (``backbone.text_pooling`` / ``vision_pooling`` = "auto"):

- encoder-only text (BERT, RoBERTa, ModernBERT): the first token ([CLS]), as IISAN reads BERT;
- decoder-only text (Llama, Mistral, Gemma, Qwen2/3): the last non-padding token, as LLM embedders
  (E5-Mistral, LLM2Vec's "eos" pooling) read a causal model;
- images: the class token (ViT, CLIP, DINOv2), or the mean over patches for SigLIP, which has none.

Pooling applies wherever a vector is read from hidden states: the end-to-end towers' last state and
every state IISAN taps (``pool``). Families not in the table still load; they pool by the mean
unless told otherwise, and the record names them by their model type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.errors import BenchError


@dataclass(frozen=True)
class Family:
    name: str  # as reports name it
    kind: str  # text | vision
    decoder: bool = False  # decoder-only (causal) language model
    pooling: str = "cls"  # what "auto" means for this family
    # the norm after the last block whose output transformers reports as hidden_states[L] (LLMs, ModernBERT);
    # None: hidden_states[L] is the last block's own output (BERT, ViT, CLIP, SigLIP, DINOv2)
    final_norm: str | None = None


FAMILIES: dict[str, Family] = {
    "bert": Family("BERT", "text"), "roberta": Family("RoBERTa", "text"),
    "modernbert": Family("ModernBERT", "text", final_norm="final_norm"),
    "llama": Family("Llama", "text", True, "last", "norm"), "mistral": Family("Mistral", "text", True, "last", "norm"),
    "gemma": Family("Gemma", "text", True, "last", "norm"), "gemma2": Family("Gemma2", "text", True, "last", "norm"),
    "qwen2": Family("Qwen2", "text", True, "last", "norm"), "qwen3": Family("Qwen3", "text", True, "last", "norm"),
    "vit": Family("ViT", "vision"), "clip_vision_model": Family("CLIP", "vision"),
    "siglip_vision_model": Family("SigLIP", "vision", pooling="mean"), "dinov2": Family("DINOv2", "vision"),
}


def family_of(config: Any) -> Family:
    """The family of a transformers config (an unknown type: a generic one named by its model type)."""
    model_type = getattr(config, "model_type", "") or type(config).__name__
    known = FAMILIES.get(model_type)
    if known is not None:
        return known
    kind = "vision" if hasattr(config, "patch_size") else "text"
    return Family(model_type, kind, pooling="mean")


def resolve_pooling(config: Any, asked: str) -> str:
    """``asked`` (auto | cls | last | mean) for an encoder of this config."""
    fam = family_of(config)
    how = fam.pooling if asked == "auto" else asked
    if how == "last" and fam.kind == "vision":
        raise BenchError(f"backbone.vision_pooling = 'last' has no meaning for an image encoder ({fam.name}); "
                         f"use cls or mean")
    return how


def pool(hidden: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """One vector per row of ``hidden`` [N, T, H]; ``mask`` [N, T] marks real tokens (None: all are).

    ``last`` takes the last position whose mask is 1, whichever side the tokenizer padded."""
    if how == "cls":
        return hidden[:, 0]
    if mask is None:
        return hidden[:, -1] if how == "last" else hidden.mean(dim=1)
    if how == "last":
        positions = torch.arange(mask.size(1), device=mask.device)
        last = (mask.to(torch.long) * (positions + 1)).argmax(dim=1)
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)


def blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of an encoder, in order: ``encoder.layer`` (BERT, RoBERTa, DINOv2),
    ``encoder.layers`` (CLIP, SigLIP), ``layers`` (transformers 5's ViT, ModernBERT, the LLMs)."""
    for owner in (getattr(model, "encoder", None), model):
        for name in ("layer", "layers"):
            layers = getattr(owner, name, None)
            if isinstance(layers, nn.ModuleList):
                return layers
    raise BenchError(f"{type(model).__name__}: no encoder.layer(s) or layers; this method needs a transformer "
                     "encoder of a known layout (BERT, ViT, CLIP, SigLIP, DINOv2, ModernBERT, Llama-like)")


def tap_modules(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Where each hidden state ``hidden_states[i]`` of ``model`` can be read by a hook, i = 0..L:
    (module, True) for the input of the first block, (module, False) for a module's output: block i,
    or for the last state of the families that report it normed, their final norm."""
    layers = blocks(model)
    mods: list[tuple[nn.Module, bool]] = [(layers[0], True)] + [(layer, False) for layer in layers]
    norm = family_of(model.config).final_norm
    if norm is not None and isinstance(getattr(model, norm, None), nn.Module):
        mods[-1] = (getattr(model, norm), False)
    return mods


def describe(model: nn.Module, pooling: str) -> dict[str, Any]:
    """What a record says about one encoder: family, size, width, depth, pooling."""
    c = model.config
    fam = family_of(c)
    return {"family": fam.name, "model_type": getattr(c, "model_type", None), "decoder": fam.decoder,
            "params": sum(p.numel() for p in model.parameters()), "hidden_size": c.hidden_size,
            "layers": c.num_hidden_layers, "pooling": pooling}
