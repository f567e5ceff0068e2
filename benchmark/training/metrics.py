"""Full-ranking leave-one-out metrics: HR@K, NDCG@K, MRR@K, under a stated history-masking rule.

Ties never flatter: rank = 1 + (items scoring higher) + (other items scoring equal), and the
padding item 0 is never ranked. Which of the user's past items compete is ``[eval] masking``:

* ``all_history`` (the IISAN paper's code, the default): every history item is removed, the target
  too when it repeats a history item; such a target can never be retrieved (a miss).
* ``history_except_target``: history removed except the target. It also tells the model which of
  the user's past items is the answer (on Scientific it lifts the popularity floor's test HR@10
  from 0.0150 to 0.0383): kept for comparison with earlier results, not as a default.
* ``none``: nothing removed (repeat-aware: re-consumption counts as a correct prediction).
"""

from __future__ import annotations

import torch

MASKING = ("all_history", "history_except_target", "none")


def target_ranks(scores: torch.Tensor, target: torch.Tensor, history: torch.Tensor,
                 masking: str = "all_history") -> torch.Tensor:
    """scores [B, n+1], target [B], history [B, H] (0 = padding) -> 1-based ranks [B] (see MASKING)."""
    if masking not in MASKING:
        raise ValueError(f"unknown masking rule {masking!r}; one of {', '.join(MASKING)}")
    # competitors: every real item except the target itself and, unless masking is none, the history
    scores = scores.float()
    competitor = torch.ones_like(scores, dtype=torch.bool)
    competitor[:, 0] = False
    if masking != "none":
        rows = torch.arange(scores.size(0), device=scores.device).unsqueeze(1).expand_as(history)
        competitor[rows, history] = False
    competitor.scatter_(1, target.unsqueeze(1), False)
    # a NaN never flatters: a NaN target scores -inf, a NaN competitor +inf
    t = scores.gather(1, target.unsqueeze(1)).nan_to_num(nan=float("-inf"))
    s = scores.nan_to_num(nan=float("inf"))
    ranks = 1 + ((s > t) & competitor).sum(1) + ((s == t) & competitor).sum(1)
    if masking == "all_history":  # a repeated target is masked like the rest of the history: ranked
        ranks = ranks.masked_fill(repeats_history(target, history), scores.size(1))  # after every item
    return ranks


def repeats_history(target: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """[B] bool: the target is one of the user's earlier items."""
    return ((history == target.unsqueeze(1)) & (history != 0)).any(1)


def metrics_from_ranks(ranks: torch.Tensor, ks: list[int]) -> dict[str, float]:
    r = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = r <= k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 1), torch.zeros_like(r)).mean().item()
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / r, torch.zeros_like(r)).mean().item()
    return out



def fewest_candidates(n_items: int, target: torch.Tensor, history: torch.Tensor, masking: str) -> int:
    """The fewest items any user's target competes among (itself included) once ``masking`` has
    removed their history: a cut-off K at or above it puts that target in the top K whatever the
    model scores."""
    if masking == "none" or history.numel() == 0:
        return n_items
    h = history.masked_fill(history == target.unsqueeze(1), 0).sort(1).values
    first = torch.ones_like(h, dtype=torch.bool)
    first[:, 1:] = h[:, 1:] != h[:, :-1]
    return n_items - int(((h != 0) & first).sum(1).max())
