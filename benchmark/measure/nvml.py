"""NVML (nvidia-ml-py's ``pynvml``): device and per-process GPU memory, the energy counter.

A thin layer that never raises: no driver, no permission, a counter this GPU lacks, or a container
that hides per-process data all read as ``None`` ("unknown"), so a measurement degrades, it never
crashes a run. NVML devices are matched to torch devices by UUID, never by index: NVML enumerates
by PCI bus id while CUDA's default order is fastest-first (children also get
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so indices agree with ``nvidia-smi``).

Nothing here imports torch or touches CUDA, so the parent process can sample a child's GPU memory
without creating a CUDA context of its own.
"""

from __future__ import annotations

from typing import Any

MB = 1024 * 1024


def normalize_uuid(uuid: Any) -> str:
    """One spelling for a GPU UUID: NVML says 'GPU-8f3c...' (str or bytes), torch's
    ``get_device_properties(i).uuid`` prints '8f3c...' without the prefix."""
    if isinstance(uuid, (bytes, bytearray)):
        uuid = bytes(uuid).decode("ascii", "replace")
    text = str(uuid).strip().strip("\0").lower()
    for prefix in ("gpu-", "mig-"):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


def torch_uuid(device: Any) -> str | None:
    """Normalised UUID of a torch CUDA device (None when torch cannot tell)."""
    import torch

    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
        return normalize_uuid(torch.cuda.get_device_properties(index).uuid)
    except Exception:  # CPU build, old torch without .uuid, driver error
        return None


class Nvml:
    """An initialised NVML. Build it with :meth:`open` (None when NVML is unusable)."""

    def __init__(self, module: Any):
        self.nv = module
        # NVMLLibraryMismatchError (an unversioned call the driver lacks) is no NVMLError subclass
        self.error: tuple[type[BaseException], ...] = tuple(
            getattr(module, n) for n in ("NVMLError", "NVMLLibraryMismatchError") if hasattr(module, n)) or (Exception,)
        self._v2: bool | None = None if getattr(module, "nvmlMemory_v2", None) is not None else False

    @classmethod
    def open(cls) -> "Nvml | None":
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:  # NVMLError (no driver / library) or a loader error
            return None
        return cls(pynvml)

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:
            pass

    # ---------------------------------------------------------------- devices

    def handles(self) -> list[tuple[str, Any]]:
        """(normalised uuid, handle) of every device NVML can read."""
        try:
            n = self.nv.nvmlDeviceGetCount()
        except self.error:
            return []
        out = []
        for i in range(n):
            try:
                h = self.nv.nvmlDeviceGetHandleByIndex(i)
                out.append((normalize_uuid(self.nv.nvmlDeviceGetUUID(h)), h))
            except self.error:
                continue
        return out

    def handle_for_uuid(self, uuid: Any) -> Any | None:
        """The NVML handle of the device whose UUID is ``uuid`` (torch or NVML spelling), or None."""
        if not uuid:
            return None
        want = normalize_uuid(uuid)
        return next((h for u, h in self.handles() if u == want), None)

    # ---------------------------------------------------------------- memory

    def device_used_mb(self, handle: Any) -> float | None:
        """Memory in use on the whole device: the v2 API (which leaves out memory the driver
        reserves for itself) where the driver has it, else v1."""
        if self._v2 is not False:
            try:
                used = self.nv.nvmlDeviceGetMemoryInfo(handle, version=self.nv.nvmlMemory_v2).used
                self._v2 = True
                return used / MB
            except (*self.error, TypeError, AttributeError):
                if self._v2 is None:  # never worked: an old driver or binding; stop trying
                    self._v2 = False
                else:
                    return None
        try:
            return self.nv.nvmlDeviceGetMemoryInfo(handle).used / MB
        except self.error:
            return None

    def processes(self, handle: Any) -> list[tuple[int, float | None]] | None:
        """(pid, used MB or None) of every compute process on the device; None when NVML refuses."""
        try:
            procs = self.nv.nvmlDeviceGetComputeRunningProcesses(handle)
        except self.error as exc:
            v2 = getattr(self.nv, "nvmlDeviceGetComputeRunningProcesses_v2", None)
            mismatch = getattr(self.nv, "NVMLLibraryMismatchError", None)
            if mismatch is None or not isinstance(exc, mismatch) or v2 is None:
                return None
            try:  # an older driver: the v2 struct
                procs = v2(handle)
            except self.error:
                return None
        out = []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            out.append((int(p.pid), None if used is None else used / MB))
        return out

    def process_used_mb(self, handle: Any, pid: int) -> float | None:
        """GPU memory used by process ``pid``; None when NVML cannot say (error, no per-process
        accounting, or a pid namespace that hides the process: containers report host pids)."""
        procs = self.processes(handle)
        if procs is None:
            return None
        mine = [mb for p, mb in procs if p == pid]
        if not mine or any(mb is None for mb in mine):
            return None
        return float(sum(mine))

    # ---------------------------------------------------------------- energy

    def energy_mj(self, handle: Any) -> int | None:
        """Total energy the device consumed since the driver loaded (mJ); None where unsupported."""
        try:
            return int(self.nv.nvmlDeviceGetTotalEnergyConsumption(handle))
        except self.error:
            return None

    # ---------------------------------------------------------------- conditions

    def _read(self, fn: str, *args: Any) -> Any:
        """One NVML query, None where this driver or binding lacks it."""
        try:
            value = getattr(self.nv, fn)(*args)
        except (*self.error, AttributeError, TypeError):
            return None
        return value.decode() if isinstance(value, bytes) else value

    def device_state(self, handle: Any) -> dict[str, Any]:
        """Clocks, power limit, memory and driver of one device: what makes two runs comparable."""
        clock = lambda fn, kind: self._read(fn, handle, getattr(self.nv, kind, None))  # noqa: E731
        mem = self._read("nvmlDeviceGetMemoryInfo", handle)
        limit = self._read("nvmlDeviceGetEnforcedPowerLimit", handle)
        return {"name": self._read("nvmlDeviceGetName", handle), "driver": self._read("nvmlSystemGetDriverVersion"),
                "memory_total_mb": None if mem is None else mem.total / MB,
                "sm_clock_mhz": clock("nvmlDeviceGetClockInfo", "NVML_CLOCK_SM"),
                "sm_clock_max_mhz": clock("nvmlDeviceGetMaxClockInfo", "NVML_CLOCK_SM"),
                "mem_clock_mhz": clock("nvmlDeviceGetClockInfo", "NVML_CLOCK_MEM"),
                "power_limit_w": None if limit is None else limit / 1000.0}
