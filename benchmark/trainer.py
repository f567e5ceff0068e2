"""One trainer for every strategy: Adam over declared parameter groups, early stopping, evaluation.

It knows nothing of any method (it sees a ``SeqRecommender``) and nothing of profiling (callbacks
mark the edges of training so a profiler can reset peaks and read counters). Epoch time covers the
training steps only, with the device synchronised at its edges; evaluation is timed apart.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tqdm.auto import tqdm

from .config import EvalConfig, TrainConfig
from .data import Split
from .metrics import metrics_from_ranks, target_ranks
from .recommender import SeqRecommender

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
    step_s: list[float] = field(default_factory=list)  # steady-state steps (warm-up excluded)
    warmup_s: float = 0.0
    samples: int = 0
    eval_s: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)

    def timing(self) -> dict:
        steps = sorted(self.step_s)
        q = (lambda f: steps[min(len(steps) - 1, int(f * len(steps)))]) if steps else (lambda f: None)
        total = sum(self.epoch_s)
        return {
            "epoch_s": self.epoch_s,
            "epoch_s_median": statistics.median(self.epoch_s) if self.epoch_s else None,
            "samples_per_s": self.samples / total if total > 0 else None,
            "eval_s": statistics.mean(self.eval_s) if self.eval_s else None,
            "step_p50_s": q(0.5), "step_p90_s": q(0.9), "warmup_s": self.warmup_s,
        }


class Trainer:
    def __init__(self, model: SeqRecommender, split: Split, n_items: int, train: TrainConfig,
                 evaluation: EvalConfig, device: torch.device, seed: int,
                 callbacks: list[Callback] | None = None, progress: bool = True):
        self.model, self.split, self.n_items = model, split, n_items
        self.cfg, self.eval_cfg, self.device, self.seed = train, evaluation, device, seed
        self.callbacks = callbacks or []
        self.progress = progress
        self.train_ids = split.train.to(device)
        self.log_pop = split.log_pop.to(device)
        lrs = {"backbone": train.lr_backbone, "peft": train.lr_peft, "head": train.lr_head}
        groups = [{"params": ps, "lr": lrs[name], "name": name}
                  for name, ps in model.param_groups().items() if ps]
        kwargs = {"fused": True} if device.type == "cuda" else {"foreach": True}
        self.optimizer = torch.optim.Adam(groups, weight_decay=train.weight_decay, **kwargs)
        self.scaler = torch.amp.GradScaler("cuda", enabled=train.precision == "fp16" and device.type == "cuda")
        self.key = f"ndcg@{10 if 10 in evaluation.ks else evaluation.ks[0]}"

    def autocast(self):
        if self.cfg.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _fire(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)

    def train_epoch(self, epoch: int, out: TrainOutcome) -> None:
        self.model.train()
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        order = torch.randperm(self.train_ids.size(0), generator=g).to(self.device)
        bs = self.cfg.batch_size
        n_steps = (len(order) + bs - 1) // bs
        if self.cfg.max_steps_per_epoch:
            n_steps = min(n_steps, self.cfg.max_steps_per_epoch)
        cuda = self.device.type == "cuda"
        events = [torch.cuda.Event(enable_timing=True) for _ in range(n_steps + 1)] if cuda else []
        stamps: list[float] = []
        loss_sum = torch.zeros((), device=self.device)
        self._fire("on_epoch_start", epoch)
        synchronize(self.device)
        t0 = time.perf_counter()
        for step in tqdm(range(n_steps), desc=f"epoch {epoch}", leave=False, disable=not self.progress):
            if cuda:
                events[step].record()
            else:
                stamps.append(time.perf_counter())
            batch = self.train_ids[order[step * bs:(step + 1) * bs]]
            with self.autocast():
                loss = self.model.loss(batch, self.log_pop)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach().float()
            out.samples += batch.size(0)
        if cuda:
            events[n_steps].record()
        synchronize(self.device)
        out.epoch_s.append(time.perf_counter() - t0)
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
        out.losses.append(loss_sum.item() / max(n_steps, 1))

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, float], dict[str, float]]:
        """Valid and test metrics from one table of item embeddings."""
        self.model.eval()
        with self.autocast():
            table = self.model.item_table(self.n_items, self.eval_cfg.item_batch_size)
        s, bs = self.split, self.eval_cfg.eval_batch_size
        results = []
        for inputs, target, history in ((s.valid_input, s.valid_target, s.valid_history),
                                        (s.test_input, s.test_target, s.test_history)):
            ranks = []
            for i in tqdm(range(0, inputs.size(0), bs), desc="eval", leave=False, disable=not self.progress):
                sl = slice(i, i + bs)
                with self.autocast():
                    scores = self.model.score(table, inputs[sl].to(self.device))
                ranks.append(target_ranks(scores, target[sl].to(self.device), history[sl].to(self.device)).cpu())
            results.append(metrics_from_ranks(torch.cat(ranks), self.eval_cfg.ks))
        return results[0], results[1]

    def fit(self, epochs: int, patience: int) -> TrainOutcome:
        out = TrainOutcome()
        best, since_best = float("-inf"), 0
        self._fire("on_train_start")
        for epoch in range(1, epochs + 1):
            self.train_epoch(epoch, out)
            t0 = time.perf_counter()
            valid, test = self.evaluate()
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
