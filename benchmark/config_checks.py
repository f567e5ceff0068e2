"""Load-time checks of every value the type system cannot judge: ranges, finiteness, combinations.

Why at load time: a negative learning rate trains uphill, a NaN one writes NaN into the results,
-1 steps reports an untrained model as ok, and a negative TPME weight used to fail only after the
whole sweep had trained. Each is one line naming the key and where it came from (the config
file, ``--set KEY``, or the flag), before anything runs or is written.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from iisan_util.errors import BenchError

Rule = tuple[Callable[[Any], bool], str]
GT0: Rule = (lambda v: v > 0, "> 0")
GE0: Rule = (lambda v: v >= 0, ">= 0")
UNIT: Rule = (lambda v: 0 <= v <= 1, "in [0, 1]")

RULES: dict[str, Rule] = {
    "run.epochs": GT0, "run.repeats": GT0, "run.nproc": (lambda v: v >= 1, ">= 1"),
    "run.seed": (lambda v: 0 <= v < 2**32, "in [0, 2^32)"),
    "run.sample_interval_ms": (lambda v: v >= 0, ">= 0 (0 = by device)"),
    "run.out": (lambda v: bool(v.strip()), "a folder name, not empty"),
    "data.max_seq_len": GT0, "data.min_seq_len": (lambda v: v >= 3, ">= 3 (train, valid and test items)"),
    "data.text_tokens": (lambda v: v >= 2, ">= 2 ([CLS] and at least one word)"),
    "data.image_size": GT0,
    "data.synthetic.users": (lambda v: v >= 2, ">= 2"), "data.synthetic.items": (lambda v: v >= 2, ">= 2"),
    "data.synthetic.clusters": (lambda v: v >= 1, ">= 1"), "data.synthetic.min_len": (lambda v: v >= 3, ">= 3"),
    "data.synthetic.max_len": (lambda v: v >= 3, ">= 3"), "data.synthetic.noise": UNIT,
    "train.batch_size": GT0, "train.lr_backbone": GE0, "train.lr_peft": GE0, "train.lr_head": GE0,
    "train.lr_backbone_vision": (lambda v: v >= 0, ">= 0 (0 = lr_backbone)"), "train.weight_decay": GE0,
    "train.patience": (lambda v: v >= 0, ">= 0 (0 = no early stopping)"),
    "train.max_steps_per_epoch": (lambda v: v >= 0, ">= 0 (0 = a full epoch)"),
    "train.item_dim": GT0, "train.num_blocks": GT0, "train.num_heads": GT0,
    "train.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"), "train.profile_steps": GE0,
    "train.item_bucket": (lambda v: v >= 1, ">= 1 (1 = no padding)"), "train.compile_budget_s": GT0,
    "eval.eval_batch_size": GT0, "eval.item_batch_size": GT0,
    "tpme.alpha_time": GE0, "tpme.alpha_params": GE0, "tpme.alpha_memory": GE0,
}


def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a config dataclass by dotted key (``methods`` tables excluded)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.name in ("source", "origins", "methods"):
            continue
        v, key = getattr(obj, f.name), f"{prefix}{f.name}"
        out.update(flat(v, key + ".") if dataclasses.is_dataclass(v) else {key: v})
    return out


def check(cfg) -> None:
    """Raise one BenchError naming the first bad key and its source."""
    where = cfg.where
    values = flat(cfg)
    for key, v in values.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise BenchError(f"{where(key)}: '{key}' must be a finite number, got {v}")
    for key, (ok, text) in RULES.items():
        if not ok(values[key]):
            raise BenchError(f"{where(key)}: '{key}' must be {text}, got {values[key]!r}")
    if not cfg.eval.ks or any(k <= 0 for k in cfg.eval.ks):
        raise BenchError(f"{where('eval.ks')}: 'eval.ks' must be a non-empty list of positive integers")
    if cfg.train.item_dim % cfg.train.num_heads:
        raise BenchError(f"{where('train.num_heads')}: 'train.num_heads' must divide train.item_dim "
                         f"({cfg.train.item_dim}), got {cfg.train.num_heads}")
    if cfg.run.nproc > 1 and not cfg.run.isolate:
        raise BenchError(f"{where('run.nproc')}: 'run.nproc' > 1 needs run.isolate = true (each rank is a child "
                         f"process), got isolate = false")
    s = cfg.data.synthetic
    if s.max_len < s.min_len:
        raise BenchError(f"{where('data.synthetic.max_len')}: 'data.synthetic.max_len' must be >= min_len "
                         f"({s.min_len}), got {s.max_len}")
    total = cfg.tpme.alpha_time + cfg.tpme.alpha_params + cfg.tpme.alpha_memory
    if abs(total - 1.0) > 1e-6:
        raise BenchError(f"{where('tpme.alpha_time')}: [tpme] alphas must sum to 1, got {total:g}")
    for name, table in cfg.methods.items():
        if not isinstance(table, dict):
            raise BenchError(f"{where(f'methods.{name}')}: 'methods.{name}' must be a table")
