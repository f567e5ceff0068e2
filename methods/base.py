"""What every strategy provides: an item tower (item index -> embedding) and its parameter groups.

The trainer only sees ``ItemTower``; a strategy decides which weights train and how the
backbones are wrapped. ``EncoderTower`` is the item tower shared by the strategies that run the
backbones end to end (fft, lora, adapter, bitfit): text CLS and image CLS, each projected to the
item dimension, fused by concatenation and a linear layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from benchmark.config import BenchConfig
from benchmark.data.dataset import SeqDataset
from benchmark.models.backbones import Backbones
from benchmark.models.families import pool
from core.record import CacheCost


@dataclass
class BuildContext:
    """Everything a strategy may use to build its item tower."""

    cfg: BenchConfig
    data: SeqDataset
    backbones: Backbones
    device: torch.device
    out_dir: Any = None  # run output folder (for caches, logs)
    # marks a memory phase of the run (``"cache_build"`` while a one-off cache is computed, then
    # ``"setup"`` again), so the profiler reports its peak apart from training's
    phase: Callable[[str], None] = lambda name: None


class ItemTower(nn.Module):
    """Maps item indices [N] to item embeddings [N, item_dim]."""

    def param_groups(self) -> dict[str, list[nn.Parameter]]:  # pragma: no cover - interface
        """Trainable parameters by group: 'backbone' (the text encoder's pretrained weights),
        'backbone_vision' (the vision encoder's), 'peft' (new adapter weights), 'head' (projections,
        fusion, the user encoder). The trainer maps groups to learning rates."""
        raise NotImplementedError


@dataclass
class NoOptions:
    """A strategy without options."""


# The paper's per-method recipes share these (its run scripts): batch 32 and head lr 2e-4 for the
# end-to-end baselines, and lr 4e-4 for the new weights of its PEFT baselines (LoRA, adapters).
PAPER_BASELINE: dict[str, Any] = {"batch_size": 32, "lr_head": 2e-4}
PAPER_PEFT: dict[str, Any] = {**PAPER_BASELINE, "lr_peft": 4e-4}


class Method:
    """Base class of a strategy. Subclasses are registered with ``@register_method``."""

    name: ClassVar[str] = "?"
    description: ClassVar[str] = ""
    # the method's code version, in every run's resume hash (as lm-evaluation-harness versions tasks):
    # raise it when a change alters what the method computes, so a resume trains it again
    version: ClassVar[int] = 1
    Options: ClassVar[type] = NoOptions
    # The IISAN paper's recipe for this kind of method ([train] paper_protocol): TrainConfig fields
    # (batch size, learning rates) and this method's own options (e.g. LoRA's scaling).
    paper_train: ClassVar[dict[str, Any]] = {}
    paper_options: ClassVar[dict[str, Any]] = {}
    # The torch.compile mode ``train.compile = "auto"`` picks for this method on a GPU (None: eager).
    auto_compile: ClassVar[str | None] = None

    def __init__(self, options: Any):
        self.opts = options

    def build(self, ctx: BuildContext) -> ItemTower:  # pragma: no cover - interface
        raise NotImplementedError

    def check_applies(self, encoders: dict[str, nn.Module]) -> None:
        """Raise the one-line ``BenchError`` saying why this method cannot apply to these encoders (text,
        and vision unless text-only), naming the encoder. Called on encoders built on the meta device
        before anything runs (``launch.recipe.check_methods``); ``build`` meets the same checks."""

    def one_off(self) -> CacheCost | None:
        """A one-off cost paid before training (a cache build or load), reported apart from setup."""
        return None


def pixel_values(images_u8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [N,3,S,S] -> normalised pixels with mean 0.5, std 0.5, as in the paper."""
    return images_u8.to(dtype).div_(127.5).sub_(1.0)


FAKE_STAGING_ENV = "IISAN_BENCH_FAKE_STAGING"  # "1": stage on CPU too, a host copy standing in (tests)


class CudaCopy:
    """The device half of staging: a copy on a side stream, and the wait before its use."""

    def __init__(self, device: torch.device):
        self.stream = torch.cuda.Stream(device)
        self.device = device

    def buffer(self, n: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty((n, *shape), dtype=torch.uint8).pin_memory()

    def start(self, host: torch.Tensor) -> tuple[torch.Tensor, Any]:
        with torch.cuda.stream(self.stream):
            staged = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        return staged, event

    def finish(self, staged: torch.Tensor, event: Any) -> torch.Tensor:
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(event)
        staged.record_stream(stream)  # allocated on the side stream, used on this one
        return staged


class HostCopy:
    """Staging's device half swapped out for a host copy, so its logic runs on a CPU machine."""

    def buffer(self, n: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.empty((n, *shape), dtype=torch.uint8)

    def start(self, host: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return host.clone(), None

    def finish(self, staged: torch.Tensor, event: Any) -> torch.Tensor:
        return staged


class ItemInputs(nn.Module):
    """Per-item inputs: token ids and masks as buffers on the device; uint8 images on the host.

    Why images stay on the host: the table is every item's 224x224 image (2.9 GB on Scientific),
    and a step needs only its few hundred distinct items. ``stage_items`` (called by the trainer
    one step ahead) gathers those into a pinned buffer and copies them to the GPU on a side stream
    while the current step computes; ``pixels`` then takes the staged copy whose device ids are the
    ones it is given (a queue of two, keyed by the ids' address and length: the trainer stages
    step k+1 before step k takes its own, and a data-parallel rank asks for its slice of them).
    Unstaged calls (the evaluation's item table, a cache build) gather and copy on the spot; the
    training steps that had to are counted as misses. On CPU nothing moves (``$IISAN_BENCH_FAKE_STAGING=1``
    stages through a host copy instead, so the queue is tested where there is no GPU).
    """

    QUEUE = 2  # the step being computed and the next one

    def __init__(self, data: SeqDataset):
        super().__init__()
        self.register_buffer("tokens", data.tokens, persistent=False)
        self.register_buffer("attention_mask", data.attention_mask, persistent=False)
        self.has_images = data.images is not None
        self.images = data.images if data.images is not None else torch.zeros(0, dtype=torch.uint8)
        self._queue: list[tuple[tuple[int, int], torch.Tensor, torch.Tensor, Any]] = []  # (key, ids, images, event)
        self._pinned: list[torch.Tensor | None] = [None] * self.QUEUE  # one filling, one in flight
        self._done: list[Any] = [None] * self.QUEUE  # the copy event of each buffer
        self._slot = 0
        self._copy: Any = None
        self.staged_hits = 0
        self.staged_misses = 0

    def text(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokens[ids], "attention_mask": self.attention_mask[ids]}

    def _copier(self, device: torch.device):
        if self._copy is None:
            if device.type == "cuda":
                self._copy = CudaCopy(device)
            elif os.environ.get(FAKE_STAGING_ENV) == "1":
                self._copy = HostCopy()
        return self._copy

    @staticmethod
    def _key(ids: torch.Tensor) -> tuple[int, int]:
        return ids.data_ptr(), ids.numel()

    def stage_items(self, host_ids: torch.Tensor, device_ids: torch.Tensor) -> None:
        """Start copying the images of ``host_ids`` to the device; ``pixels(device_ids)`` takes them."""
        copy = self._copier(device_ids.device) if self.has_images else None
        if copy is None:
            return
        n, slot = host_ids.numel(), self._slot
        if self._done[slot] is not None:
            self._done[slot].synchronize()  # the copy out of this buffer two stagings ago is over
        buf = self._pinned[slot]
        if buf is None or buf.size(0) < n:
            buf = self._pinned[slot] = copy.buffer(max(n, 64), tuple(self.images.shape[1:]))
        torch.index_select(self.images, 0, host_ids, out=buf[:n])
        staged, event = copy.start(buf[:n])
        # the ids tensor is held: its memory cannot be reused, so no other ids meet its key
        self._queue = [*self._queue, (self._key(device_ids), device_ids, staged, event)][-self.QUEUE:]
        self._done[slot], self._slot = event, (slot + 1) % self.QUEUE

    def pixels(self, ids: torch.Tensor) -> torch.Tensor:
        if self._copier(ids.device) is None:
            return pixel_values(self.images[ids])
        key = self._key(ids)
        for i, (k, _, staged, event) in enumerate(self._queue):
            if k == key:
                self._queue = self._queue[i + 1:]  # older entries were never taken: dropped
                self.staged_hits += 1
                return pixel_values(self._copy.finish(staged, event))
        self.staged_misses += 1
        return pixel_values(self.images[ids.cpu()].to(ids.device))


def xavier_projection(lin: nn.Linear) -> None:
    """The paper's init of the image projection (the ViT's replaced ``classifier``, in every
    method): xavier-normal weights, zero bias."""
    nn.init.xavier_normal_(lin.weight)
    nn.init.zeros_(lin.bias)


class EncoderTower(ItemTower):
    """Backbones run end to end: pooled text + pooled image (CLS for BERT and ViT; the family's pooling,
    ``Backbones.pooling``) -> item_dim each -> concat -> Linear.

    ``paper`` (``train.architecture = "paper"``): as the paper's code, a GELU after each modality's
    projection, and the image projection (its ``classifier``) xavier-normal with a zero bias."""

    def __init__(self, backbones: Backbones, data: SeqDataset, item_dim: int,
                 group_of: Callable[[str], str | None], paper: bool = False):
        super().__init__()
        self.act = nn.GELU() if paper else nn.Identity()
        self.inputs = ItemInputs(data)
        self.text = backbones.text
        self.vision = backbones.vision if self.inputs.has_images else None
        self.text_proj = nn.Linear(self.text.config.hidden_size, item_dim)
        self.image_proj = nn.Linear(self.vision.config.hidden_size, item_dim) if self.vision is not None else None
        if paper and self.image_proj is not None:
            xavier_projection(self.image_proj)
        self.fuse = nn.Linear(2 * item_dim, item_dim) if self.vision is not None else None
        self.pooling = dict(backbones.pooling)  # kind -> cls | last | mean (benchmark.models.families)
        self._group_of = group_of

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        text = self.inputs.text(ids)
        t = pool(self.text(**text).last_hidden_state, text["attention_mask"], self.pooling["text"])
        t = self.act(self.text_proj(t))
        if self.vision is None:
            return t
        v = pool(self.vision(pixel_values=self.inputs.pixels(ids).to(t.dtype)).last_hidden_state, None,
                 self.pooling["vision"])
        return self.fuse(torch.cat([t, self.act(self.image_proj(v))], dim=-1))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "peft": [], "head": []}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith(("text_proj", "image_proj", "fuse")):
                groups["head"].append(p)
            else:
                group = self._group_of(name) or "backbone"
                if group == "backbone" and name.startswith("vision."):  # the paper's ViT rate differs from BERT's
                    group = "backbone_vision"
                groups.setdefault(group, []).append(p)
        return groups
