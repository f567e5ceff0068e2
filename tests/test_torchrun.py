"""Sweeps under torchrun: two agents on 127.0.0.1 as two nodes, one agent with two workers, and a
node that dies mid-run. Each run's ranks are fresh children of torchrun's workers; rank 0 writes.

Slow (each launches torchrun agents and their workers, each worker its children): `pytest -m slow`.
Each test runs its two jobs at once: most of a job's time is start-up and waiting, and the figures
compared do not depend on timing (the bounds on how long a fault takes are generous).
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


def _check_two_nodes(out: Path, outs: list[tuple[int, str]], ref: dict) -> None:
    (rc0, text0), (rc1, text1) = outs
    assert rc0 == 0 and rc1 == 0, text0[-3000:] + text1[-3000:]
    got = {r["method"]: r for r in records(out)}
    assert sorted(got) == sorted(METHODS) and len(records(out)) == 2  # one line per run: rank 0's
    for rec in got.values():
        d = rec["distributed"]
        assert (d["world_size"], d["nodes"], d["ranks_per_node"], d["launcher"]) == (2, 2, 1, "torchrun")
        assert [f["rank"] for f in d["ranks"]] == [0, 1] and [f["node"] for f in d["ranks"]] == [0, 1]
        assert all(f["host"] == socket.gethostname() and f["status"] == "ok" for f in d["ranks"])
        assert rec["config"]["resolved"]["run"]["nproc"] == 2
    _same_training(got, ref)
    report = (out / "report.md").read_text()
    assert "2 DDP processes per run on 2 nodes (1 per node, torchrun)" in report
    assert (out / "report.html").is_file() and not list(out.glob(".isolate-*"))
    assert "results:" in text0 and "results:" not in text1  # the second node wrote and reported nothing


def _check_one_node(out: Path, outs: list[tuple[int, str]], ref: dict) -> None:
    ((rc, text),) = outs
    assert rc == 0, text[-3000:]
    got = {r["method"]: r for r in records(out)}
    _same_training(got, ref)
    for name in METHODS:
        d, e = got[name]["distributed"], ref[name]["distributed"]
        assert (d["nodes"], d["ranks_per_node"], d["launcher"]) == (1, 2, "torchrun")
        assert (e["nodes"], e["ranks_per_node"], e["launcher"]) == (1, 2, "nproc")
        assert d["allreduce_mb_per_step"] == pytest.approx(e["allreduce_mb_per_step"])


@pytest.mark.slow
def test_two_agents_as_two_nodes_and_one_agent_with_two_workers_train_what_nproc_does(tmp_path, ddp_reference):
    """Two agents on 127.0.0.1 as two nodes of one process each: the one-process losses (dropout off),
    world 2 over 2 nodes, and only rank 0 wrote. One agent with two workers: what --nproc 2 gives."""
    two, one = tmp_path / "two-nodes", tmp_path / "one-node"
    port2, port1 = _port(), _port()
    agents2 = [_agent(two, 2, node, 1, port2, tmp_path / "cache") for node in (0, 1)]
    agents1 = [_agent(one, 1, 0, 2, port1, tmp_path / "cache")]
    outs2, outs1 = _finish(agents2), _finish(agents1)
    _check_two_nodes(two, outs2, _reference(ddp_reference, 1))
    _check_one_node(one, outs1, _reference(ddp_reference, 2))


LONG = ["--set", "data.synthetic.users=400", "--set", "train.max_steps_per_epoch=0", "--set", "run.epochs=3",
        "--set", "run.pg_timeout_s=5"]  # long enough to be stopped mid-run; a 5 s process-group timeout


def _training(agent: subprocess.Popen) -> bool:
    """The agent's worker forked a run's child: a second process with the zygote's command line."""
    try:
        forks = [p for p in psutil.Process(agent.pid).children(recursive=True)
                 if "benchmark.launch.zygote" in " ".join(p.cmdline())]
    except psutil.Error:
        return False
    return len(forks) >= 2


def _when_training(*agents: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(_training(a) for a in agents):
        time.sleep(0.5)
    time.sleep(1)


@pytest.mark.slow
def test_a_node_killed_or_stopped_mid_run_ends_the_job_in_bounded_time_and_leaves_nothing(tmp_path):
    """Two jobs of two agents each. In one, node 1 is SIGKILLed (agent, worker and the run's child):
    rank 0's run fails naming rank 1 within the process-group timeout, the job ends with exit 1 and a
    report. In the other, node 1 gets SIGTERM (scancel, Ctrl-C): every node stops, no payload stays."""
    dies, term, tmp = tmp_path / "dies", tmp_path / "term", tmp_path / "tmp"
    tmp.mkdir()
    p_dies, p_term = _port(), _port()
    killed = [_agent(dies, 2, node, 1, p_dies, tmp_path / "cache", *LONG) for node in (0, 1)]
    saved = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp)  # where the second node keeps its payload (rank 0 keeps it in OUT)
    try:
        stopped = [_agent(term, 2, node, 1, p_term, tmp_path / "cache", *LONG) for node in (0, 1)]
    finally:
        os.environ.pop("TMPDIR") if saved is None else os.environ.__setitem__("TMPDIR", saved)
    _when_training(killed[1], stopped[1])
    t0 = time.monotonic()
    node = psutil.Process(killed[1].pid)
    for p in [node, *node.children(recursive=True)]:  # the whole node: agent, worker (its own session), child
        p.kill()
    stopped[1].send_signal(signal.SIGTERM)  # its agent forwards it to its worker
    ((rc0, text0),), outs_term = _finish(killed[:1], timeout=240), _finish(stopped, timeout=240)
    took = time.monotonic() - t0
    killed[1].wait()
    assert took < 5 + 10 + 60, took  # the process-group timeout, rank 0's wait for the record, slack
    assert rc0 == 1, text0[-3000:]
    (rec,) = records(dies)  # the job ended after that run: rank 1's node is gone
    assert rec["status"] == "failed" and rec["error"].startswith("rank 1 of 2: rank 1 sent no record")
    assert rec["distributed"]["ranks"][1]["status"] == "failed"
    assert "gone: the job stops" in text0 and (dies / "report.md").is_file()
    assert all(rc != 0 for rc, _ in outs_term), [t[-2000:] for _, t in outs_term]
    for folder in (dies, term, tmp):
        assert not list(folder.glob(".isolate-*")), folder
    left = [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert left == []
