"""The sweep: every selected (method, repeat) planned, resumed, launched (in a fresh child, or
in-process) and collected into OUT/results.jsonl, one record each.

Everything that can be checked before training (config, methods, device, output folder, data) is
checked first, so bad input never leaves a half-written results folder. One run itself is
``runner.run_method``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from pathlib import Path
from typing import Any

import torch

from benchmark.config import BenchConfig
from benchmark.launch.prepare import Prepared, prepare, resolve_device
from benchmark.launch.recipe import check_methods, method_names, run_hash
from benchmark.launch.runner import run_method
from benchmark.measure.results import append_result
from core.cuda import ddp_backend
from core.errors import BenchError
from core.names import safe_name
from core.record import Memory, RunRecord


def summary_line(rec: RunRecord) -> str:
    mem = rec.memory or Memory()
    if rec.status != "ok":
        peak = f" (peak {mem.peak_mb:.0f} MB {mem.source}, {mem.phase})" if mem.peak_mb is not None else ""
        log = f"; log {rec.log}" if rec.log else ""
        return f"{rec.method} r{rec.repeat}: {rec.status} -- {rec.error}{peak}{log}"
    test, pop = rec.metrics.test, rec.metrics.popularity["test"]
    k = next(iter(test)).split("@")[1]
    iso = rec.isolation or {}
    start = f"  child start {iso['child_startup_s']:.1f}s" if iso.get("child_startup_s") is not None else ""
    flagged = f"  {len(mem.violations)} memory check(s) failed" if mem.violations else ""
    return (f"{rec.method} r{rec.repeat}: ok  test HR@{k} {test[f'hr@{k}']:.4f} (popularity {pop[f'hr@{k}']:.4f})  "
            f"NDCG@{k} {test[f'ndcg@{k}']:.4f} (popularity {pop[f'ndcg@{k}']:.4f})  "
            f"epoch {rec.time.epoch_s_median:.2f}s  train peak {mem.peak_mb:.0f} MB "
            f"({mem.source})  trainable {rec.params.trainable / 1e6:.2f}M{start}{flagged}")


def _device_for(cfg: BenchConfig, local: int | None = None) -> torch.device:
    """``run.device`` resolved, and what it cannot do refused before anything runs: a data-parallel
    run needs a GPU per process (or a core per process on CPU: more ranks than cores only share
    them, and measure the sharing); a forced attention kernel must run on this device."""
    from benchmark.models.kernels import refused_on_cpu

    device = resolve_device(cfg.run.device)
    have, unit = (torch.cuda.device_count(), "GPUs") if device.type == "cuda" else (_cores(), "CPU cores")
    here = cfg.run.nproc if local is None else local  # the ranks on this machine (torchrun: per node)
    if here > have:
        raise cfg.blame(("run.nproc", "run.device"), f"'run.nproc' = {here} needs a process per "
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
    from benchmark.measure.sampler import write_timeline_csv

    world = f"-{rec.distributed.world_size}p" if rec.distributed is not None else ""  # beside the 1-process run's
    stem = f"{safe_name(rec.method)}-{rec.repeat}{world}"
    if rec.traceback:
        log = out / "logs" / f"{stem}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(rec.traceback)
        rec.log = os.path.relpath(log, out)
    keep_build_cost(rec)
    tl = rec.timeline
    if tl is not None and tl.samples and rec.memory is not None:
        csv_path = out / "memory" / f"{stem}.csv"
        rec.memory.samples_source = write_timeline_csv(csv_path, tl.samples, tl.t0, [tuple(m) for m in tl.marks],
                                                       device.type == "cuda")
        rec.memory.samples_csv = os.path.relpath(csv_path, out)
    return rec.to_dict()


def keep_build_cost(rec: RunRecord) -> None:
    """A cache this run built: its time and peak go beside it (``core.oneoff``) for the runs that load it."""
    from core.oneoff import BuildCost, write_build_cost

    c = rec.cache
    if c is None or c.status != "built" or not c.path or rec.status != "ok":
        return
    phase = rec.memory.phases.get("cache_build") if rec.memory else None
    c.built_s, c.built_peak_mb = c.build_s, phase.peak_mb if phase else None
    c.built_memory_source, c.built_on, c.built_at = rec.memory.source if rec.memory else None, rec.env.device_name, rec.timestamp
    write_build_cost(c.path, BuildCost(c.built_s, c.built_peak_mb, c.built_memory_source, c.built_on, c.built_at,
                                       rec.env.git_sha, rec.env.torch))


def write_tpme(cfg: BenchConfig, out: Path) -> None:
    """OUT/tpme.json: this sweep's TPME weights and where they came from, for the reporter (they are
    in no run's hash: a new weighting re-scores the runs already there, it trains none again)."""
    import json

    from core.atomic import atomic_write_text
    from core.names import TPME_FILE

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
    ok are added to ``failed`` (the CLI exits 1 for them). Under torchrun (``launch.job``) every
    worker runs its rank of each run; rank 0 plans, writes and reports, the others write nothing there.
    """
    from benchmark.launch.job import torchrun_job
    from benchmark.launch.payload import import_extra_modules
    from benchmark.launch.trackers import check_trackers, log_run
    from benchmark.measure.conditions import mark_root

    mark_root()  # the processes this sweep starts are its own, not "other load" (measure.conditions)
    import_extra_modules()  # IISAN_BENCH_IMPORTS: modules registering methods of one's own
    job = torchrun_job()
    cfg = for_job(cfg, job)
    names = method_names(cfg)
    check_methods(cfg, names)
    check_trackers(cfg)  # a tracker without its package: refused before anything runs
    device = _device_for(cfg, job.local_world if job else None)
    out = Path(cfg.run.out)
    prep = prepare(cfg)  # data errors surface before the output folder is touched
    results = out / "results.jsonl"
    leader = job is None or job.rank == 0
    todo = _plan(cfg, names, prep, device, results, force, echo) if leader else None
    isolated = _isolated(cfg, prep, device, out, progress, echo if leader else _quiet, job) if (
        cfg.run.isolate and (todo or not leader)) else None
    ranks = isolated.ranks if isolated is not None else None
    try:
        for name, repeat in (ranks.plan(todo) if ranks is not None else todo or []):
            if ranks is not None and not leader and ranks.stopped():
                break
            with disk_errors(out, f"{name} r{repeat}"):
                rec = isolated.run(name, repeat) if isolated is not None else run_method(
                    cfg, name, prep, device, repeat, out, progress)
                if rec is None:  # a torchrun worker's rank: its record went to rank 0
                    continue
                append_result(results, finish_record(rec, out, device))
            echo(summary_line(rec))
            log_run(cfg, rec, out, echo)
            if rec.status != "ok" and failed is not None:
                failed.append(f"{name} r{repeat} ({rec.status})")
            if ranks is not None and ranks.lost:
                _stop_lost(ranks, failed, echo)
                break
    except BaseException as exc:  # Ctrl-C, SIGTERM, a disk error: every other node stops too
        if ranks is not None:
            ranks.stop(f"rank {job.rank if job else 0} on {socket.gethostname()} stopped ({type(exc).__name__})")
        raise
    finally:
        if isolated is not None:
            isolated.close()
    return results


def _isolated(cfg: BenchConfig, prep, device, out: Path, progress: bool, echo, job):
    """The runner that forks each run (and under torchrun or --nproc, its ranks)."""
    from benchmark.launch.isolation import IsolatedRunner
    from benchmark.measure.sampler import default_interval_s

    with disk_errors(out, "the isolation payload"):
        return IsolatedRunner(cfg, prep, device, out, progress=progress, echo=echo,
                              interval=default_interval_s(device, cfg.run.sample_interval_ms), job=job)


def _quiet(*_args, **_kw) -> None:
    """A torchrun worker other than rank 0 says nothing of the sweep (rank 0 does)."""


def for_job(cfg: BenchConfig, job) -> BenchConfig:
    """Under torchrun the world is torchrun's: ``run.nproc`` becomes it (an explicit other value is refused)."""
    if job is None:
        return cfg
    if cfg.run.nproc not in (1, job.world):
        raise cfg.blame(("run.nproc",), f"'run.nproc' = {cfg.run.nproc} under torchrun, whose world is {job.world} "
                                        "processes: leave run.nproc at 1 (torchrun sets the world)")
    if not cfg.run.isolate:
        raise cfg.blame(("run.isolate",), "'run.isolate' = false under torchrun: each run's ranks are fresh child "
                                          "processes of torchrun's workers; set it to true")
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, nproc=job.world))


def _plan(cfg: BenchConfig, names: list[str], prep, device, results: Path, force: bool, echo) -> list[tuple[str, int]]:
    """What this sweep runs (resume skips what OUT already holds), after the output checks."""
    from benchmark.launch.outdir import check_comparable, check_out_dir, check_outputs, comparable_settings

    out = results.parent
    check_outputs(out)
    check_comparable(results, comparable_settings(cfg.to_dict(), device.type), force, echo)
    check_out_dir(out)
    write_tpme(cfg, out)
    done = set() if force else finished_runs(results)
    runs = [(n, r) for n in names for r in range(cfg.run.repeats)]
    todo = [(n, r) for n, r in runs if (n, r, run_hash(cfg, n)) not in done]
    _announce(cfg, prep, device, names, runs, todo, results, echo)
    return todo


def _stop_lost(ranks, failed: list[str] | None, echo) -> None:
    """A rank whose process or node died: the job cannot form its groups again, so it ends here."""
    why = f"rank(s) {', '.join(map(str, ranks.lost))} gone: the job stops (the report covers the runs so far)"
    echo(f"iisan-bench: {why}")
    ranks.stop(why)
    if failed is not None:
        failed.append(why)
