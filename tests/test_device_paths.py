"""The GPU speed paths (#12), tested for their logic on CPU: the allocator setting a child gets,
the attention-kernel choice and its context, compile/capture of every step shape before the clock
(and the clean CPU fallback), frozen encoders in the compute dtype, the memory-mapped payload."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmark.config import load_config
from benchmark.launch import launchers as launch
from benchmark.launch import payload
from benchmark.launch.prepare import prepare
from benchmark.launch.runner import resolve_runtime
from benchmark.models import kernels
from benchmark.training.outcome import TrainOutcome
from methods.registry import get_method_for
from tests.helpers import build, small, trainer_for

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent


def test_children_train_with_expandable_segments_unless_the_user_chose(monkeypatch):
    assert launch.alloc_env({}) == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    assert launch.alloc_env({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}) == {}
    assert launch.alloc_env({"PYTORCH_ALLOC_CONF": "expandable_segments:False"}) == {}
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    assert launch.child_env()["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "garbage_collection_threshold:0.6")
    assert launch.child_env()["PYTORCH_CUDA_ALLOC_CONF"] == "garbage_collection_threshold:0.6"


@pytest.mark.parametrize("kind", ["ZygoteLauncher", "PopenLauncher"])
def test_both_launchers_run_a_child_in_its_environment_and_report_how_it_ended(kind, tmp_path):
    """The zygote forks a fresh child (no re-import) that sees the run's environment, and reports
    its exit code, a killing signal and its peak RSS, as a fresh interpreter does."""
    spec = tmp_path / "spec.json"
    probe = tmp_path / "env.json"
    spec.write_text(json.dumps({}))
    env = launch.child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")])
    env["LAUNCH_PROBE_OUT"] = str(probe)
    lau = getattr(launch, kind)(env)
    try:
        pid = lau.spawn(spec, ["launch_probe"], tmp_path / "err.log")
        code, peak = lau.wait(pid)
        seen = json.loads(probe.read_text())
        assert code == 0 and (peak is None or peak > 0)
        assert seen["pid"] == pid and seen["alloc"] == "expandable_segments:True" and seen["cuda_initialized"] is False
        assert seen["imports"] == "launch_probe"
        killed = lau.spawn(spec, ["launch_probe_sleep"], tmp_path / "err2.log")
        time.sleep(0.5)
        os.kill(killed, signal.SIGKILL)
        assert lau.wait(killed)[0] == -signal.SIGKILL
    finally:
        lau.close()


def test_the_attention_kernel_context_restricts_sdpa():
    q = torch.randn(2, 2, 8, 16)
    with kernels.sdpa_context("math"):
        assert torch.allclose(F.scaled_dot_product_attention(q, q, q),
                              torch.softmax(q @ q.transpose(-1, -2) / 4, -1) @ q, atol=1e-6)
    with kernels.sdpa_context("cudnn"), pytest.raises(RuntimeError) as refused:
        F.scaled_dot_product_attention(q, q, q)  # no cuDNN attention on CPU: the context is in force
    assert kernels.is_refusal(refused.value) and not kernels.is_refusal(RuntimeError("CUDA error: misaligned"))


def test_sdpa_backend_is_chosen_on_a_gpu_only_and_recorded(monkeypatch):
    def probe(backend):
        raise AssertionError("not probed")

    auto = kernels.choose_sdpa_backend("auto", CPU, probe, "fft")
    assert (auto.backend, auto.chosen_by) == ("default", "auto-fallback")
    assert kernels.choose_sdpa_backend("default", torch.device("cuda"), probe, "fft").chosen_by == "config"
    named = kernels.choose_sdpa_backend("math", torch.device("cuda"), lambda b: 0.1, "fft")
    assert (named.backend, named.chosen_by) == ("math", "config")
    times = {"cudnn": 0.3, "flash": 0.1, "efficient": 0.2, "math": 0.9}

    def no_flash(backend):
        if backend == "flash":
            raise RuntimeError("No available kernel.  Aborting execution.")
        return times[backend]

    picked = kernels.choose_sdpa_backend("auto", torch.device("cuda"), no_flash, "fft")
    assert (picked.backend, picked.chosen_by, picked.refused) == ("efficient", "auto", {"flash": "No available kernel.  Aborting execution."})
    assert picked.probe_ms == {"cudnn": 300.0, "flash": None, "efficient": 200.0, "math": 900.0}
    with pytest.raises(RuntimeError, match="illegal memory access"):  # a real failure is not a refusal
        kernels.choose_sdpa_backend("auto", torch.device("cuda"),
                                    lambda b: (_ for _ in ()).throw(RuntimeError("illegal memory access")), "fft")

    def math_oom(backend):
        if backend == "math":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.2 GiB")
        if backend == "cudnn":
            raise RuntimeError("cuDNN Frontend error: [cudnn_frontend] No valid execution plans built.")
        return times[backend]

    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)  # no CUDA here: what follows an OOM
    picked = kernels.choose_sdpa_backend("auto", torch.device("cuda"), math_oom, "fft")
    assert (picked.backend, sorted(picked.refused)) == ("flash", ["cudnn", "math"])  # an OOM only rules math out


def test_auto_compile_is_the_methods_choice_on_a_gpu_and_off_on_cpu(tmp_path):
    cfg = small(tmp_path)
    cuda = torch.device("cuda")  # resolving needs no GPU
    t = cfg.train
    for name, gpu_mode in (("iisan-cached", "reduce-overhead"), ("fft", "off"), ("iisan", "off")):
        cls = get_method_for(name, cfg)
        assert resolve_runtime(t, cls, cuda).compile == gpu_mode, name
        assert resolve_runtime(t, cls, CPU).compile == "off", name
        assert resolve_runtime(t, cls, cuda, data_parallel=True).compile == "off", name
    forced = dataclasses.replace(t, compile="default")
    assert resolve_runtime(forced, get_method_for("fft", cfg), CPU).compile == "default"


def test_every_step_shape_is_compiled_before_the_clock_and_the_random_state_kept(tmp_path):
    trainer, _ = trainer_for("iisan-cached", tmp_path, batch_size=16, compile="default", max_steps_per_epoch=6)
    calls = []
    eager = trainer.model.loss

    def counting(ids, log_pop, distinct):
        calls.append((ids.size(0), distinct[0].numel()))
        return eager(ids, log_pop, distinct)

    trainer.compiled.compiled = counting  # stands in for the compiled function: what matters is what it sees
    shapes = trainer.step_shapes(3)
    rng = torch.get_rng_state()
    out = TrainOutcome()
    trainer.compile_warmup(out, epochs=3)
    assert sorted(calls) == sorted(shapes) and len(calls) == len(set(calls)) == out.compile.compiled_shapes
    import torch._dynamo.config as dyn
    assert dyn.recompile_limit >= len(shapes) + 2  # no shape falls back to eager past dynamo's limit
    assert torch.equal(torch.get_rng_state(), rng)  # dropout draws of the warm-up are undone
    steps = [(b.ids.size(0), b.uniq.numel()) for e in (1, 2, 3)
             for b in trainer._epoch_batches(trainer._order(e), trainer.n_steps())]
    assert set(steps) == set(shapes)  # no step of the three epochs meets an uncompiled shape
    off, _ = trainer_for("iisan-cached", tmp_path, batch_size=16, compile="off")
    off.compile_warmup(out2 := TrainOutcome(), epochs=3)
    assert out2.compile.seconds == 0 and out2.compile.compiled_shapes == 0


def test_decoupled_methods_hold_frozen_encoders_in_the_compute_dtype(tmp_path):
    cfg = load_config(None, {"data": {"synthetic": {"users": 64, "items": 40}},
                             "train": {"precision": "bf16"},
                             "methods": {"iisan-cached": {"cache_dir": str(tmp_path), "cache_dtype": "fp32"}}})
    live, encoders, prep = build(cfg, "iisan")
    assert all(p.dtype == torch.bfloat16 for enc in encoders for p in enc.parameters())
    assert all(p.dtype == torch.float32 for p in live.item_tower.side.parameters())  # what trains stays fp32
    ids = torch.arange(1, 41)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = live.loss(prep.split.train[:8], torch.zeros(prep.data.n_items + 1))
        states = live.item_tower.source(ids)
    assert torch.isfinite(loss) and states[0].dtype == torch.bfloat16
    cached, _, _ = build(cfg, "iisan-cached")  # its cache is computed by bf16 encoders too
    text, image = cached.item_tower.source(ids)
    assert torch.equal(text, states[0].float()) and torch.equal(image, states[1].float())
    _, fft_encoders, _ = build(cfg, "fft")  # weights that train keep fp32
    assert all(p.dtype == torch.float32 for enc in fft_encoders for p in enc.parameters())


def test_a_child_memory_maps_the_payload(tmp_path):
    cfg = small()
    prep = prepare(cfg)
    path = tmp_path / "payload.pt"
    payload.save_payload(path, cfg, prep)
    cfg2, prep2 = payload.load_payload(path)
    with open("/proc/self/maps") as fh:
        assert str(path) in fh.read()  # mapped, not read into private memory
    assert torch.equal(prep2.data.images, prep.data.images) and cfg2 == cfg


@pytest.mark.slow  # floors, then a sweep: 12 s
def test_floors_time_the_same_work_and_the_report_sets_methods_against_them(tmp_path):
    from benchmark.cli import main
    from reports import build_report

    out = tmp_path / "f"
    cfg = ["--set", "data.synthetic.users=60", "--set", "data.synthetic.items=40", "--set", "train.batch_size=16",
           "--set", f"methods.iisan-cached.cache_dir={json.dumps(str(tmp_path))}"]
    main(["floors", "--out", str(out), "--steps", "1", *cfg])
    data = json.loads((out / "floors.json").read_text())
    assert data["items"] == 41 and data["steps_per_epoch"] == -(-60 // 16) == 4  # 40 items + padding: the cap
    for key in ("fft_step", "frozen_forward", "cached_step"):
        floor = data["floors"][key]
        assert floor["step_s"] > 0 and floor["epoch_s"] == pytest.approx(floor["step_s"] * 4), key
    assert data["env"]["device"] == "cpu"
    main(["run", "--methods", "fft,iisan-cached", "--epochs", "1", "--out", str(out), "--no-progress", *cfg])
    md = build_report(out).read_text()
    assert "### Distance from the plain-PyTorch floor" in md
    section = md.split("### Distance from the plain-PyTorch floor")[1].split("\n## ")[0]
    assert re.search(r"\| `fft` \| [^|]+ \| [^|]+ \| \d+\.\d\d× \| both encoders", section)
    assert re.search(r"\| `iisan-cached` \| [^|]+ \| [^|]+ \| \d+\.\d\d× \| side network", section)
    # same device, versions, commit, data and session: nothing differs but (on a shared machine) load
    from reports.floors import conditions_differ, read_floors
    from reports.load import load_results

    floors = read_floors(out)
    assert floors["data_sha256"] and floors["conditions"]["snapshots"][0]["when"] == "start"
    differs = conditions_differ(load_results(out / "results.jsonl"), floors)
    assert all("busy machine" in d for d in differs), differs


# --------------------------------------------------------------------------- on a real GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_real_gpu_sweep_measures_phases_and_passes_its_memory_cross_checks(tmp_path):
    """What the fakes above stand in for: on a real card every run is ok, its headline is the
    allocator's training peak, each phase has a peak, and allocated <= NVML process <= reserved +
    context holds at every phase edge (docs/gpu-session.md runs this first)."""
    from benchmark.launch.sweep import run_benchmark

    cfg = load_config(None, {"run": {"methods": ["fft", "iisan", "iisan-cached"], "epochs": 1, "device": "cuda",
                                     "out": str(tmp_path / "out")},
                             "train": {"max_steps_per_epoch": 4, "precision": "bf16"},
                             "methods": {"iisan-cached": {"cache_dir": str(tmp_path / "cache")}}})
    path = run_benchmark(cfg, progress=False, echo=lambda *_: None)
    for rec in map(json.loads, path.read_text().splitlines()):
        mem = rec["memory"]
        assert rec["status"] == "ok", (rec["method"], rec["error"])
        assert mem["source"] == "cuda" and mem["phase"] == "train", rec["method"]
        assert all(mem["phases"][p]["peak_mb"] > 0 for p in ("setup", "train", "eval")), mem["phases"]
        assert [c for c in mem["checks"] if not c["ok"]] == [], rec["method"]


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_train_under_nccl_ddp_one_gpu_per_rank(tmp_path):
    """``--nproc 2 --device cuda``: each rank on its own GPU (announced by UUID, sampled by NVML),
    NCCL, the allocator's training peak per rank, and the one-GPU metrics with dropout off."""
    from benchmark.launch.sweep import run_benchmark

    recs = {}
    for n in (1, 2):
        cfg = load_config(None, {"run": {"methods": ["iisan-cached", "lora"], "epochs": 1, "device": "cuda",
                                         "nproc": n, "out": str(tmp_path / f"p{n}")},
                                 "train": {"max_steps_per_epoch": 4, "dropout": 0.0, "compile": "off"},
                                 "methods": {"iisan-cached": {"cache_dir": str(tmp_path / "cache")}}})
        path = run_benchmark(cfg, progress=False, echo=lambda *_: None)
        recs[n] = {r["method"]: r for r in map(json.loads, path.read_text().splitlines())}
    for name, rec in recs[2].items():
        assert rec["status"] == "ok", (name, rec["error"])
        d = rec["distributed"]
        assert d["backend"] == "nccl" and [f["rank"] for f in d["ranks"]] == [0, 1]
        assert rec["memory"]["source"] == "cuda" and all(f["peak_mb"] > 0 for f in d["ranks"])
        if name == "iisan-cached":  # no backbone dropout: the same training as one GPU
            assert rec["metrics"]["test"] == pytest.approx(recs[1][name]["metrics"]["test"], abs=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_paper_protocol_trains_in_fp16_with_a_grad_scaler_on_a_gpu(tmp_path):
    """#25: under paper_protocol on CUDA every method trains with fp16 autocast and a GradScaler, and
    the record says so (config.resolved.train.precision, env.grad_scaler); losses stay finite."""
    from benchmark.launch.sweep import run_benchmark

    cfg = load_config(None, {"run": {"methods": ["fft", "adapter", "iisan", "iisan-cached"], "epochs": 1,
                                     "device": "cuda", "out": str(tmp_path / "out")},
                             "train": {"max_steps_per_epoch": 4, "paper_protocol": True},
                             "methods": {"iisan-cached": {"cache_dir": str(tmp_path / "cache")}}})
    path = run_benchmark(cfg, progress=False, echo=lambda *_: None)
    for rec in map(json.loads, path.read_text().splitlines()):
        assert rec["status"] == "ok", (rec["method"], rec["error"])
        assert rec["config"]["resolved"]["train"]["precision"] == "fp16" and rec["env"]["grad_scaler"] is True
