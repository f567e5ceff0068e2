"""Which scaled-dot-product-attention kernel the encoders use, chosen by measurement.

Why: each step encodes a different number of distinct items, and PyTorch's cuDNN attention plans
per shape. On an H100 plain BERT-base + ViT-base FFT steps took 138 ms at a fixed item count,
379 ms when it varied (a new plan each step), 165 ms rounded up to a multiple of 64, and 151 ms
varying with cuDNN attention off (../shared/measurements/h100-2026-11-22). Buckets
(``train.item_bucket``) bound the shapes; ``train.sdpa_backend = "auto"`` then times every
available backend over a few of those bucket shapes, first calls (plans) included, and picks the
fastest. The choice and its timings are in every record (``env.sdpa``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover - older torch: only the default
    SDPBackend = sdpa_kernel = None

BACKENDS = ("cudnn", "flash", "efficient", "math")
_ENUM = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
         "math": "MATH"}


@dataclass
class SdpaChoice:
    backend: str  # default (torch decides per call) | cudnn | flash | efficient | math
    chosen_by: str  # config | auto | auto-fallback
    probe_ms: dict[str, float | None] = field(default_factory=dict)  # auto: total ms per backend (None: unsupported)
    probe_s: float = 0.0


def sdpa_context(backend: str):
    """A context that restricts attention to ``backend`` (``default``: no restriction)."""
    if backend == "default" or sdpa_kernel is None:
        return contextlib.nullcontext()
    return sdpa_kernel([getattr(SDPBackend, _ENUM[backend])])


@dataclass
class AttnShape:
    """One encoder's attention: heads, tokens and head width (items vary by step)."""

    heads: int
    tokens: int
    head_dim: int


def _time_backend(backend: str, shapes: list[AttnShape], items: list[int], device: torch.device,
                  dtype: torch.dtype, repeats: int) -> float | None:
    """Total seconds of forward + backward over every (shape, item count), first calls included."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    try:
        with sdpa_context(backend):
            sync()
            t0 = time.perf_counter()
            for _ in range(repeats):
                for n in items:
                    for s in shapes:
                        q = torch.randn(n, s.heads, s.tokens, s.head_dim, device=device, dtype=dtype,
                                        requires_grad=True)
                        F.scaled_dot_product_attention(q, q, q).sum().backward()
            sync()
            return time.perf_counter() - t0
    except RuntimeError:  # no kernel of this backend for this device, dtype or shape
        return None


def choose_sdpa_backend(setting: str, device: torch.device, dtype: torch.dtype, shapes: list[AttnShape],
                        bucket: int, typical_items: int) -> SdpaChoice:
    """``setting`` as it will run: a named backend as given; ``auto`` on a GPU the fastest of those
    that run there, timed over three bucket sizes from ``typical_items`` up (each backend once as a
    wake-up, then measured); ``default`` (torch's own dispatch) on CPU, or when nothing can be timed."""
    if setting != "auto":
        return SdpaChoice(setting, "config")
    if not shapes or sdpa_kernel is None or device.type != "cuda":  # per-shape plans are a CUDA matter
        return SdpaChoice("default", "auto-fallback")
    t0 = time.perf_counter()
    step = max(bucket, 1)
    base = max(step, -(-typical_items // step) * step)
    items = [base, base + step, base + 2 * step]
    timed: dict[str, float | None] = {}
    for backend in BACKENDS:
        _time_backend(backend, shapes[:1], items[:1], device, dtype, 1)  # wake-up: not in the timing
        timed[backend] = _time_backend(backend, shapes, items, device, dtype, 2)
    ok = {k: v for k, v in timed.items() if v is not None}
    probe_s = time.perf_counter() - t0
    ms = {k: (None if v is None else round(v * 1000, 3)) for k, v in timed.items()}
    if not ok:
        return SdpaChoice("default", "auto-fallback", ms, probe_s)
    return SdpaChoice(min(ok, key=ok.get), "auto", ms, probe_s)
