"""Phase-resolved memory (#11): per-phase peaks reset at the edges, the training phase as the
headline, cross-checks, the typed record across the child boundary. GPU paths run on the fake
NVML/CUDA of ``nvml_fake``; CPU paths on the real kernel counters."""

from __future__ import annotations

import mmap
import types

import pytest
import torch
from nvml_fake import UUID_B

from benchmark.launch.isolation import IsolatedRunner
from benchmark.measure import sampler as sampler_mod
from benchmark.measure.nvml import MB, Nvml
from benchmark.measure.phases import MemoryProfiler, apply_samples, settle
from benchmark.measure.sampler import Sample, cuda_start
from core.record import Check, DataSummary, Memory, PhaseMemory, RunRecord, Timing

CUDA = torch.device("cuda", 0)


def _set_peaks(fake_cuda: dict, allocated_mb: float, reserved_mb: float) -> None:
    fake_cuda["max_allocated"], fake_cuda["max_reserved"] = allocated_mb * MB, reserved_mb * MB


def test_eval_allocating_more_than_training_does_not_move_the_headline(nv, fake_cuda):
    cuda_start(CUDA, Nvml(nv))
    prof = MemoryProfiler(CUDA, sample=False)
    _set_peaks(fake_cuda, 1000, 1200)  # model build
    for epoch in (1, 2):
        prof.on_epoch_start(epoch)
        _set_peaks(fake_cuda, 5000, 6000)  # training
        prof.on_epoch_end(epoch)
        _set_peaks(fake_cuda, 11000, 12000)  # the evaluation's item table: twice training's
    mem = prof.result()
    assert [p for _, p in prof.marks] == ["setup", "train", "eval", "train", "eval", "done"]
    assert fake_cuda["resets"] == 5  # a reset at every phase edge
    context = 300.0  # the fake NVML sees 302 MB for this process, 2 MB of it the allocator's
    assert mem.phase == "train" and mem.source == "cuda"
    assert mem.peak_mb == 6000 + context
    assert mem.phases["eval"].peak_mb == 12000 + context and mem.phases["eval"].allocated_peak_mb == 11000
    assert mem.phases["setup"].reserved_peak_mb == 1200
    assert mem.context_mb == context and mem.context_end_mb == context


def test_the_context_read_at_the_end_of_training_bounds_nvml(nv, fake_cuda):
    cuda_start(CUDA, Nvml(nv))
    prof = MemoryProfiler(CUDA, sample=False)
    prof.on_epoch_start(1)
    procs = nv.devices[UUID_B]["procs"]
    procs[-1] = (procs[-1][0], 302 * MB + 250 * MB)  # cuBLAS/cuDNN workspaces grow the context by 250 MB
    prof.on_epoch_end(1)
    mem = prof.result()
    assert mem.context_mb == 300 and mem.context_end_mb == 550
    assert mem.peak_mb == 6000 + 550  # the headline holds the context as training left it


def test_a_violated_cross_check_is_flagged_not_hidden():
    mem = Memory(context_mb=300.0, sample_interval_s=0.01, phases={
        "train": PhaseMemory(allocated_peak_mb=5000, reserved_peak_mb=6000, context_mb=300, nvml_process_peak_mb=6200),
        "eval": PhaseMemory(allocated_peak_mb=5000, reserved_peak_mb=6000, context_mb=300, nvml_process_peak_mb=6700),
        "setup": PhaseMemory(allocated_peak_mb=900, reserved_peak_mb=1000, context_mb=300, nvml_process_peak_mb=800),
    })
    settle(mem, gpu=True)
    failed = {(c.phase, c.check) for c in mem.violations}
    assert failed == {("eval", "nvml_process <= reserved + context"), ("setup", "allocated <= nvml_process")}
    assert len(mem.checks) == 6
    assert "can miss a shorter peak" in next(c.detail for c in mem.violations if c.phase == "setup")
    assert settle(mem, gpu=True).checks == mem.checks  # idempotent


def test_a_run_that_never_trained_reports_the_largest_phase_it_reached():
    mem = settle(Memory(phases={"setup": PhaseMemory(rss_peak_mb=700.0),
                                "cache_build": PhaseMemory(rss_peak_mb=2100.0)}), gpu=False)
    assert (mem.peak_mb, mem.phase, mem.source) == (2100.0, "cache_build", "cpu-rss")
    died = settle(Memory(nvml_process_peak_mb=6400.0), gpu=True)
    assert (died.peak_mb, died.source) == (6400.0, "nvml-process")


def test_samples_land_in_the_phase_they_were_taken_in():
    t0 = 100.0
    marks = [(t0, "startup"), (t0 + 1, "setup"), (t0 + 2, "train"), (t0 + 3, "eval"), (t0 + 4, "done")]
    samples = [Sample(t0 + 0.5, 50.0, None), Sample(t0 + 1.5, 400.0, 1000.0), Sample(t0 + 2.5, 600.0, 3000.0),
               Sample(t0 + 3.5, 650.0, 9000.0), Sample(t0 + 4.5, 10.0, 50.0)]
    mem = Memory()
    apply_samples(mem, samples, marks)
    assert {k: (p.rss_peak_mb, p.nvml_process_peak_mb) for k, p in mem.phases.items()} == {
        "setup": (400.0, 1000.0), "train": (600.0, 3000.0), "eval": (650.0, 9000.0)}
    assert mem.nvml_process_peak_mb == 9000.0 and mem.rss_peak_mb == 650.0


def test_cpu_phases_read_the_kernel_peak_reset_at_each_edge():
    prof = MemoryProfiler(torch.device("cpu"), sample=False)
    prof.on_epoch_start(1)
    big = mmap.mmap(-1, 96 * MB)  # fresh pages (malloc could hand back ones already resident)
    big.write(b"x" * len(big))  # 96 MB touched while training
    big.close()
    prof.on_epoch_end(1)
    mem = prof.result()
    if sampler_mod.vmhwm_mb() is None or not sampler_mod.reset_hwm():
        pytest.skip("no VmHWM / clear_refs here")
    train, evaluation = mem.phases["train"].rss_peak_mb, mem.phases["eval"].rss_peak_mb
    assert train > evaluation + 64  # the peak was reset when evaluation began
    assert mem.peak_mb == train and mem.phase == "train" and mem.source == "cpu-rss"


def test_parent_merge_settles_the_childs_phases_with_its_samples(nv):
    runner = types.SimpleNamespace(device=CUDA, nvml=Nvml(nv), sample=True, interval=0.01)
    child_mem = Memory(context_mb=300.0, phases={
        "setup": PhaseMemory(allocated_peak_mb=900, reserved_peak_mb=1000, context_mb=300),
        "train": PhaseMemory(allocated_peak_mb=5000, reserved_peak_mb=6000, context_mb=320)})
    rec = RunRecord(method="m", memory=child_mem)
    t0 = 50.0
    marks = [(t0, "startup"), (t0 + 1, "setup"), (t0 + 2, "train"), (t0 + 3, "done")]
    sampler = types.SimpleNamespace(samples=[Sample(t0 + 1.5, 900.0, 1200.0, 2000.0),
                                             Sample(t0 + 2.5, 950.0, 6250.0, 7400.0)])
    IsolatedRunner._merge_memory(runner, rec, sampler, marks, {"ru_maxrss_mb": 3900.0}, 3950.0)
    mem = rec.memory
    assert mem.peak_mb == 6000 + 320 and mem.source == "cuda" and mem.context_end_mb == 320
    assert mem.phases["train"].nvml_process_peak_mb == 6250 and mem.nvml_device_peak_mb == 7400
    assert mem.ru_maxrss_mb == 3950 and not mem.violations
    crashed = RunRecord(method="m")  # the child died before its profiler said anything
    IsolatedRunner._merge_memory(runner, crashed, sampler, [(t0, "startup")], {}, None)
    assert (crashed.memory.peak_mb, crashed.memory.source) == (6250.0, "nvml-process")


def test_the_record_round_trips_through_json():
    import json

    rec = RunRecord(method="iisan-cached", repeat=1, data=DataSummary(name="synthetic"),
                    time=Timing(epoch_s=[1.0, 2.0], epoch_s_median=1.5, cache_build_s=3.0),
                    memory=Memory(peak_mb=10.0, phases={"train": PhaseMemory(peak_mb=10.0, seconds=2.0)},
                                  checks=[Check("train", "allocated <= nvml_process", False, "x")]),
                    traceback="not serialised")
    back = RunRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back.traceback is None and "traceback" not in rec.to_dict()
    rec.traceback = None
    assert back == rec and isinstance(back.memory.phases["train"], PhaseMemory)
    assert back.to_dict()["schema_version"] == 2
    assert RunRecord.from_dict({**rec.to_dict(), "from_the_future": 1}) == rec  # newer keys are ignored
    assert isinstance(back.data, DataSummary) and back.data.name == "synthetic"


def test_one_function_turns_an_exception_into_a_failed_record():
    try:
        raise torch.OutOfMemoryError("CUDA out of memory.\nTried to allocate 2 GiB")
    except torch.OutOfMemoryError as exc:
        rec = RunRecord(method="fft").fail(exc)
    assert rec.status == "oom" and rec.error == "OutOfMemoryError: Tried to allocate 2 GiB"
    assert "Traceback" in rec.traceback and "traceback" not in rec.to_dict()
    assert RunRecord(method="x").fail(ValueError("bad")).status == "failed"
