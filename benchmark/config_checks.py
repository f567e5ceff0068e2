"""Load-time checks of every value the type system cannot judge: ranges, finiteness, combinations.

Why at load time: a negative learning rate trains uphill, a NaN one writes NaN into the results,
-1 steps reports an untrained model as ok, a size of 1e9 hangs or allocates GBs, and a negative
TPME weight used to fail only after the whole sweep had trained. Each is one line naming the key
and where it came from (the config file, ``--set KEY``, or the flag), before anything runs or is
written. A key's range is declared on its dataclass field (``core.keys.bounded``); a check
of several keys is a ``Cross`` here, and its error names every key with its own source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from core.keys import check_ranges

NONEMPTY = {"run.out": "a folder name, not empty", "data.dataset": "'synthetic' or a folder, not empty"}


@dataclass(frozen=True)
class Cross:
    """A rule over several keys; ``breaks``: ``--set`` values that break it from the defaults (the
    tests walk every rule with them)."""

    keys: tuple[str, ...]
    ok: Callable[[Any], bool]
    text: str
    breaks: dict[str, Any]


def _alphas(cfg) -> float:
    return cfg.tpme.alpha_time + cfg.tpme.alpha_params + cfg.tpme.alpha_memory


CROSS = (
    Cross(("eval.ks",), lambda c: bool(c.eval.ks), "'eval.ks' must be a non-empty list", {"eval.ks": []}),
    Cross(("train.item_dim", "train.num_heads"), lambda c: c.train.item_dim % c.train.num_heads == 0,
          "'train.num_heads' must divide 'train.item_dim'", {"train.item_dim": 63}),
    Cross(("run.nproc", "run.isolate"), lambda c: c.run.nproc == 1 or c.run.isolate,
          "'run.nproc' > 1 needs 'run.isolate' = true (each rank is a child process)",
          {"run.nproc": 2, "run.isolate": False}),
    Cross(("data.synthetic.min_len", "data.synthetic.max_len"),
          lambda c: c.data.synthetic.max_len >= c.data.synthetic.min_len,
          "'data.synthetic.max_len' must be >= 'data.synthetic.min_len'", {"data.synthetic.min_len": 20}),
    Cross(("data.synthetic.clusters", "data.synthetic.items"),
          lambda c: c.data.synthetic.clusters <= c.data.synthetic.items,
          "'data.synthetic.clusters' must be <= 'data.synthetic.items' (every topic needs an item)",
          {"data.synthetic.clusters": 400}),
    Cross(("data.min_seq_len", "data.synthetic.max_len", "data.dataset"),
          lambda c: c.data.dataset != "synthetic" or c.data.min_seq_len <= c.data.synthetic.max_len,
          "'data.min_seq_len' above the synthetic users' longest sequence would drop every user",
          {"data.min_seq_len": 20}),
    Cross(("tpme.alpha_time", "tpme.alpha_params", "tpme.alpha_memory"), lambda c: abs(_alphas(c) - 1.0) <= 1e-6,
          "the [tpme] alphas must sum to 1", {"tpme.alpha_params": 0.0}),
)


def sections(obj: Any, prefix: str = "") -> Iterator[tuple[Any, str]]:
    """Every config dataclass in ``obj`` with its dotted prefix (``methods`` tables excluded)."""
    yield obj, prefix
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            yield from sections(v, f"{prefix}.{f.name}" if prefix else f.name)


def check(cfg) -> None:
    """Raise one BenchError naming the first bad key (or keys) and each one's source."""
    for section, prefix in sections(cfg):
        bad = check_ranges(section, prefix)
        if bad is not None:
            raise cfg.blame((bad[0],), f"'{bad[0]}' must be {bad[1]}")
    for key, text in NONEMPTY.items():
        if not str(cfg.value(key)).strip():
            raise cfg.blame((key,), f"'{key}' must be {text}, got {cfg.value(key)!r}")
    for rule in CROSS:
        if not rule.ok(cfg):
            raise cfg.blame(rule.keys, rule.text)
    for name, table in cfg.methods.items():
        if not isinstance(table, dict):
            raise cfg.blame((f"methods.{name}",), f"'methods.{name}' must be a table")
