"""Result records: environment stamp and atomic appends to results.jsonl."""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def git_state() -> tuple[str | None, bool | None]:
    """(full commit, dirty) of the checkout this code runs from, in two git calls; (None, None) outside git."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if out.returncode != 0 or not out.stdout.strip():
            return None, None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip(), bool(dirty)
    except (OSError, subprocess.SubprocessError):
        return None, None


def short_sha(commit: str | None, dirty: bool | None) -> str | None:
    """The record's ``git_sha``: 12 hex digits, "-dirty" when the checkout had uncommitted changes."""
    return None if commit is None else commit[:12] + ("-dirty" if dirty else "")


PACKAGES = ("numpy", "tokenizers", "safetensors", "psutil", "nvidia-ml-py", "iisan-bench")


def package_versions() -> dict[str, str]:
    """Versions of the packages besides torch/transformers/peft that a result can depend on."""
    from importlib import metadata

    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def build_info(device, commit: str | None, dirty: bool | None) -> dict[str, Any]:
    """What makes a run reproducible beyond the versions: the build's config digest, cuDNN, NCCL,
    the driver and the GPU, the CPU model, the commit and whether it had uncommitted changes."""
    import hashlib

    import torch

    cuda = device.type == "cuda"
    info: dict[str, Any] = {
        "cpu_model": cpu_model(), "git_commit": commit, "git_dirty": dirty,
        "torch_config_sha": hashlib.sha256(torch.__config__.show().encode()).hexdigest()[:16],
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda and torch.distributed.is_nccl_available() else None,
        "packages": package_versions(),
    }
    if cuda:
        props = torch.cuda.get_device_properties(device)
        info["gpu_memory_mb"] = props.total_memory / 2**20
        info["driver"] = _driver()
    return info


def _driver() -> str | None:
    from benchmark.measure.nvml import Nvml

    nvml = Nvml.open()
    if nvml is None:
        return None
    try:
        return nvml._read("nvmlSystemGetDriverVersion")
    finally:
        nvml.close()


def env_info(device) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    commit, dirty = git_state()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    # torch_threads: intra-op threads of this process; CPU times scale with it
    return {"device": device.type, "device_name": name, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "cuda": torch.version.cuda, "git_sha": short_sha(commit, dirty), "platform": platform.platform(),
            **build_info(device, commit, dirty)}


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by null: results.jsonl is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line under an exclusive lock (O_APPEND + flock): two sweeps writing to one
    file interleave whole lines and lose none (a read-modify-rewrite kept 233 of 400)."""
    line = (json.dumps(finite(record), default=str, allow_nan=False) + "\n").encode()
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a line a crash left unfinished: start on a fresh one
                    line = b"\n" + line
            end = fh.tell()
            try:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            except OSError:  # a full disk: no half line left for the next reader to trip on
                fh.truncate(end)
                raise
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
