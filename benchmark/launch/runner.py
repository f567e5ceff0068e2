"""One run: build a method's model, train it, evaluate it and measure it, into one record (the
scenario a child process runs; the sweep that plans, launches and collects runs is ``sweep.py``).

Data flows one way: config -> dataset -> method's item tower -> trainer -> profiler -> record.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.config import BenchConfig
from benchmark.launch.prepare import Prepared, seed_everything
from benchmark.launch.recipe import method_config, new_record
from benchmark.measure.results import env_info
from core.errors import BenchError
from core.names import safe_name
from core.plain import from_plain
from core.record import BackboneInfo, Distributed, Env, Params, RankFigures, RunRecord, Timing


def run_method(cfg: BenchConfig, name: str, prep: Prepared, device: torch.device, repeat: int = 0,
               out_dir: Path | None = None, progress: bool = True, *, sample_memory: bool = True,
               dist=None) -> RunRecord:
    """Build, train and evaluate one method; failures become a result, never a crash.

    ``sample_memory=False`` in an isolated child: its parent samples it from outside. ``dist``: this
    process's rank of a data-parallel group (``training.distributed.DistContext``); its record
    carries this rank's own figures, which the parent combines. The record's transient
    ``timeline`` and ``traceback`` are for the runner and never reach results.jsonl.
    """
    from benchmark.measure.conditions import Watch
    from benchmark.measure.phases import MemoryProfiler
    from benchmark.measure.sampler import default_interval_s
    from methods.registry import get_method_for

    run = RunContext(method_config(cfg, name), name, prep, device, repeat, out_dir, progress, dist)
    cls = get_method_for(name, run.cfg)
    record = new_record(run.cfg, name, cls.description, prep, Env(**env_info(device), pid=os.getpid()), repeat)
    profiler = None
    watch = Watch.start(device, run.cfg.run.quiet_check)  # before anything of the run's own loads the machine
    try:
        seed_everything(run.cfg.run.seed + repeat)
        # before the build: an OOM while building still has its memory timeline
        profiler = MemoryProfiler(device, sample=sample_memory,
                                  interval=default_interval_s(device, run.cfg.run.sample_interval_ms))
        _train_and_evaluate(run, cls, profiler, record)
    except BenchError:
        if profiler is not None:
            profiler.result()  # stop the sampler thread
        raise
    except Exception as exc:  # a failing method (or an OOM: its peak is still recorded) is a result
        record.fail(exc)
        if dist is not None:  # when: a rank's failure breaks its peers' collectives a moment later
            record.distributed = Distributed(dist.world, dist.backend, ranks=[RankFigures(
                dist.rank, os.getpid(), *where(), failed_at=time.time())])
    record.conditions = watch.finish()
    if profiler is not None:
        record.memory = profiler.result()
        record.timeline = profiler.timeline()
    return record


@dataclass
class RunContext:
    """One run's inputs, passed whole (they were eleven arguments deep)."""

    cfg: BenchConfig  # the method's config as it runs (``recipe.method_config``)
    name: str
    prep: Prepared
    device: torch.device
    repeat: int = 0
    out_dir: Path | None = None
    progress: bool = True
    dist: Any = None  # this process's rank of a data-parallel group (``training.distributed.DistContext``)

    @property
    def seed(self) -> int:
        return self.cfg.run.seed + self.repeat


def _train_and_evaluate(run: RunContext, cls, profiler, record: RunRecord) -> None:
    """Build, train, evaluate; the record gets every figure (the measured ones, then the estimate)."""
    from benchmark.launch.factory import count_params, resident_mb

    t0 = time.perf_counter()
    built = _build_rank0_first(run, profiler)
    record.backbone = from_plain(BackboneInfo, built.backbones.info)  # the encoders' descriptions as EncoderInfo
    setup_s = time.perf_counter() - t0
    record.params = Params(**count_params(built.model))
    record.resident = resident_mb(built.model)
    trainer, outcome = _fit(run, cls, built.model, profiler, record)
    timing = outcome.timing()
    if run.dist is not None:  # before any traced steps add to the all-reduce counts
        record.distributed = rank_figures(run.dist, outcome, timing)
    if trainer.cfg.profile_steps > 0 and run.out_dir is not None:  # after the measured epochs: never in their times
        from benchmark.training.trace import trace_steps

        profiler.phase("trace")
        record.trace = trace_steps(trainer, trainer.cfg.profile_steps, Path(run.out_dir),
                                   f"{safe_name(run.name)}-{run.repeat}")
    record.cache = built.method.one_off()  # e.g. iisan-cached's cache: reported apart, not in setup_s
    one_off_s = (record.cache.build_s + record.cache.load_s) if record.cache else 0.0
    record.time = Timing(**timing, batch_size=batch_used(run.cfg, run.prep), setup_s=setup_s - one_off_s,
                         cache_build_s=record.cache.build_s if record.cache else None,
                         cache_load_s=record.cache.load_s if record.cache else None)
    m = record.metrics
    m.valid, m.test, m.best_epoch, m.history = outcome.valid, outcome.test, outcome.best_epoch, outcome.history
    record.energy = profiler.energy()
    name = record.env.device_name or ""
    if wants_estimate(run.cfg.run.estimate, run.device, name):  # after every measured figure
        from benchmark.launch.estimator import estimate_for_record

        record.estimate, record.flops = estimate_for_record(run.cfg, run.name, run.prep, name, timing["step_p50_s"])


def _fit(run: RunContext, cls, model, profiler, record: RunRecord):
    """The trainer for this device (compile mode, attention kernel resolved), fitted: (trainer, outcome)."""
    from benchmark.training.trainer import Trainer

    t = resolve_runtime(run.cfg.train, cls, run.device, data_parallel=run.dist is not None)
    trainer = Trainer(model, run.prep.split, t, run.cfg.eval, run.device, run.seed,
                      callbacks=[profiler], progress=run.progress, dist=run.dist)
    sdpa = choose_attention(trainer, t.sdpa_backend, run.name, run.cfg.where("train.sdpa_backend"), run.dist)
    trainer.sdpa_backend = sdpa.backend
    env = record.env
    env.compile, env.sdpa = t.compile, dataclasses.asdict(sdpa)
    env.grad_scaler = trainer.scaler.is_enabled()
    outcome = trainer.fit(run.cfg.run.epochs, t.patience)
    if trainer.sdpa_note:  # a kernel refused a call the probe did not meet: the run went on under default
        record.env.sdpa.update(backend="default", chosen_by="runtime-fallback", note=trainer.sdpa_note)
    return trainer, outcome


def batch_used(cfg: BenchConfig, prep: Prepared) -> int:
    """The batch a step trains on: ``train.batch_size``, or every training user when there are fewer."""
    return min(cfg.train.batch_size, prep.split.train.size(0))


def _build_rank0_first(run: RunContext, profiler):
    """The model; under DDP rank 0 builds first and the others after it, so a one-off cache (iisan-cached)
    is built once and loaded by the rest rather than raced for (``main_process_first``)."""
    from benchmark.launch.factory import build_model

    dist = run.dist
    if dist is not None and dist.rank != 0:
        dist.barrier()
    try:
        return build_model(run.cfg, run.name, run.prep.data, run.device, out_dir=run.out_dir, phase=profiler.phase)
    finally:  # even when the build failed: the others must not wait on rank 0 until the timeout
        if dist is not None and dist.rank == 0:
            dist.barrier()


def rank_figures(dist, outcome, timing: dict[str, Any]) -> Distributed:
    """This rank's own figures (``timing``: ``outcome.timing()``); the parent adds its peak memory
    and combines the ranks."""
    import statistics

    med = (lambda xs: statistics.median(xs) if xs else None)
    steps = sum(outcome.steps)
    rank = RankFigures(dist.rank, os.getpid(), *where(), list(outcome.epoch_s), timing["epoch_s_median"],
                       timing["eval_s"], allreduce_s_per_epoch=med(outcome.allreduce_s),
                       gather_s_per_epoch=med(outcome.gather_s))
    return Distributed(dist.world, dist.backend, torch.get_num_threads() if dist.backend == "gloo" else None,
                       dist.comm.allreduce_bytes / steps / 2**20 if steps else None, ranks=[rank])


def where() -> tuple[str, int]:
    """(host, node rank) of this rank: torchrun's GROUP_RANK, 0 for ranks one process forked."""
    import socket

    return socket.gethostname(), int(os.environ.get("GROUP_RANK", "0"))


def wants_estimate(setting: str, device: torch.device, device_name: str) -> bool:
    """``run.estimate``: on, off, or (auto) on a GPU the device table knows."""
    from benchmark.measure.devices import gpu_of

    if setting != "auto":
        return setting == "on"
    return device.type == "cuda" and gpu_of(device_name) is not None


def resolve_runtime(t, cls, device: torch.device, data_parallel: bool = False):
    """``train.compile`` as this method runs on this device: ``auto`` is the method's own choice on
    one GPU (``Method.auto_compile``) and off on CPU and under DDP (CUDA graphs around NCCL
    collectives are not verified here); an explicit mode is honoured."""
    mode = t.compile
    if mode == "auto":
        mode = (cls.auto_compile or "off") if device.type == "cuda" and not data_parallel else "off"
    return dataclasses.replace(t, compile=mode)


def choose_attention(trainer, setting: str, method: str, where: str, dist=None):
    """``train.sdpa_backend`` resolved by probing the run's own calls (``Trainer.probe_attention``)
    on three of its step shapes: the fewest distinct items, the median and the most. Under DDP rank
    0's choice is every rank's (timings differ by noise; the kernels must not)."""
    from benchmark.models.kernels import choose_sdpa_backend

    picks: list = []

    def probe(backend: str) -> float:
        if not picks:  # cut the epoch's batches only when a probe runs (never on CPU under auto)
            shapes = sorted(trainer.step_shapes(1).values(), key=lambda b: b.shape[1])
            picks.extend(shapes[i] for i in sorted({0, len(shapes) // 2, len(shapes) - 1}))
        return trainer.probe_attention(backend, picks)

    choice = choose_sdpa_backend(setting, trainer.device, probe, method, where)
    return choice if dist is None else dist.from_rank0(choice)
