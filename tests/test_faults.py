"""Faults of a real sweep in its own process group (#29): the zygote killed mid-run, Ctrl-C, a
closed stdout. Slow: each starts a real sweep (10-30 s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.launch.launchers import alive

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--no-progress"]


def sweep(out: Path, *extra: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmark.cli", "run", "--out", str(out), *TINY, *extra],
                            cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, start_new_session=True)


def zygote_child(proc: subprocess.Popen, timeout: float = 90) -> tuple[int, int]:
    """(zygote pid, the run it forked) once a run is under way."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for pid in _children(proc.pid):
            grand = _children(pid)
            if grand:
                return pid, grand[0]
        time.sleep(0.2)
    raise AssertionError("no run started")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.slow
def test_a_killed_zygote_fails_its_run_and_a_closed_stdout_ends_nothing(tmp_path):
    """``iisan-bench run ... | head -1``, and the zygote killed mid-run: the run in flight fails with a
    record saying why, a new zygote runs the next, the report is written (one sweep for both: 26 s)."""
    out = tmp_path / "o"
    proc = sweep(out, "--methods", "fft,bitfit", "--epochs", "1")
    proc.stdout.readline()  # `| head -1`: one line read, then the reader is gone
    proc.stdout.close()
    zygote, run = zygote_child(proc)
    time.sleep(1.0)
    os.kill(zygote, signal.SIGKILL)
    err = proc.stderr.read().decode()
    assert proc.wait(180) == 1, err[-2000:]
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["method"], r["status"]) for r in recs] == [("fft", "failed"), ("bitfit", "ok")]
    assert recs[0]["error"].startswith("the zygote process that forks each run died")
    assert "Traceback" not in err and "starting a new one" in err
    assert (out / "report.md").exists() and not list(out.glob(".isolate-*"))
    assert not alive(run)


@pytest.mark.slow
def test_ctrl_c_ends_the_sweep_without_a_traceback_or_leftovers(tmp_path):
    out = tmp_path / "o"
    proc = sweep(out, "--methods", "fft", "--epochs", "5")
    zygote, run = zygote_child(proc)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.decode().strip().splitlines()[-1] == "aborted", err.decode()[-2000:]
    assert "Traceback" not in err.decode() and "KeyboardInterrupt" not in err.decode()
    time.sleep(0.5)
    assert not alive(zygote) and not alive(run)
    assert not list(out.glob(".isolate-*"))
