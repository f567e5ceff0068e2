"""Two device rules every layer applies, defined once: wait for a CUDA device's queued work (a
no-op elsewhere), and which torch.distributed backend a device's ranks use."""

from __future__ import annotations

from typing import Any


def synchronize(device: Any) -> None:
    """Wait for ``device``'s queued kernels (CUDA runs them asynchronously; a clock read or a memory
    reading without this measures the launch, not the work). A no-op on the CPU."""
    if getattr(device, "type", device) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def ddp_backend(device: Any) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if getattr(device, "type", device) == "cuda" else "gloo"
