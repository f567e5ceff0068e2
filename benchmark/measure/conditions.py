"""Was the machine quiet? The CPU other processes used over a run, other GPU processes, clocks and
thread settings (``Conditions`` in the record).

Why the CPU time other processes used between the run's start and end, and not the load average or
a sampled window: the load average is a 1-minute mean that counts the run's own earlier work (and
the sweep's previous runs), so a quiet machine reads busy after any run; a short window at each edge
costs its length and misses what happens in between. Reading every process's CPU time at the start
and at the end costs two scans of /proc and covers the whole run; it names the processes (two torch
processes on 2 cores: 5 s steps among 0.23 s ones). A burst too short to move the average shows in
the run's step-time profile instead (``reports.stats``: bimodal steps). The run's own processes are
the sweep's root (``IISAN_BENCH_ROOT_PID``, inherited by every child and rank), all its descendants
and this process's ancestors, and under torchrun every process of the same job (its other nodes'
ranks may share this host).
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from core.record import Conditions, Snapshot

ROOT_ENV = "IISAN_BENCH_ROOT_PID"
JOB_ENV = "TORCHELASTIC_RUN_ID"  # torchrun's job id: every worker and its children carry it
BUSY_CORES = 0.5  # other processes using half a core or more on average: the run shared its machine
TOP = 5

CpuTimes = dict[tuple[int, float], tuple[str, float]]  # (pid, create time) -> (name, CPU seconds)


def mark_root() -> None:
    """The sweep's process is the root of the run's own tree (kept when a parent set it already)."""
    os.environ.setdefault(ROOT_ENV, str(os.getpid()))


def own_pids() -> set[int]:
    """This run's processes: the root (or this process), its descendants, and this process's ancestors."""
    me = psutil.Process()
    try:
        root = psutil.Process(int(os.environ.get(ROOT_ENV, me.pid)))
        tree = {root.pid} | {p.pid for p in root.children(recursive=True)}
    except (psutil.Error, ValueError):
        tree = {me.pid} | {p.pid for p in me.children(recursive=True)}
    return tree | {me.pid} | {p.pid for p in me.parents()}


def same_job(pid: int) -> bool:
    """A process of this torchrun job (its ``TORCHELASTIC_RUN_ID``): another node's rank on this host
    is the run itself, not other load."""
    run_id = os.environ.get(JOB_ENV)
    if not run_id:
        return False
    try:
        return psutil.Process(pid).environ().get(JOB_ENV) == run_id
    except psutil.Error:
        return False


def cpu_times() -> CpuTimes:
    """Every process's CPU seconds so far, keyed by (pid, create time) so a reused pid is another process."""
    out = {}
    for p in psutil.process_iter(["name", "cpu_times", "create_time"]):
        t = p.info.get("cpu_times")
        if t is not None:
            out[(p.pid, p.info.get("create_time") or 0.0)] = (p.info.get("name") or "?", t.user + t.system)
    return out


def others_between(before: CpuTimes, after: CpuTimes, span_s: float) -> tuple[float, list[str]]:
    """Cores other processes used on average over ``span_s``, and the busiest; a process the first
    scan did not see started after it and counts all its CPU time."""
    ours = own_pids()
    used = []
    for key, (name, cpu) in after.items():
        if key[0] in ours:
            continue
        used.append((cpu - before[key][1] if key in before else cpu, key[0], name))
    used = sorted((u for u in used if u[0] > 0 and not same_job(u[1])), reverse=True)
    span = max(span_s, 1e-6)
    return sum(u[0] for u in used) / span, [f"{pid} {name}: {sec / span:.2f} cores" for sec, pid, name in used[:TOP]]


def snapshot(when: str, gpu: Any = None) -> Snapshot:
    """One edge's reading; ``gpu``: (Nvml, handle) of the run's device, or None on CPU."""
    freq = psutil.cpu_freq()
    snap = Snapshot(when, os.getloadavg()[0], os.cpu_count(), None if freq is None else freq.current)
    if gpu is not None:
        nvml, handle = gpu
        ours = own_pids()
        procs = nvml.processes(handle)
        snap.gpu_others = None if procs is None else [
            f"{pid}: {'?' if mb is None else f'{mb:.0f} MB'}" for pid, mb in procs if pid not in ours]
        snap.gpu = nvml.device_state(handle)
    return snap


def threads() -> dict[str, Any]:
    import torch

    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    return {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(), **env}


def judge(cond: Conditions, busy_cores: float = BUSY_CORES) -> Conditions:
    """Busy when other processes used ``busy_cores`` or more on average over the run, or the GPU had
    another compute process at either edge; the evidence names them."""
    evidence = []
    if cond.others_cores is not None and cond.others_cores >= busy_cores:
        cores = cond.snapshots[0].cpu_count if cond.snapshots else None
        evidence.append(f"other processes used {cond.others_cores:.2f} of {cores} cores over the run's "
                        f"{cond.span_s:.1f} s ({'; '.join(cond.others_top[:3])})")
    for s in cond.snapshots:
        if s.gpu_others:
            evidence.append(f"at the {s.when}, other processes on the GPU: {', '.join(s.gpu_others)}")
    cond.busy, cond.evidence = bool(evidence), evidence
    return cond


class Watch:
    """A run's conditions: ``Watch.start(device, on)`` before the build, ``finish()`` after evaluation
    (``run.quiet_check``; off: None)."""

    def __init__(self, device: Any, on: bool):
        self.on = on
        self.snaps: list[Snapshot] = []
        self.gpu = _gpu_handle(device) if on and getattr(device, "type", "cpu") == "cuda" else None
        self.t0, self.before = time.perf_counter(), cpu_times() if on else {}

    @classmethod
    def start(cls, device: Any, on: bool) -> "Watch":
        w = cls(device, on)
        if on:
            w.snaps.append(snapshot("start", w.gpu))
        return w

    def finish(self) -> Conditions | None:
        if not self.on:
            return None
        span = time.perf_counter() - self.t0
        cores, top = others_between(self.before, cpu_times(), span)
        self.snaps.append(snapshot("end", self.gpu))
        if self.gpu is not None:
            self.gpu[0].close()
        return judge(Conditions(others_cores=round(cores, 3), span_s=round(span, 3), others_top=top,
                                threads=threads(), snapshots=self.snaps))


def _gpu_handle(device: Any) -> tuple[Any, Any] | None:
    from benchmark.measure.nvml import Nvml, torch_uuid

    nvml = Nvml.open()
    if nvml is None:
        return None
    handle = nvml.handle_for_uuid(torch_uuid(device))
    return (nvml, handle) if handle is not None else None
