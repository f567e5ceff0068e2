"""The cache behind ``iisan-cached``: tapped pooled states (CLS for BERT and ViT) of every item, computed once.

One tensor per modality, ``[n_items + 1, n_taps, H]`` (row 0 = padding item), fp16 by default,
stored as the deviation from a per-(tap, dimension) fp32 offset (the mean over items) that is
saved beside it: the states differ between items by much less than their common part (with
random-init encoders by well under 1 % of it), which fp16 alone would round away; as deviations they
keep ~1e-6 absolute precision. ``cache_dtype = "fp32"`` stores the states as they are (offset 0).
A cache lives in a folder under the cache directory:

    <cache_dir>/<dataset>-<n>items-<preset>-<dtype>-<key>/
        text.pt  image.pt  meta.json

``cache_dir`` is ``[methods.iisan-cached] cache_dir``, else ``$IISAN_BENCH_CACHE``, else
``$XDG_CACHE_HOME/iisan-bench``, else ``~/.cache/iisan-bench``: shared by every run, so a cache
is written once per (dataset, backbone weights, taps, tokenisation, image preprocessing, dtype).
``key`` hashes the encoders' names, their weights and the taps, so the caches of different
weights (e.g. random-init repeats with different seeds) live side by side.

``meta.json`` holds the fingerprint: a hash of its components (item keys + titles, token ids and
attention masks, image bytes, each encoder's config and state_dict, taps, dtype, the
preprocessing and the cache format), the components themselves (so a mismatch says what
changed), and the SHA-256, shape and dtype of each tensor file. A cache is used only if the
fingerprint matches, every file's checksum matches, and every tensor loads with the expected
shape and dtype; otherwise it is rebuilt with a message on stderr -- a corrupt or truncated file
is never trusted. Files are written to a temporary name and renamed, ``meta.json`` last.

The weights are hashed even for random-init backbones (about 0.4 s for BERT-base + ViT-base on
CPU): the runner seeds before building them, so ``iisan`` and ``iisan-cached`` see identical
random weights, and the hash proves it rather than assuming it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.atomic import atomic_write, atomic_write_text
from core.cuda import synchronize
from core.errors import BenchError
from core.host import available_mb

from .options import options_key

CACHE_FORMAT = 2  # 2: {"states", "offset"} per file
PREPROCESS = ("cls=hidden_states[tap][:,0]; pixels=uint8/127.5-1; encoders in eval mode, no grad, "
              "under autocast to their weights' dtype when half (BackboneTaps.numerics)")
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
FILES = {"text": "text.pt", "vision": "image.pt"}


def log(msg: str) -> None:
    print(f"iisan-cached: {msg}", file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    env = os.environ.get("IISAN_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "iisan-bench"


def cache_root(opts) -> Path:
    return Path(opts.cache_dir).expanduser() if opts.cache_dir else default_cache_dir()


# --------------------------------------------------------------------------- hashing


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(t.view(torch.uint8).numpy())


def hash_tensor(h, t: torch.Tensor | None) -> None:
    if t is None:
        h.update(b"none")
        return
    h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
    h.update(_tensor_bytes(t))


def hash_model(model: nn.Module) -> str:
    """SHA-256 of an encoder's config and every tensor of its state_dict (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    h.update(model.config.to_json_string(use_diff=False).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        hash_tensor(h, t)
    return h.hexdigest()


def components(data, models: dict[str, nn.Module], taps: dict[str, list[int]], dtype: str,
               pooling: dict[str, str] | None = None) -> dict[str, str]:
    """What the cached states depend on, each hashed on its own."""
    items = hashlib.sha256()
    for key, title in zip(data.item_keys, data.titles):
        items.update(f"{key}\t{title}\n".encode())
    tokens = hashlib.sha256()
    hash_tensor(tokens, data.tokens)
    hash_tensor(tokens, data.attention_mask)
    images = hashlib.sha256()
    hash_tensor(images, data.images if "vision" in models else None)
    return {
        "format": str(CACHE_FORMAT),
        "preprocess": PREPROCESS,
        "items": items.hexdigest(),
        "tokens": tokens.hexdigest(),
        "images": images.hexdigest(),
        "text_weights": hash_model(models["text"]),
        "vision_weights": hash_model(models["vision"]) if "vision" in models else "none",
        "taps": json.dumps(taps, sort_keys=True),
        "pooling": json.dumps(pooling or {k: "cls" for k in models}, sort_keys=True),
        "dtype": dtype,
    }


def fingerprint_of(parts: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_")[:40] or "x"


def cache_path(root: Path, data, info: dict[str, Any], parts: dict[str, str]) -> Path:
    key = hashlib.sha256(json.dumps([info.get("text"), info.get("vision"), parts["text_weights"],
                                     parts["vision_weights"], parts["taps"]]).encode()).hexdigest()[:12]
    name = f"{_slug(data.name)}-{data.n_items}items-{_slug(info.get('preset', 'custom'))}-{parts['dtype']}-{key}"
    return root / name


# --------------------------------------------------------------------------- reading and writing


@dataclass
class CacheInfo:
    path: Path
    fingerprint: str
    built: bool  # False: a valid cache was reused
    reason: str  # why it was (re)built, or "reused"
    build_s: float  # seconds spent computing and writing the states (0.0 when reused)
    load_s: float  # seconds spent fingerprinting, verifying and loading
    shapes: dict[str, list[int]]
    batch_size: int | None = None  # items encoded at once while building
    size_mb: float | None = None  # the cached states (and offsets) in their storage dtype: on disk and in memory
    earlier: Any = None  # a reused cache: its own build's cost (core.oneoff.BuildCost), when known


def _changed(old: dict[str, str], new: dict[str, str]) -> str:
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(diff) if diff else "unknown"


Cached = dict[str, tuple[torch.Tensor, torch.Tensor]]  # kind -> (states [n+1, taps, H], offset [taps, H] fp32)


def read_cache(path: Path, parts: dict[str, str], expect: dict[str, tuple[int, ...]],
               dtype: torch.dtype) -> tuple[Cached | None, str]:
    """The cached tensors, or (None, reason) if anything about them cannot be trusted."""
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        return None, "no cache yet"
    try:
        meta = json.loads(meta_path.read_text())
        fingerprint, files = meta["fingerprint"], meta["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"unreadable meta.json ({type(exc).__name__})"
    if fingerprint != fingerprint_of(parts):
        return None, f"fingerprint changed ({_changed(meta.get('components') or {}, parts)})"
    out = {}
    for kind, shape in expect.items():
        entry = files.get(kind) if isinstance(files, dict) else None
        file = path / FILES[kind]
        if not entry or not file.is_file():
            return None, f"{FILES[kind]} missing"
        raw = file.read_bytes()
        if len(raw) != entry.get("bytes") or hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
            return None, f"{FILES[kind]} is corrupt or truncated ({len(raw)} bytes, checksum mismatch)"
        try:
            blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            t, offset = blob["states"], blob["offset"]
        except Exception as exc:  # noqa: BLE001 - whatever went wrong, do not trust it
            return None, f"{FILES[kind]} does not load ({type(exc).__name__})"
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != dtype:
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            return None, f"{FILES[kind]} holds {got}, expected {shape} {dtype}"
        if not isinstance(offset, torch.Tensor) or tuple(offset.shape) != shape[1:] or offset.dtype != torch.float32:
            return None, f"{FILES[kind]} has no valid offset"
        out[kind] = (t, offset)
    return out, "reused"


def write_cache(path: Path, tensors: Cached, parts: dict[str, str], build_s: float, device: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    meta_path = path / "meta.json"
    meta_path.unlink(missing_ok=True)  # no valid meta while the tensors are being replaced
    files = {}
    for kind, (t, offset) in tensors.items():
        buf = io.BytesIO()
        torch.save({"states": t.contiguous(), "offset": offset.contiguous()}, buf)
        raw = buf.getvalue()
        atomic_write(path / FILES[kind], lambda fh: fh.write(raw))
        files[kind] = {"file": FILES[kind], "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw),
                       "shape": list(t.shape), "dtype": str(t.dtype)}
    meta = {"fingerprint": fingerprint_of(parts), "components": parts, "files": files,
            "build_s": build_s, "device": device,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(meta_path, json.dumps(meta, indent=2))


@torch.no_grad()
def compute_states(source: nn.Module, n_items: int, device: torch.device, batch: int,
                   dtype: torch.dtype) -> Cached:
    """Run the frozen encoders (``BackboneTaps``) over every item, in chunks, on ``device``.

    Returns per kind (states - offset in ``dtype``, offset in fp32); offset is the mean over the
    real items for fp16 and 0 for fp32.
    """
    source.to(device)
    source.eval()
    parts: dict[str, list[torch.Tensor]] = {"text": [], "vision": []}
    for start in range(0, n_items + 1, batch):
        ids = torch.arange(start, min(start + batch, n_items + 1), device=device)
        text, image = source(ids)
        parts["text"].append(text.float().cpu())
        if image is not None:
            parts["vision"].append(image.float().cpu())
    out = {}
    for kind, chunks in parts.items():
        if not chunks:
            continue
        full = torch.cat(chunks)
        offset = full[1:].mean(dim=0) if dtype != torch.float32 and full.size(0) > 1 else torch.zeros(full.shape[1:])
        out[kind] = ((full - offset).to(dtype), offset.float().contiguous())
    return out



BUILD_BUDGET_MB = 4096  # a cache build of the base backbones fits a 4 GB card


def auto_build_batch(models: dict[str, nn.Module], data, budget_mb: float = BUILD_BUDGET_MB) -> int:
    """Items encoded at once so that the build stays within ``budget_mb``: the encoders' weights
    plus, per item, one block's working set (hidden state, Q/K/V, attention scores, the MLP's
    4H intermediate: 8·T·H + heads·T² values; only the CLS of tapped layers is kept, see
    ``TapCLS``), with half the budget left as slack for the CUDA context and allocator rounding.
    A power of two in [16, 1024]. BERT-base + ViT-base (224 px) in fp32: 128 items."""
    weights = sum(p.numel() * p.element_size() for m in models.values() for p in m.parameters()) / 2**20
    per_item = 0.0
    for kind, m in models.items():
        c = m.config
        tokens = data.tokens.size(1) if kind == "text" else (c.image_size // c.patch_size) ** 2 + 1
        elem = next(m.parameters()).element_size()
        per_item = max(per_item, (8 * tokens * c.hidden_size + c.num_attention_heads * tokens**2) * elem / 2**20)
    room = max(budget_mb / 2 - weights, 0.0)
    n = 16
    while n * 2 <= 1024 and (n * 2) * per_item <= room:
        n *= 2
    return n


def cache_mb(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype) -> float:
    """MB of the cached states (``[n + 1, taps, H]`` per kind in ``dtype``) and their fp32 offsets."""
    elem = torch.empty(0, dtype=dtype).element_size()
    total = sum(n * t * h * elem + t * h * 4 for n, t, h in shapes.values())
    return total / 2**20


def _free_mb(device: torch.device) -> tuple[float | None, str]:
    """Memory free where the cache will live during training: the GPU's, else the machine's available RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free / 2**20, f"free on {torch.cuda.get_device_name(device)}"
    return available_mb(), "available RAM"


def check_fits(size_mb: float, path: Path | None, device: torch.device, opts) -> None:
    """One line before anything is built when the cache cannot fit: on disk where it will be written
    (``path``; None when it exists already), and in the memory it is read into for training."""
    import shutil

    key = f"{options_key(opts)}.cache_dir"
    if path is not None:
        existing = next(p for p in (path, *path.parents) if p.exists())
        free_disk = shutil.disk_usage(existing).free / 2**20
        if size_mb > free_disk:
            raise BenchError(f"iisan-cached: the cache needs {size_mb:,.0f} MB but {existing} has {free_disk:,.0f} MB "
                             f"free -- set '{key}' (or $IISAN_BENCH_CACHE) to a larger disk, or cache_dtype = \"fp16\"")
    free, where = _free_mb(device)
    if free is not None and size_mb > free:
        raise BenchError(f"iisan-cached: the cache of {size_mb:,.0f} MB does not fit in {free:,.0f} MB {where}; "
                         f"use fewer taps ('{options_key(opts)}.steps'), cache_dtype = \"fp16\", or a larger device")


def _earlier_build(path: Path):
    """What building this cache cost when it was built (``core.oneoff``; older caches: meta.json's seconds)."""
    from core.oneoff import read_build_cost

    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        meta = None
    return read_build_cost(path, meta if isinstance(meta, dict) else None)


def ensure_cache(ctx, source: nn.Module, taps: dict[str, list[int]], opts, rebuild: bool = False):
    """Load the cache for this run's data, weights and taps, building it when missing or untrusted.

    Returns ({kind: (states [n+1, taps, H], offset [taps, H])} on the CPU, CacheInfo); a row's
    state is ``states[row].float() + offset`` (``methods.iisan.CachedTaps``).
    """
    t0 = time.perf_counter()
    models = {"text": source.text, **({"vision": source.vision} if source.vision is not None else {})}
    dtype = DTYPES[opts.cache_dtype]
    parts = components(ctx.data, models, taps, opts.cache_dtype, source.pooling)
    path = cache_path(cache_root(opts), ctx.data, ctx.backbones.info or {}, parts)
    n = ctx.data.n_items + 1
    expect = {k: (n, len(taps[k]), m.config.hidden_size) for k, m in models.items()}
    size_mb = cache_mb(expect, dtype)
    tensors, reason = (None, "rebuild requested") if rebuild else read_cache(path, parts, expect, dtype)
    if tensors is not None:
        check_fits(size_mb, None, ctx.device, opts)
        return tensors, CacheInfo(path, fingerprint_of(parts), False, reason, 0.0, time.perf_counter() - t0,
                                  {k: list(v[0].shape) for k, v in tensors.items()}, size_mb=size_mb,
                                  earlier=_earlier_build(path))
    check_fits(size_mb, path, ctx.device, opts)
    batch = opts.build_batch_size or auto_build_batch(models, ctx.data)
    log(f"{reason}; building {path} ({batch} items at a time)")
    load_s = time.perf_counter() - t0
    ctx.phase("cache_build")  # its peak memory is reported apart: a one-off cost, not training's
    t1 = time.perf_counter()
    tensors = compute_states(source, ctx.data.n_items, ctx.device, batch, dtype)
    synchronize(ctx.device)
    build_s = time.perf_counter() - t1
    try:
        write_cache(path, tensors, parts, build_s, str(ctx.device))
    except OSError as exc:  # an unwritable cache folder costs a rebuild next time, not this run
        log(f"could not write {path}: {exc.strerror or exc}; training from the states in memory")
    build_s = time.perf_counter() - t1
    ctx.phase("setup")
    log(f"built {', '.join(f'{k} {list(v[0].shape)} {v[0].dtype}' for k, v in tensors.items())} in {build_s:.1f}s")
    return tensors, CacheInfo(path, fingerprint_of(parts), True, reason, build_s, load_s,
                              {k: list(v[0].shape) for k, v in tensors.items()}, batch, size_mb)
