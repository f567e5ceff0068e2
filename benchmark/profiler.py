"""Memory measurement, decoupled from training: it only sees the process and the device.

A ``MemoryProfiler`` is handed to the trainer as a callback: it resets peaks once the model is
built and before the first step (Adam's state is born at the first step: it counts), samples the
process's resident memory in a thread, and reads the allocator's peaks at the end.
"""

from __future__ import annotations

import threading
import time

import psutil
import torch

MB = 1024 * 1024


class RssSampler:
    """Samples this process's RSS every ``interval`` seconds in a daemon thread."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = psutil.Process()

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - self._t0, self._proc.memory_info().rss / MB))
            self._stop.wait(self.interval)

    def stop(self) -> float:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.samples.append((time.perf_counter() - self._t0, self._proc.memory_info().rss / MB))
        return max(mb for _, mb in self.samples)


class MemoryProfiler:
    """Trainer callback that measures peak memory from the first training step on."""

    def __init__(self, device: torch.device):
        self.device = device
        self.rss = RssSampler()

    def on_train_start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.rss.start()

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def on_epoch_end(self, epoch: int) -> None:
        pass

    def result(self) -> dict:
        rss_peak = self.rss.stop()
        if self.device.type == "cuda":
            alloc = torch.cuda.max_memory_allocated(self.device) / MB
            reserved = torch.cuda.max_memory_reserved(self.device) / MB
            return {"peak_mb": reserved, "source": "cuda-reserved", "allocated_peak_mb": alloc,
                    "reserved_peak_mb": reserved, "rss_peak_mb": rss_peak}
        return {"peak_mb": rss_peak, "source": "cpu-rss", "rss_peak_mb": rss_peak}

    def samples(self) -> list[tuple[float, float]]:
        return list(self.rss.samples)
