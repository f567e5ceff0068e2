"""What a run read, as its record states it: the data and the encoders (``core.record`` holds them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class DataSummary:
    """What the record states about the data (``SeqDataset.summary``)."""

    name: str | None = None
    users: int | None = None
    items: int | None = None
    interactions: int | None = None
    images: str | None = None  # real | synthetic | none
    image_source: dict[str, Any] | None = None  # real images: source, cache hit/built, cache path
    timings: dict[str, float] | None = None  # one-off data costs (load_s, images_s, tokenize_s)
    content_sha256: str | None = None  # item ids, titles, sequences and images as loaded (``dataset.content_hash``)


@dataclass
class EncoderInfo:
    """One encoder's architecture as it ran (``benchmark.models.families.describe``)."""

    family: str | None = None  # BERT | RoBERTa | ModernBERT | Llama | Mistral | Gemma | Qwen2 | Qwen3 | ViT | CLIP | SigLIP | DINOv2
    model_type: str | None = None  # the transformers config's model_type
    decoder: bool | None = None  # decoder-only (causal) language model
    params: int | None = None  # parameters of the encoder as built (no pooler or head)
    hidden_size: int | None = None
    layers: int | None = None
    pooling: str | None = None  # cls | last | mean: how one vector per item is read from its hidden states


@dataclass
class BackboneInfo:
    """Which encoders ran and with which weights (``Backbones.info``)."""

    preset: str | None = None
    text: str | None = None
    text_init: str | None = None
    text_source: str | None = None
    vision: str | None = None
    vision_init: str | None = None
    vision_source: str | None = None
    tokenizer: str | None = None
    init: str | None = None  # pretrained | random | "text X, vision Y"
    # sha256 of the loaded weights (every tensor of the state dict, in order), pretrained encoders only:
    # a random init is given by its seed
    text_weights_sha256: str | None = None
    vision_weights_sha256: str | None = None
    text_encoder: EncoderInfo | None = None
    vision_encoder: EncoderInfo | None = None
