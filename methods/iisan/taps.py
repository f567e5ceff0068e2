"""Where the side network's inputs come from: the live frozen encoders (forward hooks keep only the
tapped CLS vectors) or the cache of those vectors."""

from __future__ import annotations

import torch
from torch import nn

from benchmark.models.families import pool, tap_modules
from methods._common import freeze
from methods.base import ItemInputs


class TapCLS:
    """Forward hooks that keep only the pooled vector (the CLS vector for BERT and ViT: ``pooling``) of
    the tapped hidden states.

    Why hooks rather than ``output_hidden_states=True``: that keeps every layer's full hidden states
    ([N, tokens, H] x (L + 1)) alive until the forward ends, 13 x 197 x 768 floats an image for
    ViT-base; the side network needs one vector of each tapped layer. Hidden state 0 is the first
    block's input (the embeddings' output; after CLIP's pre-LayerNorm and Gemma's embedding scale) and
    state i the i-th block's output, except that the last state of the LLMs and ModernBERT is their final
    norm's output: exactly transformers' ``hidden_states[i]`` for every family (``families.tap_modules``,
    tests/test_families.py). For ``last`` and ``mean`` pooling the caller gives the batch's attention
    mask first (``set_mask``).
    """

    def __init__(self, model: nn.Module, taps: list[int], pooling: str = "cls"):
        self.taps = taps
        self.pooling = pooling
        self.mask: torch.Tensor | None = None
        self.out: dict[int, torch.Tensor] = {}
        where = tap_modules(model)
        self.handles = [where[t][0].register_forward_pre_hook(self._first_input, with_kwargs=True) if where[t][1]
                        else where[t][0].register_forward_hook(self._hook(t)) for t in taps]

    def set_mask(self, mask: torch.Tensor | None) -> None:
        self.mask = mask

    def _keep(self, tap: int, h: torch.Tensor) -> None:
        self.out[tap] = pool(h, self.mask, self.pooling)

    def _first_input(self, module, args, kwargs):
        self._keep(0, args[0] if args else kwargs["hidden_states"])

    def _hook(self, tap: int):
        def keep(module, args, output):
            self._keep(tap, output[0] if isinstance(output, (tuple, list)) else output)
        return keep

    def collect(self) -> torch.Tensor:
        """[N, taps, H] of the forward just run."""
        got = torch.stack([self.out[t] for t in self.taps], dim=1)
        self.out.clear()
        return got


class BackboneTaps(nn.Module):
    """CLS vectors of the tapped hidden states, computed by the frozen backbones without gradients."""

    def __init__(self, models: dict[str, nn.Module], inputs: ItemInputs, taps: dict[str, list[int]],
                 dropout: bool = False, pooling: dict[str, str] | None = None):
        super().__init__()
        # False: the frozen encoders always run in eval mode (ours: the states the cache holds, so cached
        # == live); True: they follow the tower's mode, so their dropout is active while training, as in
        # the paper's code (model.train() on the whole model; train.architecture = "paper", iisan only)
        self.dropout = dropout
        self.text = models["text"]
        self.vision = models.get("vision")
        self.inputs = inputs
        self.taps = taps
        # None: the weights' dtype; an estimate of the earlier design (fp32 weights under the
        # trainer's bf16 autocast) sets it (launch.estimate.WhatIf.frozen_fp32)
        self.compute_dtype: torch.dtype | None = None
        self.all_hidden_states = False  # the earlier design's read (output_hidden_states), for estimates of it
        freeze(self.text, self.vision)
        kinds = ["text"] + (["vision"] if self.vision is not None else [])
        self.pooling = {k: (pooling or {}).get(k, "cls") for k in kinds}  # kind -> cls | last | mean
        self._tap = {k: TapCLS(getattr(self, k), taps[k], how) for k, how in self.pooling.items()}
        self.train(False)

    def train(self, mode: bool = True) -> "BackboneTaps":
        super().train(mode)
        if not self.dropout:  # frozen feature extractors: never dropout, same states as the cache
            self.text.eval()
            if self.vision is not None:
                self.vision.eval()
        return self

    def numerics(self, device: torch.device):
        """The one numeric context of the frozen encoders, whoever calls them: autocast to their
        weights' dtype when that is a half type (what the training precision made them:
        ``frozen_in_compute_dtype``), none in fp32. Why their own: the cache is built outside the
        trainer's autocast and live iisan runs inside it; on CUDA autocast keeps layer norms,
        softmax and the residual stream in fp32, so without one context cached and live states
        would differ and ``iisan-cached`` would not train on what ``iisan`` computes."""
        dtype = self.compute_dtype or next(self.text.parameters()).dtype
        return torch.autocast(device.type, dtype=dtype, enabled=dtype in (torch.bfloat16, torch.float16))

    @torch.no_grad()
    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        extra = {"output_hidden_states": True} if self.all_hidden_states else {}
        with self.numerics(ids.device):
            text_inputs = self.inputs.text(ids)
            self._tap["text"].set_mask(text_inputs["attention_mask"])
            self.text(**text_inputs, **extra)
            text = self._tap["text"].collect()
            image = None
            if self.vision is not None:
                self.vision(pixel_values=self.inputs.pixels(ids).to(text.dtype), **extra)
                image = self._tap["vision"].collect()
        return text, image


class CachedTaps(nn.Module):
    """The same states read from a cache tensor per modality [n_items+1, taps, H] on the device.

    Rows are stored as deviations from a per-(tap, dim) fp32 offset (see ``methods.iisan.cache``).
    """

    def __init__(self, text: tuple[torch.Tensor, torch.Tensor], image: tuple[torch.Tensor, torch.Tensor] | None):
        super().__init__()
        self.register_buffer("text", text[0], persistent=False)
        self.register_buffer("text_offset", text[1], persistent=False)
        self.has_image = image is not None
        self.register_buffer("image", image[0] if image is not None else torch.zeros(0), persistent=False)
        self.register_buffer("image_offset", image[1] if image is not None else torch.zeros(0), persistent=False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        text = self.text[ids].float() + self.text_offset
        return text, (self.image[ids].float() + self.image_offset if self.has_image else None)
