"""A sweep's shared inputs: the device, seeds, the dataset tokenised once, its split and the
popularity floor under the configured masking rule. Below the runner, the floors and the cache
command, which all start from it."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.config import BenchConfig, paper_common
from benchmark.data.dataset import SeqDataset, Split, load_dataset, make_split, tokenize
from benchmark.data.fingerprint import content_hash
from benchmark.launch.fits import check_fits
from benchmark.training.metrics import fewest_candidates, metrics_from_ranks, repeats_history, target_ranks
from core.errors import BenchError


@dataclass
class Prepared:
    """What every method run shares: the dataset (tokenised once), its split, the popularity floor."""

    data: SeqDataset
    split: Split
    popularity: dict[str, dict[str, float]]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise BenchError(f"run.device = 'cuda' but no CUDA GPU is available (torch {torch.__version__}, {build}); use --device cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def popularity_metrics(split: Split, ks: list[int], masking: str,
                       splits: tuple[str, ...] = ("valid", "test")) -> dict[str, dict[str, float]]:
    """The floor every trained model must beat: rank items by training popularity, under the same
    masking rule as the models (on ``splits``)."""
    out = {}
    chunk = 256  # users at a time: all at once needs several [users, items] temporaries (GBs on Scientific)
    for name, target, history in (("valid", split.valid_target, split.valid_history),
                                  ("test", split.test_target, split.test_history)):
        if name not in splits:
            continue
        ranks = [target_ranks(split.log_pop.unsqueeze(0).expand(min(chunk, target.size(0) - i), -1),
                              target[i:i + chunk], history[i:i + chunk], masking)
                 for i in range(0, target.size(0), chunk)]
        out[name] = metrics_from_ranks(torch.cat(ranks), ks)
    return out


def repeat_shares(split: Split) -> dict[str, float]:
    """Share of valid and test targets that repeat one of the user's earlier items (the masking
    rule decides whether those can be hit at all)."""
    return {name: repeats_history(target, history).float().mean().item()
            for name, target, history in (("valid", split.valid_target, split.valid_history),
                                          ("test", split.test_target, split.test_history))}


def check_cutoffs(cfg: BenchConfig, split: Split, n_items: int) -> None:
    """Every K below the fewest candidates a user's target competes among after masking: at or
    above it, that target is in the top K whatever the model does (HR@K = 1 for anything)."""
    fewest = min(fewest_candidates(n_items, target, history, cfg.eval.masking)
                 for target, history in ((split.valid_target, split.valid_history),
                                         (split.test_target, split.test_history)))
    if max(cfg.eval.ks) >= fewest:
        raise cfg.blame(("eval.ks", "eval.masking"),
                        f"'eval.ks' must be below {fewest}, the fewest items a user's target is ranked among "
                        f"({n_items} items less the user's masked history): at K = {max(cfg.eval.ks)} it would be "
                        f"in the top K whatever the model scores")


def prepare(cfg: BenchConfig, floor: bool = True) -> Prepared:
    """The run's data, tokens and split; ``floor``: also the popularity floor's metrics (ranking
    every user: seconds at Scientific's size; an estimate has no use for them)."""
    from benchmark.models.backbones import check_backbones, load_tokenizer

    check_backbones(cfg.backbone, cfg.data)  # an unavailable encoder fails before the output folder is touched
    t0 = time.perf_counter()
    data = load_dataset(cfg.data, cfg.run.seed, fits=lambda items, users: check_fits(cfg, items, users))
    t1 = time.perf_counter()
    tokenize(data, load_tokenizer(cfg.backbone), cfg.data.text_tokens)
    data.timings.update(load_s=t1 - t0, tokenize_s=time.perf_counter() - t1)
    data.content_sha256 = content_hash(data)
    split = make_split(data, cfg.data.max_seq_len, paper_common(cfg.train).popularity)
    check_cutoffs(cfg, split, data.n_items)
    return Prepared(data, split, popularity_metrics(split, cfg.eval.ks, cfg.eval.masking) if floor else {})
