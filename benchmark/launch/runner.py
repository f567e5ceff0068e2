"""Run the selected methods on one dataset and write one result record per (method, repeat).

Data flows one way: config -> dataset -> method's item tower -> trainer -> profiler -> results.
Everything that can be checked before training (config, methods, device, output folder, data) is
checked first, so bad input never leaves a half-written results folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import torch

from benchmark.config import BenchConfig
from benchmark.launch.prepare import Prepared, prepare, resolve_device, seed_everything
from benchmark.launch.recipe import check_methods, method_config, method_names, new_record, run_hash
from benchmark.measure.record import Distributed, Memory, Params, RankFigures, RunRecord, Timing
from benchmark.measure.results import append_result, env_info
from iisan_util.cuda import ddp_backend
from iisan_util.errors import BenchError
from iisan_util.names import safe_name


def check_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"run.out: cannot write to output directory '{out}': {exc.strerror or exc}") from None


def run_method(cfg: BenchConfig, name: str, prep: Prepared, device: torch.device, repeat: int = 0,
               out_dir: Path | None = None, progress: bool = True, *, sample_memory: bool = True,
               dist=None) -> RunRecord:
    """Build, train and evaluate one method; failures become a result, never a crash.

    ``sample_memory=False`` in an isolated child: its parent samples it from outside. ``dist``: this
    process's rank of a data-parallel group (``training.distributed.DistContext``); its record
    carries this rank's own figures, which the parent combines. The record's transient
    ``timeline`` and ``traceback`` are for the runner and never reach results.jsonl.
    """
    from benchmark.measure.phases import MemoryProfiler
    from benchmark.measure.profiler import default_interval_s
    from methods.registry import get_method_for

    cfg = method_config(cfg, name)
    cls = get_method_for(name, cfg)
    record = new_record(cfg, name, cls.description, prep, {**env_info(device), "pid": os.getpid()}, repeat)
    profiler = None
    try:
        seed_everything(cfg.run.seed + repeat)
        # before the build: an OOM while building still has its memory timeline
        profiler = MemoryProfiler(device, sample=sample_memory,
                                  interval=default_interval_s(device, cfg.run.sample_interval_ms))
        _train_and_evaluate(cfg, name, cls, prep, device, repeat, out_dir, progress, profiler, record, dist)
    except BenchError:
        if profiler is not None:
            profiler.result()  # stop the sampler thread
        raise
    except Exception as exc:  # a failing method (or an OOM: its peak is still recorded) is a result
        record.fail(exc)
        if dist is not None:  # when: a rank's failure breaks its peers' collectives a moment later
            record.distributed = Distributed(dist.world, dist.backend,
                                             ranks=[RankFigures(dist.rank, os.getpid(), failed_at=time.time())])
    if profiler is not None:
        record.memory = profiler.result()
        record.timeline = profiler.timeline()
    return record


def _train_and_evaluate(cfg: BenchConfig, name: str, cls, prep: Prepared, device: torch.device, repeat: int,
                        out_dir: Path | None, progress: bool, profiler, record: RunRecord, dist=None) -> None:
    from benchmark.launch.factory import count_params, resident_mb
    from benchmark.training.trainer import Trainer

    t0 = time.perf_counter()
    built = _build_rank0_first(cfg, name, prep, device, out_dir, profiler, dist)
    model, method, backbones = built.model, built.method, built.backbones
    record.backbone = backbones.info
    setup_s = time.perf_counter() - t0
    record.params = Params(**count_params(model))
    record.resident = resident_mb(model)
    t = resolve_runtime(cfg.train, cls, device, data_parallel=dist is not None)
    trainer = Trainer(model, prep.split, prep.data.n_items, t, cfg.eval, device, cfg.run.seed + repeat,
                      callbacks=[profiler], progress=progress, dist=dist)
    sdpa = choose_attention(trainer, t.sdpa_backend, name, cfg.where("train.sdpa_backend"), dist)
    trainer.sdpa_backend = sdpa.backend
    record.env.update(compile=t.compile, item_bucket=t.item_bucket, sdpa=dataclasses.asdict(sdpa))
    outcome = trainer.fit(cfg.run.epochs, t.patience)
    if trainer.sdpa_note:  # a kernel refused a call the probe did not meet: the run went on under default
        record.env["sdpa"].update(backend="default", chosen_by="runtime-fallback", note=trainer.sdpa_note)
    timing = outcome.timing()
    if dist is not None:  # before any traced steps add to the all-reduce counts
        record.distributed = rank_figures(dist, outcome, timing)
    if t.profile_steps > 0 and out_dir is not None:  # after the measured epochs: never in their times
        from benchmark.training.trace import trace_steps

        profiler.phase("trace")
        record.trace = trace_steps(trainer, t.profile_steps, Path(out_dir), f"{safe_name(name)}-{repeat}")
    record.cache = method.one_off()  # e.g. iisan-cached's cache: reported apart, not in setup_s
    one_off_s = (record.cache.build_s + record.cache.load_s) if record.cache else 0.0
    record.time = Timing(**timing, batch_size=batch_used(cfg, prep), setup_s=setup_s - one_off_s,
                         cache_build_s=record.cache.build_s if record.cache else None,
                         cache_load_s=record.cache.load_s if record.cache else None)
    record.metrics.update(valid=outcome.valid, test=outcome.test, best_epoch=outcome.best_epoch,
                          history=outcome.history)
    record.energy = profiler.energy()
    if wants_estimate(cfg.run.estimate, device, record.env.get("device_name") or ""):  # after every measured figure
        from benchmark.launch.estimator import estimate_for_record

        record.estimate, record.flops = estimate_for_record(cfg, name, prep, record.env.get("device_name") or "",
                                                            timing["step_p50_s"])


def batch_used(cfg: BenchConfig, prep: Prepared) -> int:
    """The batch a step trains on: ``train.batch_size``, or every training user when there are fewer."""
    return min(cfg.train.batch_size, prep.split.train.size(0))


def _build_rank0_first(cfg: BenchConfig, name: str, prep: Prepared, device: torch.device, out_dir, profiler, dist):
    """The model; under DDP rank 0 builds first and the others after it, so a one-off cache (iisan-cached)
    is built once and loaded by the rest rather than raced for (``main_process_first``)."""
    from benchmark.launch.factory import build_model

    if dist is not None and dist.rank != 0:
        dist.barrier()
    try:
        return build_model(cfg, name, prep.data, device, out_dir=out_dir, phase=profiler.phase)
    finally:  # even when the build failed: the others must not wait on rank 0 until the timeout
        if dist is not None and dist.rank == 0:
            dist.barrier()


def rank_figures(dist, outcome, timing: dict[str, Any]) -> Distributed:
    """This rank's own figures (``timing``: ``outcome.timing()``); the parent adds its peak memory
    and combines the ranks."""
    import statistics

    med = (lambda xs: statistics.median(xs) if xs else None)
    steps = sum(outcome.steps)
    rank = RankFigures(dist.rank, os.getpid(), list(outcome.epoch_s), timing["epoch_s_median"], timing["eval_s"],
                       allreduce_s_per_epoch=med(outcome.allreduce_s), gather_s_per_epoch=med(outcome.gather_s))
    return Distributed(dist.world, dist.backend, torch.get_num_threads() if dist.backend == "gloo" else None,
                       dist.comm.allreduce_bytes / steps / 2**20 if steps else None, ranks=[rank])


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


def summary_line(rec: RunRecord) -> str:
    mem = rec.memory or Memory()
    if rec.status != "ok":
        peak = f" (peak {mem.peak_mb:.0f} MB {mem.source}, {mem.phase})" if mem.peak_mb is not None else ""
        log = f"; log {rec.log}" if rec.log else ""
        return f"{rec.method} r{rec.repeat}: {rec.status} -- {rec.error}{peak}{log}"
    m, pop = rec.metrics, rec.metrics["popularity"]["test"]
    k = next(iter(m["test"])).split("@")[1]
    iso = rec.isolation or {}
    start = f"  child start {iso['child_startup_s']:.1f}s" if iso.get("child_startup_s") is not None else ""
    flagged = f"  {len(mem.violations)} memory check(s) failed" if mem.violations else ""
    return (f"{rec.method} r{rec.repeat}: ok  test HR@{k} {m['test'][f'hr@{k}']:.4f} (popularity {pop[f'hr@{k}']:.4f})  "
            f"NDCG@{k} {m['test'][f'ndcg@{k}']:.4f} (popularity {pop[f'ndcg@{k}']:.4f})  "
            f"epoch {rec.time.epoch_s_median:.2f}s  train peak {mem.peak_mb:.0f} MB "
            f"({mem.source})  trainable {rec.params.trainable / 1e6:.2f}M{start}{flagged}")


def _device_for(cfg: BenchConfig) -> torch.device:
    """``run.device`` resolved, and what it cannot do refused before anything runs: a data-parallel
    run needs a GPU per process (or a core per process on CPU: more ranks than cores only share
    them, and measure the sharing); a forced attention kernel must run on this device."""
    from benchmark.models.kernels import refused_on_cpu

    device = resolve_device(cfg.run.device)
    have, unit = (torch.cuda.device_count(), "GPUs") if device.type == "cuda" else (_cores(), "CPU cores")
    if cfg.run.nproc > have:
        raise cfg.blame(("run.nproc", "run.device"), f"'run.nproc' = {cfg.run.nproc} needs a process per "
                                                     f"{unit[:-1]}, this machine has {have} {unit}")
    why = refused_on_cpu(cfg.train.sdpa_backend) if device.type == "cpu" else None
    if why:
        raise cfg.blame(("train.sdpa_backend",), f"'train.sdpa_backend' = '{cfg.train.sdpa_backend}' cannot run "
                                                 f"masked attention on cpu ({why}); use 'auto', 'default' or 'math'")
    if device.type == "cpu" and cfg.train.precision == "fp16":
        echo_warning(f"{cfg.where('train.precision')}: 'train.precision' = 'fp16' on cpu: no fp16 matmul kernels "
                     f"there (evaluation ran 10x slower than bf16); bf16 or fp32 measure what a CPU does")
    return device


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def echo_warning(text: str) -> None:
    import sys

    print(f"iisan-bench: warning: {text}", file=sys.stderr)


def _process_plan(cfg: BenchConfig, device: torch.device) -> str:
    if cfg.run.nproc > 1:
        return f"{cfg.run.nproc} DDP processes per run ({ddp_backend(device)})"
    return "a fresh child process per run" if cfg.run.isolate else "in-process"


def finished_runs(results: Path) -> set[tuple[str, int, str]]:
    """(method, repeat, config_hash) of every ok run already in ``results`` (the resume key)."""
    from benchmark.measure.results import read_results

    try:
        recs = read_results(results)
    except (OSError, ValueError) as exc:
        raise BenchError(f"{results}: cannot read earlier results to resume ({exc}); use a fresh --out") from None
    return {(r.get("method"), r.get("repeat", 0), r.get("config_hash")) for r in recs if r.get("status") == "ok"}


@contextlib.contextmanager
def disk_errors(out: Path, what: str):
    """A file the sweep writes that cannot be written (a full disk, a folder where a file goes)
    ends the sweep in one line naming that file; every result appended before it stays."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or out
        raise BenchError(f"{where}: cannot write ({exc.strerror or exc}) for {what}; the results already "
                         f"in {out / 'results.jsonl'} are intact") from None


def finish_record(rec: RunRecord, out: Path, device: torch.device) -> dict[str, Any]:
    """Write the run's side files (traceback log, memory timeline CSV); the record as JSON-ready dict."""
    from benchmark.measure.profiler import write_timeline_csv

    world = f"-{rec.distributed.world_size}p" if rec.distributed is not None else ""  # beside the 1-process run's
    stem = f"{safe_name(rec.method)}-{rec.repeat}{world}"
    if rec.traceback:
        log = out / "logs" / f"{stem}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(rec.traceback)
        rec.log = os.path.relpath(log, out)
    tl = rec.timeline
    if tl is not None and tl.samples and rec.memory is not None:
        csv_path = out / "memory" / f"{stem}.csv"
        rec.memory.samples_source = write_timeline_csv(csv_path, tl.samples, tl.t0, [tuple(m) for m in tl.marks],
                                                       device.type == "cuda")
        rec.memory.samples_csv = os.path.relpath(csv_path, out)
    return rec.to_dict()


def write_tpme(cfg: BenchConfig, out: Path) -> None:
    """OUT/tpme.json: this sweep's TPME weights and where they came from, for the reporter (they are
    in no run's hash: a new weighting re-scores the runs already there, it trains none again)."""
    import json

    from iisan_util.atomic import atomic_write_text
    from iisan_util.names import TPME_FILE

    keys = [f"tpme.{f.name}" for f in dataclasses.fields(cfg.tpme)]
    body = {**dataclasses.asdict(cfg.tpme), "source": cfg.where(*keys)}
    atomic_write_text(out / TPME_FILE, json.dumps(body, indent=1) + "\n")


def _announce(cfg: BenchConfig, prep: Prepared, device: torch.device, names: list[str], runs: list, todo: list,
              results: Path, echo) -> None:
    """The sweep's opening lines: what runs where, what the data make of the batch, what is skipped."""
    echo(f"dataset {prep.data.name}: {prep.data.n_users} users, {prep.data.n_items} items, "
         f"{prep.data.n_interactions} interactions; device {device}; methods {', '.join(names)}; "
         f"{cfg.run.repeats} repeat(s); {_process_plan(cfg, device)}")
    if cfg.train.batch_size > prep.split.train.size(0):
        echo(f"train.batch_size = {cfg.train.batch_size} ({cfg.where('train.batch_size')}) is more than the "
             f"{prep.split.train.size(0)} training users: every step trains on all of them (the records say so)")
    if len(todo) < len(runs):
        skipped = sorted({n for n, r in runs if (n, r) not in todo})
        echo(f"skipping {len(runs) - len(todo)} run(s) already in {results} with the same config "
             f"({', '.join(skipped)}); --force reruns them")


def run_benchmark(cfg: BenchConfig, progress: bool = True, echo=print, force: bool = False,
                  failed: list[str] | None = None) -> Path:
    """Run every selected (method, repeat) and append its record to OUT/results.jsonl.

    Runs already in OUT/results.jsonl with status ok and the same config hash are skipped unless
    ``force``; each finished run is appended under a lock, so an interrupted sweep loses only the
    run in flight. With ``[run] isolate`` every run is a fresh child process. Runs that did not end
    ok are added to ``failed`` (the CLI exits 1 for them).
    """
    from benchmark.launch.outdir import check_comparable, check_outputs, comparable_settings
    from benchmark.launch.payload import import_extra_modules

    import_extra_modules()  # IISAN_BENCH_IMPORTS: modules registering methods of one's own
    names = method_names(cfg)
    check_methods(cfg, names)
    device = _device_for(cfg)
    out = Path(cfg.run.out)
    prep = prepare(cfg)  # data errors surface before the output folder is touched
    results = out / "results.jsonl"
    check_outputs(out)
    check_comparable(results, comparable_settings(cfg.to_dict(), device.type), force, echo)
    check_out_dir(out)
    write_tpme(cfg, out)
    done = set() if force else finished_runs(results)
    runs = [(n, r) for n in names for r in range(cfg.run.repeats)]
    todo = [(n, r) for n, r in runs if (n, r, run_hash(cfg, n)) not in done]
    _announce(cfg, prep, device, names, runs, todo, results, echo)
    isolated = None
    if cfg.run.isolate and todo:
        from benchmark.launch.isolation import IsolatedRunner
        from benchmark.measure.profiler import default_interval_s

        with disk_errors(out, "the isolation payload"):
            isolated = IsolatedRunner(cfg, prep, device, out, progress=progress, echo=echo,
                                      interval=default_interval_s(device, cfg.run.sample_interval_ms))
    try:
        for name, repeat in todo:
            with disk_errors(out, f"{name} r{repeat}"):
                if isolated is not None:
                    rec = isolated.run(name, repeat)
                else:
                    rec = run_method(cfg, name, prep, device, repeat, out, progress)
                append_result(results, finish_record(rec, out, device))
            echo(summary_line(rec))
            if rec.status != "ok" and failed is not None:
                failed.append(f"{name} r{repeat} ({rec.status})")
    finally:
        if isolated is not None:
            isolated.close()
    return results
