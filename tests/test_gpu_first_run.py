"""The defects a first GPU run would meet (#22), each reproduced on CPU: the attention-kernel probe,
image staging, CUDA-graph warm-up, the compile budget, fp32 ranking, one numeric path for cached
and live IISAN, and all-reduce time under NCCL. The CUDA-only part of each (a side-stream copy,
cudagraph trees, CUDA events) is swapped for a stand-in; the logic around it is the real code."""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
import torch

from benchmark.cli import main
from benchmark.launch.prepare import prepare
from benchmark.launch.runner import choose_attention
from benchmark.models import kernels
from benchmark.training import compiling
from core.errors import BenchError
from benchmark.training import distributed as D
from benchmark.training.metrics import target_ranks
from benchmark.training.trainer import TrainOutcome
from methods.base import FAKE_STAGING_ENV
from tests.helpers import build, small, trainer_for

SIX = ("fft", "lora", "adapter", "bitfit", "iisan", "iisan-cached")
GPU = torch.device("cuda")  # what the chooser is told: the probe itself runs the real calls on CPU


def _runs_training_and_evaluation(trainer) -> None:
    trainer.train_epoch(1, TrainOutcome(), max_steps=2)
    trainer.evaluate()


# --------------------------------------------------------------------------- 1. attention kernels


@pytest.mark.parametrize("name", SIX)
def test_every_kernel_the_probe_accepts_runs_the_methods_loss_and_evaluation(name, tmp_path):
    """The probe runs the method's own calls (SASRec's causal mask, BERT's padding mask, dropout):
    flash, which refuses masks, and the kernels CPU lacks are refused, with their reason; what
    ``auto`` picks, and every kernel the probe accepts, then trains and evaluates."""
    trainer, _ = trainer_for(name, tmp_path)
    choice = choose_attention(trainer, "auto", name, "test")  # on CPU: torch's default, unprobed
    assert (choice.backend, choice.chosen_by) == ("default", "auto-fallback")
    shapes = sorted(trainer.step_shapes(1).values(), key=lambda b: b.shape[1])
    choice = kernels.choose_sdpa_backend("auto", GPU, lambda b: trainer.probe_attention(b, shapes), name)
    assert choice.chosen_by == "auto" and choice.backend == "math"
    assert set(choice.refused) == {"cudnn", "flash", "efficient"} and choice.probe_ms["flash"] is None
    assert "No available kernel" in choice.refused["flash"]  # the training mask: bare attention would pass
    for backend in [b for b, ms in choice.probe_ms.items() if ms is not None]:
        trainer.sdpa_backend = backend
        _runs_training_and_evaluation(trainer)
        assert trainer.sdpa_backend == backend and trainer.sdpa_note is None


def test_the_probe_leaves_training_as_it_would_have_been(tmp_path):
    trainer, _ = trainer_for("iisan", tmp_path)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    rng = torch.get_rng_state()
    trainer.probe_attention("math", list(trainer.step_shapes(1).values())[:2])
    assert torch.equal(torch.get_rng_state(), rng) and trainer.model.training
    assert all(p.grad is None for p in trainer.model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def test_a_forced_kernel_that_cannot_run_a_method_is_one_line_at_start(tmp_path, capsys):
    out = tmp_path / "forced"
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--methods", "fft", "--out", str(out), "--no-progress", "--set", "run.isolate=false",
              "--set", "data.synthetic.users=60", "--set", "data.synthetic.items=40",
              "--set", 'train.sdpa_backend="flash"'])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("iisan-bench: error: --set train.sdpa_backend: 'train.sdpa_backend' = 'flash' cannot "
                             "run masked attention on cpu (No available kernel")
    assert not out.exists()  # refused before the data, the folder or a child (#29)


def test_a_kernel_refusing_a_call_mid_run_falls_back_and_the_record_says_why(tmp_path, monkeypatch):
    """A call the probe did not meet (here: nothing probed at all) never ends the run."""
    from benchmark.launch import runner

    monkeypatch.setattr(runner, "choose_attention", lambda *a, **k: kernels.SdpaChoice("flash", "config"))
    cfg = small(tmp_path)
    rec = runner.run_method(cfg, "fft", prepare(cfg), torch.device("cpu"), progress=False)
    assert rec.status == "ok", rec.error
    sdpa = rec.env.sdpa
    assert (sdpa["backend"], sdpa["chosen_by"]) == ("default", "runtime-fallback")
    assert sdpa["note"].startswith("'flash' refused a call mid-run (No available kernel")


# --------------------------------------------------------------------------- 2. image staging


def test_every_training_step_takes_the_images_staged_for_it(tmp_path, monkeypatch):
    """The trainer stages step k+1 before step k takes its own: a queue keyed by the step's ids
    gives every step its staged copy (a one-entry slot missed all but the last)."""
    monkeypatch.setenv(FAKE_STAGING_ENV, "1")
    for name in ("fft", "iisan"):
        trainer, _ = trainer_for(name, tmp_path, batch_size=8)
        out = TrainOutcome()
        trainer.train_epoch(1, out, max_steps=5)
        trainer.evaluate()  # the item table's unstaged calls are not training misses
        trainer.train_epoch(2, out, max_steps=5)
        assert (out.staged_hits, out.staged_misses) == (10, 0), name
        assert out.timing()["staged_hits"] == 10 and out.timing()["staged_misses"] == 0
    plain, _ = trainer_for("iisan-cached", tmp_path)  # nothing to stage: no figure
    plain.train_epoch(1, out := TrainOutcome(), max_steps=2)
    assert out.timing()["staged_hits"] is None


def test_a_data_parallel_rank_takes_the_images_of_its_own_slice(tmp_path, monkeypatch):
    """Each rank stages, and encodes, its share of the step's distinct items (``recommender.share``)."""
    monkeypatch.setenv(FAKE_STAGING_ENV, "1")
    trainer, _ = trainer_for("fft", tmp_path, item_bucket=1, batch_size=8)
    model = trainer.model
    shard = types.SimpleNamespace(rank=1, world=2, rows=lambda n: slice(n // 2, n),
                                  gather_rows=lambda t: torch.cat([torch.zeros_like(t), t]))
    trainer.dist = shard  # the batches pad their distinct items to a multiple of the world size
    batches = trainer._epoch_batches(trainer._order(1), 3)
    assert all(b.uniq.numel() % 2 == 0 for b in batches)
    model.prefetch(batches[0].host_uniq, batches[0].uniq, shard)
    for k, b in enumerate(batches):  # the trainer's order: stage the next, then encode this one
        if k + 1 < len(batches):
            model.prefetch(batches[k + 1].host_uniq, batches[k + 1].uniq, shard)
        model.encode_items(b.ids, (b.uniq, b.inverse), shard)
    assert model.staging_counts() == (3, 0)


# --------------------------------------------------------------------------- 3-4. compile warm-up


def test_cuda_graphs_are_recorded_and_replayed_before_the_clock(tmp_path, monkeypatch):
    trainer, _ = trainer_for("iisan-cached", tmp_path, batch_size=16, compile="default", max_steps_per_epoch=4)
    eager = trainer.model.loss
    calls: list[tuple[int, int]] = []
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))

    def counting(ids, log_pop, distinct):
        calls.append((ids.size(0), distinct[0].numel()))
        return eager(ids, log_pop, distinct)

    trainer.compiled.compiled = counting
    trainer.graphs = True  # what reduce-overhead on a GPU sets: cudagraph trees
    out = TrainOutcome()
    trainer.compile_warmup(out, epochs=1)
    shapes = list(trainer.step_shapes(1))
    assert calls == [s for s in shapes for _ in range(3)] and len(marks) == len(calls)
    assert out.compile.calls_per_shape == 3 == compiling.CUDA_GRAPH_CALLS and out.compile.compiled_shapes == len(shapes)
    assert compiling.warmup_calls(False) == 1


def test_past_the_compile_budget_the_other_shapes_run_eagerly():
    now = [0.0]
    seen: list[str] = []

    def step(fn, batch):
        seen.append(batch)
        now[0] += 10.0  # each shape's compile takes 10 s

    loss = compiling.CompiledLoss(eager="eager", compiled="compiled")
    shapes = {(16, 64): "a", (16, 128): "b", (16, 192): "c", (12, 64): "d"}
    rep = compiling.warm_up(loss, shapes, step, 1, budget_s=25.0, clock=lambda: now[0])
    assert seen == ["a", "b", "c"] and loss.ready == {(16, 64), (16, 128), (16, 192)}
    assert (rep.compiled_shapes, rep.eager_shapes, rep.seconds) == (3, 1, 30.0)
    assert "train.compile_budget_s" in rep.note and "3 of 4" in rep.note
    assert loss.pick((12, 64)) == "eager" and loss.pick((16, 64)) == "compiled"


def test_a_failed_compile_leaves_every_shape_eager():
    def step(fn, batch):
        if batch == "b":
            raise RuntimeError("inductor: something went wrong\nmore")

    loss = compiling.CompiledLoss(eager="eager", compiled="compiled")
    rep = compiling.warm_up(loss, {(1, 1): "a", (1, 2): "b", (1, 3): "c"}, step, 3, budget_s=60.0)
    assert loss.ready == set() and (rep.compiled_shapes, rep.eager_shapes) == (0, 3)
    assert rep.note == ("compiling step shape (1, 2) failed (RuntimeError: inductor: something went wrong); "
                        "every shape runs eagerly")


def test_a_spent_compile_budget_still_trains_and_the_record_says_so(tmp_path):
    from benchmark.launch import runner

    cfg = small(tmp_path, train={"compile": "default", "compile_budget_s": 1e-9, "batch_size": 8,
                                 "max_steps_per_epoch": 6})
    prep = prepare(cfg)
    rec = runner.run_method(cfg, "iisan-cached", prep, torch.device("cpu"), progress=False)
    assert rec.status == "ok", rec.error
    t = rec.time
    assert t.compiled_shapes is None and t.compile_eager_shapes >= 1 and "compile_budget_s" in t.compile_note
    assert (t.steps_per_epoch, t.steps_timed) == (6, 6 - 3)  # the first epoch's 3 warm-up steps are not timed
    full = -(-prep.split.train.size(0) // 8)  # the bounded epoch's time, scaled to the full epoch's steps
    assert t.full_epoch_steps == full > 6 and t.epoch_s_full_est == pytest.approx(t.epoch_s_median * full / 6)


# --------------------------------------------------------------------------- 5. ranking in fp32


def test_ranks_under_bf16_training_are_the_fp32_ranks_on_near_ties(tmp_path):
    bf16, prep = trainer_for("iisan-cached", tmp_path, precision="bf16")
    fp32, _ = trainer_for("iisan-cached", tmp_path, precision="fp32")
    fp32.model.load_state_dict(bf16.model.state_dict())
    bf16.model.eval(), fp32.model.eval()  # as evaluate() has them
    n = prep.data.n_items + 1
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(1, 64, generator=gen) + 1e-3 * torch.randn(n, 64, generator=gen)  # near-ties
    inputs, target, history = prep.split.test_input, prep.split.test_target, prep.split.test_history
    want = fp32.rank(table, inputs, target, history)
    assert torch.equal(bf16.rank(table, inputs, target, history), want)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # what scoring inside training's autocast gave
        scores = bf16.model.score(table, inputs)
    assert not torch.equal(target_ranks(scores, target, history, "all_history"), want)  # the case is real


# --------------------------------------------------------------------------- 6. cached == live


def test_cached_states_are_what_live_iisan_computes_whoever_calls_it(tmp_path):
    """One numeric context, the taps' own: the cache (built outside any autocast) equals the live
    states under no autocast, the training precision's, or another one."""
    cfg = small(tmp_path, train={"precision": "bf16"},
                **{"iisan-cached": {"cache_dir": str(tmp_path), "cache_dtype": "fp32"}})  # stored as computed
    live, _, _ = build(cfg, "iisan")
    cached, _, _ = build(cfg, "iisan-cached")
    ids = torch.arange(1, 41)
    text, image = cached.item_tower.source(ids)
    for ctx in (torch.autocast("cpu", enabled=False), torch.autocast("cpu", dtype=torch.bfloat16),
                torch.autocast("cpu", dtype=torch.float16)):
        with ctx:
            t, v = live.item_tower.source(ids)
        assert torch.equal(t.float(), text) and torch.equal(v.float(), image)


# --------------------------------------------------------------------------- 7. all-reduce time


class FakeDevice:
    """A device timeline: events record the device's time when they are recorded."""

    def __init__(self):
        self.now = 0.0

    def event(self):
        dev = self

        class Event:
            def record(self):
                self.t = dev.now

            def elapsed_time(self, other):
                return (other.t - self.t) * 1000

        return Event()


def test_nccl_allreduce_time_is_the_devices_not_the_queueing(monkeypatch):
    """NCCL's future completes as soon as the all-reduce is queued: host time counts ~0. The event
    clock counts from the bucket's launch to the callback, recorded on a stream that waits for the
    kernel (here: the fake device has run the 40 ms all-reduce by then)."""
    device = FakeDevice()

    class Work:
        def get_future(self):
            fut = torch.futures.Future()
            fut.set_result([torch.zeros(1)])  # done on the host at once: queued, as NCCL's
            return fut

    def all_reduce(buf, async_op):
        device.now += 0.040  # the kernel, as the callback's stream will have waited for it
        return Work()

    monkeypatch.setattr(D.dist, "all_reduce", all_reduce)
    monkeypatch.setattr(D.dist, "get_world_size", lambda: 2)
    bucket = types.SimpleNamespace(buffer=lambda: torch.ones(256))
    host, nccl = D.comm_stats("gloo"), D.CommStats(clock=D.EventClock(device.event))
    assert isinstance(D.comm_stats("nccl").clock, D.EventClock) and isinstance(host.clock, D.HostClock)
    for stats in (host, nccl):
        for step in range(3):
            device.now = step * 1.0
            D.timed_allreduce(stats, bucket).wait()
        stats.close_epoch()
    assert nccl.allreduce_s == pytest.approx(3 * 0.040) and host.allreduce_s < 0.01
    assert nccl.allreduce_bytes == 3 * 256 * 4


def test_a_forced_kernel_the_runs_own_probe_refuses_is_one_line_naming_the_method():
    """On a GPU the parent cannot try kernels (it never touches CUDA): the child's probe of the run's
    own calls is the check, and its refusal is the same one line."""
    def refuse(_backend):
        raise RuntimeError("No available kernel. Aborting execution.")

    with pytest.raises(BenchError, match=r"^--set train.sdpa_backend: 'train.sdpa_backend' = 'flash' cannot run the "
                                         r"attention of method 'fft' on cuda \(No available kernel"):
        kernels.choose_sdpa_backend("flash", torch.device("cuda"), refuse, "fft", "--set train.sdpa_backend")
