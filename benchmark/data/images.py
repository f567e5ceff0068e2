"""Real item images: ``DATASET/images/<item_id>.jpg|jpeg|png`` or the paper's pickled LMDB store.

Images are decoded once with PIL (RGB, resized to ``data.image_size`` with bilinear filtering, the
paper's ``transforms.Resize``), stored as uint8 ``[n_items + 1, 3, S, S]`` (row 0 is the padding
item) and cached as a ``.npy`` file so later runs do not decode again. Normalisation (mean 0.5,
std 0.5) happens at use time (``methods.base.pixel_values``).

The cache lives in ``DATASET/.iisan-cache/`` when the dataset folder is writable, otherwise under
``$IISAN_BENCH_CACHE`` or the user cache folder (``$XDG_CACHE_HOME/iisan-bench`` or
``~/.cache/iisan-bench``). Its name hashes the item ids, the image size and every source file's
name, size and modification time, so changed images are decoded again. It is written to a
temporary file and renamed: an interrupted run never leaves a half-written cache behind.

The paper's LMDB store (``*.lmdb``: keys are item ids, values pickled ``LMDB_Image`` objects)
can run arbitrary code when unpickled, so it is read only with ``data.trust_pickle = true``
(``--trust-pickle``), and even then through an unpickler that accepts nothing but the image
record's class.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmark.config import DataConfig
from core.atomic import atomic_write
from core.errors import BenchError

EXTENSIONS = (".jpg", ".jpeg", ".png")  # in order of preference when several exist
CACHE_VERSION = "v1"
SHOW = 5  # ids named in a "missing" error

# What the last load did, for the dataset summary: {"source": ..., "cache": "hit"|"built", ...}
last_load: dict[str, Any] = {}


# --------------------------------------------------------------------------- cache location


def user_cache_dir() -> Path:
    env = os.environ.get("IISAN_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "iisan-bench"


def _writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
        return True
    except OSError:
        return False


def cache_candidates(folder: Path, name: str) -> list[Path]:
    """Where a cache file may live, in order: beside the dataset, then the user cache folder."""
    tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    return [folder / ".iisan-cache" / name, user_cache_dir() / "images" / f"{folder.name}-{tag}" / name]


def _read_cache(paths: list[Path], shape: tuple[int, ...]) -> tuple[torch.Tensor, Path] | None:
    for path in paths:
        if not path.is_file():
            continue
        try:
            arr = np.load(path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError):
            continue  # unreadable or truncated: rebuild
        if arr.dtype == np.uint8 and tuple(arr.shape) == shape:
            return torch.from_numpy(arr), path
    return None


def _write_cache(paths: list[Path], images: torch.Tensor) -> Path | None:
    """Atomically write the cache to the first writable candidate; None if none is writable."""
    for path in paths:
        if not _writable_dir(path.parent):
            continue
        try:
            return atomic_write(path, lambda fh: np.save(fh, images.numpy(), allow_pickle=False))
        except OSError:
            continue
    return None


# --------------------------------------------------------------------------- decoding


def decode_image(path: Path | str, size: int, data: bytes | None = None) -> np.ndarray:
    """One image file -> uint8 [3, size, size] (RGB, bilinear resize). Raises BenchError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"{path}: corrupt or unreadable image ({reason[:160]})") from None
    return arr.transpose(2, 0, 1)


def _decode_all(jobs: list[tuple[int, Any]], n: int, size: int, decode) -> torch.Tensor:
    out = np.zeros((n + 1, 3, size, size), dtype=np.uint8)
    workers = max(1, min(4, os.cpu_count() or 1))

    def one(job):
        idx, src = job
        out[idx] = decode(src)

    if workers == 1 or len(jobs) < 64:
        for job in jobs:
            one(job)
    else:  # PIL releases the GIL while decoding; errors surface in item order
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(one, jobs):
                pass
    return torch.from_numpy(out)


def _missing_error(where: str, missing: list[str], total: int, pattern: str) -> BenchError:
    shown = ", ".join(missing[:SHOW]) + (", ..." if len(missing) > SHOW else "")
    return BenchError(f"{where}: {len(missing)} of {total} items have no image ({pattern}), e.g. {shown} "
                      f"-- add them, or set data.images = \"synthetic\" or \"none\"")


def _safe_key(key: str) -> bool:
    return bool(key) and key not in (".", "..") and "/" not in key and "\\" not in key and "\0" not in key


def _folder_sources(img_dir: Path, keys: list[str]) -> list[Path]:
    by_stem: dict[str, dict[str, Path]] = {}
    for entry in os.scandir(img_dir):
        stem, ext = os.path.splitext(entry.name)
        if ext.lower() in EXTENSIONS and entry.is_file():
            by_stem.setdefault(stem, {})[ext.lower()] = Path(entry.path)
    sources, missing = [], []
    for key in keys:
        found = by_stem.get(key) if _safe_key(key) else None
        if not found:
            missing.append(key)
            continue
        sources.append(next(found[e] for e in EXTENSIONS if e in found))
    if missing:
        raise _missing_error(str(img_dir), missing, len(keys), "<item_id>.jpg|jpeg|png")
    return sources


def _fingerprint(parts: list[str], files: list[Path]) -> str:
    h = hashlib.sha256(CACHE_VERSION.encode())
    for p in parts:
        h.update(b"\0" + p.encode())
    for f in files:
        st = f.stat()
        h.update(f"\0{f.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- LMDB (pickled)


class LMDBImage:
    """Stand-in for the paper's ``LMDB_Image`` (channels, size, image bytes HxWxC uint8, id)."""

    channels: int
    size: tuple[int, int]
    image: bytes

    def get_image(self) -> np.ndarray:
        arr = np.frombuffer(self.image, dtype=np.uint8)
        return arr.reshape(*tuple(self.size), int(self.channels))


class _ImageUnpickler(pickle.Unpickler):
    """Accepts the image record class only: anything else in the pickle is refused."""

    def find_class(self, module: str, name: str):
        if name in ("LMDB_Image", "LMDBImage"):
            return LMDBImage
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def decode_lmdb_record(raw: bytes, size: int, where: str) -> np.ndarray:
    """A pickled ``LMDB_Image`` -> uint8 [3, size, size]."""
    from PIL import Image

    try:
        obj = _ImageUnpickler(io.BytesIO(raw)).load()
        arr = obj.get_image() if isinstance(obj, LMDBImage) else None
    except Exception as exc:  # noqa: BLE001 - any failure means this record is unusable
        raise BenchError(f"{where}: not a readable LMDB_Image record ({type(exc).__name__}: {exc})"[:300]) from None
    if arr is None or arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise BenchError(f"{where}: not a readable LMDB_Image record")
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def find_lmdb(folder: Path) -> Path | None:
    found = sorted(p for p in folder.glob("*.lmdb") if p.is_dir() or p.is_file())
    return found[0] if found else None


def _lmdb_images(store: Path, keys: list[str], size: int) -> torch.Tensor:
    try:
        import lmdb  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise BenchError(f"{store}: reading the LMDB image store needs the 'lmdb' package (pip install lmdb), "
                         f"or convert it to images/<item_id>.jpg") from None
    env = lmdb.open(str(store), subdir=store.is_dir(), readonly=True, lock=False, readahead=False, meminit=False)
    try:
        with env.begin() as txn:
            raws = [txn.get(k.encode("utf-8")) for k in keys]
    finally:
        env.close()
    missing = [k for k, r in zip(keys, raws) if r is None]
    if missing:
        raise _missing_error(str(store), missing, len(keys), "LMDB key = item id")
    jobs = [(i + 1, (k, r)) for i, (k, r) in enumerate(zip(keys, raws))]
    return _decode_all(jobs, len(keys), size, lambda src: decode_lmdb_record(src[1], size, f"{store}[{src[0]}]"))


# --------------------------------------------------------------------------- entry point


def load_real_images(folder: str | Path, item_keys: list[str], cfg: DataConfig) -> torch.Tensor:
    """uint8 [len(item_keys) + 1, 3, S, S] for the items, in order (row 0 = padding)."""
    folder = Path(folder)
    size = cfg.image_size
    t0 = time.perf_counter()
    img_dir = folder / "images"
    shape = (len(item_keys) + 1, 3, size, size)
    if img_dir.is_dir():
        sources = _folder_sources(img_dir, item_keys)
        kind = "images/"
        fp = _fingerprint([kind, str(size), *item_keys], sources)
    else:
        store = find_lmdb(folder)
        if store is None:
            raise BenchError(f"{folder}: data.images = \"real\" but there is no images/ folder "
                             f"(images/<item_id>.jpg|png) and no *.lmdb store -- add images, or set "
                             f"data.images = \"synthetic\" or \"none\"")
        if not cfg.trust_pickle:
            raise BenchError(f"{store}: the LMDB image store holds pickled Python objects, which can run "
                             f"arbitrary code when loaded; pass --trust-pickle (data.trust_pickle = true) only "
                             f"if you trust its source, or convert it to images/<item_id>.jpg")
        kind = "lmdb"
        files = [store / "data.mdb"] if store.is_dir() else [store]
        fp = _fingerprint([kind, str(size), *item_keys], [f for f in files if f.exists()])
    candidates = cache_candidates(folder, f"images-{size}-{fp}.npy")
    cached = _read_cache(candidates, shape)
    if cached is not None:
        last_load.clear()
        last_load.update(source=kind, cache="hit", cache_path=str(cached[1]), images_s=time.perf_counter() - t0)
        return cached[0]
    if kind == "images/":
        jobs = list(zip(range(1, len(sources) + 1), sources))
        images = _decode_all(jobs, len(item_keys), size, lambda p: decode_image(p, size))
    else:
        images = _lmdb_images(store, item_keys, size)
    written = _write_cache(candidates, images)
    last_load.clear()
    last_load.update(source=kind, cache="built" if written else "not written (no writable cache folder)",
                     cache_path=str(written) if written else None, images_s=time.perf_counter() - t0)
    return images
