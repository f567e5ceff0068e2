"""Whether the Hugging Face Hub may be asked: the offline flags, and a reachability check.

Why the check: with no network and no offline flag, huggingface_hub retries each request five
times with backoff, about 25 s of "Retrying in 8s" lines before the clear error. One TCP connect
with a short timeout answers the same question at once; unreachable is then treated as offline
(cache only).
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

CONNECT_TIMEOUT_S = 3.0


def offline() -> bool:
    """True when HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE asks for no network (huggingface_hub's truthy values)."""
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    except Exception:  # noqa: BLE001 - only used in messages
        return "the Hugging Face cache"


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


@functools.lru_cache(maxsize=None)
def hub_reachable(endpoint: str | None = None) -> bool:
    """One TCP connect to the hub's host (once per process): False on no route, no DNS, a timeout."""
    url = urlparse(endpoint or hub_endpoint())
    try:
        with socket.create_connection((url.hostname or "", url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def hub_offline() -> None:
    """Tell huggingface_hub itself that HF_HUB_OFFLINE is set. Why: it reads the variable once, at
    import, and with ``local_files_only`` hub 1.x still builds request headers, which fetch an agent
    registry over the network; set after the import, nothing else stops that. Only when the user
    asked for offline: a local text folder must not cut a hub-id vision encoder off the hub."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - transformers always brings it
        return
    constants.HF_HUB_OFFLINE = True
