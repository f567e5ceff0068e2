"""Was the machine quiet? Other processes' CPU, other GPU processes, clocks and thread settings,
read at a run's start and end (``Conditions`` in the record).

Why the CPU other processes used, and not the load average: the load average is a 1-minute mean
that counts the run's own earlier work (and the sweep's previous runs), so a quiet machine reads
busy after any run. The CPU time every process outside this run's own process tree used over a
short window is the evidence the guide asks for (two torch processes on 2 cores: 5 s steps among
0.23 s ones), and it names the processes. The run's own tree is the sweep's root process
(``IISAN_BENCH_ROOT_PID``, inherited by every child and rank) and all its descendants.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

from core.record import Conditions, Snapshot

ROOT_ENV = "IISAN_BENCH_ROOT_PID"
WINDOW_S = 0.5
BUSY_CORES = 0.5  # other processes using half a core or more: the run shared its machine
TOP = 5


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


def _cpu_times() -> dict[int, tuple[str, float]]:
    out = {}
    for p in psutil.process_iter(["name", "cpu_times"]):
        t = p.info.get("cpu_times")
        if t is not None:
            out[p.pid] = (p.info.get("name") or "?", t.user + t.system)
    return out


def others_cpu(window_s: float = WINDOW_S) -> tuple[float, list[str]]:
    """Cores other processes used over ``window_s`` seconds, and the busiest of them."""
    before = _cpu_times()
    time.sleep(window_s)
    after = _cpu_times()
    ours = own_pids()
    used = [(after[p][1] - before[p][1], p, after[p][0]) for p in after if p in before and p not in ours]
    used = sorted((u for u in used if u[0] > 0), reverse=True)
    top = [f"{pid} {name}: {sec / window_s:.2f} cores" for sec, pid, name in used[:TOP]]
    return sum(u[0] for u in used) / window_s, top


def snapshot(when: str, gpu: Any = None, window_s: float = WINDOW_S) -> Snapshot:
    """One reading; ``gpu``: (Nvml, handle) of the run's device, or None on CPU."""
    cores, top = others_cpu(window_s)
    freq = psutil.cpu_freq()
    snap = Snapshot(when, os.getloadavg()[0], os.cpu_count(), round(cores, 3), window_s, top,
                    None if freq is None else freq.current)
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


def judge(snaps: list[Snapshot], busy_cores: float = BUSY_CORES) -> Conditions:
    """Busy when other processes used ``busy_cores`` or more at the start or end, or the GPU had
    another compute process; the evidence names them."""
    evidence = []
    for s in snaps:
        if s.others_cores is not None and s.others_cores >= busy_cores:
            evidence.append(f"at the {s.when}, other processes used {s.others_cores:.2f} of {s.cpu_count} cores "
                            f"({'; '.join(s.others_top[:3])})")
        if s.gpu_others:
            evidence.append(f"at the {s.when}, other processes on the GPU: {', '.join(s.gpu_others)}")
    return Conditions(busy=bool(evidence), evidence=evidence, snapshots=list(snaps))


class Watch:
    """A run's two snapshots: ``Watch.start(device, window_ms)`` before the build, ``finish()`` after
    evaluation. ``window_ms`` 0 (``run.quiet_check_ms``) takes none."""

    def __init__(self, device: Any, window_ms: float):
        self.window_s = window_ms / 1000.0
        self.snaps: list[Snapshot] = []
        self.gpu = _gpu_handle(device) if self.window_s > 0 and getattr(device, "type", "cpu") == "cuda" else None

    @classmethod
    def start(cls, device: Any, window_ms: float) -> "Watch":
        w = cls(device, window_ms)
        w._take("start")
        return w

    def _take(self, when: str) -> None:
        if self.window_s > 0:
            self.snaps.append(snapshot(when, self.gpu, self.window_s))

    def finish(self) -> Conditions | None:
        if self.window_s <= 0:
            return None
        self._take("end")
        out = judge(self.snaps)
        out.threads = threads()
        if self.gpu is not None:
            self.gpu[0].close()
        return out


def _gpu_handle(device: Any) -> tuple[Any, Any] | None:
    from benchmark.measure.nvml import Nvml, torch_uuid

    nvml = Nvml.open()
    if nvml is None:
        return None
    handle = nvml.handle_for_uuid(torch_uuid(device))
    return (nvml, handle) if handle is not None else None
