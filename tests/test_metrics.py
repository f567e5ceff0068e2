"""Ranks and metrics against values computed by hand."""

import math

import pytest
import torch

from benchmark.metrics import metrics_from_ranks, target_ranks


def test_ranks_by_hand():
    # items 0..6; item 0 is padding and never ranked
    scores = torch.tensor([
        [9.0, 0.1, 0.5, 0.9, 0.3, 0.7, 0.2],  # target 4 (0.3); history {3, 5} masked -> higher: 2 (0.5) -> rank 2
        [9.0, 0.4, 0.4, 0.4, 0.1, 0.0, 0.0],  # target 2 (0.4); ties with 1 and 3 count against -> rank 3
        [9.0, 0.1, 0.8, 0.2, 0.3, 0.4, 0.5],  # target 2 is also in history: never masked -> rank 1
    ])
    target = torch.tensor([4, 2, 2])
    history = torch.tensor([[3, 5, 0], [0, 0, 0], [2, 6, 0]])
    assert target_ranks(scores, target, history).tolist() == [2, 3, 1]


def test_nan_scores_never_flatter():
    scores = torch.tensor([[0.0, float("nan"), 0.5, 0.1], [0.0, 0.2, float("nan"), 0.1]])
    ranks = target_ranks(scores, torch.tensor([2, 2]), torch.zeros(2, 1, dtype=torch.long))
    assert ranks.tolist() == [2, 3]  # NaN competitor counts as higher; NaN target ranks last


def test_metrics_from_ranks():
    ranks = torch.tensor([1, 3, 10, 11])
    m = metrics_from_ranks(ranks, [10, 3])
    assert m["hr@10"] == pytest.approx(3 / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 4)
    assert m["hr@3"] == pytest.approx(2 / 4)
    assert m["ndcg@3"] == pytest.approx((1 + 0.5) / 4)
