"""Ranks and metrics against values computed by hand."""

import math

import pytest
import torch

from benchmark.training.metrics import metrics_from_ranks, target_ranks

# items 0..6; item 0 is padding and never ranked
SCORES = torch.tensor([
    [9.0, 0.1, 0.5, 0.9, 0.3, 0.7, 0.2],  # target 4 (0.3), history {3, 5}
    [9.0, 0.4, 0.4, 0.4, 0.1, 0.0, 0.0],  # target 2 (0.4), no history: ties with 1 and 3
    [9.0, 0.1, 0.8, 0.2, 0.3, 0.4, 0.5],  # target 2 repeats the history {2, 6}
    [9.0, 0.6, 0.6, 0.1, 0.6, 0.0, 0.0],  # target 4 (0.6) ties with 1 and 2; history {1}
])
TARGET = torch.tensor([4, 2, 2, 4])
HISTORY = torch.tensor([[3, 5, 0], [0, 0, 0], [2, 6, 0], [1, 0, 0]])


@pytest.mark.parametrize("masking, ranks", [
    # row 1: 3 (0.9), 5 (0.7) masked, 2 (0.5) higher -> 2; row 2: ties count against -> 3;
    # row 3: the repeated target is masked with the history: ranked after all 7 columns -> 7;
    # row 4: 1 masked, one tie left (2) -> 2
    ("all_history", [2, 3, 7, 2]),
    # row 3: the target keeps its score (0.8), 6 is masked: nothing higher -> 1
    ("history_except_target", [2, 3, 1, 2]),
    # nothing masked: row 1: 3, 5, 2 higher -> 4; row 3: 2 (0.8) is the best -> 1; row 4: ties 1, 2 -> 3
    ("none", [4, 3, 1, 3]),
])
def test_ranks_by_hand_under_each_masking_rule(masking, ranks):
    assert target_ranks(SCORES, TARGET, HISTORY, masking).tolist() == ranks


def test_repeated_targets_are_counted():
    from benchmark.training.metrics import repeats_history

    assert repeats_history(TARGET, HISTORY).tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="unknown masking rule 'paper'"):
        target_ranks(SCORES, TARGET, HISTORY, "paper")


def test_nan_scores_never_flatter():
    scores = torch.tensor([[0.0, float("nan"), 0.5, 0.1], [0.0, 0.2, float("nan"), 0.1]])
    for masking in ("all_history", "history_except_target", "none"):
        ranks = target_ranks(scores, torch.tensor([2, 2]), torch.zeros(2, 1, dtype=torch.long), masking)
        assert ranks.tolist() == [2, 3]  # NaN competitor counts as higher; NaN target ranks last


def test_metrics_from_ranks():
    ranks = torch.tensor([1, 3, 10, 11])
    m = metrics_from_ranks(ranks, [10, 3])
    assert m["hr@10"] == pytest.approx(3 / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 / 10) / 4)
    assert m["hr@3"] == pytest.approx(2 / 4)
    assert m["ndcg@3"] == pytest.approx((1 + 0.5) / 4)
