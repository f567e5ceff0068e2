"""Memory measurement that knows nothing of training: it only sees processes and devices.

* ``cuda_start`` starts CUDA in a process and measures the CUDA context (what the driver holds for
  the process outside the caching allocator), once per process and device.
* ``ProcessSampler`` watches one process from outside (or its own process, in-process mode):
  RSS and, on a GPU, NVML per-process and device memory, every 10 ms on GPU and 50 ms on CPU.
* ``write_timeline_csv`` writes the samples with their phases.

The trainer-facing half (phases, the headline, cross-checks) is ``benchmark.measure.phases``.
"""

from __future__ import annotations

import csv
import io
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psutil
import torch

from benchmark.measure.nvml import Nvml, torch_uuid
from core.cuda import synchronize

MB = 1024 * 1024
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
SAMPLE_INTERVAL_S = 0.01  # GPU: NVML is the only per-process view of the GPU, so sample it densely
# CPU: the peak is the kernel's own VmHWM (exact); samples only draw the timeline. On a 2-core box
# every wake-up of the sampler preempts a training thread: at 10 ms that cost +0.9..2% of epoch
# time, at 50 ms it is below the noise (docs/results/sampler-overhead-cpu.json).
# (SCHED_IDLE for the sampler was tried too: it starved the samples without a measurable gain.)
CPU_SAMPLE_INTERVAL_S = 0.05
CSV_MAX_ROWS = 4000  # longer timelines are decimated keeping each bucket's maximum


def default_interval_s(device: torch.device | str, configured_ms: float = 0.0) -> float:
    """Sampling interval for a run on ``device``: ``[run] sample_interval_ms`` if set, else by device."""
    if configured_ms > 0:
        return configured_ms / 1000.0
    return SAMPLE_INTERVAL_S if torch.device(device).type == "cuda" else CPU_SAMPLE_INTERVAL_S


def ru_maxrss_mb() -> float:
    """The OS's own peak RSS of this process (``ru_maxrss``: KiB on Linux, bytes on macOS).

    Caution: on Linux exec carries the old address space's high-water mark into ``ru_maxrss``,
    so a child started by fork/vfork + exec reports at least its *parent's* peak (measured: a
    13 MB child of a 613 MB parent says 613 MB). Kept for the record; ``vmhwm_mb`` is the headline.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024


def vmhwm_mb() -> float | None:
    """The kernel's peak RSS of this process's own address space (``VmHWM``; Linux), None elsewhere.
    Unlike ``ru_maxrss`` it starts afresh at exec and can be reset (``reset_hwm``)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_hwm() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: '5' to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def warn(message: str) -> None:
    print(f"iisan-bench: warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- CUDA start


@dataclass
class CudaStart:
    """What was learnt when CUDA started in this process."""

    uuid: str | None
    nvml: Nvml | None
    handle: Any
    context_mb: float | None
    context_source: str | None  # nvml-process | nvml-device-delta | None
    warnings: list[str] = field(default_factory=list)


_CUDA_STARTS: dict[str, CudaStart] = {}


def _cuda_probe(device: torch.device) -> torch.Tensor:
    """A tiny allocation: the context and the allocator's first block come into being."""
    probe = torch.empty(1, device=device)
    synchronize(device)
    return probe


def cuda_start(device: torch.device, nvml: Nvml | None = None) -> CudaStart:
    """Start CUDA on ``device`` and measure the context overhead (once per process and device).

    Other processes on the GPU are listed *before* this process creates its context, so the
    process itself is never mistaken for a neighbour. Context = NVML's used memory of this process
    after ``torch.cuda.init()`` and a tiny allocation, minus what the caching allocator reserved;
    where NVML has no per-process data (containers hide pids) the device's used memory before and
    after stands in. CUDA's lazy module loading can grow the context later; the NVML per-process
    peak (sampled from outside) covers that.
    """
    key = str(device)
    if key in _CUDA_STARTS:
        return _CUDA_STARTS[key]
    nvml = nvml if nvml is not None else Nvml.open()
    before: dict[str, tuple[list | None, float | None]] = {}
    if nvml is not None:
        for u, h in nvml.handles():
            before[u] = (nvml.processes(h), nvml.device_used_mb(h))
    torch.cuda.init()
    uuid = torch_uuid(device)
    handle = nvml.handle_for_uuid(uuid) if nvml is not None else None
    probe = _cuda_probe(device)
    reserved = torch.cuda.memory_reserved(device) / MB
    warnings: list[str] = []
    context = source = None
    if nvml is None:
        warnings.append("NVML unavailable (nvidia-ml-py missing or no driver access): no context, "
                        "NVML or energy numbers")
    elif handle is None:
        warnings.append(f"no NVML device has the UUID of {device} ({uuid}): no context, NVML or energy numbers")
    else:
        procs, used_before = before.get(uuid, (None, None))
        others = [(p, mb) for p, mb in procs or [] if p != os.getpid()]
        if others:
            desc = ", ".join(f"pid {p}" + (f" {mb:.0f} MB" if mb is not None else "") for p, mb in others[:5])
            warnings.append(f"{len(others)} other process(es) already use this GPU ({desc}): "
                            "memory and time may be disturbed")
        elif used_before is not None and used_before > 1024:
            warnings.append(f"the GPU already had {used_before:.0f} MB in use before this run "
                            "(processes NVML cannot list, e.g. in other containers)")
        mine = nvml.process_used_mb(handle, os.getpid())
        if mine is not None:
            context, source = mine - reserved, "nvml-process"
        else:
            after = nvml.device_used_mb(handle)
            if after is not None and used_before is not None:
                context, source = after - used_before - reserved, "nvml-device-delta"
        if context is not None and context < 0:
            warnings.append(f"context measurement came out negative ({context:.0f} MB, {source}); dropped")
            context = source = None
    del probe
    for w in warnings:
        warn(w)
    start = CudaStart(uuid, nvml, handle, context, source, warnings)
    _CUDA_STARTS[key] = start
    return start


# --------------------------------------------------------------------------- sampling


@dataclass
class Sample:
    t: float  # time.time()
    rss_mb: float | None
    process_mb: float | None = None  # NVML: this process's GPU memory
    device_mb: float | None = None  # NVML: the whole device's used memory


class ProcessSampler:
    """Samples one process every ``interval`` seconds in a daemon thread: RSS (psutil) and, once a
    GPU handle is known, NVML per-process and device memory.

    ``handle_source`` is polled until it returns a handle: an isolated child announces its GPU
    (by UUID) only once CUDA is up, and there is nothing to see on the GPU before that.
    ``cpu_s`` is the sampler thread's own CPU time (its overhead).
    """

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL_S, nvml: Nvml | None = None,
                 handle: Any = None, handle_source: Callable[[], Any] | None = None):
        self.pid, self.interval, self.nvml = pid, interval, nvml
        self.handle, self.handle_source = handle, handle_source
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self.cpu_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._statm: int | None = None  # Linux: /proc/PID/statm read in place (~1 us vs ~10 us via psutil)
        self._proc: psutil.Process | None = None
        try:
            self._statm = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
        except OSError:
            try:
                self._proc = psutil.Process(pid)
            except psutil.Error:
                pass

    def start(self) -> "ProcessSampler":
        self._thread = threading.Thread(target=self._loop, name=f"sampler-{self.pid}", daemon=True)
        self._thread.start()
        return self

    def rss_mb(self) -> float | None:
        """Resident set size in MB; None once the process is gone (a zombie reads 0)."""
        if self._statm is not None:
            try:
                return int(os.pread(self._statm, 128, 0).split()[1]) * PAGE / MB or None
            except (OSError, IndexError, ValueError):
                return None
        if self._proc is not None:
            try:
                return self._proc.memory_info().rss / MB or None
            except psutil.Error:
                return None
        return None

    def sample(self) -> Sample:
        rss = self.rss_mb()
        if self.handle is None and self.handle_source is not None and self.nvml is not None:
            self.handle = self.handle_source()
        s = Sample(time.time(), rss)
        if self.handle is not None and self.nvml is not None:
            s.process_mb = self.nvml.process_used_mb(self.handle, self.pid)
            s.device_mb = self.nvml.device_used_mb(self.handle)
        self.samples.append(s)
        return s

    def _loop(self) -> None:
        while True:
            c0 = time.thread_time()
            try:
                self.sample()
            except Exception as exc:  # a measurement thread must never die silently mid-run
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if len(self.errors) > 100:
                    break
            self.cpu_s += time.thread_time() - c0
            if self._stop.wait(self.interval):
                break

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.sample()  # one last look
        if self._statm is not None:
            os.close(self._statm)
            self._statm = None

    def peak(self, what: str) -> float | None:
        vals = [getattr(s, what) for s in self.samples if getattr(s, what) is not None]
        return max(vals) if vals else None


def timeline_column(samples: list[Sample], gpu: bool) -> str:
    """Which series the timeline's ``mb`` column shows: one source for the whole run."""
    if gpu:
        for col in ("process_mb", "device_mb"):
            if any(getattr(s, col) is not None for s in samples):
                return col
    return "rss_mb"


COLUMN_SOURCE = {"process_mb": "nvml-process", "device_mb": "nvml-device", "rss_mb": "rss"}


def _decimate(samples: list[Sample], col: str, max_rows: int) -> list[Sample]:
    """At most ``max_rows`` samples, keeping the maximum of each consecutive bucket (peaks survive)."""
    if len(samples) <= max_rows:
        return samples
    out = []
    step = len(samples) / max_rows
    for b in range(max_rows):
        bucket = samples[int(b * step):int((b + 1) * step)] or samples[int(b * step):int(b * step) + 1]
        out.append(max(bucket, key=lambda s: (getattr(s, col) is not None, getattr(s, col) or 0.0)))
    return out


def write_timeline_csv(path: Path, samples: list[Sample], t0: float, marks: list[tuple[float, str]],
                       gpu: bool, max_rows: int = CSV_MAX_ROWS) -> str:
    """Write ``t_s,mb,phase,rss_mb,nvml_process_mb,nvml_device_mb``; return the ``mb`` source.

    ``t_s`` counts from ``t0``; ``phase`` is the last mark at or before the sample (``startup``
    before the first mark).
    """
    from core.atomic import atomic_write_text

    col = timeline_column(samples, gpu)
    marks = sorted(marks)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["t_s", "mb", "phase", "rss_mb", "nvml_process_mb", "nvml_device_mb"])
    fmt = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    i, phase = 0, "startup"
    for s in _decimate(samples, col, max_rows):
        while i < len(marks) and marks[i][0] <= s.t:
            phase = marks[i][1]
            i += 1
        mb = getattr(s, col)
        if mb is None:
            continue
        w.writerow([f"{s.t - t0:.3f}", fmt(mb), phase, fmt(s.rss_mb), fmt(s.process_mb), fmt(s.device_mb)])
    atomic_write_text(path, buf.getvalue())
    return COLUMN_SOURCE[col]
