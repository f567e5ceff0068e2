"""Which scaled-dot-product-attention kernel the encoders use, chosen by measurement.

Why: each step encodes a different number of distinct items, and PyTorch's cuDNN attention plans
per shape. On an H100 plain BERT-base + ViT-base FFT steps took 138 ms at a fixed item count,
379 ms when it varied (a new plan each step), 165 ms rounded up to a multiple of 64, and 151 ms
varying with cuDNN attention off (../shared/measurements/h100-2026-11-22). Buckets
(``train.item_bucket``) bound the shapes; ``train.sdpa_backend = "auto"`` then times every
backend on the run's own calls (``probe``: the method's loss forward and backward on bucket
shapes, with its masks and dropout, and a chunk of its evaluation) and picks the fastest of those
that run them all. Why the real calls: the flash kernel refuses any attention mask (SASRec's
causal mask, BERT's padding mask) and some cuDNN versions refuse dropout, so a kernel timed on
bare unmasked attention can win and then fail every real call. The choice, its timings and the
reason of each refusal are in every record (``env.sdpa``); a kernel that still refuses a call
mid-run is replaced by torch's default there (``Trainer``), never ending the run.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from core.errors import BenchError

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
    chosen_by: str  # config | auto | auto-fallback | runtime-fallback
    probe_ms: dict[str, float | None] = field(default_factory=dict)  # auto: ms of the probed calls (None: refused)
    probe_s: float = 0.0
    refused: dict[str, str] = field(default_factory=dict)  # backend -> why it cannot run this method's calls
    note: str | None = None  # why the choice is what it is (a fallback's reason)


# how kernels say "not this call": the dispatcher's two messages, and cuDNN's when its frontend has no
# plan for a shape, mask or dropout (some cuDNN versions build none with dropout)
REFUSALS = ("No available kernel", "No viable backend for scaled_dot_product_attention", "cuDNN Frontend error",
            "CUDNN_STATUS_NOT_SUPPORTED", "No valid execution plans")


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is attention's "this kernel cannot run this call" (not a real failure)."""
    return isinstance(exc, RuntimeError) and any(r in str(exc) for r in REFUSALS)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def sdpa_context(backend: str):
    """A context that restricts attention to ``backend`` (``default``: no restriction)."""
    if backend == "default" or sdpa_kernel is None:
        return contextlib.nullcontext()
    return sdpa_kernel([getattr(SDPBackend, _ENUM[backend])])


Probe = Callable[[str], float]  # runs the run's own attention calls under a backend; seconds, or raises


def _quiet(probe: Probe, backend: str) -> float:
    """``probe(backend)`` without torch's per-call "kernel not used because" warnings: a refusal
    is the answer sought, and its reason goes into the record."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return probe(backend)


def choose_sdpa_backend(setting: str, device: torch.device, probe: Probe, method: str,
                        where: str = "<defaults>") -> SdpaChoice:
    """``setting`` as it will run. ``default``: torch's own dispatch. A named backend: as given,
    once ``probe`` shows it runs this method's calls (else one line naming the method, the key
    and ``where`` its value came from). ``auto`` on a GPU: the fastest backend that runs every probed call (each probed
    once as a wake-up, for plans and first calls, then timed); ``default`` on CPU (per-shape plans
    are a CUDA matter) or when no backend runs them all."""
    if setting == "default":
        return SdpaChoice("default", "config")
    if setting != "auto":
        try:
            _quiet(probe, setting)
        except RuntimeError as exc:
            if not is_refusal(exc):
                raise
            raise BenchError(f"{where}: 'train.sdpa_backend' = '{setting}' cannot run the attention of method "
                             f"'{method}' on {device.type} ({first_line(exc)}); use 'auto' or 'default'") from None
        return SdpaChoice(setting, "config")
    if sdpa_kernel is None or device.type != "cuda":
        return SdpaChoice("default", "auto-fallback", note=f"auto on {device.type}: torch's default dispatch")
    t0 = time.perf_counter()
    timed: dict[str, float | None] = {}
    refused: dict[str, str] = {}
    for backend in BACKENDS:
        try:
            _quiet(probe, backend)  # wake-up: plans and first calls, not in the timing
            timed[backend] = _quiet(probe, backend)
        except RuntimeError as exc:  # an OOM (the math kernel keeps the T x T scores) only rules it out
            if not (is_refusal(exc) or isinstance(exc, torch.OutOfMemoryError)):
                raise
            timed[backend], refused[backend] = None, first_line(exc)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    ms = {k: (None if v is None else round(v * 1000, 3)) for k, v in timed.items()}
    ok = {k: v for k, v in timed.items() if v is not None}
    probe_s = time.perf_counter() - t0
    if not ok:
        return SdpaChoice("default", "auto-fallback", ms, probe_s, refused, "no backend ran every probed call")
    return SdpaChoice(min(ok, key=ok.get), "auto", ms, probe_s, refused)


def refused_on_cpu(backend: str) -> str | None:
    """Why a forced ``backend`` cannot run a masked, dropout-bearing attention call on the CPU (every
    method's calls are such: SASRec's causal mask, BERT's padding mask, training dropout), or None.
    The parent checks this before any run (its GPU counterpart is the child's probe of the run's own
    calls, ``choose_sdpa_backend``: the parent never touches CUDA)."""
    if backend in ("default", "auto"):
        return None
    q = torch.zeros(1, 1, 4, 8)
    mask = torch.ones(4, 4, dtype=torch.bool).tril()
    try:
        with warnings.catch_warnings(), sdpa_context(backend):
            warnings.simplefilter("ignore", UserWarning)
            torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask, dropout_p=0.1)
    except RuntimeError as exc:
        if not is_refusal(exc):
            raise
        return first_line(exc)
    return None
