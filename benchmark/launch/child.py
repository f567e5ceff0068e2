"""Entry point of an isolated run: ``python -m benchmark.launch.child SPEC.json`` (started by the parent).

Loads the prepared dataset and config the parent saved, starts CUDA (measuring the context) and
announces the GPU's UUID, runs one (method, repeat) through ``runner.run_method`` and writes the
record as JSON where the parent reads it. It always tries to write something: a caught failure
becomes a ``failed`` record; only a hard death (signal, ``os._exit``) leaves the parent to say so
from the exit code.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from benchmark.launch.envvars import ENV_PARENT


def die_with_parent(parent_pid: int) -> None:
    """Linux: get SIGTERM when the parent dies, so a killed sweep leaves no orphan training on."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def rank_device(device):
    """A data-parallel rank's own device (``cuda:LOCAL_RANK``) and CPU threads (the cores shared
    out, as torchrun's one-thread default would starve a 2-rank run on 2 cores of nothing but
    oversubscription); the device as given for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device
    import torch

    if device.type == "cpu":  # the host's cores shared by every rank on this host (launch.ranks counts them)
        from core.names import HOST_RANKS_ENV

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // int(os.environ.get(HOST_RANKS_ENV, world))))
        return device
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)  # NCCL's object collectives use the current device
    return device


def main(argv: list[str]) -> int:
    t_enter = time.time()
    die_with_parent(int(os.environ.get(ENV_PARENT, os.getppid())))
    spec = json.loads(Path(argv[0]).read_text())
    os.environ.update(spec.get("env", {}))  # a rank's RANK, WORLD_SIZE, MASTER_ADDR/PORT (torchrun's names)
    for p in spec.get("sys_path", []):
        if p not in sys.path:
            sys.path.append(p)
    from core.atomic import atomic_write_text
    from core.errors import BenchError

    child: dict = {"t_enter": t_enter, "marks": []}
    out: dict = {}
    try:
        import torch

        from benchmark.launch.payload import import_extra_modules, load_payload
        from benchmark.launch.runner import run_method
        from benchmark.measure.sampler import cuda_start, ru_maxrss_mb

        import_extra_modules()
        t0 = time.time()
        cfg, prep = load_payload(Path(spec["payload"]))
        child["payload_load_s"] = time.time() - t0
        # what an in-process sweep imports once: here it counts as isolation overhead, not setup_s
        import peft  # noqa: F401
        import transformers  # noqa: F401

        from benchmark.models import backbones  # noqa: F401
        from methods.registry import get_method_for

        get_method_for(spec["method"], cfg)
        device = rank_device(torch.device(spec["device"]))
        if device.type == "cuda":
            start = cuda_start(device)
            atomic_write_text(Path(spec["ready"]), json.dumps({"uuid": start.uuid, "pid": os.getpid()}))
        from benchmark.training.distributed import from_env, shutdown

        dist = from_env(device)  # a data-parallel rank (run.nproc > 1): the group forms here
        child["t_ready"] = time.time()
        record = run_method(cfg, spec["method"], prep, device, spec["repeat"], Path(spec["out"]),
                            spec["progress"] and (dist is None or dist.rank == 0), sample_memory=False, dist=dist)
        shutdown()
        if record.timeline is not None:
            child["marks"] = [list(m) for m in record.timeline.marks]
        if len(child["marks"]) >= 2:  # from the profiler's 'setup' mark to its 'done' mark
            child["run_s"] = child["marks"][-1][0] - child["marks"][0][0]
        child["ru_maxrss_mb"] = ru_maxrss_mb()  # includes the parent's peak (see profiler.ru_maxrss_mb)
        out = {"record": record.to_dict(), "traceback": record.traceback}
    except BenchError as exc:  # a user error: the parent stops the sweep with this message
        out = {"bench_error": str(exc)}
    except Exception as exc:  # caught before run_method had a record: the parent builds one
        from core.record import classify

        status, error = classify(exc)
        out = {"early": {"status": status, "error": error, "traceback": traceback.format_exc()}}
    out["child"] = child
    atomic_write_text(Path(spec["result"]), json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # the record is on disk (fsync'd): skip the interpreter's teardown of torch & co (~1 s per run)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
