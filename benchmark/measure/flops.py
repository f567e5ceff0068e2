"""Analytic model FLOPs, for MFU: how much of the GPU's peak a training epoch actually uses.

Counted as 2 FLOPs per multiply-add over the matmuls of the Transformer encoders (projections,
attention scores and mixing, feed-forward, ViT patch embedding); layer norms, softmax and the small
heads are ignored, as in the usual MFU convention (PaLM, Megatron). Training = forward + backward
= 3x forward when every weight trains (full fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# dense bf16 peak (no sparsity), FLOP/s, by substring of torch.cuda.get_device_name()
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


@dataclass(frozen=True)
class EncoderShape:
    layers: int
    hidden: int
    intermediate: int
    seq_len: int
    patch_flops: float = 0.0  # per item, ViT patch embedding


def layer_flops(n: int, h: int, f: int) -> float:
    """Forward FLOPs of one encoder layer over n tokens: Q,K,V,O projections, QK^T and AV, FFN."""
    return 8 * n * h * h + 4 * n * n * h + 4 * n * h * f


def encoder_flops(shape: EncoderShape) -> float:
    return shape.layers * layer_flops(shape.seq_len, shape.hidden, shape.intermediate) + shape.patch_flops


def text_shape(config, tokens: int) -> EncoderShape:
    return EncoderShape(config.num_hidden_layers, config.hidden_size, config.intermediate_size, tokens)


def vision_shape(config) -> EncoderShape:
    patches = (config.image_size // config.patch_size) ** 2
    patch = 2 * patches * (config.num_channels * config.patch_size ** 2) * config.hidden_size
    return EncoderShape(config.num_hidden_layers, config.hidden_size, config.intermediate_size, patches + 1, patch)


def items_encoded_per_epoch(train: torch.Tensor, batch_size: int, seed: int, epoch: int, max_steps: int = 0) -> int:
    """Distinct items the tower encodes in one epoch, replaying the trainer's seeded batch order
    (the recommender encodes each distinct item of a batch once, padding included)."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(train.size(0), generator=g)
    steps = (len(order) + batch_size - 1) // batch_size
    if max_steps:
        steps = min(steps, max_steps)
    return sum(int(torch.unique(train[order[s * batch_size:(s + 1) * batch_size]]).numel()) for s in range(steps))


def forward_flops_per_item(text_cfg, vision_cfg, tokens: int) -> float:
    """Forward FLOPs of both encoders for one item (title of ``tokens`` tokens + image)."""
    per_item = encoder_flops(text_shape(text_cfg, tokens))
    if vision_cfg is not None:
        per_item += encoder_flops(vision_shape(vision_cfg))
    return per_item


def peak_flops(device_name: str) -> float | None:
    for key, value in PEAK_BF16.items():
        if key in device_name:
            return value
    return None


def flops_record(multiplier: float | None, text, vision, tokens: int, train: torch.Tensor, batch_size: int,
                 seed: int, max_steps: int, epoch_s: float | None, device_name: str) -> dict | None:
    """The result's ``flops`` section: model FLOPs of the first epoch and MFU on a known GPU."""
    if multiplier is None:
        return None
    items = items_encoded_per_epoch(train, batch_size, seed, epoch=1, max_steps=max_steps)
    forward = forward_flops_per_item(text.config, None if vision is None else vision.config, tokens)
    model = multiplier * forward * items
    peak = peak_flops(device_name)
    return {"items_per_epoch": items, "forward_per_item": forward, "model_per_epoch": model,
            "device_peak": peak, "mfu": model / epoch_s / peak if peak and epoch_s else None}
