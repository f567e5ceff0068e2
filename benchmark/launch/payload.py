"""What the parent hands an isolated child: the resolved config and the prepared dataset, saved once
per sweep and memory-mapped by each child; and the modules a child imports first (methods of one's
own, named in ``IISAN_BENCH_IMPORTS``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from benchmark.config import BenchConfig
from benchmark.launch.envvars import ENV_IMPORTS
from core.errors import BenchError


def save_payload(path: Path, cfg: BenchConfig, prep) -> None:
    try:
        torch.save({"cfg": cfg, "prep": prep}, path)
    except (OSError, RuntimeError) as exc:  # a full disk reads "inline_container.cc ... file write failed"
        path.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free / 2**20
        raise BenchError(f"{path}: cannot write the isolation payload ({type(exc).__name__}; {free:.0f} MB free "
                         "on that disk): free space, or run with --no-isolate") from None


def load_payload(path: Path):
    """(cfg, prep) from the parent's payload, memory-mapped: tensors are read when first touched."""
    payload = torch.load(path, weights_only=False, mmap=True)  # our own file, written by the parent
    return payload["cfg"], payload["prep"]


def extra_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(ENV_IMPORTS, "").split(",") if m.strip()]


def import_extra_modules() -> None:
    """Import the modules named in ``IISAN_BENCH_IMPORTS`` (they register methods of one's own)."""
    import importlib

    for mod in extra_modules():
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise BenchError(f"{ENV_IMPORTS}: cannot import '{mod}': {exc}") from None
