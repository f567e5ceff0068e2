"""The job a sweep belongs to: one process (``--nproc N`` forks its ranks itself), or one worker of a
``torchrun`` job spanning one node or many.

Why every run still gets fresh processes under torchrun: the worker torchrun starts is long-lived (it
plans, waits, collects); each (method, repeat) runs in a child it forks, exactly as on one host, so one
method's allocator, kernels and heap never leak into the next one's figures. The run's process group
is formed from a key-value store with a prefix per run (``torch.distributed.PrefixStore``): torchrun's
own store when its agent hosts one (``TORCHELASTIC_USE_AGENT_STORE``), else one the job's rank 0
hosts; under ``--nproc`` the sweep's parent hosts it. One store, many groups in sequence, nothing to
re-rendezvous: the same code below the launcher serves both paths (``training.distributed.from_env``).

Rank 0 of the job plans the sweep (what to run, what resume skips) and publishes it in the store;
every worker runs its own rank of each run and hands its record to rank 0 through the store; only
rank 0 writes results.jsonl, the memory timelines and the report.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from core.names import GROUP_ENV, HOST_RANKS_ENV, TIMEOUT_ENV

PREFIX = "iisan-bench"


@dataclass(frozen=True)
class Job:
    """This worker's place in a torchrun job (torchrun's environment variables)."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    node_rank: int
    addr: str
    port: int
    agent_store: bool  # torchrun's agent hosts the store; else rank 0 does
    nodes: int = 1  # torchrun's GROUP_WORLD_SIZE: the agents (machines) of the job

    @property
    def host(self) -> str:
        return socket.gethostname()


def torchrun_job(env: dict[str, str] | None = None) -> Job | None:
    """The torchrun job this process is a worker of, or None (``TORCHELASTIC_RUN_ID`` marks one)."""
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" not in env or "RANK" not in env:
        return None
    return Job(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
               int(env.get("LOCAL_WORLD_SIZE", 1)), int(env.get("GROUP_RANK", 0)), env["MASTER_ADDR"],
               int(env["MASTER_PORT"]), env.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true",
               int(env.get("GROUP_WORLD_SIZE", 1)))


def job_store(job: Job, timeout_s: float) -> Any:
    """A client of the job's store (rank 0 hosts it when torchrun's agent does not)."""
    from torch.distributed import TCPStore

    host = job.rank == 0 and not job.agent_store
    return TCPStore(job.addr, job.port, job.world if host else None, host, timedelta(seconds=timeout_s),
                    wait_for_workers=False)


def local_store() -> tuple[Any, int]:
    """A store this process hosts on a free port, for the ``--nproc`` ranks of every run."""
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=60), wait_for_workers=False)
    return store, store.port


def rank_env(rank: int, world: int, addr: str, port: int, group: str, timeout_s: float, *, local_rank: int,
             local_world: int, node_rank: int = 0, on_host: int | None = None) -> dict[str, str]:
    """The environment a run's rank joins its group with (torchrun's names, plus the run's prefix and
    how many ranks share this machine: two agents on one host are two nodes on one set of cores)."""
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(local_rank),
            "LOCAL_WORLD_SIZE": str(local_world), "GROUP_RANK": str(node_rank), "MASTER_ADDR": addr,
            "MASTER_PORT": str(port), GROUP_ENV: group, TIMEOUT_ENV: str(timeout_s),
            HOST_RANKS_ENV: str(on_host or local_world)}


def put(store: Any, key: str, value: Any) -> None:
    store.set(f"{PREFIX}/{key}", json.dumps(value, default=str))


def get(store: Any, key: str) -> Any:
    """The value at ``key``, waiting for it up to the store's timeout (raises then)."""
    return json.loads(store.get(f"{PREFIX}/{key}"))


def peek(store: Any, key: str) -> Any:
    """The value at ``key`` if it is set, else None (never waits)."""
    full = f"{PREFIX}/{key}"
    return json.loads(store.get(full)) if store.check([full]) else None


def wait_keys(store: Any, keys: list[str], timeout_s: float) -> bool:
    """True when every key was set within ``timeout_s``."""
    try:
        store.wait([f"{PREFIX}/{k}" for k in keys], timedelta(seconds=timeout_s))
        return True
    except Exception:  # noqa: BLE001 - torch raises DistStoreError / RuntimeError on a timeout
        return False
