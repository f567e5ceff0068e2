"""The vectorised in-batch loss equals a straightforward per-row loop implementation."""

import math

import torch

from benchmark.models.recommender import NEG, inbatch_logits_mask, inbatch_loss


def loop_loss(user, item_emb, ids, log_pop):
    """Reference: for each valid (user b, position t) build the masked logit row by hand."""
    B, L1 = ids.shape
    cols = ids.reshape(-1).tolist()
    total, count = 0.0, 0
    for b in range(B):
        seq = set(ids[b].tolist())
        for t in range(L1 - 1):
            if ids[b, t] == 0 or ids[b, t + 1] == 0:
                continue
            target_col = b * L1 + t + 1
            row = []
            for c, item in enumerate(cols):
                logit = float(user[b, t] @ item_emb[c]) - float(log_pop[item])
                masked = item == 0 or (item in seq and c != target_col)
                row.append(NEG if masked else logit)
            m = max(row)
            lse = m + math.log(sum(math.exp(x - m) for x in row))
            total += lse - row[target_col]
            count += 1
    return total / count


def random_batch(seed, B=5, L=6, n_items=12, d=8):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, n_items + 1, (B, L + 1), generator=g)
    for b in range(B):  # left padding of random length, as the data pipeline produces
        pad = int(torch.randint(0, L - 1, (1,), generator=g))
        ids[b, :pad] = 0
    user = torch.randn(B, L, d, generator=g, dtype=torch.float64)
    item_emb = torch.randn(B * (L + 1), d, generator=g, dtype=torch.float64)
    log_pop = torch.log(torch.rand(n_items + 1, generator=g, dtype=torch.float64) + 0.1)
    return user, item_emb, ids, log_pop


def test_vectorised_loss_matches_loop():
    for seed in range(5):
        user, item_emb, ids, log_pop = random_batch(seed)
        fast = inbatch_loss(user.float(), item_emb.float(), ids, log_pop.float()).item()
        slow = loop_loss(user, item_emb, ids, log_pop)
        assert abs(fast - slow) < 1e-4 * max(1.0, abs(slow)), (seed, fast, slow)


def test_mask_keeps_target_and_hides_own_items_and_padding():
    ids = torch.tensor([[0, 3, 5, 3], [2, 3, 4, 6]])  # user 0 has item 3 twice
    mask, target_col, valid = inbatch_logits_mask(ids)
    assert valid.tolist() == [[False, True, True], [True, True, True]]
    # user 0, position 1 predicts ids[0, 2] = 5 at column 2
    assert target_col[0, 1] == 2 and not mask[0, 1, 2]
    assert mask[0, 1, 0]  # padding column
    assert mask[0, 1, 1] and mask[0, 1, 3]  # user 0's own item 3 (both copies)
    assert mask[0, 1, 5]  # user 1's copy of item 3 is user 0's own item too
    assert not mask[0, 1, 4] and not mask[0, 1, 6] and not mask[0, 1, 7]  # items 2, 4, 6 are negatives
    # user 0, position 2 predicts item 3 (column 3): its own column stays, the other copy is masked
    assert not mask[0, 2, 3] and mask[0, 2, 1]


def test_the_paper_popularity_rule_keeps_the_loss_and_its_gradients_finite():
    """count / total gives the padding item log(0) = -inf; rows whose target is padding are ignored,
    and must not turn the gradients into NaN (0 x NaN) through their softmax."""
    from benchmark.config import load_config
    from benchmark.data.dataset import load_dataset, make_split
    from benchmark.models.recommender import inbatch_loss

    cfg = load_config(None, {"data": {"synthetic": {"users": 240, "items": 120}}})
    ds = load_dataset(cfg.data, 42)
    smoothed, count = make_split(ds, 10, "smoothed"), make_split(ds, 10, "count")
    assert torch.isinf(count.log_pop[0]) and torch.isfinite(count.log_pop[1:][ds.popularity()[1:] > 0]).all()
    ids = count.train[:32]
    assert (ids[:, 1:] == 0).any()  # rows with a padding target exist
    torch.manual_seed(0)
    user = torch.randn(32, 10, 8, requires_grad=True)
    emb = torch.randn(32 * 11, 8, requires_grad=True)
    loss = inbatch_loss(user, emb, ids, count.log_pop)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(user.grad).all() and torch.isfinite(emb.grad).all()
    assert not torch.equal(loss, inbatch_loss(user, emb, ids, smoothed.log_pop))  # the rule matters


def test_paper_sasrec_is_the_papers_block():
    """architecture = paper: ReLU FFN, LayerNorm eps 1e-6, no Q/K/V/O biases (2 blocks x (3d + d) fewer
    parameters), xavier-normal Q, K and V as three [d, d] matrices, zero biases."""
    from benchmark.models.recommender import SASRec

    torch.manual_seed(0)
    ours, paper = SASRec(64, 10, 2, 2, 0.1), SASRec(64, 10, 2, 2, 0.1, architecture="paper")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(ours) - n(paper) == 2 * (3 * 64 + 64)
    layer = paper.encoder.layers[0]
    assert layer.self_attn.in_proj_bias is None and layer.self_attn.out_proj.bias is None
    assert layer.activation_relu_or_gelu == 1 and ours.encoder.layers[0].activation_relu_or_gelu == 2
    assert {m.eps for m in paper.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    q = layer.self_attn.in_proj_weight[:64]
    assert abs(q.std().item() - math.sqrt(2 / 128)) < 0.01  # xavier-normal of one [64, 64] matrix
    assert torch.all(layer.linear1.bias == 0) and torch.all(layer.linear2.bias == 0)
    emb, mask = torch.randn(3, 10, 64), torch.ones(3, 10)
    mask[0, :6] = 0
    for mode in (True, False):  # training and the inference fast path
        paper.train(mode)
        with torch.no_grad():
            assert torch.isfinite(paper(emb, mask)).all()
