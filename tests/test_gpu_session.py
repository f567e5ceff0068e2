"""The GPU session script (scripts/gpu-session.sh) run as a lent machine would, but on CPU with the
tiny backbone (``--dry-run``): every step within its timeout, the tarball and the one-screen
summary, and what a step killed by its timeout leaves behind."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SIX = ("fft", "iisan", "iisan-cached", "lora", "adapter", "bitfit")


def _start(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, Path, Path]:
    out, work = tmp_path / "out", tmp_path / "work"
    full = {**os.environ, "OUT": str(out), "GPU_SESSION_WORK": str(work), **env}
    proc = subprocess.Popen(["bash", "scripts/gpu-session.sh", "--dry-run"], cwd=ROOT, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, out, work


def _done(started: tuple[subprocess.Popen, Path, Path]) -> tuple[subprocess.CompletedProcess, Path, Path]:
    proc, out, work = started
    stdout, stderr = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out, work


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """The full dry run and one whose budget ends inside the sweep, started together: the second
    mostly waits for its budget, so the two take the time of the first."""
    full = _start(tmp_path_factory.mktemp("full"))
    short = _start(tmp_path_factory.mktemp("budget"), GPU_SESSION_BUDGET_S="40")
    return {"full": _done(full), "budget": _done(short)}


@pytest.mark.slow
def test_the_dry_run_does_every_step_and_packs_what_comes_back(sessions):
    proc, out, work = sessions["full"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu-session.tgz", "summary.txt"]  # at most 8 come back
    tgz = out / "gpu-session.tgz"
    assert tgz.stat().st_size < 16 * 2**20
    with tarfile.open(tgz) as tar:
        names = tar.getnames()
        recs = [json.loads(line) for line in tar.extractfile("paper/results.jsonl").read().decode().splitlines()]
        steps = tar.extractfile("steps.tsv").read().decode().splitlines()[1:]
    assert [s.split("\t")[:2] for s in steps] == [[n, "ok"] for n in ("gpu-tests", "paper-scale", "floors", "report")]
    assert [r["method"] for r in recs] == list(SIX) and all(r["status"] == "ok" for r in recs)
    assert "paper/report.md" in names and "paper/floors.json" in names
    assert not any("traces" in n or n.endswith(".pt") or ".isolate-" in n or n.startswith("cache") for n in names)
    for r in recs:
        t = r["time"]
        assert t["steps_timed"] == 6 - 3 and t["full_epoch_steps"] > 6 and t["epoch_s_full_est"] > t["epoch_s_median"]
        assert r["env"]["device"] == "cpu" and r["env"]["sdpa"]["backend"] == "default"
    summary = (out / "summary.txt").read_text()
    assert summary == proc.stdout
    assert all(f"\n{m:13} epoch " in summary for m in SIX), summary
    assert "iisan epoch <= 35% of fft's" in summary and "cache build <= 4 GB" in summary
    assert len(summary.splitlines()) <= 30  # one screen


@pytest.mark.slow
def test_a_step_past_the_budget_leaves_the_earlier_results(sessions):
    """A budget that ends inside the sweep: the sweep is killed, the later steps are skipped, and
    what the sweep had finished comes back, packed and summarised."""
    proc, out, work = sessions["budget"]
    steps = [s.split("\t") for s in (work / "steps.tsv").read_text().splitlines()[1:]]
    assert steps[0][:2] == ["gpu-tests", "ok"]
    assert steps[1][1] in ("timed out", "ok") and all(s[1] == "skipped (budget spent)" for s in steps[2:])
    with tarfile.open(out / "gpu-session.tgz") as tar:
        assert "steps.tsv" in tar.getnames()
    assert "steps:" in (out / "summary.txt").read_text()
