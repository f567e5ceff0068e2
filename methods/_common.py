"""Helpers shared by the strategies that wrap the backbones (lora, peft tuners, adapter, bitfit)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

import torch
from torch import nn

from benchmark.data.dataset import SeqDataset
from benchmark.models.backbones import Backbones
from benchmark.models.families import blocks as encoder_layers  # noqa: F401 - the methods' name for it
from benchmark.models.families import family_of
from benchmark.training.precision import compute_dtype
from core.errors import BenchError

from .base import BuildContext, EncoderTower


def encoders(backbones: Backbones, data: SeqDataset) -> dict[str, nn.Module]:
    """The encoders a run uses: text always, vision unless the run is text-only (images = none)."""
    out = {"text": backbones.text}
    if backbones.vision is not None and data.images is not None:
        out["vision"] = backbones.vision
    return out


def freeze(*modules: nn.Module | None) -> None:
    for m in modules:
        if m is not None:
            m.requires_grad_(False)


def frozen_in_compute_dtype(models: dict[str, nn.Module], precision: str) -> torch.dtype:
    """Cast frozen encoders to the compute dtype once, and return the dtype they now run in.

    Why: under autocast every matmul casts its fp32 weight to bf16/fp16 again at every call; a
    frozen encoder never needs its fp32 copy (no optimizer step reads it). On an H100 the frozen
    forward of 277 items with bf16 weights took 44.8 ms; that is the floor of every method that
    runs the frozen encoders each step. Only for decoupled methods: weights that train keep fp32.
    """
    dtype = compute_dtype(precision)
    for m in models.values():
        if any(p.requires_grad for p in m.parameters()):
            raise ValueError("frozen_in_compute_dtype: the encoder has trainable weights")
        m.to(dtype)
    return dtype


def is_meta(module: nn.Module) -> bool:
    """True for a model built on the meta device (parameter counting without weights)."""
    return any(p.is_meta for p in module.parameters())


def end_to_end_tower(ctx: BuildContext, group_of: Callable[[str], str | None], backbones: Backbones | None = None) -> EncoderTower:
    """The ``EncoderTower`` of a run (``ctx``: a ``BuildContext``), with the heads its
    ``train.architecture`` asks for."""
    return EncoderTower(backbones or ctx.backbones, ctx.data, ctx.cfg.train.item_dim, group_of,
                        paper=ctx.cfg.train.architecture == "paper")


def grouped_tower(ctx: BuildContext, pretrained: set[int], replace: dict[str, nn.Module] | None = None) -> EncoderTower:
    """An ``EncoderTower`` whose trainable backbone parameters are grouped by origin.

    ``pretrained`` holds ``id()`` of every parameter the backbones had before a strategy added
    its own: those train at lr_backbone ('backbone'), the added ones at lr_peft ('peft').
    ``replace`` swaps encoders for wrapped versions (e.g. a peft model around the text encoder).
    """
    backbones = dataclasses.replace(ctx.backbones, **replace) if replace else ctx.backbones
    names: dict[str, str] = {}
    tower = end_to_end_tower(ctx, names.get, backbones)
    for name, p in tower.named_parameters():
        names[name] = "backbone" if id(p) in pretrained else "peft"
    return tower


def checkpointed(tower: EncoderTower) -> EncoderTower:
    """Gradient checkpointing on the tower's encoders (the standard memory baseline): each layer's
    activations are recomputed in the backward pass instead of kept. Non-reentrant, so frozen inputs
    and peft-wrapped encoders need nothing more; torch keeps the RNG state, so dropout masks and
    therefore losses and gradients are those of the same method without it."""
    encs = {kind: enc for kind, enc in (("text", tower.text), ("vision", tower.vision)) if enc is not None}
    check_checkpointing({k: e.get_base_model() if hasattr(e, "get_base_model") else e for k, e in encs.items()})
    for enc in encs.values():  # transformers 5's name for it
        enc.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return tower


def check_checkpointing(encs: dict[str, nn.Module]) -> None:
    """Every encoder's transformers class can recompute its layers (``supports_gradient_checkpointing``)."""
    for kind, model in encs.items():
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise BenchError(f"gradient checkpointing: the {kind} encoder ({family_of(model.config).name}, "
                             f"{type(model).__name__}) does not support it in transformers; use the method without -gc")


def param_ids(*modules: nn.Module | None) -> set[int]:
    return {id(p) for m in modules if m is not None for p in m.parameters()}


def first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:240]



# Module-name suffixes one architecture spells differently from another, each with its spellings in
# other families (the first whose every name the encoder has wins): BERT's (and RoBERTa's) names;
# transformers 5's ViT, DINOv2 and the LLMs (Llama, Mistral, Gemma, Qwen) use q_proj ... o_proj, CLIP
# and SigLIP out_proj; ModernBERT fuses Q, K and V into ``Wqkv`` (LoRA on query/value there adapts the
# fused projection: r x H + 3H x r, the same count as r on Q and V apart). "output.dense" is a suffix
# of both of BERT's output projections (attention and FFN), so it stands for both of the others'.
ALIASES: dict[str, tuple[tuple[str, ...], ...]] = {
    "query": (("q_proj",), ("Wqkv",)), "key": (("k_proj",), ("Wqkv",)), "value": (("v_proj",), ("Wqkv",)),
    "attention.output.dense": (("o_proj",), ("out_proj",), ("attn.Wo",)),
    "intermediate.dense": (("fc1",), ("up_proj", "gate_proj"), ("Wi",)),
    "output.dense": (("o_proj", "fc2"), ("out_proj", "fc2"), ("o_proj", "down_proj"), ("Wo",)),
    "q_proj": (("query",), ("Wqkv",)), "k_proj": (("key",), ("Wqkv",)), "v_proj": (("value",), ("Wqkv",)),
    "o_proj": (("attention.output.dense",), ("out_proj",), ("attn.Wo",)),
    "fc1": (("intermediate.dense",), ("up_proj", "gate_proj"), ("Wi",)),
    # the LLMs' FFN names, as peft's own defaults for them (IA3: k_proj, v_proj, down_proj) reach an image encoder
    "down_proj": (("fc2",), ("mlp.Wo",)), "up_proj": (("fc1",), ("intermediate.dense",), ("Wi",)),
    "gate_proj": (("fc1",), ("intermediate.dense",), ("Wi",)), "fc2": (("down_proj",), ("mlp.Wo",)),
    "LayerNorm": (("layernorm_before", "layernorm_after", "layernorm"), ("layer_norm1", "layer_norm2"),
                  ("norm1", "norm2"), ("input_layernorm", "post_attention_layernorm"), ("attn_norm", "mlp_norm")),
}


def targets_for(model: nn.Module, names: list[str], kind: str) -> list[str]:
    """``names`` (module-name suffixes) as ``model`` spells them: each kept when it matches a module of
    the model, else replaced by its first set of aliases the model has all of; one that matches nothing
    is a one-line error naming the encoder, its family and the modules it has."""
    leaves = [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    has = lambda suffix: any(n == suffix or n.endswith("." + suffix) for n in leaves)  # noqa: E731
    out: list[str] = []
    for name in names:
        if has(name):
            out.append(name)
            continue
        alts = next((a for a in ALIASES.get(name, ()) if all(has(x) for x in a)), None)
        if alts is None:
            ends = sorted({n.split(".")[-1] for n in leaves})
            raise BenchError(f"peft target '{name}' matches no module of the {kind} encoder "
                             f"({family_of(model.config).name}, {type(model).__name__}); its modules end in: "
                             f"{', '.join(ends)}")
        out.extend(alts)
    return sorted(set(out))


def peft_tower(ctx, make_config: Callable[[str, object | None], object]) -> EncoderTower:
    """Wrap each encoder with an HF peft tuner (``get_peft_model``) and build the encoder tower.

    ``make_config(kind, text_config)`` returns a fresh peft config for encoder ``kind``; for the
    vision encoder it also receives the text encoder's config after peft resolved it (so module
    names peft chose by default for BERT can be reused for the ViT, whose layers share them).
    The base weights are kept: peft adds modules around them and freezes everything else.
    """
    from peft import get_peft_model

    encs = encoders(ctx.backbones, ctx.data)
    pretrained = param_ids(*encs.values())
    wrapped: dict[str, nn.Module] = {}
    resolved = None
    for kind, model in encs.items():
        freeze(model)
        config = make_config(kind, resolved)
        for attr in ("target_modules", "feedforward_modules"):  # names as this encoder spells them
            names = getattr(config, attr, None)
            if isinstance(names, (list, set, frozenset)) and names:
                setattr(config, attr, set(targets_for(model, sorted(names), kind)))
        with warnings.catch_warnings():  # peft 0.21 reads transformers 5's deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            pm = get_peft_model(model, config)
        if resolved is None:
            resolved = pm.peft_config["default"]
        wrapped[kind] = pm
    return grouped_tower(ctx, pretrained, wrapped)
