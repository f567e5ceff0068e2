"""One trainer for every strategy: Adam over declared parameter groups, early stopping, evaluation.

It knows nothing of any method (it sees a ``SeqRecommender``) and nothing of profiling (callbacks
mark the edges of training so a profiler can reset peaks and read counters). Epoch time covers the
training steps only, with the device synchronised at its edges; evaluation is timed apart.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tqdm.auto import tqdm

from benchmark.config import EvalConfig, TrainConfig
from benchmark.data.dataset import Split
from benchmark.models.kernels import sdpa_context
from benchmark.models.recommender import SeqRecommender
from benchmark.training.distributed import DistContext, wrap
from benchmark.training.metrics import metrics_from_ranks, target_ranks
from iisan_util.errors import BenchError, DivergedError

WARMUP_STEPS = 3


class Callback(Protocol):
    def on_train_start(self) -> None: ...
    def on_epoch_start(self, epoch: int) -> None: ...
    def on_epoch_end(self, epoch: int) -> None: ...


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class TrainOutcome:
    epoch_s: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # optimizer steps of each epoch
    items_encoded: list[int] = field(default_factory=list)  # item-tower rows of each epoch (padding included)
    step_s: list[float] = field(default_factory=list)  # steady-state steps (warm-up excluded)
    warmup_s: float = 0.0
    compile_s: float = 0.0  # torch.compile of every step shape, before the first timed step
    compiled_shapes: int = 0
    samples: int = 0
    eval_s: list[float] = field(default_factory=list)
    item_table_s: list[float] = field(default_factory=list)  # per evaluation: all item embeddings
    rank_s: list[float] = field(default_factory=list)  # per split ranked: all its users x all items
    losses: list[float] = field(default_factory=list)
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    allreduce_s: list[float] = field(default_factory=list)  # data-parallel only: per epoch (distributed.CommStats)
    gather_s: list[float] = field(default_factory=list)

    def timing(self) -> dict:
        steps = sorted(self.step_s)
        q = (lambda f: steps[min(len(steps) - 1, int(f * len(steps)))]) if steps else (lambda f: None)
        total = sum(self.epoch_s)
        return {
            "epoch_s": self.epoch_s,
            "steps_per_epoch": max(self.steps) if self.steps else None,
            "items_encoded_per_epoch": max(self.items_encoded) if self.items_encoded else None,
            "epoch_s_median": statistics.median(self.epoch_s) if self.epoch_s else None,
            "samples_per_s": self.samples / total if total > 0 else None,
            "eval_s": statistics.mean(self.eval_s) if self.eval_s else None,
            "eval_item_table_s": statistics.mean(self.item_table_s) if self.item_table_s else None,
            "eval_rank_s": statistics.mean(self.rank_s) if self.rank_s else None,
            "step_p50_s": q(0.5), "step_p90_s": q(0.9), "warmup_s": self.warmup_s,
            "compile_s": self.compile_s or None, "compiled_shapes": self.compiled_shapes or None,
        }


COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype ``train.precision`` computes in (fp32 when not mixed)."""
    return COMPUTE_DTYPES.get(precision, torch.float32)


def autocast_for(device_type: str, precision: str) -> contextlib.AbstractContextManager:
    """Autocast to the compute dtype, or nothing under fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=compute_dtype(precision))


def typical_items(train: torch.Tensor, batch: int, bucket: int, n_items: int, sample: int = 20) -> int:
    """Mean distinct items of the first ``sample`` batches, padded as the trainer pads them."""
    counts = [torch.unique(train[i:i + batch]).numel() for i in range(0, min(len(train), sample * batch), batch)]
    return bucketed(max(1, round(sum(counts) / len(counts))), bucket, min(n_items + 1, batch * train.size(1)))


def allow_recompiles(n_shapes: int) -> None:
    """Let dynamo keep a graph for every step shape: past its limit (8) it would silently run the
    rest eagerly, and a bucketed epoch can hold more shapes than that on a large item set."""
    import torch._dynamo.config as dyn

    for name in ("recompile_limit", "cache_size_limit"):  # the newer name, and the older one
        if hasattr(dyn, name):
            setattr(dyn, name, max(getattr(dyn, name), n_shapes + 2))


def bucketed(n: int, bucket: int, cap: int) -> int:
    """``n`` distinct items padded up to a multiple of ``bucket``, but never past ``cap``."""
    return n if bucket <= 1 else max(n, min(-(-n // bucket) * bucket, cap))


@dataclass
class Batch:
    """One step's input on the device, and its distinct items on the host (for prefetching)."""

    ids: torch.Tensor  # [B, L+1] item ids
    uniq: torch.Tensor  # distinct ids, padded to the bucket
    inverse: torch.Tensor  # ids.reshape(-1) == uniq[inverse]
    host_uniq: torch.Tensor  # uniq on the host


class Trainer:
    def __init__(self, model: SeqRecommender, split: Split, n_items: int, train: TrainConfig,
                 evaluation: EvalConfig, device: torch.device, seed: int,
                 callbacks: list[Callback] | None = None, progress: bool = True, sdpa_backend: str = "default",
                 dist: DistContext | None = None):
        """``train.compile`` and ``sdpa_backend`` as resolved by the runner (never ``auto`` here);
        ``dist``: this process's rank in a data-parallel group (``training.distributed``)."""
        self.model, self.split, self.n_items, self.dist = model, split, n_items, dist
        self.sdpa_backend = sdpa_backend
        self.cfg, self.eval_cfg, self.device, self.seed = train, evaluation, device, seed
        self.callbacks = callbacks or []
        self.progress = progress
        self.train_ids = split.train  # batches are cut on the host (see _epoch_batches)
        self.log_pop = split.log_pop.to(device)
        # evaluation inputs live on the device: ranking time is ranking, not host-to-device copies
        self.eval_sets = [tuple(t.to(device) for t in ts) for ts in
                          ((split.valid_input, split.valid_target, split.valid_history),
                           (split.test_input, split.test_target, split.test_history))]
        lrs = {"backbone": train.lr_backbone, "backbone_vision": train.lr_backbone_vision or train.lr_backbone,
               "peft": train.lr_peft, "head": train.lr_head}
        declared = model.param_groups()
        unknown = sorted(set(declared) - set(lrs))
        if unknown:  # a tower's mistake, said in one line rather than a KeyError deep in here
            raise BenchError(f"{type(model.item_tower).__name__}.param_groups(): unknown group(s) {unknown}; "
                             f"groups are {', '.join(lrs)}")
        groups = [{"params": ps, "lr": lrs[name], "name": name} for name, ps in declared.items() if ps]
        # fused Adam on GPU and CPU alike: one kernel per group (on CPU, 80 matrices of 768x64: 1.8 ms a
        # step fused, 4.4 ms one tensor at a time, 11 ms "foreach", which CPU runs as a slow loop)
        try:
            self.optimizer = torch.optim.Adam(groups, weight_decay=train.weight_decay, fused=True)
        except RuntimeError:  # a torch without fused Adam for this device
            self.optimizer = torch.optim.Adam(groups, weight_decay=train.weight_decay, foreach=device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=train.precision == "fp16" and device.type == "cuda")
        self.key = f"{train.select_by}@{10 if 10 in evaluation.ks else evaluation.ks[0]}"
        self.loss_fn = model.loss if dist is None else wrap(model, dist, device)
        self.graphs = train.compile == "reduce-overhead" and device.type == "cuda"  # CUDA graph trees
        if train.compile not in ("off", "auto"):
            # static shapes when items are bucketed: one graph per bucket size, all compiled before the clock
            self.loss_fn = torch.compile(self.loss_fn, mode=None if train.compile == "default" else train.compile,
                                         dynamic=train.item_bucket <= 1)

    def autocast(self):
        """Mixed precision (when configured) and the attention kernel the runner chose."""
        stack = contextlib.ExitStack()
        stack.enter_context(sdpa_context(self.sdpa_backend))
        stack.enter_context(autocast_for(self.device.type, self.cfg.precision))
        return stack

    def _loss(self, batch: "Batch") -> torch.Tensor:
        if self.graphs:  # a new iteration: outputs of the last replay may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast():
            return self.loss_fn(batch.ids, self.log_pop, (batch.uniq, batch.inverse))

    def _fire(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def _order(self, epoch: int) -> torch.Tensor:
        """The seeded shuffle of training rows for ``epoch`` (on the host)."""
        return torch.randperm(self.train_ids.size(0), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))

    def _epoch_batches(self, order: torch.Tensor, n_steps: int) -> list[Batch]:
        """Every step's (ids, distinct ids, inverse index), built on the host and sent to the device
        in one pinned, non-blocking copy: the step never waits for the host, and ``torch.unique``
        (whose output size the host must know) never runs on the GPU. The distinct ids are padded
        with the padding item 0 up to a multiple of ``train.item_bucket``: a few shapes instead of
        one per step (cuDNN attention plans per shape; compiled graphs too). The padded rows are
        encoded but never indexed, so the loss and its gradients are those of the unpadded batch."""
        bs, bucket = self.cfg.batch_size, self.cfg.item_bucket
        every_slot = self.cfg.encoder_workload == "every_slot"
        # no step can have more distinct items than there are items, or slots in a batch: padding
        # past that is work without a purpose (a 40-item set would pad 41 to 64)
        cap = bs * self.train_ids.size(1) if every_slot else min(self.n_items + 1, bs * self.train_ids.size(1))
        world = self.dist.world if self.dist is not None else 1  # each rank encodes an equal share
        parts: list[torch.Tensor] = []
        hosts: list[tuple[torch.Size, torch.Tensor]] = []
        for step in range(n_steps):
            ids = self.train_ids[order[step * bs:(step + 1) * bs]]
            if every_slot:  # the paper's code: every slot of every sequence, padding and repeats included
                uniq, inverse = ids.reshape(-1), torch.arange(ids.numel())
            else:
                uniq, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
            size = -(-bucketed(uniq.numel(), bucket, cap) // world) * world
            uniq = torch.cat([uniq, uniq.new_zeros(size - uniq.numel())])
            parts += [ids.reshape(-1), uniq, inverse]
            hosts.append((ids.shape, uniq))
        flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        if self.device.type == "cuda":
            flat = flat.pin_memory()
        flat = flat.to(self.device, non_blocking=True)
        batches, pos = [], 0
        for shape, host_uniq in hosts:
            n, n_uniq = shape.numel(), host_uniq.numel()
            ids, uniq, inverse = (flat[pos:pos + n].view(shape), flat[pos + n:pos + n + n_uniq],
                                  flat[pos + n + n_uniq:pos + 2 * n + n_uniq])
            if self.cfg.compile not in ("off", "auto"):  # compiled graphs guard on storage offsets
                ids, uniq, inverse = ids.clone(), uniq.clone(), inverse.clone()
            batches.append(Batch(ids, uniq, inverse, host_uniq))
            pos += 2 * n + n_uniq
        return batches

    def train_epoch(self, epoch: int, out: TrainOutcome, max_steps: int = 0) -> None:
        """One epoch (at most ``max_steps`` steps, else ``train.max_steps_per_epoch``, if set)."""
        self.model.train()
        order = self._order(epoch)
        n_steps = self.n_steps(max_steps)
        cuda = self.device.type == "cuda"
        events = [torch.cuda.Event(enable_timing=True) for _ in range(n_steps + 1)] if cuda else []
        stamps: list[float] = []
        loss_sum = torch.zeros((), device=self.device)
        self._fire("on_epoch_start", epoch)
        synchronize(self.device)
        t0 = time.perf_counter()
        batches = self._epoch_batches(order, n_steps)  # data loading counts as training time
        out.items_encoded.append(sum(b.uniq.numel() for b in batches))
        if batches:
            self.model.prefetch(batches[0].host_uniq, batches[0].uniq)
        for step in tqdm(range(n_steps), desc=f"epoch {epoch}", leave=False, disable=not self.progress):
            if cuda:
                events[step].record()
            else:
                stamps.append(time.perf_counter())
            batch = batches[step]
            if step + 1 < n_steps:  # the next step's item inputs travel while this one computes
                self.model.prefetch(batches[step + 1].host_uniq, batches[step + 1].uniq)
            loss = self._loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach().float()
            out.samples += batch.ids.size(0)
        if cuda:
            events[n_steps].record()
        synchronize(self.device)
        out.epoch_s.append(time.perf_counter() - t0)
        out.steps.append(n_steps)
        if self.dist is not None:
            comm = self.dist.comm
            comm.close_epoch()
            out.allreduce_s.append(comm.allreduce_s - sum(out.allreduce_s))
            out.gather_s.append(comm.gather_s - sum(out.gather_s))
        self._fire("on_epoch_end", epoch)
        if cuda:
            step_s = [events[i].elapsed_time(events[i + 1]) / 1000 for i in range(n_steps)]
        else:
            stamps.append(time.perf_counter())
            step_s = [b - a for a, b in zip(stamps, stamps[1:])]
        if epoch == 1:
            out.warmup_s = sum(step_s[:WARMUP_STEPS])
            step_s = step_s[WARMUP_STEPS:]
        out.step_s.extend(step_s)
        if self.dist is not None:  # each rank's loss is its share of the batch's (times the world size)
            loss_sum = self.dist.mean(loss_sum)
        out.losses.append(loss_sum.item() / max(n_steps, 1))

    @torch.no_grad()
    def evaluate(self, out: TrainOutcome | None = None) -> tuple[dict[str, float], dict[str, float]]:
        """Valid and test metrics from one table of item embeddings.

        With ``out``, the table's time and each split's ranking time (all its users against all
        items, given the table) are recorded apart, each synchronised at its edges.
        """
        self.model.eval()
        synchronize(self.device)
        t0 = time.perf_counter()
        ib = self.eval_cfg.item_batch_size
        with self.autocast():
            if self.dist is None:
                table = self.model.item_table(self.n_items, ib)
            else:  # each rank a block of the same chunks; the table is bit-identical
                chunks = self.dist.rows(-(-(self.n_items + 1) // ib))
                table = self.dist.gather_ragged(self.model.item_table(self.n_items, ib, chunks))
        synchronize(self.device)
        if out is not None:
            out.item_table_s.append(time.perf_counter() - t0)
        bs = self.eval_cfg.eval_batch_size
        results = []
        for inputs, target, history in self.eval_sets:
            t0 = time.perf_counter()
            ranks = []
            starts = list(range(0, inputs.size(0), bs))
            if self.dist is not None:  # each rank a block of the same user batches
                starts = starts[self.dist.rows(len(starts))]
            for i in tqdm(starts, desc="eval", leave=False, disable=not self.progress):
                sl = slice(i, i + bs)
                with self.autocast():
                    scores = self.model.score(table, inputs[sl])
                ranks.append(target_ranks(scores, target[sl], history[sl], self.eval_cfg.masking))
            mine = torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long, device=self.device)
            all_ranks = (mine if self.dist is None else self.dist.gather_ragged(mine)).cpu()  # waits: ranked
            if out is not None:
                out.rank_s.append(time.perf_counter() - t0)
            results.append(metrics_from_ranks(all_ranks, self.eval_cfg.ks))
        return results[0], results[1]

    def n_steps(self, max_steps: int = 0) -> int:
        """Steps of an epoch: every batch, or at most ``max_steps`` (else ``train.max_steps_per_epoch``)."""
        n = (self.train_ids.size(0) + self.cfg.batch_size - 1) // self.cfg.batch_size
        bound = max_steps or self.cfg.max_steps_per_epoch
        return min(n, bound) if bound else n

    def step_shapes(self, epochs: int) -> dict[tuple[int, int], Batch]:
        """One batch of every (sequences, distinct items) shape the planned epochs will train on."""
        shapes: dict[tuple[int, int], Batch] = {}
        for epoch in range(1, epochs + 1):
            for b in self._epoch_batches(self._order(epoch), self.n_steps()):
                shapes.setdefault((b.ids.size(0), b.uniq.numel()), b)
        return shapes

    def compile_warmup(self, out: TrainOutcome, epochs: int = 1) -> None:
        """Compile (and, with reduce-overhead on a GPU, capture) every step shape of the planned
        epochs before the clock starts: one forward and backward each, gradients dropped, no
        optimizer step, and the random state restored, so training is what it would have been."""
        if self.cfg.compile in ("off", "auto"):
            return
        self.model.train()
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        synchronize(self.device)
        t0 = time.perf_counter()
        shapes = self.step_shapes(epochs)
        allow_recompiles(len(shapes))
        for batch in shapes.values():
            self.model.prefetch(batch.host_uniq, batch.uniq)
            self.scaler.scale(self._loss(batch)).backward()
            self.optimizer.zero_grad(set_to_none=True)
        synchronize(self.device)
        out.compile_s = time.perf_counter() - t0
        out.compiled_shapes = len(shapes)
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, self.device)

    def fit(self, epochs: int, patience: int) -> TrainOutcome:
        out = TrainOutcome()
        best, since_best = float("-inf"), 0
        self.compile_warmup(out, epochs)
        if self.dist is not None:
            self.dist.comm.reset()
        self._fire("on_train_start")
        for epoch in range(1, epochs + 1):
            self.train_epoch(epoch, out)
            if not math.isfinite(out.losses[-1]):
                finite = [x for x in out.losses if math.isfinite(x)]
                raise DivergedError(epoch, out.losses[-1], finite[-1] if finite else None)
            t0 = time.perf_counter()
            valid, test = self.evaluate(out)
            out.eval_s.append(time.perf_counter() - t0)
            out.history.append({"epoch": epoch, "loss": out.losses[-1], "valid": valid, "test": test})
            if valid[self.key] > best:
                best, since_best = valid[self.key], 0
                out.valid, out.test, out.best_epoch = valid, test, epoch
            else:
                since_best += 1
                if patience and since_best >= patience:
                    break
        return out
