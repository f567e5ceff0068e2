"""Does what a config implies fit this machine's memory? Checked before data is generated or
decoded, so a size past the machine is one line at load, not GBs allocated and a traceback.

Why besides the keys' ranges: each size key alone can be reasonable while their product is not
(1024-pixel images of 100,000 items are 315 GB of uint8). The terms below are the large arrays
the parent and each run hold for the whole run; they are a floor (activations come on top:
``iisan-bench estimate`` predicts those), so a config this check refuses cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.host import available_mb

MB = 2**20
SHARE = 0.8  # of the memory available now: the rest is the OS's, torch's, the models'


@dataclass
class Need:
    what: str
    keys: tuple[str, ...]
    mb: float


def needs(cfg, n_items: int, n_users: int) -> list[Need]:
    """The large arrays ``cfg`` implies for ``n_items`` items and ``n_users`` users (host memory)."""
    d, t = cfg.data, cfg.train
    synthetic = d.dataset == "synthetic"
    items = "data.synthetic.items" if synthetic else "data.dataset"
    users = "data.synthetic.users" if synthetic else "data.dataset"
    rows = n_items + 1
    out = [Need("title tokens and masks (int64)", ("data.text_tokens", items), rows * d.text_tokens * 16 / MB),
           Need("user sequences and histories (int64)", ("data.max_seq_len", users),
                n_users * (4 * d.max_seq_len + 16) * 8 / MB),
           Need("the user encoder's weights, gradients and Adam state (fp32)", ("train.item_dim", "train.num_blocks"),
                (t.num_blocks * 12 * t.item_dim ** 2 + (d.max_seq_len + 1) * t.item_dim) * 16 / MB),
           Need("the item table (fp32)", ("train.item_dim", items), rows * t.item_dim * 4 / MB),
           Need("a ranking batch's scores and temporaries (fp32)", ("eval.eval_batch_size", items),
                cfg.eval.eval_batch_size * rows * 4 * 4 / MB)]
    if d.images != "none":
        out.append(Need("item images (uint8)", ("data.image_size", items), rows * 3 * d.image_size ** 2 / MB))
    return out


def check_fits(cfg, n_items: int, n_users: int, avail_mb: float | None = None) -> None:
    """Refuse in one line, naming the keys of the largest term and their sources, when the arrays
    ``cfg`` implies exceed ``SHARE`` of the memory available."""
    avail = available_mb() if avail_mb is None else avail_mb
    if avail is None:
        return
    terms = needs(cfg, n_items, n_users)
    total = sum(n.mb for n in terms)
    if total <= SHARE * avail:
        return
    big = max(terms, key=lambda n: n.mb)
    raise cfg.blame(big.keys, f"this config needs at least {total / 1024:.1f} GB of memory for its data and user "
                              f"encoder, more than {SHARE:.0%} of the {avail / 1024:.1f} GB available: "
                              f"{big.what} alone {big.mb / 1024:.1f} GB ({n_items} items, {n_users} users)")
