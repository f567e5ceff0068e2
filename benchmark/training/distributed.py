"""Data-parallel training across processes: torch.distributed DDP, the batch sharded over ranks.

Why the loss needs care: the paper's loss is an in-batch softmax over every item of the *whole*
batch. Sharding the sequences alone would give each rank a softmax over its own shard's items, a
different (easier) loss than one process trains on. So every rank cuts the same global batch on
the host (same seed, same order), encodes its share of the batch's distinct items, and all-gathers
them with autograd (``all_gather_single_autograd``: the backward reduce-scatters, summing each rank's
gradient back to the rank that encoded the row); each rank then scores its share of the sequences
against all of the batch's items and divides its loss sum by the *global* number of valid rows,
times the world size, so DDP's gradient average is the gradient of the one-process loss.

Evaluation is sharded too, in the same chunks one process uses (so every number is bit-identical):
each rank encodes a contiguous block of the item table's chunks and ranks a contiguous block of
the users' batches, and the pieces are all-gathered.

The item gather runs on its own process group: a collective issued from inside backward must not
interleave with DDP's bucketed all-reduces on the default group (gloo pairs collectives by order).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from core.cuda import ddp_backend

TIMEOUT_S = 300  # default (run.pg_timeout_s): a rank that waits this long on a dead peer fails


class HostClock:
    """Host time: right for gloo, whose future completes when the all-reduce is done."""

    def mark(self) -> float:
        return time.perf_counter()

    def seconds(self, marks: list[tuple[Any, Any]]) -> list[tuple[float, float]]:
        return list(marks)


class EventClock:
    """Device time for NCCL: its future completes when the all-reduce is *queued*, so host time
    would count nothing. A CUDA event is recorded on the current stream when the hook launches
    (the bucket's gradients are ready) and in the future's callback, which torch runs on a stream
    that waits for the all-reduce kernel; the events are read at the epoch's end (after its
    synchronize), relative to one reference event. ``event`` makes the device swappable (tests)."""

    def __init__(self, event=None):
        self.event = event or (lambda: torch.cuda.Event(enable_timing=True))
        self.ref = None

    def mark(self) -> Any:
        ev = self.event()
        ev.record()
        if self.ref is None:
            self.ref = ev
        return ev

    def seconds(self, marks: list[tuple[Any, Any]]) -> list[tuple[float, float]]:
        return [(self.ref.elapsed_time(a) / 1000, self.ref.elapsed_time(b) / 1000) for a, b in marks]


@dataclass
class CommStats:
    """Communication the trainer can see: DDP's gradient all-reduces (each from the hook's launch
    to its completion, on ``clock``: the host's under gloo, CUDA events under NCCL; overlapping
    intervals merged) and the item gathers."""

    allreduce_s: float = 0.0
    allreduce_bytes: int = 0  # gradient bytes all-reduced, summed over steps
    gather_s: float = 0.0  # forward item-embedding gathers (synchronous)
    clock: Any = field(default_factory=HostClock, repr=False)
    _spans: list[tuple[Any, Any]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_span(self, t0: Any, t1: Any) -> None:
        with self._lock:
            self._spans.append((t0, t1))

    def reset(self) -> None:
        """Forget what compile warm-up all-reduced: only the timed epochs count."""
        with self._lock:
            self._spans = []
        self.allreduce_s, self.allreduce_bytes, self.gather_s = 0.0, 0, 0.0

    def close_epoch(self) -> None:
        """Fold this epoch's spans into ``allreduce_s`` (their union: buckets overlap). Called
        after the epoch's synchronize: every event has completed."""
        with self._lock:
            marks, self._spans = self._spans, []
        end = float("-inf")
        for a, b in sorted(self.clock.seconds(marks)):
            if b > end:
                self.allreduce_s += b - max(a, end)
                end = b


@dataclass
class DistContext:
    """This process's place in the group. ``None`` stands for a single process everywhere."""

    rank: int
    world: int
    backend: str
    gather_group: Any = None
    comm: CommStats = field(default_factory=CommStats)

    def rows(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` rows (the first ``n % world`` ranks get one more)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The ranks' mean of ``value`` (on the gather group: never between DDP's all-reduces)."""
        out = value.detach().clone()
        dist.all_reduce(out, group=self.gather_group)
        return out / self.world

    def barrier(self) -> None:
        dist.barrier(group=self.gather_group)

    def from_rank0(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a choice every rank must share)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.gather_group)
        return box[0]

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """All ranks' equal-size ``local`` rows, concatenated in rank order, with autograd."""
        from torch.distributed._functional_collectives import all_gather_single_autograd

        t0 = time.perf_counter()
        out = all_gather_single_autograd(local.contiguous(), 0, self.gather_group)
        out = out.wait() if hasattr(out, "wait") else out  # an AsyncCollectiveTensor: done here, timed
        self.comm.gather_s += time.perf_counter() - t0
        return out

    def gather_ragged(self, local: torch.Tensor) -> torch.Tensor:
        """All ranks' ``local`` (first dims may differ), concatenated in rank order (no autograd)."""
        sizes: list[Any] = [None] * self.world
        dist.all_gather_object(sizes, local.size(0), group=self.gather_group)
        padded = torch.cat([local, local.new_zeros((max(sizes) - local.size(0), *local.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.gather_group)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def from_env(device: torch.device) -> DistContext | None:
    """Join the process group the environment describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
    torchrun's names); None for a single process. With ``IISAN_BENCH_GROUP`` (every run the sweep
    starts, ``launch.job``) the group forms in the job's store under that run's prefix, so one store
    serves every run in turn; the timeout (``run.pg_timeout_s``) bounds every collective."""
    import datetime

    from core.names import GROUP_ENV, TIMEOUT_ENV

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_initialized():
        backend = ddp_backend(device)
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, TIMEOUT_S)))
        kw: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        if os.environ.get(GROUP_ENV):
            rank = int(os.environ["RANK"])
            client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), None, False, timeout)
            kw.update(store=dist.PrefixStore(os.environ[GROUP_ENV], client), rank=rank, world_size=world)
        dist.init_process_group(backend, timeout=timeout, **kw)
    backend = dist.get_backend()
    return DistContext(dist.get_rank(), dist.get_world_size(), backend,
                       gather_group=dist.new_group(backend="gloo" if device.type == "cpu" else None),
                       comm=comm_stats(backend))


def comm_stats(backend: str) -> CommStats:
    """All-reduce timing that means the same on both backends: device events under NCCL."""
    return CommStats(clock=EventClock() if backend == "nccl" else HostClock())


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class LossModule(nn.Module):
    """``model.loss`` as a module's forward: DDP all-reduces only what flows through its forward."""

    def __init__(self, model: nn.Module, shard: DistContext):
        super().__init__()
        self.model, self.shard = model, shard

    def forward(self, ids: torch.Tensor, log_pop: torch.Tensor, distinct: tuple[torch.Tensor, torch.Tensor]):
        return self.model.loss(ids, log_pop, distinct, shard=self.shard)


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """The DDP module whose forward is the sharded loss, with a timed all-reduce hook.

    ``static_graph``: the set of trained parameters is the same every step, and some never get a
    gradient (BERT's pooler under FFT); DDP learns that on the first step instead of failing.
    DDP's initial broadcast covers the trained parameters only: frozen weights and buffers (token
    ids, a resident image table, the IISAN cache: GBs at paper scale) are the same on every rank by
    construction (same seed, same files) and never change, so sending them would be setup time
    spent for nothing.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    module = LossModule(model, ctx)
    fixed = [n for n, p in module.named_parameters() if not p.requires_grad] + [n for n, _ in module.named_buffers()]
    DDP._set_params_and_buffers_to_ignore_for_model(module, fixed)
    ddp = DDP(module, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True)
    ddp.register_comm_hook(ctx.comm, timed_allreduce)
    return ddp


def timed_allreduce(stats: CommStats, bucket):  # no return annotation: DDP checks it, a string fails
    """DDP's default hook (divide by the world size, all-reduce), timed."""
    buf = bucket.buffer()
    world = dist.get_world_size()
    t0 = stats.clock.mark()
    stats.allreduce_bytes += buf.numel() * buf.element_size()
    fut = dist.all_reduce(buf.div_(world), async_op=True).get_future()

    def done(f: torch.futures.Future) -> torch.Tensor:
        stats.add_span(t0, stats.clock.mark())
        return f.value()[0]

    return fut.then(done)
