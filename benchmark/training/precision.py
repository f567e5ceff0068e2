"""The training precision (``train.precision``) as a dtype and an autocast context: one mapping."""

from __future__ import annotations

import contextlib

import torch

COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype ``train.precision`` computes in (fp32 when not mixed)."""
    return COMPUTE_DTYPES.get(precision, torch.float32)


def autocast_for(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to the compute dtype, or nothing under fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=compute_dtype(precision))
