"""The data by content: one hash of what every run trained on, recorded with each result."""

from __future__ import annotations

import hashlib
import json

from benchmark.data.dataset import SeqDataset


def content_hash(data: SeqDataset) -> str:
    """sha256 of the data as loaded (item ids, titles, sequences, image pixels): two results name the
    same data only when this agrees, whatever files or generator produced it."""
    h = hashlib.sha256(json.dumps([data.item_keys, data.titles, data.sequences], separators=(",", ":")).encode())
    if data.images is not None:
        h.update(data.images.contiguous().numpy().tobytes())
    return h.hexdigest()
