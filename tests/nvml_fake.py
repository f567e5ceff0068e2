"""A fake ``pynvml`` (nvidia-ml-py) and a fake CUDA device backed by it: no GPU here, so every
GPU path of the profiler is tested against these."""

from __future__ import annotations

import os
import types

import torch

from benchmark.measure import sampler as sampler_mod
from benchmark.measure.nvml import MB, normalize_uuid

UUID_A = "GPU-11111111-2222-3333-4444-555555555555"
UUID_B = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
OTHER_PID = 999_999


class FakeNVMLError(Exception):
    pass


class FakeMismatchError(Exception):  # pynvml's NVMLLibraryMismatchError is no NVMLError
    pass


class FakePynvml(types.ModuleType):
    """Enough of nvidia-ml-py's ``pynvml`` for the benchmark: devices whose state tests change."""

    NVMLError = FakeNVMLError
    NVMLLibraryMismatchError = FakeMismatchError
    nvmlMemory_v2 = 0x02000028

    def __init__(self, v2: bool = True, uuid_bytes: bool = False):
        super().__init__("pynvml")
        self.devices = {
            UUID_A: {"used": 1000 * MB, "procs": [], "energy": 0},
            UUID_B: {"used": 500 * MB, "procs": [], "energy": 0},
        }
        self.order = [UUID_A, UUID_B]  # NVML's (PCI bus) order
        self.v2, self.uuid_bytes = v2, uuid_bytes
        self.calls: list[str] = []

    def nvmlInit(self):
        self.calls.append("init")

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self):
        return len(self.order)

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("handle", self.order[i])

    def nvmlDeviceGetUUID(self, handle):
        return handle[1].encode() if self.uuid_bytes else handle[1]

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        self.calls.append(f"mem-v{2 if version else 1}")
        if version and not self.v2:
            raise FakeNVMLError("Function Not Found")
        return types.SimpleNamespace(used=self.devices[handle[1]]["used"], total=80_000 * MB)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        procs = self.devices[handle[1]]["procs"]
        if isinstance(procs, Exception):
            raise procs
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in procs]

    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

    def nvmlDeviceGetClockInfo(self, handle, kind):  # an H100 SXM running below its boost clock
        return {1: 1755, 2: 2619}[kind]

    def nvmlDeviceGetMaxClockInfo(self, handle, kind):
        return {1: 1980, 2: 2619}[kind]

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000  # mW

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlSystemGetDriverVersion(self):
        return "570.86.15"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        energy = self.devices[handle[1]]["energy"]
        if energy is None:
            raise FakeNVMLError("Not Supported")
        return energy


def install_fake_cuda(nv: FakePynvml, monkeypatch) -> dict:
    """A 'CUDA' device backed by the fake NVML: the probe allocation creates a 300 MB context
    plus a 2 MB allocator block, as seen by NVML for this process. Tests set ``max_reserved`` and
    ``max_allocated`` (MB x MB) per phase; ``resets`` counts peak resets."""
    me = os.getpid()
    state = {"reserved": 0, "max_reserved": 6000 * MB, "max_allocated": 5000 * MB, "resets": 0}
    state["proc"] = lambda: next(used for pid, used in nv.devices[UUID_B]["procs"] if pid == me)
    dev = nv.devices[UUID_B]
    dev["procs"] = [(OTHER_PID, 1000 * MB)]

    def probe(device):
        state["reserved"] = 2 * MB
        dev["procs"] = dev["procs"] + [(me, 302 * MB)]
        dev["used"] += 302 * MB

    monkeypatch.setattr(sampler_mod, "_cuda_probe", probe)
    monkeypatch.setattr(sampler_mod, "torch_uuid", lambda device: normalize_uuid(UUID_B))
    monkeypatch.setattr(sampler_mod, "_CUDA_STARTS", {})
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: state["reserved"])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: state["max_reserved"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["max_allocated"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats",
                        lambda device=None: state.__setitem__("resets", state["resets"] + 1))
    return state
