"""Sweeps under torchrun: two agents on 127.0.0.1 as two nodes, one agent with two workers, and a
node that dies mid-run. Each run's ranks are fresh children of torchrun's workers; rank 0 writes.

Slow (each launches torchrun agents and their workers, each worker its children): `pytest -m slow`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from test_distributed import REFERENCE, records

ROOT = Path(__file__).resolve().parents[1]
METHODS = REFERENCE
TINY_SETS = ["--set", "data.synthetic.users=120", "--set", "data.synthetic.items=60", "--set", "run.epochs=2",
             "--set", "train.max_steps_per_epoch=4", "--set", "train.batch_size=16", "--set", "train.dropout=0.0",
             "--device", "cpu", "--no-progress"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent(out: Path, nnodes: int, node: int, per_node: int, port: int, cache: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--node-rank", str(node),
           "--nproc-per-node", str(per_node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
           "--rdzv-id", f"t{port}", "--rdzv-conf", f"is_host={int(node == 0)}",
           "-m", "benchmark.cli", "run", "--methods", ",".join(METHODS), "--out", str(out), *TINY_SETS, *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "IISAN_BENCH_CACHE": str(cache)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    outs = []
    for p in procs:
        try:
            text, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            text, _ = p.communicate()
            pytest.fail(f"torchrun agent hung:\n{text[-3000:]}")
        outs.append((p.returncode, text))
    return outs


def _reference(folders: dict[int, Path], nproc: int) -> dict[str, dict]:
    return {r["method"]: r for r in records(folders[nproc])}


def _same_training(got: dict, ref: dict) -> None:
    for name in METHODS:
        a, b = got[name], ref[name]
        assert a["status"] == "ok", a.get("error")
        assert [h["loss"] for h in a["metrics"]["history"]] == pytest.approx(
            [h["loss"] for h in b["metrics"]["history"]], rel=1e-5)
        for split in ("valid", "test"):
            assert a["metrics"][split] == pytest.approx(b["metrics"][split], abs=1e-9)


@pytest.mark.slow
def test_two_agents_as_two_nodes_train_what_one_process_does_and_only_rank_0_writes(tmp_path, ddp_reference):
    port, out = _port(), tmp_path / "two-nodes"
    agents = [_agent(out, 2, node, 1, port, tmp_path / "cache") for node in (0, 1)]
    (rc0, text0), (rc1, text1) = _finish(agents)
    assert rc0 == 0 and rc1 == 0, text0[-3000:] + text1[-3000:]
    got = {r["method"]: r for r in records(out)}
    assert sorted(got) == sorted(METHODS) and len(records(out)) == 2  # one line per run: rank 0's
    for rec in got.values():
        d = rec["distributed"]
        assert (d["world_size"], d["nodes"], d["ranks_per_node"], d["launcher"]) == (2, 2, 1, "torchrun")
        assert [f["rank"] for f in d["ranks"]] == [0, 1] and [f["node"] for f in d["ranks"]] == [0, 1]
        assert all(f["host"] == socket.gethostname() and f["status"] == "ok" for f in d["ranks"])
        assert rec["config"]["resolved"]["run"]["nproc"] == 2
    _same_training(got, _reference(ddp_reference, 1))
    report = (out / "report.md").read_text()
    assert "2 DDP processes per run on 2 nodes (1 per node, torchrun)" in report
    assert (out / "report.html").is_file() and not list(out.glob(".isolate-*"))
    assert "results:" in text0 and "results:" not in text1  # the second node wrote and reported nothing


@pytest.mark.slow
def test_one_agent_with_two_workers_gives_what_nproc_2_gives(tmp_path, ddp_reference):
    port, out = _port(), tmp_path / "one-node"
    ((rc, text),) = _finish([_agent(out, 1, 0, 2, port, tmp_path / "cache")])
    assert rc == 0, text[-3000:]
    got = {r["method"]: r for r in records(out)}
    ref = _reference(ddp_reference, 2)
    _same_training(got, ref)
    for name in METHODS:
        d, e = got[name]["distributed"], ref[name]["distributed"]
        assert (d["nodes"], d["ranks_per_node"], d["launcher"]) == (1, 2, "torchrun")
        assert (e["nodes"], e["ranks_per_node"], e["launcher"]) == (1, 2, "nproc")
        assert d["allreduce_mb_per_step"] == pytest.approx(e["allreduce_mb_per_step"])


def _training(agent: subprocess.Popen) -> bool:
    """The agent's worker forked a run's child: a second process with the zygote's command line."""
    try:
        forks = [p for p in psutil.Process(agent.pid).children(recursive=True)
                 if "benchmark.launch.zygote" in " ".join(p.cmdline())]
    except psutil.Error:
        return False
    return len(forks) >= 2


@pytest.mark.slow
def test_a_node_that_dies_fails_its_run_on_rank_0_within_the_timeout_and_the_job_ends(tmp_path):
    port, out = _port(), tmp_path / "dies"
    # long enough to be killed mid-run: 600 users, 38 steps an epoch, 3 epochs
    slow = ["--set", "data.synthetic.users=600", "--set", "train.max_steps_per_epoch=0", "--set", "run.epochs=3",
            "--set", "run.pg_timeout_s=10"]
    agents = [_agent(out, 2, node, 1, port, tmp_path / "cache", *slow) for node in (0, 1)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _training(agents[1]):  # node 1's rank has started its run
        time.sleep(0.5)
    time.sleep(3)
    killed_at = time.monotonic()
    node = psutil.Process(agents[1].pid)
    for p in [node, *node.children(recursive=True)]:  # the whole node: agent, worker (its own session), child
        p.kill()
    ((rc0, text0),) = _finish(agents[:1], timeout=240)
    agents[1].wait()
    took = time.monotonic() - killed_at
    assert rc0 == 1, text0[-3000:]
    assert took < 10 + 10 + 60, took  # the process-group timeout, rank 0's wait for the record, start-up slack
    (rec,) = records(out)  # the job ended after that run: rank 1's node is gone
    assert rec["status"] == "failed" and rec["distributed"]["ranks"][1]["status"] == "failed"
    assert "rank 1" in rec["error"]
    assert "gone: the job stops" in text0 and (out / "report.md").is_file()
    assert not list(out.glob(".isolate-*"))
