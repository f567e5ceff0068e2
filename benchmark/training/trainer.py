"""One trainer for every strategy: Adam over declared parameter groups, early stopping, evaluation.

It knows nothing of any method (it sees a ``SeqRecommender``) and nothing of profiling (callbacks
mark the edges of training so a profiler can reset peaks and read counters). Epoch time covers the
training steps only, with the device synchronised at its edges; evaluation is timed apart.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Protocol

import torch
from tqdm.auto import tqdm

from benchmark.config import EvalConfig, TrainConfig
from benchmark.data.dataset import Split
from benchmark.models.kernels import first_line, is_refusal, sdpa_context
from benchmark.models.recommender import SeqRecommender
from benchmark.training.batches import Batch, cut_batches
from benchmark.training.compiling import CompiledLoss, warm_up, warmup_calls
from benchmark.training.distributed import DistContext, wrap
from benchmark.training.metrics import metrics_from_ranks, target_ranks
from benchmark.training.outcome import TrainOutcome
from benchmark.training.precision import autocast_for
from core.cuda import synchronize
from core.errors import BenchError, DivergedError

WARMUP_STEPS = 3


class Callback(Protocol):
    def on_train_start(self) -> None: ...
    def on_epoch_start(self, epoch: int) -> None: ...
    def on_epoch_end(self, epoch: int) -> None: ...


class Trainer:
    def __init__(self, model: SeqRecommender, split: Split, train: TrainConfig, evaluation: EvalConfig,
                 device: torch.device, seed: int, *, callbacks: list[Callback] | None = None,
                 progress: bool = True, dist: DistContext | None = None):
        """``train.compile`` as resolved by the runner (never ``auto`` here); ``dist``: this process's
        rank in a data-parallel group (``training.distributed``). The attention kernel
        (``sdpa_backend``) is the default until the runner sets the one it chose."""
        self.model, self.split, self.n_items, self.dist = model, split, split.n_items, dist
        self.sdpa_backend = "default"
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
        self.sdpa_note: str | None = None  # set when a refused attention call made the run fall back
        self.graphs = train.compile == "reduce-overhead" and device.type == "cuda"  # CUDA graph trees
        self.compiled: CompiledLoss | None = None
        if train.compile not in ("off", "auto"):
            # static shapes when items are bucketed: one graph per bucket size, all compiled before the clock
            self.compiled = CompiledLoss(self.loss_fn, torch.compile(
                self.loss_fn, mode=None if train.compile == "default" else train.compile,
                dynamic=train.item_bucket <= 1))

    def autocast(self):
        """Mixed precision (when configured) and the attention kernel the runner chose."""
        stack = contextlib.ExitStack()
        stack.enter_context(sdpa_context(self.sdpa_backend))
        stack.enter_context(autocast_for(self.device.type, self.cfg.precision))
        return stack

    def kernel_guarded(self, call):
        """``call()``; if the chosen attention kernel refuses it (a shape or mask the probe did not
        meet), torch's default dispatch from then on, the reason kept for ``env.sdpa``: a kernel
        choice never ends a run."""
        try:
            return call()
        except RuntimeError as exc:
            if self.sdpa_backend == "default" or not is_refusal(exc):
                raise
            self.sdpa_note = f"'{self.sdpa_backend}' refused a call mid-run ({first_line(exc)}); default from then on"
            self.sdpa_backend = "default"
            return call()

    def _loss(self, batch: Batch, fn=None) -> torch.Tensor:
        """The step's loss: ``fn``, else the compiled loss for a warmed shape, else the eager one."""
        fn = fn or (self.compiled.pick(batch.shape) if self.compiled is not None else self.loss_fn)
        if self.graphs and self.compiled is not None and fn is self.compiled.compiled:
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration: the last replay's outputs may go

        def call():
            with self.autocast():
                return fn(batch.ids, self.log_pop, (batch.uniq, batch.inverse))
        return self.kernel_guarded(call)

    def _fire(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def _order(self, epoch: int) -> torch.Tensor:
        """The seeded shuffle of training rows for ``epoch`` (on the host)."""
        return torch.randperm(self.train_ids.size(0), generator=torch.Generator().manual_seed(self.seed * 1000 + epoch))

    def _epoch_batches(self, order: torch.Tensor, n_steps: int) -> list[Batch]:
        """Every step's batch (``batches.cut_batches``): cut on the host, one copy to the device."""
        return cut_batches(self.train_ids, order, n_steps, self.cfg.batch_size, self.cfg.item_bucket,
                           self.cfg.encoder_workload == "every_slot", self.n_items,
                           self.dist.world if self.dist is not None else 1, self.device,
                           clone=self.compiled is not None)

    def _prefetch(self, batch: Batch) -> None:
        self.model.prefetch(batch.host_uniq, batch.uniq, self.dist)

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
        staged0 = self.model.staging_counts()
        if batches:
            self._prefetch(batches[0])
        for step in tqdm(range(n_steps), desc=f"epoch {epoch}", leave=False, disable=not self.progress):
            if cuda:
                events[step].record()
            else:
                stamps.append(time.perf_counter())
            batch = batches[step]
            if step + 1 < n_steps:  # the next step's item inputs travel while this one computes
                self._prefetch(batches[step + 1])
            loss = self._loss(batch)  # takes its own staged inputs (staged a step ago) by their ids
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
        hits, misses = (b - a for a, b in zip(staged0, self.model.staging_counts()))
        out.staged_hits, out.staged_misses = out.staged_hits + hits, out.staged_misses + misses
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
        table = self.kernel_guarded(self._item_table)
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
                ranks.append(self.kernel_guarded(lambda: self.rank(table, inputs[sl], target[sl], history[sl])))
            mine = torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long, device=self.device)
            all_ranks = (mine if self.dist is None else self.dist.gather_ragged(mine)).cpu()  # waits: ranked
            if out is not None:
                out.rank_s.append(time.perf_counter() - t0)
            results.append(metrics_from_ranks(all_ranks, self.eval_cfg.ks))
        return results[0], results[1]

    def _item_table(self, chunks: slice | None = None) -> torch.Tensor:
        """Every item's embedding (fp32), computed in the training precision; under data parallelism
        each rank a block of the same chunks, gathered (bit-identical to one process)."""
        ib = self.eval_cfg.item_batch_size
        with self.autocast():
            if chunks is not None or self.dist is None:
                return self.model.item_table(self.n_items, ib, chunks)
            mine = self.dist.rows(-(-(self.n_items + 1) // ib))
            return self.dist.gather_ragged(self.model.item_table(self.n_items, ib, mine))

    @torch.no_grad()
    def rank(self, table: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor,
             history: torch.Tensor) -> torch.Tensor:
        """Each user's target rank among all items, scored in fp32 whatever the training precision
        (as the paper does): in bf16, 64-dim scores against 20k items tie by the dozen, and ties
        count against the model while the popularity floor is exact."""
        with sdpa_context(self.sdpa_backend), torch.autocast(self.device.type, enabled=False):
            scores = self.model.score(table.float(), inputs)
        return target_ranks(scores, target, history, self.eval_cfg.masking)

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
                shapes.setdefault(b.shape, b)
        return shapes

    @contextlib.contextmanager
    def side_effect_free(self):
        """Steps run before the clock (compile warm-up, kernel probes) leave no trace: training
        mode, gradients dropped, no optimizer step, the random state restored (dropout draws)."""
        mode = self.model.training
        rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        try:
            yield
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            torch.set_rng_state(rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.device)
            self.model.train(mode)

    def _warm_step(self, fn, batch: Batch) -> None:
        self._prefetch(batch)
        self.scaler.scale(self._loss(batch, fn)).backward()
        self.optimizer.zero_grad(set_to_none=True)

    def compile_warmup(self, out: TrainOutcome, epochs: int = 1) -> None:
        """Compile (and, with reduce-overhead on a GPU, record and replay) every step shape of the
        planned epochs before the clock, within ``train.compile_budget_s`` (``training.compiling``)."""
        if self.compiled is None:
            return
        with self.side_effect_free():
            self.model.train()
            synchronize(self.device)
            out.compile = warm_up(self.compiled, self.step_shapes(epochs), self._warm_step,
                                  warmup_calls(self.graphs), self.cfg.compile_budget_s)
            synchronize(self.device)

    def probe_attention(self, backend: str, batches: list[Batch]) -> float:
        """Seconds of the run's own attention calls under ``backend`` (raises if it refuses one):
        the eager loss forward and backward of ``batches`` in training mode (masks, dropout), then
        the first chunk of the item table and one batch of users ranked (``kernels.choose_sdpa_backend``)."""
        saved = self.sdpa_backend
        self.sdpa_backend = backend
        eager = self.model.loss  # never the compiled or DDP-wrapped loss: no compile, no collective
        try:
            with self.side_effect_free():
                synchronize(self.device)
                t0 = time.perf_counter()
                self.model.train()
                for batch in batches:
                    with self.autocast():
                        loss = eager(batch.ids, self.log_pop, (batch.uniq, batch.inverse))
                    loss.backward()
                self.model.eval()
                with torch.no_grad():
                    table = self._item_table(slice(0, 1))
                    inputs, target, history = (t[:self.eval_cfg.eval_batch_size] for t in self.eval_sets[0])
                    self.rank(torch.cat([table, table.new_zeros(self.n_items + 1 - table.size(0), table.size(1))]),
                              inputs, target, history)
                synchronize(self.device)
                return time.perf_counter() - t0
        finally:
            self.sdpa_backend = saved

    def fit(self, epochs: int, patience: int) -> TrainOutcome:
        out = TrainOutcome(full_steps=self.n_steps(self.train_ids.size(0)))
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
