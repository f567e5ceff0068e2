"""A noisy machine is detected, not silently measured (benchmark.measure.conditions)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from nvml_fake import OTHER_PID, UUID_B, FakePynvml
from report_helpers import record, write

from benchmark.measure import conditions as C
from benchmark.measure.nvml import Nvml
from core.record import Conditions, RunRecord, Snapshot
from reports import build_report

SPIN = "import time\nend = time.time() + 30\nwhile time.time() < end: pass\n"
CPU = torch.device("cpu")


def _orphan_spinner() -> int:
    """A busy process that is not ours: started by a shell that exits, so init adopts it."""
    out = subprocess.run(["sh", "-c", f"{sys.executable} -c '{SPIN}' >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_another_process_spinning_a_core_through_the_run_is_named_and_the_run_judged_busy() -> None:
    pid = _orphan_spinner()
    try:
        time.sleep(0.2)  # it spins from before the run's start ...
        watch = C.Watch.start(CPU, True)
        time.sleep(0.6)  # ... through the run
        cond = watch.finish()
    finally:
        os.kill(pid, signal.SIGKILL)
    assert cond.others_cores >= C.BUSY_CORES and 0.6 <= cond.span_s < 2.0
    assert any(line.startswith(f"{pid} python") for line in cond.others_top), cond.others_top
    assert cond.busy and len(cond.evidence) == 1
    assert cond.evidence[0].startswith(f"other processes used {cond.others_cores:.2f} of {os.cpu_count()} cores")
    assert str(pid) in cond.evidence[0]


def test_a_process_started_during_the_run_counts_and_the_runs_own_do_not() -> None:
    watch = C.Watch.start(CPU, True)
    pid = _orphan_spinner()  # not ours, started after the run began: all its CPU time counts
    child = subprocess.Popen([sys.executable, "-c", SPIN])  # ours: a child of this process
    try:
        time.sleep(0.8)
        cond = watch.finish()
    finally:
        os.kill(pid, signal.SIGKILL)
        child.kill()
        child.wait()
    assert any(line.startswith(f"{pid} ") for line in cond.others_top), cond.others_top
    assert all(not line.startswith(f"{child.pid} ") for line in cond.others_top)


def test_another_gpu_process_makes_the_run_busy_and_clocks_are_recorded() -> None:
    nv = FakePynvml()
    nv.devices[UUID_B]["procs"] = [(OTHER_PID, 1000 * 1024 * 1024), (os.getpid(), 300 * 1024 * 1024)]
    snap = C.snapshot("start", (Nvml(nv), ("handle", UUID_B)))
    assert snap.gpu_others == [f"{OTHER_PID}: 1000 MB"]  # this process is not "other"
    assert snap.gpu == {"name": "NVIDIA H100 80GB HBM3", "driver": "570.86.15", "memory_total_mb": 80_000.0,
                        "sm_clock_mhz": 1755, "sm_clock_max_mhz": 1980, "mem_clock_mhz": 2619,
                        "power_limit_w": 700.0}
    cond = C.judge(Conditions(others_cores=0.0, span_s=1.0, snapshots=[snap]))
    assert cond.busy and cond.evidence == [f"at the start, other processes on the GPU: {OTHER_PID}: 1000 MB"]


def test_a_quiet_run_reads_quiet_and_off_takes_nothing() -> None:
    assert C.judge(Conditions(others_cores=0.4, span_s=3.0, snapshots=[Snapshot("start", cpu_count=2)])).busy is False
    assert C.Watch.start(CPU, False).finish() is None
    got = C.Watch.start(CPU, True).finish()
    assert [s.when for s in got.snapshots] == ["start", "end"] and got.threads["torch_intra_op"] >= 1


def test_report_header_says_busy_with_the_evidence(tmp_path: Path) -> None:
    quiet = Conditions(False, [], 0.12, 5.0, [], {}, [Snapshot("start"), Snapshot("end")])
    busy = Conditions(True, ["other processes used 1.00 of 2 cores over the run's 5.0 s (4242 python: 1.00 cores)"],
                      1.0, 5.0, ["4242 python: 1.00 cores"], {}, [Snapshot("start")])
    recs = []
    for name, cond in (("fft", quiet), ("lora", busy)):
        rec = RunRecord.from_dict(record(name))
        rec.conditions = cond
        recs.append(rec.to_dict())
    md = build_report(write(tmp_path / "busy", recs)).read_text()
    assert "- **Measured on a busy machine:** 1 of 2 runs shared it" in md
    assert "  - `lora` r0: other processes used 1.00 of 2 cores over the run's 5.0 s (4242 python: 1.00 cores)" in md
    recs[1] = recs[0] | {"method": "lora"}
    md = build_report(write(tmp_path / "quiet", recs)).read_text()
    assert "- **Machine load:** quiet: other processes used at most 0.12 cores on average over a run" in md
    md = build_report(write(tmp_path / "old", [record("fft")])).read_text()
    assert "- **Machine load:** not checked" in md


def test_a_process_of_the_same_torchrun_job_is_not_other_load(monkeypatch) -> None:
    env = {**os.environ, C.JOB_ENV: "job-42"}
    peer = subprocess.Popen(["sh", "-c", f"{sys.executable} -c '{SPIN}' >/dev/null 2>&1 & echo $!"],
                            env=env, stdout=subprocess.PIPE, text=True)
    pid = int(peer.communicate()[0].strip())  # an orphan, so not ours by the tree: by the job id
    try:
        monkeypatch.setenv(C.JOB_ENV, "job-42")
        assert C.same_job(pid)
        watch = C.Watch.start(CPU, True)
        time.sleep(0.5)
        cond = watch.finish()
        monkeypatch.setenv(C.JOB_ENV, "another-job")
        assert not C.same_job(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert all(not line.startswith(f"{pid} ") for line in cond.others_top), cond.others_top
