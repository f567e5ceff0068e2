"""SASRec user encoder over item embeddings, the debiased in-batch softmax loss, and scoring.

The item tower (a method's item encoder) maps item indices to embeddings; this module knows
nothing about how those embeddings are produced.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEG = -1e4  # masked logit (finite, so fp16/bf16 softmax never sees -inf rows)


class SASRec(nn.Module):
    """Causal Transformer over a left-padded sequence of item embeddings (Kang & McAuley 2018).

    Post-LN blocks either way. ``architecture = "paper"`` follows the IISAN paper's code: ReLU FFN
    with dropout only after its second Linear (``PositionwiseFeedForward``), LayerNorm eps 1e-6,
    bias-free Q/K/V/O projections, xavier-normal weights and zero biases; ``"ours"`` is PyTorch's
    ``TransformerEncoderLayer`` as it comes (GELU, eps 1e-5, biases, dropout after the FFN's
    activation too).
    """

    def __init__(self, dim: int = 64, max_len: int = 10, blocks: int = 2, heads: int = 2, dropout: float = 0.1,
                 architecture: str = "ours"):
        super().__init__()
        paper = architecture == "paper"
        eps = 1e-6 if paper else 1e-5
        self.pos = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout, activation="relu" if paper else "gelu",
                                           layer_norm_eps=eps, batch_first=True)
        if paper:
            layer.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, bias=False, batch_first=True)
            layer.dropout = nn.Identity()  # the FFN's inner dropout (after the activation): none in the paper's
        self.encoder = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.heads = heads
        if paper:
            self._xavier_init(dim)
        else:
            nn.init.normal_(self.pos.weight, std=0.02)

    def _xavier_init(self, dim: int) -> None:
        """The paper's init: xavier-normal for every weight matrix (Q, K and V each as its own
        [dim, dim] matrix, as the paper's code has three Linears), zero biases."""
        nn.init.xavier_normal_(self.pos.weight)
        for m in self.encoder.modules():
            if isinstance(m, nn.MultiheadAttention):
                for chunk in m.in_proj_weight.data.split(dim):
                    nn.init.xavier_normal_(chunk)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """emb [B, L, d], mask [B, L] (1 = real item) -> hidden states [B, L, d]."""
        B, L, _ = emb.shape
        x = self.drop(self.norm(emb * mask.unsqueeze(-1) + self.pos.weight[:L]))
        causal = torch.ones(L, L, dtype=torch.bool, device=emb.device).tril()
        eye = torch.eye(L, dtype=torch.bool, device=emb.device)
        # keys: earlier real items; every query (padding too) sees itself, so no row is fully masked
        # (PyTorch's inference fast path turns fully masked rows into NaN)
        allowed = (causal.unsqueeze(0) & mask.bool().unsqueeze(1)) | eye  # [B, L(query), L(key)]
        attn = torch.zeros(B, L, L, dtype=x.dtype, device=emb.device).masked_fill(~allowed, NEG)
        attn = attn.repeat_interleave(self.heads, dim=0)
        return self.encoder(x, mask=attn)


def inbatch_logits_mask(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masks for the in-batch softmax of a batch of item sequences ``ids`` [B, L+1].

    Columns are every position of every sequence (B*(L+1)), as in the paper's code. Row (b, t)
    predicts ids[b, t+1]. A column is masked for row (b, t) if it is padding, or if its item occurs
    anywhere in user b's sequence, except the target's own column.
    Returns (mask [B, L, C] bool: True = masked, target column [B, L], valid rows [B, L] bool).
    """
    B, L1 = ids.shape
    L = L1 - 1
    cols = ids.reshape(-1)  # [C]
    C = cols.numel()
    in_seq = (ids.unsqueeze(2) == cols.view(1, 1, C)).any(dim=1)  # [B, C]
    mask = (in_seq | (cols == 0).unsqueeze(0)).unsqueeze(1).expand(B, L, C).clone()
    target_col = torch.arange(B, device=ids.device).unsqueeze(1) * L1 + torch.arange(1, L1, device=ids.device)
    mask.scatter_(2, target_col.unsqueeze(-1), False)
    valid = (ids[:, :-1] != 0) & (ids[:, 1:] != 0)
    return mask, target_col, valid


def inbatch_loss(user: torch.Tensor, item_emb: torch.Tensor, ids: torch.Tensor, log_pop: torch.Tensor,
                 rows: slice | None = None, scale: float = 1.0) -> torch.Tensor:
    """Debiased in-batch softmax: logits = u·v - log(pop), masked as in ``inbatch_logits_mask``.

    user [B, L, d] (states at positions 0..L-1), item_emb [B*(L+1), d], ids [B, L+1], log_pop [n+1].
    With ``rows`` (a data-parallel rank's share), ``user`` holds only those sequences: their loss sum
    over the *whole* batch's valid rows, times ``scale`` (the world size, which DDP's average divides
    back out), so the ranks' gradients average to the one-process gradient.
    """
    mask, target_col, valid = inbatch_logits_mask(ids)
    if rows is not None:
        n_valid = valid.sum().clamp(min=1)
        mask, target_col, valid = mask[rows], target_col[rows], valid[rows]
    logits = torch.einsum("bld,cd->blc", user, item_emb).float() - log_pop[ids.reshape(-1)].view(1, 1, -1)
    logits = logits.masked_fill(mask, NEG)
    # invalid rows are ignored rather than dropped by boolean indexing, which would sync with the host;
    # their logits are zeroed: cross_entropy still takes their softmax, and one infinite logit there (a
    # padding target's log(0) popularity under the count rule) would make every gradient NaN
    logits = logits.masked_fill(~valid.unsqueeze(-1), 0.0)
    target = target_col.masked_fill(~valid, -100)
    if rows is None:
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100)
    total = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100, reduction="sum")
    return total * scale / n_valid


def share(uniq: torch.Tensor, shard) -> torch.Tensor:
    """A data-parallel rank's equal share of a step's distinct items (padded to a multiple of the
    world size): what it encodes, and so what it stages."""
    per = uniq.numel() // shard.world
    return uniq[shard.rank * per:(shard.rank + 1) * per]


class SeqRecommender(nn.Module):
    """Item tower + SASRec; the trainer calls ``loss`` and ``item_table``/``score``."""

    def __init__(self, item_tower: nn.Module, dim: int, max_len: int, blocks: int, heads: int, dropout: float,
                 architecture: str = "ours"):
        super().__init__()
        self.item_tower = item_tower
        self.user_encoder = SASRec(dim, max_len, blocks, heads, dropout, architecture)

    def encode_items(self, ids: torch.Tensor, distinct: tuple[torch.Tensor, torch.Tensor] | None = None,
                     shard=None) -> torch.Tensor:
        """Embeddings [B*(L+1), d] for item ids, running the tower once per distinct item.

        ``distinct`` = (distinct ids, inverse index) of ``ids.reshape(-1)`` when the caller already has
        them (the trainer builds them on the host: ``torch.unique`` on the GPU waits for the host).
        With ``shard`` (a data-parallel rank) this rank encodes its equal share of the distinct items
        (the caller pads them to a multiple of the world size) and gathers everyone's.
        """
        uniq, inverse = distinct if distinct is not None else torch.unique(ids.reshape(-1), return_inverse=True)
        if shard is None:
            return self.item_tower(uniq)[inverse.reshape(-1)]
        local = self.item_tower(share(uniq, shard))
        return shard.gather_rows(local)[inverse.reshape(-1)]

    def loss(self, ids: torch.Tensor, log_pop: torch.Tensor,
             distinct: tuple[torch.Tensor, torch.Tensor] | None = None, shard=None) -> torch.Tensor:
        """The in-batch loss of the batch ``ids`` [B, L+1].

        ``shard`` (a data-parallel rank: ``rank``, ``world``, ``rows(n)``, ``gather_rows(t)``): the
        batch is the global one on every rank; the items are encoded as ``encode_items`` says and
        this rank scores its own share of the sequences (``benchmark.training.distributed``).
        """
        emb = self.encode_items(ids, distinct, shard)  # [B*(L+1), d]
        rows = shard.rows(ids.size(0)) if shard is not None else None
        own = slice(None) if rows is None else rows
        B, L1 = ids.shape
        seq_emb = emb.view(B, L1, -1)[own, :-1]
        user = self.user_encoder(seq_emb, (ids[own, :-1] != 0).to(seq_emb.dtype))
        return inbatch_loss(user, emb, ids, log_pop, rows, float(shard.world) if shard is not None else 1.0)

    def prefetch(self, host_ids: torch.Tensor, device_ids: torch.Tensor, shard=None) -> None:
        """Let the item tower stage the inputs of these (distinct) items ahead of use, e.g. copy
        their images to the GPU while the current step computes (any submodule with a
        ``stage_items(host_ids, device_ids)``); nothing for towers with nothing to stage. With
        ``shard``, this rank's share only: the rows ``encode_items`` will ask for."""
        if shard is not None:
            host_ids, device_ids = share(host_ids, shard), share(device_ids, shard)
        for m in self.item_tower.modules():
            stage = getattr(m, "stage_items", None)
            if callable(stage):
                stage(host_ids, device_ids)

    def staging_counts(self) -> tuple[int, int]:
        """(hits, misses) of staged item inputs so far, over the tower's stagers."""
        stagers = [m for m in self.item_tower.modules() if hasattr(m, "staged_hits")]
        return sum(m.staged_hits for m in stagers), sum(m.staged_misses for m in stagers)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by group name; the tower declares its own groups."""
        groups = {k: list(v) for k, v in self.item_tower.param_groups().items()}
        groups.setdefault("head", []).extend(p for p in self.user_encoder.parameters() if p.requires_grad)
        return groups

    @torch.no_grad()
    def item_table(self, n_items: int, batch: int, chunks: slice | None = None) -> torch.Tensor:
        """All item embeddings [n+1, d] computed in chunks of ``batch`` (row 0 = padding item);
        with ``chunks``, only those chunks' rows (a data-parallel rank's share, in the same chunks)."""
        dev = next(self.user_encoder.parameters()).device
        starts = list(range(0, n_items + 1, batch))[chunks or slice(None)]
        parts = [self.item_tower(torch.arange(s, min(s + batch, n_items + 1), device=dev)).float() for s in starts]
        return torch.cat(parts) if parts else torch.zeros(0, self.user_encoder.pos.embedding_dim, device=dev)

    @torch.no_grad()
    def score(self, table: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user's next item: [B, n+1]."""
        mask = (inputs != 0).to(table.dtype)
        hidden = self.user_encoder(table[inputs], mask)
        return hidden[:, -1].float() @ table.T
