"""IISAN's options ([methods.iisan] / [methods.iisan-cached]) and which hidden states it taps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from core.errors import BenchError
from core.keys import bounded


@dataclass
class IISANOptions:
    modality: Literal["intra_inter", "intra", "inter"] = "intra_inter"  # which branches
    fusion: Literal["gated", "add"] = "gated"  # how a tapped state joins the side stream
    bottleneck: int = bounded(64, 1, 4096)  # SAN block width
    taps: list[int] = field(default_factory=list, metadata=bounded(None, 0, 1024).metadata)  # hidden states to tap (0 = embeddings); [] = 0,2,...,L
    # steps per branch when taps = [] and the encoders differ in depth (or when set): each encoder's layers in
    # steps - 1 groups, tapping the embeddings and each group's last layer (IISAN-Versa's grouped layer dropping);
    # 0 = the paper's LayerDrop count of the shallower encoder (L/2 + 1)
    steps: int = bounded(0, 1, 1025, zero="auto")
    # which learning rate each side-network parameter gets: side = SAN blocks, gates and branch outputs at
    # train.lr_peft, projections and fusion at lr_head; paper = the paper's run.py, which groups by name
    # (SideNetwork.param_groups; paper_protocol sets it)
    lr_groups: Literal["side", "paper"] = "side"

    def check(self, key: str) -> None:
        """What the fields' ranges cannot say, with errors naming ``key`` (its [methods.NAME] table)."""
        self.key = key  # later errors (taps out of range, modality) name the same table
        if len(set(self.taps)) != len(self.taps):
            raise BenchError(f"'{key}.taps' has duplicates: {self.taps}")


@dataclass
class IISANCachedOptions(IISANOptions):
    cache_dir: str = ""  # "" = $IISAN_BENCH_CACHE, else $XDG_CACHE_HOME/iisan-bench, else ~/.cache/iisan-bench
    cache_dtype: Literal["fp16", "fp32"] = "fp16"  # storage type of the cached states
    build_batch_size: int = bounded(0, 1, 65_536, zero="auto")  # items encoded at once while building; 0 = sized to build in <= 4 GB


def options_key(opts: IISANOptions) -> str:
    """The [methods.NAME] table these options came from (set by ``check``), for later errors."""
    return getattr(opts, "key", "methods.iisan")


def default_taps(n_layers: int) -> list[int]:
    """Every other hidden state, ending at the last layer: 0, 2, ..., L for even L."""
    return sorted(range(n_layers, -1, -2))


def grouped_taps(n_layers: int, steps: int) -> list[int]:
    """``steps`` taps of an encoder of ``n_layers`` blocks: the embeddings (0) and the last block of each
    of ``steps - 1`` equal groups (rounded half up), so encoders of any depth give the same number of
    steps. For L = 2(steps - 1) it is the paper's 0, 2, ..., L; one step taps the last layer only."""
    if steps == 1:
        return [n_layers]
    return [int(i * n_layers / (steps - 1) + 0.5) for i in range(steps)]


def resolve_taps(opts: IISANOptions, models: dict[str, nn.Module]) -> dict[str, list[int]]:
    """Tapped hidden-state indices per encoder kind (text, vision): ``taps`` for all encoders when given;
    else the paper's LayerDrop when the encoders have one depth and ``steps`` is auto; else grouped taps
    (``grouped_taps``) with the same count for every encoder."""
    depths = {kind: model.config.num_hidden_layers for kind, model in models.items()}
    if opts.taps:
        out = {kind: sorted(opts.taps) for kind in models}
    elif len(set(depths.values())) == 1 and not opts.steps:
        out = {kind: default_taps(n) for kind, n in depths.items()}
    else:
        shallow = min(depths.values())
        steps = opts.steps or len(default_taps(shallow))
        if steps > shallow + 1:
            raise BenchError(f"'{options_key(opts)}.steps' = {steps}: the {min(depths, key=depths.get)} encoder has "
                             f"{shallow} layers, so at most {shallow + 1} distinct hidden states to tap")
        out = {kind: grouped_taps(n, steps) for kind, n in depths.items()}
    for kind, taps in out.items():
        bad = [t for t in taps if t > depths[kind]]
        if bad:
            raise BenchError(f"'{options_key(opts)}.taps': {bad} out of range for the {kind} encoder "
                             f"(hidden states 0..{depths[kind]})")
    return out
