"""A one-off cache's own cost, kept with the cache (``build_cost.json`` in its folder).

Why beside the cache and not only in the record: a later sweep (a fresh clone sharing the user
cache folder) loads the cache and would otherwise report no build at all, so the one-off cost
vanished from its report. The sweep that built it writes what the build cost once its record is
complete (the parent knows the build phase's peak, sampled from outside); whoever loads the cache
reads it back into ``CacheCost.built_*``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_text

BUILD_COST_FILE = "build_cost.json"


@dataclass
class BuildCost:
    build_s: float | None
    peak_mb: float | None  # the cache_build phase's headline peak
    memory_source: str | None
    device: str | None  # the device name it was built on
    at: str | None  # ISO time the build's run finished
    git_sha: str | None = None
    torch: str | None = None


def write_build_cost(cache_dir: Path | str, cost: BuildCost) -> None:
    """Best effort: an unwritable cache folder only loses this note."""
    try:
        atomic_write_text(Path(cache_dir) / BUILD_COST_FILE, json.dumps(asdict(cost), indent=2))
    except OSError:
        pass


def read_build_cost(cache_dir: Path | str, meta: dict[str, Any] | None = None) -> BuildCost | None:
    """The note, or what the cache's own ``meta`` says (build seconds, device, time; no peak)."""
    path = Path(cache_dir) / BUILD_COST_FILE
    try:
        d = json.loads(path.read_text())
        return BuildCost(**{k: d.get(k) for k in BuildCost.__dataclass_fields__})
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    if meta and meta.get("build_s") is not None:
        return BuildCost(meta.get("build_s"), None, None, meta.get("device"), meta.get("created"))
    return None
