"""Isolation, failures and resume: every run in its own child, failures as results, finished runs kept."""

from __future__ import annotations

import csv
import json
import os
import sys

import pytest

from benchmark.cli import main
from benchmark.config import load_config
from benchmark.launch.sweep import run_benchmark
from core.errors import BenchError

# t-tiny, t-oom, t-fail, t-crash: registered per test (tests/conftest.py), never leaked into 'all'
pytestmark = pytest.mark.usefixtures("plugin_methods")

TINY = {"data": {"synthetic": {"users": 60, "items": 40}, "images": "none"},
        "run": {"epochs": 1, "device": "cpu"}, "train": {"max_steps_per_epoch": 2}}


def cfg_for(out, methods, isolate, **run):
    return load_config(None, {**TINY, "run": {**TINY["run"], "out": str(out), "methods": methods,
                                              "isolate": isolate, **run}})


def records(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def quiet(*_):
    pass


def test_isolated_runs_get_fresh_children_and_deaths_become_results(tmp_path):
    """One sweep, three children: an OOM, a SIGKILLed child, then a method that runs fine."""
    out = tmp_path / "iso"
    # 5 ms samples (the CPU default is 50 ms): a tiny run's training phase lasts only a few tens of ms
    run_benchmark(cfg_for(out, ["t-oom", "t-crash", "t-tiny"], True, sample_interval_ms=5), progress=False,
                  echo=quiet)
    oom, crash, ok = records(out)

    pids = {r["env"]["pid"] for r in (oom, crash, ok)}
    assert len(pids) == 3 and os.getpid() not in pids
    assert all(r["env"]["parent_pid"] == os.getpid() for r in (oom, crash, ok))

    assert oom["status"] == "oom" and "out of memory" in oom["error"]
    assert oom["memory"]["peak_mb"] > 0 and oom["memory"]["source"] == "cpu-rss"
    assert (out / oom["log"]).read_text().count("OutOfMemoryError") >= 1

    assert crash["status"] == "failed" and crash["isolation"]["exit_code"] == -9
    assert "SIGKILL" in crash["error"] and (out / crash["log"]).is_file()
    assert crash["memory"]["peak_mb"] > 0  # the parent watched it until it died

    assert ok["status"] == "ok" and ok["metrics"]["test"]
    mem = ok["memory"]
    # the headline is the training phase's peak: the kernel's VmHWM (reset when training began) or a
    # sample, never ru_maxrss (it carries the parent's high-water mark)
    train = mem["phases"]["train"]
    assert mem["phase"] == "train" and mem["peak_mb"] == train["peak_mb"] == train["rss_peak_mb"] > 0
    assert set(mem["phases"]) == {"setup", "train", "eval"}
    # ru_maxrss is recorded, never the headline: resetting VmHWM at each phase edge leaves the kernel's
    # exit-time maxrss free to be below an earlier phase's peak, so no order between them holds
    phase_peaks = [p["rss_peak_mb"] for p in mem["phases"].values() if p["rss_peak_mb"] is not None]
    assert mem["ru_maxrss_mb"] > 0 and 0 < mem["hwm_mb"] <= max(phase_peaks)  # a phase peak holds its VmHWM
    with open(out / mem["samples_csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert mem["samples_csv"] == "memory/t-tiny-0.csv" and rows and {"t_s", "mb", "phase"} <= set(rows[0])
    assert {"startup", "train"} <= {r["phase"] for r in rows}
    assert ok["isolation"]["child_startup_s"] > 0 and ok["isolation"]["overhead_s"] is not None
    assert mem["sample_interval_s"] == 0.005
    assert not list(out.glob(".isolate-*"))  # the payload folder is cleaned up


def test_in_process_oom_and_failure_do_not_stop_the_sweep(tmp_path):
    out = tmp_path / "inproc"
    run_benchmark(cfg_for(out, ["t-oom", "t-fail", "t-tiny"], False), progress=False, echo=quiet)
    oom, fail, ok = records(out)
    assert oom["status"] == "oom" and oom["memory"]["peak_mb"] > 0 and oom["log"] == "logs/t-oom-0.log"
    assert fail["status"] == "failed" and fail["error"] == "ValueError: the last line says why"
    assert "Traceback" in (out / fail["log"]).read_text()
    assert ok["status"] == "ok" and ok["env"]["pid"] == os.getpid()
    assert ok["memory"]["samples_csv"] == "memory/t-tiny-0.csv" and (out / "memory" / "t-tiny-0.csv").is_file()
    assert "traceback" not in ok and not any(k.startswith("_") for r in (oom, fail, ok) for k in r)


def test_repeats_resume_and_force(tmp_path, capsys):
    out = tmp_path / "resume"
    run_benchmark(cfg_for(out, ["t-tiny", "t-fail"], False, repeats=2), progress=False, echo=quiet)
    first = records(out)
    assert [(r["method"], r["repeat"]) for r in first] == [("t-tiny", 0), ("t-tiny", 1), ("t-fail", 0), ("t-fail", 1)]

    # same --out again: finished ok runs are skipped, failed ones are retried
    lines: list[str] = []
    run_benchmark(cfg_for(out, ["t-tiny", "t-fail"], False, repeats=2), progress=False, echo=lines.append)
    assert [(r["method"], r["repeat"]) for r in records(out)[4:]] == [("t-fail", 0), ("t-fail", 1)]
    assert any("skipping 2 run(s)" in ln for ln in lines)

    # other settings (here the seed) are another comparison: refused with the key named, nothing written
    before = (out / "results.jsonl").read_bytes()
    with pytest.raises(BenchError, match=r"results.jsonl:1: earlier runs \(t-tiny\) used other settings: "
                                         r"run.seed \(42 there, 7 now\); use another --out, or --force"):
        run_benchmark(cfg_for(out, ["t-tiny"], False, seed=7), progress=False, echo=quiet)
    assert (out / "results.jsonl").read_bytes() == before

    # --force replaces them (through the CLI, which also parses --no-isolate and renders the report)
    main(["run", "--methods", "t-tiny", "--epochs", "1", "--device", "cpu", "--out", str(out), "--seed", "7",
          "--no-isolate", "--force", "--no-progress", "--config", _config_file(tmp_path)])
    assert [(r["method"], r["seed"]) for r in records(out)] == [("t-tiny", 7)]
    assert "removed 6 run(s) with other settings" in capsys.readouterr().out


def _config_file(tmp_path) -> str:
    path = tmp_path / "tiny.toml"
    path.write_text('[data]\nimages = "none"\n[data.synthetic]\nusers = 60\nitems = 40\n'
                    '[train]\nmax_steps_per_epoch = 2\n')
    return str(path)


def test_modules_of_ones_own_methods_are_named_in_an_env_var(tmp_path, monkeypatch):
    from benchmark.launch.envvars import ENV_IMPORTS
    from core.errors import BenchError

    monkeypatch.setenv(ENV_IMPORTS, "bench_test_methods, no_such_module_xyz")
    with pytest.raises(BenchError, match="IISAN_BENCH_IMPORTS: cannot import 'no_such_module_xyz'"):
        run_benchmark(cfg_for(tmp_path / "x", ["t-tiny"], True), progress=False, echo=quiet)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize("armed", [True, False])
def test_a_child_dies_with_its_parent(tmp_path, armed):
    """Killing a sweep must not leave a child training on (it happened: 8 minutes beside the next run).

    The unarmed case is the control: without die_with_parent the orphan lives on.
    """
    import subprocess
    import time

    ready = tmp_path / "ready"
    arm = "from benchmark.launch.child import die_with_parent; die_with_parent(int(os.environ['IISAN_BENCH_PARENT_PID'])); "
    grandchild = (f"import os, time, pathlib; {arm if armed else ''}"
                  f"pathlib.Path({str(ready)!r}).write_text('1'); time.sleep(30)")
    parent = ("import os, subprocess, sys, time, pathlib; env = dict(os.environ, IISAN_BENCH_PARENT_PID=str(os.getpid())); "
              f"p = subprocess.Popen([sys.executable, '-c', {grandchild!r}], env=env, "
              "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
              f"while not pathlib.Path({str(ready)!r}).exists(): time.sleep(0.05)\n"
              "print(p.pid, flush=True); os._exit(0)")
    pid = int(subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=60).stdout)
    deadline = time.time() + (10 if armed else 2)
    alive = True
    while alive and time.time() < deadline:
        try:
            os.kill(pid, 0)
            time.sleep(0.1)
        except ProcessLookupError:
            alive = False
    if alive:
        os.kill(pid, 9)
    assert alive is not armed
