"""Datasets: the seeded synthetic generator and IISAN's TSV format, preprocessed like the paper.

Items are indexed 1..n; index 0 is padding. Every user sequence is oldest-first. Splits are
leave-one-out: the last item is the test target, the second-to-last the validation target.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from benchmark.config import DataConfig
from core.errors import BenchError

Fits = Callable[[int, int], None]  # (items, users) -> None, or a BenchError when they cannot fit


@dataclass
class SeqDataset:
    """A preprocessed dataset: what every method and the trainer read."""

    name: str
    item_keys: list[str]  # original item ids; item index i+1 <-> item_keys[i]
    titles: list[str]
    sequences: list[list[int]]  # per user, item indices, oldest first
    images: torch.Tensor | None = None  # uint8 [n_items+1, 3, S, S]; row 0 is padding
    image_mode: str = "none"  # real | synthetic | none
    tokens: torch.Tensor | None = None  # long [n_items+1, T]
    attention_mask: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_keys)

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)

    image_source: dict = field(default_factory=dict)  # real images: source, cache hit/built, cache path
    content_sha256: str | None = None  # set once by ``content_hash`` (prepare): what every run trained on

    def summary(self) -> dict:
        """What every result record states about the data (``record["data"]``).

        ``images`` says real | synthetic | none, so synthetic placeholders are flagged everywhere;
        ``timings`` holds the one-off data costs (load_s, images_s, tokenize_s: tokenizer load plus
        tokenising every title), which are not part of any method's epoch time.
        """
        out = {"name": self.name, "users": self.n_users, "items": self.n_items,
               "interactions": self.n_interactions, "images": self.image_mode}
        if self.image_source:
            out["image_source"] = dict(self.image_source)
        if self.timings:
            out["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        if self.content_sha256:
            out["content_sha256"] = self.content_sha256
        return out

    def popularity(self) -> torch.Tensor:
        """Item counts over the training part (all but the last two items of each user)."""
        counts = torch.zeros(self.n_items + 1, dtype=torch.float64)
        for seq in self.sequences:
            for i in seq[:-2]:
                counts[i] += 1
        return counts


@dataclass
class Split:
    """Tensors for training and leave-one-out evaluation."""

    train: torch.Tensor  # long [U, L+1]: last L+1 training items, left-padded with 0
    valid_input: torch.Tensor  # long [U, L]
    valid_target: torch.Tensor  # long [U]
    valid_history: torch.Tensor  # long [U, H]: items to mask (target excluded at scoring time)
    test_input: torch.Tensor
    test_target: torch.Tensor
    test_history: torch.Tensor
    log_pop: torch.Tensor  # float [n_items+1]: log of smoothed training popularity

    @property
    def n_items(self) -> int:
        """Items ranked in evaluation (row 0 of every item table is padding)."""
        return self.log_pop.numel() - 1


def _left_pad(rows: list[list[int]], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for r, row in enumerate(rows):
        row = row[-width:]
        if row:
            out[r, width - len(row):] = torch.tensor(row, dtype=torch.long)
    return out


def make_split(ds: SeqDataset, max_seq_len: int, popularity: str = "smoothed") -> Split:
    """Leave-one-out split; ``popularity``: smoothed (count + 1) / sum, or count / total as the
    paper's code (items never trained on get log 0 = -inf; no training batch contains them)."""
    seqs = ds.sequences
    hist_w = max(len(s) for s in seqs)
    counts = ds.popularity()
    pop = (counts + 1.0) / (counts + 1.0).sum() if popularity == "smoothed" else counts / counts.sum()
    return Split(
        train=_left_pad([s[:-2] for s in seqs], max_seq_len + 1),
        valid_input=_left_pad([s[:-2] for s in seqs], max_seq_len),
        valid_target=torch.tensor([s[-2] for s in seqs], dtype=torch.long),
        valid_history=_left_pad([s[:-2] for s in seqs], hist_w),
        test_input=_left_pad([s[:-1] for s in seqs], max_seq_len),
        test_target=torch.tensor([s[-1] for s in seqs], dtype=torch.long),
        test_history=_left_pad([s[:-1] for s in seqs], hist_w),
        log_pop=pop.log().float(),
    )


# --------------------------------------------------------------------------- synthetic

_WORDS = (
    "microscope lens slide optical glass beaker flask pipette burette funnel "
    "resistor capacitor diode transistor circuit solder wire cable switch relay "
    "bolt screw nut washer rivet bracket hinge spring clamp valve "
    "glove mask goggles apron helmet boot shield respirator earplug vest "
    "sensor probe meter gauge thermometer scale timer counter monitor alarm "
    "tape adhesive sealant epoxy glue lubricant grease oil cleaner solvent "
    "pump motor fan blower compressor filter hose nozzle fitting coupling "
    "drill blade saw grinder sander chisel hammer wrench plier cutter"
).split()
_GENERIC = "pack set kit pro heavy duty mini large small premium standard industrial".split()


def synthetic_dataset(cfg: DataConfig, seed: int) -> SeqDataset:
    """Users stay in a latent topic; titles and images reveal an item's topic.

    The next item usually shares the topic of the previous ones (with probability 1 - noise the
    topic is kept), so a model that reads item content can predict it while popularity ranking
    cannot: content models must win by a clear margin.
    """
    s = cfg.synthetic  # its ranges and combinations are checked at load (benchmark.config_checks)
    rng = np.random.default_rng(seed)
    cluster_of = rng.integers(0, s.clusters, size=s.items)
    members = [np.flatnonzero(cluster_of == c) for c in range(s.clusters)]
    for c in range(s.clusters):  # every cluster needs at least one item
        if len(members[c]) == 0:
            cluster_of[c % s.items] = c
    members = [np.flatnonzero(cluster_of == c) for c in range(s.clusters)]
    zipf = [1.0 / np.arange(1, len(m) + 1) ** 0.8 for m in members]
    zipf = [z / z.sum() for z in zipf]
    # rng.choice(members[c], p=zipf[c]) draws one uniform and searches the cumulative sum, after
    # checking p in O(items): the same draw from a precomputed cdf is the same stream, 100x faster
    cdfs = [np.cumsum(z) / np.cumsum(z)[-1] for z in zipf]
    topic = [rng.choice(_WORDS, size=6, replace=False) for _ in range(s.clusters)]
    titles = []
    for i in range(s.items):
        words = list(rng.choice(topic[cluster_of[i]], size=3, replace=False))
        words.insert(int(rng.integers(0, 4)), str(rng.choice(_GENERIC)))
        titles.append(" ".join(words) + f" model {i}")
    sequences = []
    for _ in range(s.users):
        # a sequence's items are distinct: never longer than there are items
        length = min(int(rng.integers(s.min_len, s.max_len + 1)), s.items)
        c = int(rng.integers(0, s.clusters))
        seq: list[int] = []
        while len(seq) < length:
            if all(m + 1 in seq for m in members[c]):  # this topic is used up: the user moves on
                c = int(rng.choice([k for k, m in enumerate(members) if any(i + 1 not in seq for i in m)]))
            item = int(members[c][cdfs[c].searchsorted(rng.random(), side="right")]) + 1
            if item not in seq:
                seq.append(item)
            if rng.random() < s.noise:
                c = int(rng.integers(0, s.clusters))
        sequences.append(seq)
    ds = SeqDataset("synthetic", [str(i + 1) for i in range(s.items)], titles, sequences)
    ds.sequences = [q[-(cfg.max_seq_len + 3):] for q in ds.sequences if len(q) >= cfg.min_seq_len]
    if not ds.sequences:
        raise BenchError("data.synthetic: every user was filtered out by data.min_seq_len")
    if cfg.images != "none":
        ds.images = _cluster_images(cluster_of, cfg.image_size, seed)
        ds.image_mode = "synthetic"
    return ds


def _cluster_images(cluster_of: np.ndarray, size: int, seed: int) -> torch.Tensor:
    """Per-cluster colour and stripe pattern plus per-item noise, uint8 [n+1, 3, S, S]."""
    n_clusters = int(cluster_of.max()) + 1
    g = torch.Generator().manual_seed(seed)
    colour = torch.rand(n_clusters, 3, 1, 1, generator=g)
    angle = torch.rand(n_clusters, generator=g) * math.pi
    freq = 2 + torch.rand(n_clusters, generator=g) * 6
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    c = torch.as_tensor(cluster_of)
    wave = torch.sin(2 * math.pi * freq[c, None, None]
                     * (xx * torch.cos(angle[c, None, None]) + yy * torch.sin(angle[c, None, None])))
    img = 0.5 + 0.35 * wave[:, None] * colour[c] + 0.1 * torch.randn(len(c), 3, size, size, generator=g)
    out = torch.zeros(len(c) + 1, 3, size, size, dtype=torch.uint8)
    out[1:] = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return out


def keyed_images(keys: list[str], size: int) -> torch.Tensor:
    """Deterministic per-item images for datasets without images, seeded by each item's id.

    Low-resolution noise upsampled: cheap for 20k items, identical across runs and machines.
    """
    out = torch.zeros(len(keys) + 1, 3, size, size, dtype=torch.uint8)
    chunk = 2048
    for start in range(0, len(keys), chunk):
        part = keys[start:start + chunk]
        low = torch.empty(len(part), 3, 8, 8)
        for j, key in enumerate(part):
            seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)
            low[j] = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(seed))
        up = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        out[1 + start:1 + start + len(part)] = (up * 255).round().to(torch.uint8)
    return out


# --------------------------------------------------------------------------- IISAN TSV


def _find_one(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not found:
        raise BenchError(f"{folder}: no {what} file matching '{pattern}'")
    if len(found) > 1:
        raise BenchError(f"{folder}: several {what} files match '{pattern}': {', '.join(p.name for p in found)}")
    return found[0]


def _read_lines(path: Path) -> list[str]:
    """UTF-8 lines (a leading BOM and CRLF endings tolerated), numbered like an editor numbers them.

    Split on "\n" only: str.splitlines() would also split on characters such as U+2028 or \x85
    that can occur inside a title, shifting every line number after it.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw[:start].count(b"\n") + 1
        raise BenchError(f"{path}:{line}: undecodable bytes (not UTF-8): {raw[start:start + 4]!r}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def read_items(path: Path) -> tuple[list[str], list[str]]:
    keys: list[str] = []
    titles: list[str] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise BenchError(f"{path}:{n}: expected 2 tab-separated columns (item_id, title), got {len(cols)}")
        key, title = cols[0].strip(), cols[1].strip()
        if not key:
            raise BenchError(f"{path}:{n}: empty item id")
        if not title:
            raise BenchError(f"{path}:{n}: empty title for item '{key}'")
        if key in seen:
            raise BenchError(f"{path}:{n}: duplicate item id '{key}' (first on line {seen[key]})")
        seen[key] = n
        keys.append(key)
        titles.append(title)
    if not keys:
        raise BenchError(f"{path}: no items")
    return keys, titles


def read_users(path: Path) -> list[tuple[int, list[str]]]:
    users = []
    for n, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise BenchError(f"{path}:{n}: expected 2 tab-separated columns (user_id, item ids), got {len(cols)}")
        items = cols[1].split()
        users.append((n, items))
    if not users:
        raise BenchError(f"{path}: no users")
    return users


def tsv_dataset(folder: str | Path, cfg: DataConfig, fits: Fits | None = None) -> SeqDataset:
    """Load an IISAN-format folder and preprocess it exactly like the paper's code.

    Keep each user's last max_seq_len+3 items, drop users with fewer than min_seq_len, and build
    the item set from what is kept (in the items file's order). ``fits(items, users)`` is called
    once the sizes are known, before any image is decoded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchError(f"{folder}: dataset folder not found (use 'synthetic' or a folder with *_items.tsv and a users TSV)")
    items_path = _find_one(folder, "*_items.tsv", "items")
    users_path = _find_one(folder, "*users*.tsv", "users")
    keys, titles = read_items(items_path)
    index = {k: i for i, k in enumerate(keys)}
    kept_users: list[list[str]] = []
    unknown: dict[str, int] = {}  # unknown item id -> first line naming it
    users = read_users(users_path)
    for line, items in users:
        for i in items:
            if i not in index and i not in unknown:
                unknown[i] = line
        if len(items) < cfg.min_seq_len:
            continue
        kept_users.append(items[-(cfg.max_seq_len + 3):])
    if unknown:
        ids = list(unknown)
        first = min(unknown.values())
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise BenchError(f"{users_path}:{first}: {len(ids)} item ids not in {items_path.name}, e.g. {shown}")
    if not kept_users:
        longest = max(len(items) for _line, items in users)
        raise BenchError(f"{users_path}: every user was filtered out: all {len(users)} have fewer than "
                         f"data.min_seq_len={cfg.min_seq_len} items (longest: {longest})")
    used = {i for seq in kept_users for i in seq}
    order = [k for k in keys if k in used]
    new_index = {k: i + 1 for i, k in enumerate(order)}
    ds = SeqDataset(
        name=folder.name,
        item_keys=order,
        titles=[titles[index[k]] for k in order],
        sequences=[[new_index[i] for i in seq] for seq in kept_users],
    )
    if fits is not None:
        fits(ds.n_items, ds.n_users)
    if cfg.images == "synthetic":
        t0 = time.perf_counter()
        ds.images = keyed_images(order, cfg.image_size)
        ds.image_mode = "synthetic"
        ds.timings["images_s"] = time.perf_counter() - t0
    elif cfg.images == "real":
        from benchmark.data import images  # lazy: PIL only when needed

        t0 = time.perf_counter()
        ds.images = images.load_real_images(folder, order, cfg)
        ds.image_mode = "real"
        ds.image_source = dict(images.last_load)
        ds.image_source.pop("images_s", None)
        ds.timings["images_s"] = time.perf_counter() - t0
    return ds


def load_dataset(cfg: DataConfig, seed: int, fits: Fits | None = None) -> SeqDataset:
    """The configured dataset; ``fits(items, users)`` vets the sizes before the big arrays exist."""
    if cfg.dataset == "synthetic":
        if cfg.images == "real":
            raise BenchError("data.images = 'real' needs a dataset folder with images; the synthetic dataset has synthetic images")
        if fits is not None:
            fits(cfg.synthetic.items, cfg.synthetic.users)
        return synthetic_dataset(cfg, seed)
    return tsv_dataset(cfg.dataset, cfg, fits)


def tokenize(ds: SeqDataset, tokenizer, max_tokens: int) -> None:
    """Tokenise every title once per dataset (row 0 = padding item, all [PAD]).

    In chunks: the fast tokenizer's per-title Python objects for all 20k titles at once would
    raise the process's peak memory by a few hundred MB for nothing.
    """
    pad_id = tokenizer.pad_token_id or 0
    ids = torch.full((ds.n_items + 1, max_tokens), pad_id, dtype=torch.long)
    mask = torch.zeros((ds.n_items + 1, max_tokens), dtype=torch.long)
    chunk = 2048
    for start in range(0, ds.n_items, chunk):
        enc = tokenizer(ds.titles[start:start + chunk], max_length=max_tokens, padding="max_length",
                        truncation=True, return_tensors="pt")
        ids[1 + start:1 + start + enc["input_ids"].size(0)] = enc["input_ids"]
        mask[1 + start:1 + start + enc["input_ids"].size(0)] = enc["attention_mask"]
    mask[0, 0] = 1  # padding item still needs one visible token for attention to be defined
    ds.tokens, ds.attention_mask = ids, mask
