"""What every strategy provides: an item tower (item index -> embedding) and its parameter groups.

The trainer only sees ``ItemTower``; a strategy decides which weights train and how the
backbones are wrapped. ``EncoderTower`` is the item tower shared by the strategies that run the
backbones end to end (fft, lora, adapter, bitfit): text CLS and image CLS, each projected to the
item dimension, fused by concatenation and a linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from benchmark.backbones import Backbones
from benchmark.config import BenchConfig
from benchmark.data import SeqDataset


@dataclass
class BuildContext:
    """Everything a strategy may use to build its item tower."""

    cfg: BenchConfig
    data: SeqDataset
    backbones: Backbones
    device: torch.device
    out_dir: Any = None  # run output folder (for caches, logs)


class ItemTower(nn.Module):
    """Maps item indices [N] to item embeddings [N, item_dim]."""

    def param_groups(self) -> dict[str, list[nn.Parameter]]:  # pragma: no cover - interface
        """Trainable parameters by group: 'backbone' (pretrained weights), 'peft' (new adapter
        weights), 'head' (projections/fusion). The trainer maps groups to learning rates."""
        raise NotImplementedError


@dataclass
class NoOptions:
    """A strategy without options."""


class Method:
    """Base class of a strategy. Subclasses are registered with ``@register_method``."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    # Training FLOPs as a multiple of the encoders' forward FLOPs, where that is exact: 3.0 when
    # every weight trains (forward + backward for activations and weights). None: MFU not stated.
    train_flops_multiplier: ClassVar[float | None] = None
    # The batch size the IISAN paper trained this kind of method with ([train] paper_protocol):
    # 32 for the fine-tuning baselines (their memory), 64 for IISAN. None: the configured one.
    paper_batch_size: ClassVar[int | None] = None

    def __init__(self, options: Any):
        self.opts = options

    def build(self, ctx: BuildContext) -> ItemTower:  # pragma: no cover - interface
        raise NotImplementedError

    def extra_timings(self) -> dict[str, float]:
        """Setup timings to report apart from epoch time (e.g. a cache build)."""
        return {}


def pixel_values(images_u8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [N,3,S,S] -> normalised pixels with mean 0.5, std 0.5, as in the paper."""
    return images_u8.to(dtype).div_(127.5).sub_(1.0)


class ItemInputs(nn.Module):
    """Holds the per-item token ids, attention masks and uint8 images as buffers on the device."""

    def __init__(self, data: SeqDataset):
        super().__init__()
        self.register_buffer("tokens", data.tokens, persistent=False)
        self.register_buffer("attention_mask", data.attention_mask, persistent=False)
        self.has_images = data.images is not None
        self.register_buffer("images", data.images if data.images is not None else torch.zeros(0), persistent=False)

    def text(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[ids], "attention_mask": self.attention_mask[ids]}

    def pixels(self, ids: torch.Tensor) -> torch.Tensor:
        return pixel_values(self.images[ids])


class EncoderTower(ItemTower):
    """Backbones run end to end: text CLS + image CLS -> item_dim each -> concat -> Linear."""

    def __init__(self, backbones: Backbones, data: SeqDataset, item_dim: int,
                 group_of: Callable[[str], str | None]):
        super().__init__()
        self.inputs = ItemInputs(data)
        self.text = backbones.text
        self.vision = backbones.vision if self.inputs.has_images else None
        self.text_proj = nn.Linear(self.text.config.hidden_size, item_dim)
        self.image_proj = nn.Linear(self.vision.config.hidden_size, item_dim) if self.vision is not None else None
        self.fuse = nn.Linear(2 * item_dim, item_dim) if self.vision is not None else None
        self._group_of = group_of

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = self.text(**self.inputs.text(ids)).last_hidden_state[:, 0]
        t = self.text_proj(t)
        if self.vision is None:
            return t
        v = self.vision(pixel_values=self.inputs.pixels(ids).to(t.dtype)).last_hidden_state[:, 0]
        return self.fuse(torch.cat([t, self.image_proj(v)], dim=-1))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "peft": [], "head": []}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith(("text_proj", "image_proj", "fuse")):
                groups["head"].append(p)
            else:
                groups[self._group_of(name) or "backbone"].append(p)
        return groups
