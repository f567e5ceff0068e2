"""``iisan-bench estimate``: the tracer's counts by hand, the CPU estimate against the real step's
tensors for every method, and the command's table, JSON and errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from benchmark.cli import main
from benchmark.launch.estimator import estimate_all, measure_cpu_step
from benchmark.config import load_config
from benchmark.measure.devices import gpu_named, gpu_of
from benchmark.measure.tracer import Tracer

MB = 2**20
SIX = ("fft", "lora", "adapter", "bitfit", "iisan", "iisan-cached")


def test_the_tracer_counts_a_step_by_hand():
    """y = relu(x @ w), summed, backward: weights 4 MB, input 1 MB; the matmul's output (1 MB) goes
    once relu has run, relu's saved output (1 MB) once its backward has; the peak is the weight's
    gradient (4 MB) made while relu's outgoing gradient (1 MB) is alive: 10 MB."""
    with FakeTensorMode():
        w = torch.nn.Parameter(torch.empty(1024, 1024))
        x = torch.empty(256, 1024)
        tracer = Tracer()
        tracer.hold([w], "weights")
        tracer.hold([x], "buffers")
        with tracer:
            y = (x @ w).relu().sum()
            tracer.phase = "backward"
            y.backward()
        trace = tracer.result(grads=[w.grad])
    got = {k: round(v / MB, 3) for k, v in trace.at_peak.items()}
    assert got == {"weights": 4.0, "buffers": 1.0, "gradients": 4.0, "optimizer": 0.0, "activations": 0.0,
                   "temporary": 1.0}
    assert trace.peak_bytes == pytest.approx(10 * MB, rel=1e-5)
    assert trace.flops == 2 * (2 * 256 * 1024 * 1024)  # forward mm, and the weight's gradient mm


@pytest.fixture(scope="module")
def default_cfg():
    return load_config(None, {"run": {"device": "cpu"}})


@pytest.mark.slow  # six real builds and steps beside six estimates: 19 s; CI runs it with the slow suite
def test_the_cpu_estimate_is_the_real_steps_tensors_for_every_method(default_cfg):
    """The embedded default: each method's estimate (meta-built, fake tensors) within 15% of its
    real training step (real weights, data and kernels), tensors alive at the peak."""
    for est in estimate_all(default_cfg, list(SIX), None):
        real, flops = measure_cpu_step(default_cfg, est.method)
        assert est.phases["train"].peak_gb == pytest.approx(real.peak_gb, rel=0.15), est.method
        assert est.flops_per_step == pytest.approx(flops, rel=1e-9), est.method  # torch's own count, real step
        assert est.step_s is None and est.max_batch is None  # no GPU: memory only


@pytest.mark.slow  # three traced estimates through the CLI: 10 s
def test_the_command_prints_json_and_a_table_and_a_bigger_card_fits_more(capsys):
    main(["estimate", "--methods", "fft,iisan-cached", "--gpu", "h200", "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert [r["method"] for r in rows] == ["fft", "iisan-cached"]
    for r in rows:
        assert r["train_gb"] > 0 and r["step_s"] > 0 and r["max_batch"] > 0 and r["device"] == "h200"
        assert set(r["phases"]["train"]) >= {"peak_gb", "weights", "gradients", "optimizer", "activations"}
    assert "cache_build" in rows[1]["phases"] and "cache_build" not in rows[0]["phases"]
    small = estimate_all(load_config(None, {}), ["fft"], gpu_named("rtx-4090"))[0]
    assert small.train_gb == pytest.approx(rows[0]["train_gb"])  # the same tensors and allowance, any card
    assert 0 < small.max_batch < rows[0]["max_batch"] and small.step_s >= rows[0]["step_s"]  # tiny: host-bound
    main(["estimate", "--methods", "fft", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.startswith("estimate for cpu:") and "\nfft " in out


def test_an_unknown_gpu_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["estimate", "--methods", "fft", "--gpu", "h900"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err == [
        "iisan-bench: error: --gpu: 'h900' is not a known GPU; known: h100-80gb, h200, a100-80gb, a100-40gb, "
        "l40s, rtx-4090, a10"]


def test_device_names_map_to_the_table():
    assert gpu_of("NVIDIA H100 80GB HBM3").name == "h100-80gb" and gpu_of("NVIDIA A10").name == "a10"
    assert gpu_of("NVIDIA A100-SXM4-80GB").name == "a100-80gb" and gpu_of("cpu") is None


def test_a_run_on_a_known_gpu_carries_its_estimate_and_mfu(tmp_path, monkeypatch):
    """``run.estimate``: the record holds the estimate for the device it ran on and the MFU of its
    median step against that device's peak; the report sets them beside the measurement. A fake
    table entry for this CPU stands in for a GPU's peak."""
    import platform

    from benchmark.launch.sweep import run_benchmark
    from benchmark.measure import devices
    from reports import build_report

    fake = devices.GPU("test-gpu", (platform.machine(),), 2e12, 2e12, 1e12, 1e11, 24.0)
    monkeypatch.setitem(devices.GPUS, "test-gpu", fake)
    cfg = load_config(None, {"run": {"methods": ["iisan-cached"], "epochs": 1, "isolate": False,
                                     "device": "cpu", "estimate": "on", "out": str(tmp_path / "out")},
                             "data": {"synthetic": {"users": 120, "items": 60}},
                             "train": {"max_steps_per_epoch": 5, "batch_size": 16},
                             "methods": {"iisan-cached": {"cache_dir": str(tmp_path / "cache")}}})
    path = run_benchmark(cfg, progress=False, echo=lambda *_: None)
    for rec in map(json.loads, path.read_text().splitlines()):
        est, flops = rec["estimate"], rec["flops"]
        assert rec["status"] == "ok" and est["device"] == "test-gpu" and est["train_gb"] > 0 and est["step_s"] > 0
        assert flops["device_peak"] == 1e12 and flops["precision"] == "fp32"  # the run's precision's peak
        assert flops["mfu"] == pytest.approx(flops["per_step"] / rec["time"]["step_p50_s"] / 1e12)
    text = build_report(path.parent).read_text()
    section = text.split("### Estimate vs measurement")[1]
    assert "| `iisan-cached` | test-gpu |" in section
    assert "| MFU |" in text


def test_the_earlier_designs_read_taps_the_same_states():
    """``WhatIf.all_hidden_states`` (the H100 comparison's IISAN) reads output_hidden_states as the
    earlier code did: more alive, the same tapped CLS states."""
    from tests.helpers import build, small

    model, _, _ = build(small(), "iisan")
    source, ids = model.item_tower.source, torch.arange(1, 9)
    hooks = source(ids)
    source.all_hidden_states = True
    old = source(ids)
    assert torch.equal(hooks[0], old[0]) and torch.equal(hooks[1], old[1])
