"""A noisy machine is detected, not silently measured (benchmark.measure.conditions)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nvml_fake import OTHER_PID, UUID_B, FakePynvml, install_fake_cuda  # noqa: F401
from report_helpers import record, write

from benchmark.measure import conditions as C
from benchmark.measure.nvml import Nvml
from core.record import Conditions, RunRecord, Snapshot
from reports import build_report

SPIN = "import time\nend = time.time() + 30\nwhile time.time() < end: pass\n"


def _orphan_spinner() -> int:
    """A busy process that is not ours: started by a shell that exits, so init adopts it."""
    out = subprocess.run(["sh", "-c", f"{sys.executable} -c '{SPIN}' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_another_process_spinning_a_core_is_named_and_the_run_judged_busy() -> None:
    pid = _orphan_spinner()
    try:
        time.sleep(0.3)  # let it start spinning
        snap = C.snapshot("start", window_s=0.5)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert snap.others_cores >= C.BUSY_CORES
    assert any(line.startswith(f"{pid} python") for line in snap.others_top), snap.others_top
    verdict = C.judge([snap, Snapshot("end", others_cores=0.0, cpu_count=2)])
    assert verdict.busy and len(verdict.evidence) == 1
    assert verdict.evidence[0].startswith(f"at the start, other processes used {snap.others_cores:.2f} of")
    assert str(pid) in verdict.evidence[0]


def test_the_runs_own_processes_are_not_other_load() -> None:
    child = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.3)
        snap = C.snapshot("end", window_s=0.5)
    finally:
        child.kill()
        child.wait()
    assert all(not line.startswith(f"{child.pid} ") for line in snap.others_top)
    assert child.pid in C.own_pids() or child.poll() is not None


def test_another_gpu_process_makes_the_run_busy_and_clocks_are_recorded() -> None:
    nv = FakePynvml()
    nv.devices[UUID_B]["procs"] = [(OTHER_PID, 1000 * 1024 * 1024), (os.getpid(), 300 * 1024 * 1024)]
    nvml = Nvml(nv)
    snap = C.snapshot("start", (nvml, ("handle", UUID_B)), window_s=0.05)
    assert snap.gpu_others == [f"{OTHER_PID}: 1000 MB"]  # this process is not "other"
    assert snap.gpu == {"name": "NVIDIA H100 80GB HBM3", "driver": "570.86.15", "memory_total_mb": 80_000.0,
                        "sm_clock_mhz": 1755, "sm_clock_max_mhz": 1980, "mem_clock_mhz": 2619,
                        "power_limit_w": 700.0}
    verdict = C.judge([snap])
    assert verdict.busy and verdict.evidence == [f"at the start, other processes on the GPU: {OTHER_PID}: 1000 MB"]


def test_a_quiet_run_reads_quiet_and_zero_window_takes_no_snapshot() -> None:
    assert C.judge([Snapshot("start", others_cores=0.1, cpu_count=2), Snapshot("end", others_cores=0.4)]).busy is False
    import torch

    assert C.Watch.start(torch.device("cpu"), 0).finish() is None
    got = C.Watch.start(torch.device("cpu"), 20).finish()
    assert [s.when for s in got.snapshots] == ["start", "end"] and got.threads["torch_intra_op"] >= 1


def test_report_header_says_busy_with_the_evidence(tmp_path: Path) -> None:
    quiet = Conditions(False, [], {}, [Snapshot("start", others_cores=0.12), Snapshot("end", others_cores=0.05)])
    busy = Conditions(True, ["at the start, other processes used 1.00 of 2 cores (4242 python: 1.00 cores)"], {},
                      [Snapshot("start", others_cores=1.0)])
    recs = []
    for name, cond in (("fft", quiet), ("lora", busy)):
        rec = RunRecord.from_dict(record(name))
        rec.conditions = cond
        recs.append(rec.to_dict())
    md = build_report(write(tmp_path / "busy", recs)).read_text()
    assert "- **Measured on a busy machine:** 1 of 2 runs shared it" in md
    assert "  - `lora` r0: at the start, other processes used 1.00 of 2 cores (4242 python: 1.00 cores)" in md
    recs[1] = record("lora")
    recs[1]["conditions"] = quiet.__dict__ | {"snapshots": [s.__dict__ for s in quiet.snapshots]}
    md = build_report(write(tmp_path / "quiet", recs)).read_text()
    assert "- **Machine load:** quiet: other processes used at most 0.12 cores at the runs' starts and ends" in md
    md = build_report(write(tmp_path / "old", [record("fft")])).read_text()
    assert "- **Machine load:** not checked" in md
