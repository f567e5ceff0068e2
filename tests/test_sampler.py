"""Memory and energy measurement against a fake ``pynvml`` (no GPU here): NVML peaks, per-process
filtering, missing per-process data, UUID matching, CUDA context, energy, the timeline CSV."""

from __future__ import annotations

import csv
import json
import os
import sys

import torch
from nvml_fake import OTHER_PID, UUID_A, UUID_B, FakeMismatchError, FakeNVMLError, FakePynvml

from benchmark.launch.isolation import ReadyHandle
from benchmark.measure.nvml import MB, Nvml, normalize_uuid
from benchmark.measure.sampler import ProcessSampler, Sample, cuda_start, write_timeline_csv

# ------------------------------------------------------------------------------- the NVML layer


def test_uuid_matching_by_normalised_uuid(nv):
    torch_style = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"  # str(get_device_properties(i).uuid)
    assert normalize_uuid(torch_style) == normalize_uuid(UUID_B) == normalize_uuid(UUID_B.encode() + b"\0")
    nvml = Nvml(nv)
    assert nvml.handle_for_uuid(torch_style) == ("handle", UUID_B)  # not index 0, whatever CUDA's order
    assert nvml.handle_for_uuid(UUID_A.upper().replace("GPU-", "")) == ("handle", UUID_A)
    assert nvml.handle_for_uuid("deadbeef-0000-0000-0000-000000000000") is None
    assert nvml.handle_for_uuid(None) is None
    assert Nvml(FakePynvml(uuid_bytes=True)).handle_for_uuid(torch_style) == ("handle", UUID_B)  # old bindings: bytes


def test_device_memory_prefers_v2_and_falls_back_to_v1(nv):
    assert Nvml(nv).device_used_mb(("handle", UUID_A)) == 1000
    assert nv.calls == ["mem-v2"]
    old = FakePynvml(v2=False)  # a driver without nvmlDeviceGetMemoryInfo_v2
    nvml = Nvml(old)
    assert nvml.device_used_mb(("handle", UUID_A)) == 1000
    assert nvml.device_used_mb(("handle", UUID_A)) == 1000
    assert old.calls == ["mem-v2", "mem-v1", "mem-v1"]  # v2 tried once, then never again


def test_binding_without_memory_v2_uses_v1(nv, monkeypatch):
    monkeypatch.delattr(FakePynvml, "nvmlMemory_v2")
    nvml = Nvml(nv)
    assert nvml.device_used_mb(("handle", UUID_B)) == 500 and nv.calls == ["mem-v1"]


def test_per_process_memory_is_filtered_by_pid_and_missing_data_is_none(nv):
    h = ("handle", UUID_A)
    nvml = Nvml(nv)
    nv.devices[UUID_A]["procs"] = [(OTHER_PID, 3000 * MB), (4242, 700 * MB)]
    assert nvml.process_used_mb(h, 4242) == 700
    assert nvml.process_used_mb(h, 1234) is None  # not (yet) on the GPU, or a hidden pid namespace
    nv.devices[UUID_A]["procs"] = [(4242, None)]  # NVML_VALUE_NOT_AVAILABLE: pynvml gives None
    assert nvml.process_used_mb(h, 4242) is None
    nv.devices[UUID_A]["procs"] = FakeNVMLError("No Permission")
    assert nvml.process_used_mb(h, 4242) is None and nvml.processes(h) is None


def test_driver_without_the_v3_process_call_falls_back_to_v2(nv, monkeypatch):
    def mismatch(handle):
        raise FakeMismatchError("Unversioned function called and the pyNVML version does not match")

    monkeypatch.setattr(nv, "nvmlDeviceGetComputeRunningProcesses", mismatch)
    nv.devices[UUID_A]["procs"] = [(4242, 700 * MB)]
    nvml = Nvml(nv)
    assert nvml.process_used_mb(("handle", UUID_A), 4242) is None  # no v2 either: unknown, no crash
    monkeypatch.setattr(nv, "nvmlDeviceGetComputeRunningProcesses_v2",
                        FakePynvml.nvmlDeviceGetComputeRunningProcesses.__get__(nv), raising=False)
    assert nvml.process_used_mb(("handle", UUID_A), 4242) == 700


def test_energy_counter_and_unsupported(nv):
    nv.devices[UUID_A]["energy"] = 123_456
    nvml = Nvml(nv)
    assert nvml.energy_mj(("handle", UUID_A)) == 123_456
    nv.devices[UUID_A]["energy"] = None
    assert nvml.energy_mj(("handle", UUID_A)) is None


def test_open_uses_the_pynvml_module_and_survives_a_missing_driver(nv, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    nvml = Nvml.open()
    assert nvml is not None and nvml.nv is nv and nv.calls == ["init"]

    def no_driver():
        raise FakeNVMLError("Driver Not Loaded")

    monkeypatch.setattr(nv, "nvmlInit", no_driver)
    assert Nvml.open() is None


# ------------------------------------------------------------------------------- sampling


def test_sampler_finds_the_childs_gpu_by_uuid_and_keeps_its_peaks(nv, tmp_path):
    """The parent's view of a child: no GPU handle until the child announces its UUID, then its
    own per-process memory (another process's is ignored) and the device's."""
    child = 4242
    nvml = Nvml(nv)
    ready = ReadyHandle(tmp_path / "ready.json", nvml)
    sampler = ProcessSampler(os.getpid(), nvml=nvml, handle_source=ready)
    sampler.pid = child  # sample RSS of this process but GPU memory of the "child"
    first = sampler.sample()
    assert first.process_mb is None and first.device_mb is None and first.rss_mb > 0

    (tmp_path / "ready.json").write_text(json.dumps({"uuid": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}))
    dev = nv.devices[UUID_B]
    for used, other in ((800, 100), (2400, 9000), (1600, 100)):
        dev["procs"] = [(child, used * MB), (OTHER_PID, other * MB)]
        dev["used"] = (used + other + 50) * MB
        sampler.sample()
    dev["procs"] = FakeNVMLError("Not Supported")  # per-process data can vanish: None, not a crash
    last = sampler.sample()
    assert last.process_mb is None and last.device_mb is not None
    assert ready.uuid.endswith("eeeeeeeeeeee") and sampler.handle == ("handle", UUID_B)
    assert sampler.peak("process_mb") == 2400  # the other process's 9000 MB never counts
    assert sampler.peak("device_mb") == 2400 + 9000 + 50
    assert sampler.peak("rss_mb") > 0


def test_sampler_thread_samples_every_interval_and_measures_its_cost():
    sampler = ProcessSampler(os.getpid(), interval=0.01).start()
    x = [bytearray(1024) for _ in range(20000)]  # some work while it samples
    import time

    deadline = time.time() + 30  # a count, not a rate: a loaded machine only makes it wait longer
    while len(sampler.samples) < 5 and time.time() < deadline:
        time.sleep(0.01)
    sampler.stop()
    del x
    assert len(sampler.samples) >= 5 and sampler.cpu_s > 0
    assert sampler._thread is None  # joined


def test_timeline_csv_phases_source_and_decimation_keep_the_peak(tmp_path):
    t0 = 1000.0
    samples = [Sample(t0 + i * 0.01, 100.0 + (500.0 if i == 777 else 0.0), None, None) for i in range(2000)]
    marks = [(t0 + 5.0, "setup"), (t0 + 10.0, "train"), (t0 + 15.0, "eval")]
    path = tmp_path / "memory" / "m-0.csv"
    assert write_timeline_csv(path, samples, t0, marks, gpu=False, max_rows=300) == "rss"
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["t_s", "mb", "phase", "rss_mb", "nvml_process_mb", "nvml_device_mb"]
    assert len(rows) <= 300 and max(float(r["mb"]) for r in rows) == 600.0
    assert [r["phase"] for r in rows][::100] == ["startup", "setup", "train"]
    gpu = [Sample(t0, 50.0, None, 900.0), Sample(t0 + 1, 60.0, 400.0, 1000.0)]
    assert write_timeline_csv(tmp_path / "g.csv", gpu, t0, [], gpu=True) == "nvml-process"
    assert (tmp_path / "g.csv").read_text().splitlines()[1].startswith("1.000,400.0,startup")


# ------------------------------------------------------------------------------- CUDA start, allocator, energy

def test_cuda_start_measures_the_context_and_warns_about_neighbours(nv, fake_cuda, capsys):
    start = cuda_start(torch.device("cuda", 0), Nvml(nv))
    assert start.handle == ("handle", UUID_B)
    assert start.context_mb == 300 and start.context_source == "nvml-process"
    assert len(start.warnings) == 1 and f"pid {OTHER_PID}" in start.warnings[0]  # itself is no neighbour
    assert "other process(es) already use this GPU" in capsys.readouterr().err
    assert cuda_start(torch.device("cuda", 0)) is start  # once per process


def test_cuda_context_falls_back_to_the_device_delta_without_per_process_data(nv, fake_cuda, monkeypatch):
    monkeypatch.setattr(nv, "nvmlDeviceGetComputeRunningProcesses",
                        lambda h: (_ for _ in ()).throw(FakeNVMLError("Not Supported")))
    start = cuda_start(torch.device("cuda", 0), Nvml(nv))
    assert start.context_mb == 300 and start.context_source == "nvml-device-delta"
    assert start.warnings == []  # nobody could be listed, and the device was nearly empty
