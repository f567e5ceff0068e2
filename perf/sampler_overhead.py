"""What the memory sampler costs: the same training run with the sampler on and off.

Not a test (timings on a shared machine are noisy); run it by hand and commit its JSON:

    python perf/sampler_overhead.py --pairs 100 --steps 8 \
        --variants out_of_process,out_of_process:10 --out docs/results/sampler-overhead-cpu.json
    python perf/sampler_overhead.py --device cuda --out docs/results/sampler-overhead-gpu.json

One model trains in this process in short blocks of steps (``Trainer.train_epoch`` with
``max_steps_per_epoch`` steps, device synchronised at the edges); the sampler is switched on and
off between blocks, in pairs ordered off/on then on/off, so a change in machine load hits both
sides of a pair alike. A variant is a placement, an interval and a scheduling policy:

* ``out_of_process`` — the benchmark's default (``[run] isolate = true``): the sampler lives in
  another process (there: the parent) and samples the training process.
* ``in_process`` — ``isolate = false``: the sampler is a thread inside the training process and
  competes for the GIL too — the worst case.
* interval: the benchmark's default is 10 ms on GPU (NVML) and 50 ms on CPU (``default_interval_s``);
  policy ``idle`` runs the sampler under SCHED_IDLE.

With no ``--variants`` the benchmark's own setting for the device is measured first and gives the
verdict. The overhead of a variant is the median over pairs of (on - off) / off of block time,
with the interquartile range of those paired differences and a 95% bootstrap interval of the
median; "under 1%" means that whole interval is below 1%. Also reported: the sampler's own CPU
time per sample (``time.thread_time``), i.e. its share of one core at the interval, which does
not depend on machine noise.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

from benchmark.config import load_config
from benchmark.measure.sampler import ProcessSampler, default_interval_s

DEFAULT_POLICY = "normal"  # what the benchmark itself uses; "idle" is the SCHED_IDLE experiment


def lower_sampler_priority() -> str | None:
    """Put the calling thread in SCHED_IDLE (Linux), else nice 19: it then runs on spare cycles and
    does not preempt the training threads. Returns what was applied, None if nothing could be."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0 = this thread on Linux
        return "SCHED_IDLE"
    except (AttributeError, OSError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        return "nice 19"
    except (AttributeError, OSError):
        return None


class IdleSampler(ProcessSampler):
    """The benchmark's sampler thread, lowered to SCHED_IDLE before its first sample."""

    def _loop(self) -> None:
        lower_sampler_priority()
        super()._loop()
from benchmark.launch.prepare import prepare, resolve_device, seed_everything
from core.atomic import atomic_write_text


def build_trainer(cfg, prep, device):
    from benchmark.launch.factory import build_model
    from benchmark.training.trainer import Trainer

    seed_everything(cfg.run.seed)
    model = build_model(cfg, "fft", prep.data, device).model
    return Trainer(model, prep.split, cfg.train, cfg.eval, device, cfg.run.seed, progress=False)


def _nvml_for(uuid: str | None):
    """(Nvml, handle) of the training GPU, as the benchmark's samplers use them; (None, None) on CPU."""
    from benchmark.measure.nvml import Nvml

    nvml = Nvml.open() if uuid else None
    return nvml, (nvml.handle_for_uuid(uuid) if nvml is not None else None)


def _remote_sampler(pid: int, on, stop, interval: float, result, uuid: str | None, policy: str) -> None:
    """Another process sampling ``pid`` while ``on`` is set (the parent's role in isolated runs)."""
    if policy == "idle":
        lower_sampler_priority()
    nvml, handle = _nvml_for(uuid)
    sampler = ProcessSampler(pid, interval, nvml=nvml, handle=handle)
    n, cpu = 0, 0.0
    while not stop.is_set():
        if on.wait(0.05):
            c0 = time.thread_time()
            sampler.sample()
            cpu += time.thread_time() - c0
            n += 1
            time.sleep(interval)
    result.put({"samples": n, "cpu_s": cpu})


class InProcess:
    name = "in_process"

    def __init__(self, interval: float, uuid: str | None, policy: str = "normal"):
        self.interval, self.sampler, self.samples, self.cpu_s = interval, None, 0, 0.0
        self.policy = policy
        self.nvml, self.handle = _nvml_for(uuid)

    def on(self) -> None:
        cls = IdleSampler if self.policy == "idle" else ProcessSampler
        self.sampler = cls(os.getpid(), self.interval, nvml=self.nvml, handle=self.handle).start()

    def off(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self.samples += len(self.sampler.samples)
            self.cpu_s += self.sampler.cpu_s
            self.sampler = None

    def close(self) -> dict:
        self.off()
        return {"samples": self.samples, "cpu_s": self.cpu_s}


class OutOfProcess:
    name = "out_of_process"

    def __init__(self, interval: float, uuid: str | None, policy: str = "normal"):
        self.interval = interval
        ctx = mp.get_context("spawn")
        self._on, self._stop, self._result = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_remote_sampler, args=(os.getpid(), self._on, self._stop, interval,
                                                              self._result, uuid, policy), daemon=True)
        self.proc.start()

    def on(self) -> None:
        self._on.set()

    def off(self) -> None:
        self._on.clear()
        time.sleep(2 * self.interval)  # let a sample in flight finish outside the next block

    def close(self) -> dict:
        self._on.clear()
        self._stop.set()
        out = self._result.get(timeout=30)
        self.proc.join(10)
        return out


def measure(trainer, sampler, pairs: int, epoch0: int) -> tuple[dict, int]:
    from benchmark.training.trainer import TrainOutcome

    off, on = [], []
    epoch = epoch0
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        for flag in order:
            (sampler.on if flag else sampler.off)()
            out = TrainOutcome()
            epoch += 1
            trainer.train_epoch(epoch, out)
            sampler.off()
            (on if flag else off).append(out.epoch_s[0])
        print(f"{sampler.name} pair {i}: off {off[-1]:.3f}s on {on[-1]:.3f}s", file=sys.stderr)
    cost = sampler.close()
    paired = sorted((b - a) / a * 100 for a, b in zip(off, on))
    q = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
    rng = random.Random(0)  # bootstrap: how well the median paired difference is known
    boot = sorted(statistics.median(rng.choices(paired, k=len(paired))) for _ in range(2000))
    us = cost["cpu_s"] / cost["samples"] * 1e6 if cost["samples"] else None
    return {
        "block_s_off": off, "block_s_on": on,
        "median_block_off_s": statistics.median(off), "median_block_on_s": statistics.median(on),
        "overhead_pct_median": statistics.median(paired), "overhead_pct_iqr": [q[0], q[2]],
        "overhead_pct_median_ci95": [boot[50], boot[1949]],
        # the fastest block of each side: the least disturbed by other load; the sampler's cost is in every block
        "overhead_pct_min": (min(on) - min(off)) / min(off) * 100,
        "noise_pct_off": statistics.stdev(off) / statistics.mean(off) * 100 if len(off) > 1 else None,
        "sampler_samples": cost["samples"], "sampler_cpu_us_per_sample": us,
        "sampler_share_of_one_core_pct": us / (sampler.interval * 1e6) * 100 if us else None,
    }, epoch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/results/sampler-overhead-cpu.json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pairs", type=int, default=20, help="off/on block pairs per placement")
    ap.add_argument("--steps", type=int, default=4, help="training steps per block")
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--variants", default=None,
                    help="comma list of PLACEMENT[:INTERVAL_MS[:POLICY]] (placement: out_of_process, the "
                         "default benchmark path, or in_process; policy: normal or idle = SCHED_IDLE). "
                         "Default: the benchmark's own setting for the device, first; it gives the verdict")
    args = ap.parse_args(argv)

    cfg = load_config(None, {"data": {"synthetic": {"users": args.users, "items": 100}},
                             "run": {"device": args.device, "methods": ["fft"]},
                             "train": {"max_steps_per_epoch": args.steps}})
    device = resolve_device(cfg.run.device)
    prep = prepare(cfg)
    trainer = build_trainer(cfg, prep, device)
    uuid = None
    if device.type == "cuda":  # the samplers then read NVML too, as in a GPU benchmark run
        from benchmark.measure.nvml import torch_uuid

        uuid = torch_uuid(device)
    load0 = os.getloadavg()
    from benchmark.training.trainer import TrainOutcome

    for e in (1, 2):  # warm-up blocks, discarded
        trainer.train_epoch(e, TrainOutcome())
    result: dict = {
        "what": ("fft training blocks with the memory sampler off vs on, alternating pairs in one run; "
                 "overhead = median over pairs of (on - off) / off"),
        "workload": {"method": "fft", "backbone": cfg.backbone.preset, "users": args.users,
                     "steps_per_block": args.steps, "batch_size": cfg.train.batch_size, "pairs": args.pairs},
        "machine": {"device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_avg_start": load0},
    }
    epoch = 2
    default = f"out_of_process:{default_interval_s(device) * 1000:g}:{DEFAULT_POLICY}"
    variants = [v.strip() for v in (args.variants or default).split(",") if v.strip()]
    placements = {c.name: c for c in (OutOfProcess, InProcess)}
    result["variants"] = {}
    for v in variants:
        name, ms, policy = (v.split(":") + [None, None])[:3]
        interval = float(ms) / 1000 if ms else default_interval_s(device)
        policy = policy or DEFAULT_POLICY
        if name not in placements or policy not in ("normal", "idle"):
            raise SystemExit(f"--variants: bad entry {v!r} (PLACEMENT[:INTERVAL_MS[:normal|idle]])")
        sampler = placements[name](interval, uuid, policy)
        key = f"{name}:{interval * 1000:g}ms:{policy}"
        key += f"#{sum(k.startswith(key) for k in result['variants']) + 1}" if key in result["variants"] else ""
        print(f"variant {key}", file=sys.stderr)
        result["variants"][key], epoch = measure(trainer, sampler, args.pairs, epoch)
        result["variants"][key].update(placement=name, interval_s=interval, policy=policy)
    result["machine"]["load_avg_end"] = os.getloadavg()
    key = next(iter(result["variants"]))
    head = result["variants"][key]
    result["verdict"] = {
        "variant": key + (" (the benchmark's default for this device)"
                          if key == f"out_of_process:{default_interval_s(device) * 1000:g}ms:{DEFAULT_POLICY}"
                          else ""),
        "overhead_pct_median": head["overhead_pct_median"], "overhead_pct_iqr": head["overhead_pct_iqr"],
        "overhead_pct_median_ci95": head["overhead_pct_median_ci95"],
        "sampler_share_of_one_core_pct": head["sampler_share_of_one_core_pct"],
        # under 1% = the whole 95% bootstrap interval of the median paired difference is below 1%
        "under_1_pct": head["overhead_pct_median_ci95"][1] < 1.0,
        "note": ("the machine is shared (load_avg): per-block noise (noise_pct_off) can exceed the effect; "
                 "a negative median is noise"),
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["verdict"]), file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
