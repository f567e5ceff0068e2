"""Full-ranking leave-one-out metrics: HR@K, NDCG@K, MRR@K.

Ties never flatter: rank = 1 + (items scoring higher) + (other items scoring equal). The user's
history is masked, but never the target itself, and the padding item 0 is never ranked.
"""

from __future__ import annotations

import math

import torch


def target_ranks(scores: torch.Tensor, target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """scores [B, n+1], target [B], history [B, H] (0 = padding) -> 1-based ranks [B].

    History items are masked; the target keeps its own score even when it is also in the history.
    """
    # competitors: every real item except the history and the target itself
    scores = scores.float()
    competitor = torch.ones_like(scores, dtype=torch.bool)
    competitor[:, 0] = False
    rows = torch.arange(scores.size(0), device=scores.device).unsqueeze(1).expand_as(history)
    competitor[rows, history] = False
    competitor.scatter_(1, target.unsqueeze(1), False)
    # a NaN never flatters: a NaN target scores -inf, a NaN competitor +inf
    t = scores.gather(1, target.unsqueeze(1)).nan_to_num(nan=float("-inf"))
    s = scores.nan_to_num(nan=float("inf"))
    higher = ((s > t) & competitor).sum(1)
    equal = ((s == t) & competitor).sum(1)
    return 1 + higher + equal


def metrics_from_ranks(ranks: torch.Tensor, ks: list[int]) -> dict[str, float]:
    r = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = r <= k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 1), torch.zeros_like(r)).mean().item()
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / r, torch.zeros_like(r)).mean().item()
    return out


def ndcg_at(rank: int, k: int) -> float:
    """Single-user NDCG@k, for hand-checked tests."""
    return 1.0 / math.log2(rank + 1) if rank <= k else 0.0
