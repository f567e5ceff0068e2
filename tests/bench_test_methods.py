"""Throwaway methods for the isolation tests (not a test module: pytest does not collect it).

Isolated children import this module because the parent passes each selected method's module
(and ``sys.path``) to them, so registering methods here makes them runnable in children too.
"""

from __future__ import annotations

import os
import signal

import torch
from torch import nn

from methods.base import BuildContext, ItemTower, Method
from methods.registry import register_method


class EmbeddingTower(ItemTower):
    """The cheapest item tower: one embedding row per item."""

    def __init__(self, n_items: int, dim: int, fail: type[BaseException] | None = None):
        super().__init__()
        self.emb = nn.Embedding(n_items + 1, dim)
        self.fail = fail

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.fail is not None and self.training:  # at the first training step
            raise self.fail("CUDA out of memory. Tried to allocate 20.00 GiB (fake, raised by a test method)")
        return self.emb(ids)

    def param_groups(self):
        return {"head": list(self.parameters())}


@register_method("t-tiny")
class Tiny(Method):
    description = "test: an embedding table (fast)"

    def build(self, ctx: BuildContext) -> ItemTower:
        return EmbeddingTower(ctx.data.n_items, ctx.cfg.train.item_dim)


@register_method("t-oom")
class Oom(Method):
    description = "test: raises torch.OutOfMemoryError at the first training step"

    def build(self, ctx: BuildContext) -> ItemTower:
        return EmbeddingTower(ctx.data.n_items, ctx.cfg.train.item_dim, fail=torch.OutOfMemoryError)


@register_method("t-fail")
class Fail(Method):
    description = "test: raises ValueError while building"

    def build(self, ctx: BuildContext) -> ItemTower:
        raise ValueError("building failed\nthe last line says why")


@register_method("t-crash")
class Crash(Method):
    description = "test: its process dies by SIGKILL while building (only in an isolated child)"

    def build(self, ctx: BuildContext) -> ItemTower:
        if os.environ.get("IISAN_BENCH_IMPORTS"):  # set for isolated children only: never kill pytest
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("t-crash only dies in an isolated child")


class DyingRankTower(EmbeddingTower):
    """Rank 1 of a data-parallel group dies by SIGKILL (or raises a fake OOM) at its third training step."""

    steps = 0

    def __init__(self, n_items: int, dim: int, oom: bool = False):
        super().__init__(n_items, dim)
        self.oom = oom

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.training and os.environ.get("RANK") == "1" and os.environ.get("IISAN_BENCH_IMPORTS"):
            self.steps += 1
            if self.steps == 3 and self.oom:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (fake, rank 1 only)")
            if self.steps == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(ids)


@register_method("t-rank-dies")
class RankDies(Method):
    description = "test: rank 1 of a DDP group dies by SIGKILL mid-training (only in an isolated child)"

    def build(self, ctx: BuildContext) -> ItemTower:
        return DyingRankTower(ctx.data.n_items, ctx.cfg.train.item_dim)


@register_method("t-rank-oom")
class RankOom(Method):
    description = "test: rank 1 of a DDP group runs out of memory mid-training; rank 0 is left in a collective"

    def build(self, ctx: BuildContext) -> ItemTower:
        return DyingRankTower(ctx.data.n_items, ctx.cfg.train.item_dim, oom=True)
