"""Isolation: every (method, repeat) runs in its own fresh child process.

Why: the caching allocator, leftover tensors, lazily loaded kernels, ``ru_maxrss`` and Python's
heap all outlive a method inside one process, so a later method would be measured on top of an
earlier one. A fresh process per run measures each method alone.

How:

* The parent prepares the dataset once (load + tokenise), and writes it with the resolved config
  to ``OUT/.isolate-*/payload.pt`` (``torch.save``; deleted at the end). Each child memory-maps it
  (``torch.load(mmap=True)``: pages are read when touched and shared through the page cache, so a
  2.9 GB image table costs a child milliseconds, not a 15-21 s read; no re-tokenising, no
  tokenizer). The overhead is recorded per run in ``isolation``.
* The child is forked from a warm zygote that imported torch, transformers and peft once (Linux;
  elsewhere a fresh ``python -m benchmark.launch.child SPEC``; see ``benchmark.launch.launchers``): a fresh process
  with the environment set before torch sees CUDA, a pid the parent can watch, and an exit code
  that says how it died. It imports the modules that registered the selected methods (the
  class's module, plus ``IISAN_BENCH_IMPORTS``, with the parent's ``sys.path``), runs
  ``runner.run_method`` and writes its record as JSON to a file the parent reads.
* While it runs the parent samples it (RSS; NVML per-process and device memory once the child
  announces its GPU's UUID), tees its stderr file (progress bars stay visible; the tail is kept
  for the log of a child that dies), and learns its exit status and ``wait4`` peak RSS even when
  it was killed. A child that dies without a record becomes status
  ``failed`` with its exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.config import BenchConfig
from benchmark.launch.group import combine, wait_group
from benchmark.launch.launchers import STDERR_TAIL, ZYGOTE_LOST, FileTee, alive, child_env, end_process, launcher
from benchmark.launch.payload import extra_modules, save_payload
from benchmark.measure.nvml import Nvml
from benchmark.measure.phases import apply_samples, settle
from benchmark.measure.sampler import MB, SAMPLE_INTERVAL_S, ProcessSampler, warn
from core.cuda import ddp_backend
from core.errors import BenchError
from core.names import safe_name
from core.record import Env, Memory, RunRecord, Timeline


class ReadyHandle:
    """Polled by the sampler: the NVML handle of the GPU the child announced (by UUID) once CUDA
    was up; None before that, or when no NVML device has that UUID."""

    def __init__(self, path: Path, nvml: Nvml):
        self.path, self.nvml = path, nvml
        self.uuid: str | None = None
        self.done = False

    def __call__(self) -> Any:
        if self.done or not self.path.exists():
            return None
        self.done = True
        try:
            self.uuid = json.loads(self.path.read_text()).get("uuid")
        except (OSError, ValueError):
            return None
        return self.nvml.handle_for_uuid(self.uuid)


def exit_reason(rc: int) -> str:
    if rc == ZYGOTE_LOST:
        return "the zygote process that forks each run died, and this run's process with it (a new zygote runs the next)"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = " (the OS out-of-memory killer?)" if -rc == signal.SIGKILL else ""
        return f"child process killed by {name}{hint} (exit code {rc})"
    return f"child process exited with code {rc} without a result"


def _modules_for(name: str, cfg: BenchConfig) -> list[str]:
    from methods.registry import get_method_for

    mods = extra_modules()
    mod = get_method_for(name, cfg).__module__
    if mod != "__main__" and mod not in mods:
        mods.append(mod)
    return mods


OWNER = "owner.pid"


def clean_stale(out: Path, grace_s: float = 60.0) -> list[Path]:
    """Remove the ``.isolate-*`` folders of sweeps that are gone (a killed sweep's payload is GBs at
    paper scale); a folder without an owner file is left alone for ``grace_s`` (being created)."""
    removed = []
    for d in sorted(out.glob(".isolate-*")):
        try:
            pid = int((d / OWNER).read_text())
        except (OSError, ValueError):
            pid = None
        if (pid is not None and alive(pid)) or (pid is None and time.time() - d.stat().st_mtime < grace_s):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


class IsolatedRunner:
    """Runs (method, repeat) pairs in fresh children; one instance per sweep (``close()`` it)."""

    def __init__(self, cfg: BenchConfig, prep, device: torch.device, out: Path, progress: bool = True,
                 echo=print, interval: float = SAMPLE_INTERVAL_S, sample: bool = True, job=None):
        from benchmark.launch.ranks import Ranks

        self.cfg, self.prep, self.device, self.out = cfg, prep, device, Path(out)
        self.progress, self.echo, self.interval, self.sample = progress, echo, interval, sample
        world = cfg.run.nproc
        self.ranks = Ranks(world, cfg.run.pg_timeout_s, job) if world > 1 else None
        leader = self.ranks is None or self.ranks.leader
        if leader:
            for stale in clean_stale(self.out):
                echo(f"isolation: removed {stale}, left by a sweep that is gone")
        # only the job's rank 0 writes into OUT; the other workers keep their payload in the temp folder
        self.tmp = Path(tempfile.mkdtemp(prefix=".isolate-", dir=self.out if leader else None))
        (self.tmp / OWNER).write_text(str(os.getpid()))
        self.payload = self.tmp / "payload.pt"
        t0 = time.perf_counter()
        try:
            save_payload(self.payload, cfg, prep)
        except BenchError:
            shutil.rmtree(self.tmp, ignore_errors=True)  # nothing half-written stays behind
            raise
        self.payload_save_s = time.perf_counter() - t0
        self.payload_mb = self.payload.stat().st_size / MB
        self.nvml = Nvml.open() if device.type == "cuda" else None
        self.launcher = launcher(child_env())
        echo(f"isolation: dataset payload {self.payload_mb:.1f} MB written once in {self.payload_save_s:.2f}s; "
             f"{type(self.launcher).__name__} ready in {self.launcher.start_s:.1f}s")

    def close(self) -> None:
        self.launcher.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.nvml is not None:
            self.nvml.close()
            self.nvml = None

    def run(self, name: str, repeat: int) -> RunRecord | None:
        """One (method, repeat): one child, or this process's ranks of a DDP group (``launch.ranks``:
        all of them under ``--nproc``, its own under torchrun). None on a torchrun worker other than
        rank 0: its record went to rank 0."""
        ranks = self.ranks
        run_dir = Path(tempfile.mkdtemp(prefix=f"{safe_name(name)}-{repeat}-", dir=self.tmp))
        group = ranks.group() if ranks else ""
        procs: list[_Proc] = []
        try:
            for rank in (ranks.local if ranks else [0]):
                procs.append(self._spawn(name, repeat, run_dir, ranks.env(rank, group) if ranks else {}))
            if ranks is None:
                exits, first = {procs[0].pid: self.launcher.wait(procs[0].pid)}, None
            else:
                exits, first = wait_group(self.launcher, [p.pid for p in procs],
                                          peer_failed=lambda: ranks.peer_failed(group))
                if first is not None:
                    ranks.say_failed(group, ranks.local[[p.pid for p in procs].index(first)])
        except BaseException:  # Ctrl-C: take the children down with us, record nothing for them
            for p in procs:
                end_process(p.pid)
            raise
        finally:
            for p in procs:
                p.sampler.stop()
                p.tee.stop()
        try:
            recs = [self._collect(name, repeat, p, *exits[p.pid]) for p in procs]
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        if ranks is None:
            return recs[0]
        every = ranks.exchange(group, recs)
        if every is None:
            return None
        rec = combine(every, ddp_backend(self.device), first)
        if ranks.lost:  # a rank that vanished is the cause; its peers' broken collectives followed
            lost = ranks.lost[0]
            rec.status = "failed"
            rec.error = f"rank {lost} of {len(every)}: {every[lost].error}; rank 0 then: {every[0].error}"
        rec.distributed.nodes, rec.distributed.ranks_per_node = ranks.nodes, ranks.per_node
        rec.distributed.launcher = "torchrun" if ranks.job else "nproc"
        return rec

    def _spawn(self, name: str, repeat: int, run_dir: Path, env: dict[str, str]) -> "_Proc":
        tag = f"-rank{env['RANK']}" if env else ""
        result_path, ready_path = run_dir / f"result{tag}.json", run_dir / f"ready{tag}.json"
        spec = {"payload": str(self.payload), "method": name, "repeat": repeat, "out": str(self.out),
                "device": str(self.device), "progress": self.progress, "result": str(result_path),
                "ready": str(ready_path), "sys_path": [p for p in sys.path if p], "env": env}
        spec_path = run_dir / f"spec{tag}.json"
        spec_path.write_text(json.dumps(spec))
        stderr_path = run_dir / f"stderr{tag}.log"
        t_spawn = time.time()
        pid = self.launcher.spawn(spec_path, _modules_for(name, self.cfg), stderr_path)
        tee = FileTee(stderr_path)
        tee.start()
        ready = ReadyHandle(ready_path, self.nvml) if self.nvml is not None else None
        sampler = ProcessSampler(pid, self.interval, nvml=self.nvml, handle_source=ready)
        if self.sample:
            sampler.start()
        return _Proc(pid, t_spawn, result_path, tee, sampler, ready)

    def _collect(self, name: str, repeat: int, proc: "_Proc", rc: int, os_peak: float | None) -> RunRecord:
        """The record of one child that has ended, with what the parent saw of it."""
        wall_s = time.time() - proc.t_spawn
        out = _read_json(proc.result_path)
        if "bench_error" in out:
            raise BenchError(out["bench_error"])
        child = out.get("child") or {}
        rec = self._record(name, repeat, rc, proc.tee.text(), out)
        marks = [(proc.t_spawn, "startup")] + [tuple(m) for m in child.get("marks", [])]
        self._merge_memory(rec, proc.sampler, marks, child, os_peak)
        rec.env.pid, rec.env.parent_pid = proc.pid, os.getpid()
        t_ready = child.get("t_ready")
        rec.isolation = {
            "exit_code": rc, "wall_s": wall_s,
            # what isolation costs this run: the child's life minus setup + training + evaluation
            # (interpreter start, imports, payload load, CUDA start, exit)
            "overhead_s": wall_s - child["run_s"] if child.get("run_s") is not None else None,
            "child_startup_s": (t_ready - proc.t_spawn) if t_ready else None,  # spawn -> data loaded, CUDA up
            "payload_load_s": child.get("payload_load_s"),
            "payload_save_s": self.payload_save_s, "payload_mb": self.payload_mb,  # once per sweep
            "sampler_cpu_s": proc.sampler.cpu_s, "samples": len(proc.sampler.samples),
            "gpu_uuid": proc.ready.uuid if proc.ready is not None else None,
        }
        rec.timeline = Timeline(proc.t_spawn, marks, proc.sampler.samples)
        return rec

    def _record(self, name: str, repeat: int, rc: int, stderr: str, out: dict[str, Any]) -> RunRecord:
        """The child's record; or, when it wrote none, one that says how it died."""
        if "record" in out:
            rec = RunRecord.from_dict(out["record"])
            rec.traceback = out.get("traceback")
            if rc != 0 and rec.status == "ok":  # wrote a record, then died on the way out
                rec.status, rec.error = "failed", exit_reason(rc)
            return rec
        from benchmark.launch.recipe import method_config, new_record
        from methods.registry import get_method_for

        env = Env(device=self.device.type, python=sys.version.split()[0], torch=torch.__version__,
                  cuda=torch.version.cuda)
        rec = new_record(method_config(self.cfg, name), name, get_method_for(name, self.cfg).description, self.prep, env, repeat)
        early = out.get("early")
        if early:  # the child caught it before run_method
            rec.status, rec.error = early["status"], early["error"]
            rec.traceback = early.get("traceback") or stderr
        else:
            rec.status, rec.error = "failed", exit_reason(rc)
            rec.traceback = f"{exit_reason(rc)}\n--- last {STDERR_TAIL // 1024} KiB of the child's stderr ---\n{stderr}"
        return rec

    def _merge_memory(self, rec: RunRecord, sampler: ProcessSampler, marks: list[tuple[float, str]],
                      child: dict[str, Any], os_peak: float | None) -> None:
        """Add what the parent saw (phase-tagged samples, the OS's peaks) to what the child measured,
        then settle the headline (``phases.settle``, the one place that decides it)."""
        mem = rec.memory or Memory()
        apply_samples(mem, sampler.samples, marks)
        # ru_maxrss (from the child or wait4) carries the parent's high-water mark across exec:
        # recorded, never the headline
        mem.ru_maxrss_mb = max((v for v in (child.get("ru_maxrss_mb"), os_peak) if v is not None), default=None)
        mem.sample_interval_s = self.interval if self.sample else None
        if self.device.type == "cuda" and self.nvml is None:
            note = "NVML unavailable in the parent: no NVML peaks or timeline"
            mem.warnings.append(note)
            warn(note)
        rec.memory = settle(mem, self.device.type == "cuda")


@dataclass
class _Proc:
    """One started child: what the parent watches while it runs."""

    pid: int
    t_spawn: float
    result_path: Path
    tee: FileTee
    sampler: ProcessSampler
    ready: ReadyHandle | None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}
