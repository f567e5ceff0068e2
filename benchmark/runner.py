"""Run the selected methods on one dataset and write one result record per (method, repeat).

Data flows one way: config -> dataset -> method's item tower -> trainer -> profiler -> results.
Everything that can be checked before training (config, methods, device, output folder, data) is
checked first, so bad input never leaves a half-written results folder.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import BenchConfig
from .data import SeqDataset, Split, load_dataset, make_split, tokenize
from .errors import BenchError, nearest
from .metrics import metrics_from_ranks, target_ranks
from .results import append_result, env_info

MB = 1024 * 1024


@dataclass
class Prepared:
    """What every method run shares: the dataset (tokenised once), its split, the popularity floor."""

    data: SeqDataset
    split: Split
    popularity: dict[str, dict[str, float]]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise BenchError(f"run.device = 'cuda' but no CUDA GPU is available (torch {torch.__version__}, {build}); use --device cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def method_names(cfg: BenchConfig) -> list[str]:
    from methods.registry import configured_extra, select

    return select(cfg.run.methods, extra=configured_extra(cfg))


def check_methods(cfg: BenchConfig, names: list[str]) -> None:
    """Validate every selected method's options, and every [methods.NAME] table, before anything runs."""
    from methods.registry import available, configured_extra, options_for

    known = set(available()) | set(configured_extra(cfg))
    for name in cfg.methods:
        if name not in known:
            raise BenchError(f"{cfg.source}: [methods.{name}] names no method{nearest(name, known)}")
    for name in names:
        options_for(name, cfg)


def check_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"run.out: cannot write to output directory '{out}': {exc.strerror or exc}") from None


def popularity_metrics(split: Split, ks: list[int]) -> dict[str, dict[str, float]]:
    """The floor every trained model must beat: rank items by training popularity."""
    out = {}
    for name, target, history in (("valid", split.valid_target, split.valid_history),
                                  ("test", split.test_target, split.test_history)):
        scores = split.log_pop.unsqueeze(0).expand(target.size(0), -1)
        out[name] = metrics_from_ranks(target_ranks(scores, target, history), ks)
    return out


def prepare(cfg: BenchConfig) -> Prepared:
    from .backbones import load_tokenizer

    t0 = time.perf_counter()
    data = load_dataset(cfg.data, cfg.run.seed)
    t1 = time.perf_counter()
    tokenize(data, load_tokenizer(cfg.backbone), cfg.data.text_tokens)
    data.timings.update(load_s=t1 - t0, tokenize_s=time.perf_counter() - t1)
    split = make_split(data, cfg.data.max_seq_len)
    return Prepared(data, split, popularity_metrics(split, cfg.eval.ks))


def count_params(model: torch.nn.Module) -> dict[str, int]:
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {"trainable": trainable, "total": total}


def run_method(cfg: BenchConfig, name: str, prep: Prepared, device: torch.device, repeat: int = 0,
               out_dir: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Build, train and evaluate one method; failures become a result, never a crash."""
    from methods.base import BuildContext
    from methods.registry import get_method_for, options_for

    from .backbones import load_backbones
    from .profiler import MemoryProfiler
    from .recommender import SeqRecommender
    from .trainer import Trainer

    cls = get_method_for(name, cfg)
    record: dict[str, Any] = {
        "method": name, "description": cls.description, "status": "ok", "error": None, "repeat": repeat,
        "config_hash": cfg.hash_for(name), "seed": cfg.run.seed,
        "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": prep.data.summary(), "env": env_info(device), "config": {"resolved": cfg.to_dict()},
        "params": None, "time": None, "memory": None, "energy": {"epoch_j": None},
        "metrics": {"popularity": prep.popularity}, "backbone": None,
    }
    profiler = None
    try:
        seed_everything(cfg.run.seed + repeat)
        t0 = time.perf_counter()
        backbones = load_backbones(cfg.backbone, cfg.data)
        record["backbone"] = backbones.info
        method = cls(options_for(name, cfg))
        ctx = BuildContext(cfg=cfg, data=prep.data, backbones=backbones, device=device, out_dir=out_dir)
        tower = method.build(ctx)
        t = cfg.train
        model = SeqRecommender(tower, t.item_dim, cfg.data.max_seq_len, t.num_blocks, t.num_heads, t.dropout).to(device)
        setup_s = time.perf_counter() - t0
        record["params"] = count_params(model)
        profiler = MemoryProfiler(device)
        trainer = Trainer(model, prep.split, prep.data.n_items, t, cfg.eval, device, cfg.run.seed + repeat,
                          callbacks=[profiler], progress=progress)
        outcome = trainer.fit(cfg.run.epochs, t.patience)
        record["time"] = {**outcome.timing(), "setup_s": setup_s, **method.extra_timings()}
        record["memory"] = profiler.result()
        record["metrics"].update(valid=outcome.valid, test=outcome.test, best_epoch=outcome.best_epoch,
                                 history=outcome.history)
    except torch.OutOfMemoryError as exc:
        record.update(status="oom", error=_last_line(exc))
        if profiler is not None:
            record["memory"] = profiler.result()
    except BenchError:
        raise
    except Exception as exc:  # a failing method is a result, not a crash
        record.update(status="failed", error=_last_line(exc), traceback=traceback.format_exc())
    return record


def _last_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".strip()


def summary_line(rec: dict[str, Any]) -> str:
    if rec["status"] != "ok":
        return f"{rec['method']}: {rec['status']} -- {rec['error']}"
    m, pop = rec["metrics"], rec["metrics"]["popularity"]["test"]
    k = next(iter(m["test"])).split("@")[1]
    return (f"{rec['method']}: ok  test HR@{k} {m['test'][f'hr@{k}']:.4f} (popularity {pop[f'hr@{k}']:.4f})  "
            f"NDCG@{k} {m['test'][f'ndcg@{k}']:.4f} (popularity {pop[f'ndcg@{k}']:.4f})  "
            f"epoch {rec['time']['epoch_s_median']:.2f}s  peak {rec['memory']['peak_mb']:.0f} MB "
            f"({rec['memory']['source']})  trainable {rec['params']['trainable'] / 1e6:.2f}M")


def run_benchmark(cfg: BenchConfig, progress: bool = True, echo=print) -> Path:
    """Run every selected method and append its record to OUT/results.jsonl."""
    names = method_names(cfg)
    check_methods(cfg, names)
    device = resolve_device(cfg.run.device)
    out = Path(cfg.run.out)
    prep = prepare(cfg)  # data errors surface before the output folder is touched
    check_out_dir(out)
    results = out / "results.jsonl"
    echo(f"dataset {prep.data.name}: {prep.data.n_users} users, {prep.data.n_items} items, "
         f"{prep.data.n_interactions} interactions; device {device}; methods {', '.join(names)}")
    for name in names:
        for repeat in range(cfg.run.repeats):
            rec = run_method(cfg, name, prep, device, repeat, out, progress)
            tb = rec.pop("traceback", None)
            if tb:
                log = out / "logs" / f"{name}-{repeat}.log"
                log.parent.mkdir(exist_ok=True)
                log.write_text(tb)
                rec["log"] = os.path.relpath(log, out)
            append_result(results, rec)
            echo(summary_line(rec))
    return results
