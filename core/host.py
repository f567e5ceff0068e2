"""What the host machine says about itself, read where the OS reports it (stdlib only: the config
checks and the methods both ask)."""

from __future__ import annotations

from pathlib import Path


def available_mb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """MemAvailable (Linux); None where the OS does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
