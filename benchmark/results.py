"""Result records: environment stamp and atomic appends to results.jsonl."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from reports.atomic import atomic_write_text


def git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def env_info(device) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    # torch_threads: intra-op threads of this process; CPU times scale with it
    return {"device": device.type, "device_name": name, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "cuda": torch.version.cuda, "git_sha": git_sha(), "platform": platform.platform()}


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file and rename: readers never see half a file."""
    atomic_write_text(path, text)


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line atomically (the whole file is rewritten through a rename)."""
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write(path, old + json.dumps(record, default=str) + "\n")


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
