"""Data-parallel runs (``run.nproc``): sharded in-batch loss, DDP, per-rank figures, a dying rank."""

from __future__ import annotations

import json
import time

import pytest

from benchmark.config import load_config
from benchmark.launch.group import combine
from benchmark.launch.sweep import run_benchmark
from core.record import Distributed, Env, Memory, RankFigures, RunRecord, Timing
from benchmark.training.distributed import CommStats, DistContext
from core.errors import BenchError

TINY = {"data": {"synthetic": {"users": 120, "items": 60}, "images": "synthetic"},
        "run": {"epochs": 2, "device": "cpu"}, "train": {"max_steps_per_epoch": 4, "batch_size": 16}}


def cfg_for(out, methods, nproc, train=None, **run):
    return load_config(None, {**TINY, "train": {**TINY["train"], **(train or {})},
                              "run": {**TINY["run"], "out": str(out), "methods": methods, "nproc": nproc, **run}})


def records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def quiet(*_):
    pass


def test_rows_cover_the_batch_once_in_rank_order():
    for n in (0, 1, 5, 16, 17):
        for world in (1, 2, 3):
            parts = [DistContext(r, world, "gloo").rows(n) for r in range(world)]
            assert [i for s in parts for i in range(n)[s]] == list(range(n))
            assert max(s.stop - s.start for s in parts) - min(s.stop - s.start for s in parts) <= 1


def test_allreduce_time_is_the_union_of_overlapping_spans():
    c = CommStats()
    for a, b in ((0.0, 1.0), (0.5, 2.0), (3.0, 3.5), (3.1, 3.2)):
        c.add_span(a, b)
    c.close_epoch()
    assert c.allreduce_s == pytest.approx(2.5)
    c.reset()
    assert (c.allreduce_s, c.allreduce_bytes) == (0.0, 0)


def _rank_record(rank, epochs, peak, status="ok", error=None, pid=100):
    rec = RunRecord("m", status=status, error=error, env=Env(pid=pid + rank))
    rec.time = Timing(epoch_s=list(epochs), epoch_s_median=sorted(epochs)[len(epochs) // 2], samples_per_s=100.0,
                      eval_s=1.0 + rank)
    rec.memory = Memory(peak_mb=peak)
    rec.distributed = Distributed(2, "gloo", threads_per_rank=1, allreduce_mb_per_step=0.5,
                                  ranks=[RankFigures(rank, epoch_s=list(epochs), epoch_s_median=rec.time.epoch_s_median,
                                                     eval_s=1.0 + rank, allreduce_s_per_epoch=0.1 * (rank + 1))])
    return rec


def test_combined_record_takes_the_slowest_epochs_and_the_busiest_memory():
    r0, r1 = _rank_record(0, [2.0, 1.0, 1.0], 300.0), _rank_record(1, [1.5, 1.2, 1.1], 500.0)
    out = combine([r0, r1], "gloo")
    assert out.time.epoch_s == [2.0, 1.2, 1.1] and out.time.epoch_s_median == 1.2
    assert out.time.samples_per_s == pytest.approx(100.0 * 4.0 / 4.3) and out.time.eval_s == 2.0
    assert out.memory.peak_mb == 500.0 and out.isolation["memory_rank"] == 1
    d = out.distributed
    assert (d.world_size, d.backend, d.peak_mb_spread, d.allreduce_s_per_epoch) == (2, "gloo", 200.0, 0.2)
    assert [f.peak_mb for f in d.ranks] == [300.0, 500.0] and [f.pid for f in d.ranks] == [100, 101]
    assert d.epoch_s_spread == pytest.approx(0.2) and out.status == "ok"


def test_combined_record_names_the_rank_that_died_first():
    r0 = _rank_record(0, [1.0], 300.0, "failed", "child process killed by SIGTERM (exit code -15)")
    r1 = _rank_record(1, [1.0], 200.0, "failed", "child process killed by SIGKILL (exit code -9)")
    out = combine([r0, r1], "gloo", first_failed=101)
    assert out.status == "failed" and out.error.startswith("rank 1 of 2: child process killed by SIGKILL")


@pytest.mark.parametrize("over, msg", [({"nproc": 0}, "'run.nproc' must be in \\[1, 1024\\]"),
                                       ({"nproc": 2, "isolate": False}, "needs 'run.isolate' = true")])
def test_bad_nproc_is_one_line_naming_the_key(tmp_path, over, msg):
    with pytest.raises(BenchError, match=msg):
        cfg_for(tmp_path / "x", ["iisan"], **{"nproc": 1, **over})
    assert not (tmp_path / "x").exists()


REFERENCE = ["iisan", "iisan-cached"]


@pytest.mark.slow  # two DDP ranks and a one-process reference: 21 s
def test_two_processes_train_what_one_does(tmp_path, ddp_reference):
    """Same seed, dropout off: the sharded loss (in-batch softmax over the whole batch, item rows
    all-gathered) and DDP's averaged gradients reproduce the one-process run: per-epoch losses to
    float rounding, and the same ranks, so the same metrics. Images are staged through the host
    copy that stands in for the GPU's: every step of every rank takes its own slice's."""
    import shutil

    for n in (1, 2):  # copies: this test appends to and resumes into them
        shutil.copytree(ddp_reference[n], tmp_path / f"p{n}")
    hist = {n: {r["method"]: r for r in records(tmp_path / f"p{n}")} for n in (1, 2)}
    for name in ("iisan", "iisan-cached"):
        one, two = hist[1][name], hist[2][name]
        assert two["status"] == "ok" and two["distributed"]["world_size"] == 2
        assert [h["loss"] for h in two["metrics"]["history"]] == pytest.approx(
            [h["loss"] for h in one["metrics"]["history"]], rel=1e-5)
        for split in ("valid", "test"):
            assert two["metrics"][split] == pytest.approx(one["metrics"][split], abs=1e-9)
        d = two["distributed"]
        assert [f["rank"] for f in d["ranks"]] == [0, 1] and d["backend"] == "gloo"
        assert all(f["peak_mb"] > 0 and len(f["epoch_s"]) == 2 and f["status"] == "ok" for f in d["ranks"])
        assert two["memory"]["peak_mb"] == max(f["peak_mb"] for f in d["ranks"])
        # DDP all-reduces every trainable gradient once per step, in fp32
        assert d["allreduce_mb_per_step"] == pytest.approx(two["params"]["trainable"] * 4 / 2**20, rel=0.01)
        assert d["allreduce_s_per_epoch"] > 0 and d["ranks"][0]["gather_s_per_epoch"] > 0
        staged = (8, 0) if name == "iisan" else (None, None)  # 2 epochs x 4 steps; the cache has no images
        assert (two["time"]["staged_hits"], two["time"]["staged_misses"]) == staged
        assert (one["time"]["staged_hits"], one["time"]["staged_misses"]) == staged
    said: list[str] = []  # resume: the same sweep again runs nothing (nproc is in the config hash)
    run_benchmark(cfg_for(tmp_path / "p2", ["iisan", "iisan-cached"], 2, {"dropout": 0.0}), progress=False,
                  echo=said.append)
    assert len(records(tmp_path / "p2")) == 2 and any(line.startswith("skipping 2 run(s)") for line in said)
    from reports import build_report

    with (tmp_path / "p1" / "results.jsonl").open("a") as fh:  # one folder may hold both world sizes
        fh.write((tmp_path / "p2" / "results.jsonl").read_text())
    text = build_report(tmp_path / "p1").read_text()
    scaling = text.split("## Scaling: 1 process → 2 processes (gloo, 1 node × 2 ranks, nproc on ")[1]
    assert "| `iisan` |" in scaling and "| `iisan-cached` |" in scaling
    assert "main tables: one process per run; runs with 2 processes are in the scaling section" in text
    two = [r for r in records(tmp_path / "p1") if r.get("distributed")]
    assert [r["memory"]["samples_csv"] for r in two] == ["memory/iisan-0-2p.csv", "memory/iisan-cached-0-2p.csv"]


@pytest.mark.slow  # two 2-process sweeps (this and the OOM one): 16 s
@pytest.mark.usefixtures("plugin_methods")
def test_a_rank_that_dies_fails_its_run_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "die"
    t0 = time.monotonic()
    failed: list[str] = []
    run_benchmark(cfg_for(out, ["t-rank-dies", "t-tiny"], 2), progress=False, echo=quiet, failed=failed)
    dead, ok = records(out)
    assert dead["status"] == "failed" and dead["error"].startswith("rank 1 of 2: child process killed by SIGKILL")
    ranks = dead["distributed"]["ranks"]
    assert [f["status"] for f in ranks] == ["failed", "failed"] and "SIGKILL" in ranks[1]["error"]
    assert (out / dead["log"]).is_file()
    assert ok["status"] == "ok" and ok["distributed"]["world_size"] == 2 and ok["metrics"]["test"]
    assert failed == ["t-rank-dies r0 (failed)"]
    assert time.monotonic() - t0 < 60  # rank 0 was taken down, not left to a collective's timeout


@pytest.mark.slow
@pytest.mark.usefixtures("plugin_methods")
def test_an_oom_on_one_rank_is_the_runs_status_not_its_peers_broken_collective(tmp_path):
    out = tmp_path / "oom"
    t0 = time.monotonic()
    run_benchmark(cfg_for(out, ["t-rank-oom"], 2), progress=False, echo=quiet)
    (rec,) = records(out)
    assert rec["status"] == "oom" and rec["error"].startswith("rank 1 of 2: OutOfMemoryError: CUDA out of memory")
    assert [f["status"] for f in rec["distributed"]["ranks"]] == ["failed", "oom"]
    assert time.monotonic() - t0 < 60
