"""Phase-resolved memory: what a run holds while it sets up, builds a cache, trains and evaluates.

Why phases: the headline of an efficiency table is what the card must hold *to train*. Measured
over a whole run, the evaluation's item table (a thousand items through both encoders) or a
one-off cache build sets the peak instead (on an H100: iisan 25.2 GB whole-run vs 12.8 GB while
training; iisan-cached's cache build 21-23.5 GB vs 1.4 GB training). So every phase has its own
peaks, each reset at the phase's edges, and the headline is the ``train`` phase.

* ``MemoryProfiler`` is a trainer callback living where training runs (the isolated child, or
  the benchmark process when ``[run] isolate = false``). ``phase(name)`` closes the current phase
  (reads the allocator's peaks and, on GPU, the CUDA context now; on CPU the kernel's VmHWM) and
  opens the next (resets them). The trainer's epoch edges switch train <-> eval; the runner and
  a method (through ``BuildContext.phase``) mark ``cache_build`` and ``trace``.
* ``apply_samples`` folds sampler readings (NVML per process, RSS) into the phases by time.
* ``settle`` decides the headline and runs the cross-checks. It is the only place that does:
  the child's record and the parent's merge both end in it, and it is idempotent.
"""

from __future__ import annotations

import gc
import os
import statistics
import time

import torch

from benchmark.measure.sampler import (
    MB,
    SAMPLE_INTERVAL_S,
    ProcessSampler,
    Sample,
    cuda_start,
    reset_hwm,
    ru_maxrss_mb,
    vmhwm_mb,
)
from core.cuda import synchronize
from core.record import HEADLINE_PHASE, Check, Energy, Memory, PhaseMemory, Timeline

CHECK_TOLERANCE_MB = 4.0  # NVML and the allocator both count in 2 MiB pages


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def phase_at(marks: list[tuple[float, str]], t: float) -> str | None:
    """The phase a timestamp falls in: the last mark at or before it (None before the first)."""
    current = None
    for tm, name in marks:
        if tm > t:
            break
        current = name
    return current


def apply_samples(mem: Memory, samples: list[Sample], marks: list[tuple[float, str]]) -> None:
    """Fold sampled NVML per-process and RSS readings into the phases they fall in, and the
    whole-run peaks. Phases that exist only in the marks (the child died) are created."""
    marks = sorted(marks)
    for s in samples:
        mem.nvml_process_peak_mb = _max(mem.nvml_process_peak_mb, s.process_mb)
        mem.nvml_device_peak_mb = _max(mem.nvml_device_peak_mb, s.device_mb)
        mem.rss_peak_mb = _max(mem.rss_peak_mb, s.rss_mb)
        name = phase_at(marks, s.t)
        if name in (None, "startup", "done"):
            continue
        p = mem.phases.setdefault(name, PhaseMemory())
        p.nvml_process_peak_mb = _max(p.nvml_process_peak_mb, s.process_mb)
        p.rss_peak_mb = _max(p.rss_peak_mb, s.rss_mb)


def _phase_peak(p: PhaseMemory, gpu: bool, context: float | None) -> float | None:
    if not gpu:
        return p.rss_peak_mb
    if p.reserved_peak_mb is not None:
        return p.reserved_peak_mb + (context or 0.0)
    return p.nvml_process_peak_mb


def cross_checks(mem: Memory, interval_s: float | None) -> list[Check]:
    """Per phase: allocated <= NVML process peak <= reserved + context at the phase's end.

    The context grows after CUDA starts (lazily loaded kernels, cuBLAS/cuDNN workspaces), so the
    upper bound uses the context read at the end of the phase. A failed check is kept, not hidden:
    NVML is sampled, so a peak shorter than the interval can slip between two samples.
    """
    every = f"; NVML is sampled every {interval_s * 1000:.0f} ms and can miss a shorter peak" if interval_s else ""
    out = []
    for name, p in mem.phases.items():
        nvml = p.nvml_process_peak_mb
        if nvml is None or p.allocated_peak_mb is None or p.reserved_peak_mb is None:
            continue
        ctx = p.context_mb if p.context_mb is not None else mem.context_mb
        lo_ok = p.allocated_peak_mb <= nvml + CHECK_TOLERANCE_MB
        out.append(Check(name, "allocated <= nvml_process", lo_ok,
                         f"allocated {p.allocated_peak_mb:.0f} MB, NVML process {nvml:.0f} MB"
                         + ("" if lo_ok else every)))
        if ctx is not None:
            bound = p.reserved_peak_mb + ctx
            hi_ok = nvml <= bound + CHECK_TOLERANCE_MB
            out.append(Check(name, "nvml_process <= reserved + context", hi_ok,
                             f"NVML process {nvml:.0f} MB, reserved {p.reserved_peak_mb:.0f} + context "
                             f"{ctx:.0f} = {bound:.0f} MB" + ("" if hi_ok else "; the context grew inside the phase")))
    return out


def settle(mem: Memory, gpu: bool) -> Memory:
    """Decide every phase's peak, the headline (the train phase; the largest phase reached when a
    run never trained) and its source, and the cross-checks. Idempotent."""
    for name, p in mem.phases.items():
        p.peak_mb = _phase_peak(p, gpu, p.context_mb if p.context_mb is not None else mem.context_mb)
    train = mem.phases.get(HEADLINE_PHASE)
    mem.context_end_mb = train.context_mb if train is not None else mem.context_end_mb
    reached = [(p.peak_mb, n) for n, p in mem.phases.items() if p.peak_mb is not None]
    if train is not None and train.peak_mb is not None:
        mem.peak_mb, mem.phase = train.peak_mb, HEADLINE_PHASE
    elif reached:
        mem.peak_mb, mem.phase = max(reached)
    else:
        mem.peak_mb, mem.phase = None, None
    ph = mem.phases.get(mem.phase) if mem.phase else None
    if not gpu:
        if mem.peak_mb is None and mem.rss_peak_mb is not None:  # died before its first phase ended
            mem.peak_mb = mem.rss_peak_mb
        mem.source = "cpu-rss" if mem.peak_mb is not None else None
    elif ph is not None and ph.reserved_peak_mb is not None:
        known = (ph.context_mb if ph.context_mb is not None else mem.context_mb) is not None
        mem.source = "cuda" if known else "cuda-reserved"
    elif mem.peak_mb is not None:
        mem.source = "nvml-process"
    elif mem.nvml_process_peak_mb is not None:
        mem.peak_mb, mem.source = mem.nvml_process_peak_mb, "nvml-process"
    elif mem.nvml_device_peak_mb is not None:
        mem.peak_mb, mem.source = mem.nvml_device_peak_mb, "nvml-device"
    else:
        mem.source = None
    mem.checks = cross_checks(mem, mem.sample_interval_s) if gpu else []
    return mem


class MemoryProfiler:
    """Trainer callback: phase-resolved peaks from the first mark on, and energy per epoch.

    ``sample=True`` also samples this process from a thread (in-process runs); an isolated child
    passes ``sample=False`` because its parent samples it from outside.
    """

    def __init__(self, device: torch.device, sample: bool = True, interval: float = SAMPLE_INTERVAL_S):
        self.device = device
        self.gpu = device.type == "cuda"
        self.cuda = cuda_start(device) if self.gpu else None
        if self.cuda is not None:  # in-process runs: what an earlier method left cached is not ours
            gc.collect()
            torch.cuda.empty_cache()
        self.sampler: ProcessSampler | None = None
        if sample:
            nvml, handle = (self.cuda.nvml, self.cuda.handle) if self.cuda else (None, None)
            self.sampler = ProcessSampler(os.getpid(), interval, nvml=nvml, handle=handle).start()
        self.mem = Memory(context_mb=self.cuda.context_mb if self.cuda else None,
                          context_source=self.cuda.context_source if self.cuda else None,
                          warnings=list(self.cuda.warnings) if self.cuda else [],
                          alloc_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF") if self.gpu else None)
        self.marks: list[tuple[float, str]] = []
        self.current: str | None = None
        self._since = 0.0
        self._hwm_ok = False
        self._hwm_peak: float | None = None  # the kernel's peak RSS over the phases (reset at each edge)
        self.epoch_j: list[float | None] = []
        self._energy0: int | None = None
        self._done = False
        self.t0 = time.time()
        self.phase("setup")

    # ---------------------------------------------------------------- phases

    def context_now(self) -> float | None:
        """The CUDA context now: NVML's memory of this process minus what the allocator holds."""
        c = self.cuda
        if c is None or c.nvml is None or c.handle is None:
            return None
        used = c.nvml.process_used_mb(c.handle, os.getpid())
        return None if used is None else used - torch.cuda.memory_reserved(self.device) / MB

    def _close(self, now: float) -> None:
        p = self.mem.phases.setdefault(self.current, PhaseMemory())
        p.seconds += now - self._since
        if self.gpu:
            synchronize(self.device)
            p.allocated_peak_mb = _max(p.allocated_peak_mb, torch.cuda.max_memory_allocated(self.device) / MB)
            p.reserved_peak_mb = _max(p.reserved_peak_mb, torch.cuda.max_memory_reserved(self.device) / MB)
            ctx = self.context_now()
            p.context_mb = ctx if ctx is not None else p.context_mb
        elif self._hwm_ok:
            hwm = vmhwm_mb()
            p.rss_peak_mb = _max(p.rss_peak_mb, hwm)
            self._hwm_peak = _max(self._hwm_peak, hwm)

    def phase(self, name: str) -> None:
        """Close the current phase and open ``name`` (``done`` opens nothing)."""
        now = time.time()
        if self.current is not None and self.current != "done":
            self._close(now)
        self.marks.append((now, name))
        self.current, self._since = name, now
        if name == "done":
            return
        if self.gpu:
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._hwm_ok = reset_hwm()

    # ---------------------------------------------------------------- trainer callbacks

    def _energy(self) -> int | None:
        if self.cuda is None or self.cuda.nvml is None or self.cuda.handle is None:
            return None
        return self.cuda.nvml.energy_mj(self.cuda.handle)

    def on_train_start(self) -> None:
        pass  # the train phase opens at each epoch's start (Adam's state, born at step 1, counts)

    def on_epoch_start(self, epoch: int) -> None:
        self.phase("train")  # synchronises: earlier work must not count in this epoch's energy
        self._energy0 = self._energy()

    def on_epoch_end(self, epoch: int) -> None:
        # the trainer synchronised the device before calling this
        end = self._energy()
        self.epoch_j.append((end - self._energy0) / 1000 if end is not None and self._energy0 is not None else None)
        self.phase("eval")

    def energy(self) -> Energy:
        """``epoch_j``: median joules per epoch; ``per_epoch_j``: every epoch (null when unknown)."""
        per = self.epoch_j if self.epoch_j and all(j is not None for j in self.epoch_j) else None
        return Energy(statistics.median(per) if per else None, per)

    def result(self) -> Memory:
        """The memory section of the record (idempotent: the sampler stops at the first call)."""
        if self._done:
            return self.mem
        self._done = True
        self.phase("done")
        mem = self.mem
        if self.sampler is not None:
            self.sampler.stop()
            apply_samples(mem, self.sampler.samples, self.marks)
            mem.sample_interval_s = self.sampler.interval
        mem.ru_maxrss_mb = ru_maxrss_mb()
        mem.hwm_mb = self._hwm_peak
        return settle(mem, self.gpu)

    def timeline(self) -> Timeline:
        return Timeline(self.t0, list(self.marks), list(self.sampler.samples) if self.sampler else [])

