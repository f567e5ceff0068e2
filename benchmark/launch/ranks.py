"""Which ranks of a data-parallel run this process starts, and how their records meet.

``--nproc N``: this process starts all N ranks on its host, hosts the store their groups form in,
and has every record itself. Under torchrun (``launch.job``) each worker starts its own rank only;
a worker whose rank fails says so in the store (the others stop theirs at once instead of waiting on
it until the process-group timeout), every worker hands its record to rank 0 through the store, and
rank 0 waits for them at most the timeout plus a margin: a rank whose node died is a failed rank of
that run, and the job stops there (``lost``) rather than wait on the dead node run after run.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

from benchmark.launch.job import Job, get, job_store, local_store, peek, put, rank_env, wait_keys
from core.record import RunRecord

COLLECT_MARGIN_S = 60.0  # after the process-group timeout, how long rank 0 still waits for a record
ABORT_GRACE_S = 5.0  # once a worker stopped the job, how long rank 0 still waits for the records


class Ranks:
    """The data-parallel side of an isolated sweep: one per sweep, ``None`` for one process a run."""

    def __init__(self, world: int, timeout_s: float, job: Job | None = None):
        self.world, self.timeout_s, self.job = world, timeout_s, job
        if job is None:
            self.store, port = local_store()
            self.addr, self.port, self.local = "127.0.0.1", port, list(range(world))
            self.sweep = uuid.uuid4().hex[:8]
        else:
            self.store = job_store(job, timeout_s)
            self.addr, self.port, self.local = job.addr, job.port, [job.rank]
            self.sweep = "job"
        self.on_host = self._ranks_on_host()
        self.counter = itertools.count()
        self.lost: list[int] = []  # ranks whose record never came (their process or node died)

    def _ranks_on_host(self) -> int:
        """How many of the job's ranks run on this machine (every worker says its host once)."""
        if self.job is None:
            return self.world
        import socket

        put(self.store, f"host/{self.job.rank}", socket.gethostname())
        keys = [f"host/{r}" for r in range(self.world)]
        if not wait_keys(self.store, keys, self.timeout_s):
            return self.job.local_world
        return sum(get(self.store, k) == socket.gethostname() for k in keys)

    @property
    def nodes(self) -> int:
        return self.job.nodes if self.job else 1

    @property
    def per_node(self) -> int:
        return self.job.local_world if self.job else self.world

    @property
    def leader(self) -> bool:
        """This process writes the results (rank 0 of the job, or the only process)."""
        return self.job is None or self.job.rank == 0

    def group(self) -> str:
        """The next run's store prefix: the same on every worker (they run the same plan in order)."""
        return f"{self.sweep}/run-{next(self.counter)}"

    def env(self, rank: int, group: str) -> dict[str, str]:
        local_rank = rank if self.job is None else self.job.local_rank
        node = 0 if self.job is None else self.job.node_rank
        return rank_env(rank, self.world, self.addr, self.port, group, self.timeout_s, local_rank=local_rank,
                        local_world=self.per_node, node_rank=node, on_host=self.on_host)

    def peer_failed(self, group: str) -> Any:
        """What another worker said of its rank's failure in this run (torchrun only), or None."""
        if self.job is None:
            return None
        return peek(self.store, f"{group}/failed") or peek(self.store, "abort")

    def say_failed(self, group: str, rank: int) -> None:
        if self.job is not None:
            put(self.store, f"{group}/failed", f"rank {rank} failed")  # a string: rank 0 is falsy

    def exchange(self, group: str, mine: list[RunRecord]) -> list[RunRecord] | None:
        """Every rank's record in rank order on the leader; None on the other workers (theirs is sent)."""
        if self.job is None:
            return mine
        rec = mine[0]
        if not self.leader:
            put(self.store, f"{group}/record/{self.job.rank}", {"record": rec.to_dict(), "traceback": rec.traceback})
            return None
        recs: list[RunRecord] = [rec]
        self._wait_records(group)
        for r in range(1, self.world):
            sent = peek(self.store, f"{group}/record/{r}")
            if sent is None:
                recs.append(missing(rec, r, self.timeout_s + min(COLLECT_MARGIN_S, self.timeout_s)))
                self.lost.append(r)
                continue
            got = RunRecord.from_dict(sent["record"])
            got.traceback = sent.get("traceback")
            recs.append(got)
        return recs

    def stopped(self) -> Any:
        """Why the job ends early, once a worker said so (torchrun only), else None."""
        return None if self.job is None else peek(self.store, "abort")

    def _wait_records(self, group: str) -> None:
        """Until every rank's record is in, at most the process-group timeout plus a margin, or a
        short grace once a worker stopped the job (Ctrl-C on a node: its record never comes)."""
        keys = [f"{group}/record/{r}" for r in range(1, self.world)]
        deadline = time.monotonic() + self.timeout_s + min(COLLECT_MARGIN_S, self.timeout_s)
        while time.monotonic() < deadline:
            if wait_keys(self.store, keys, 1.0):
                return
            if self.stopped() is not None:
                deadline = min(deadline, time.monotonic() + ABORT_GRACE_S)

    def stop(self, why: str) -> None:
        """Tell the other workers the job ends now (Ctrl-C, SIGTERM, a lost node, the plan done)."""
        if self.job is not None:
            put(self.store, "abort", why)

    def plan(self, todo: list[tuple[str, int]] | None) -> list[tuple[str, int]]:
        """Rank 0's plan on every worker: ``todo`` published by the leader, read by the others."""
        if self.job is None:
            return list(todo or [])
        if self.leader:
            put(self.store, "plan", todo)
            return list(todo or [])
        if not wait_keys(self.store, ["plan"], PLAN_WAIT_S):
            raise TimeoutError(f"rank 0 published no plan within {PLAN_WAIT_S:.0f} s")
        return [tuple(x) for x in get(self.store, "plan")]  # type: ignore[misc]


PLAN_WAIT_S = 3600.0  # rank 0 loads and checks the data first (minutes at paper scale)


def missing(like: RunRecord, rank: int, waited_s: float) -> RunRecord:
    """A rank's record that never came: failed, saying so."""
    rec = RunRecord(method=like.method, description=like.description, repeat=like.repeat,
                    config_hash=like.config_hash, seed=like.seed, data=like.data, config=like.config)
    rec.status, rec.error = "failed", (f"rank {rank} sent no record within {waited_s:.0f} s "
                                       "(its process or node died?)")
    rec.env.pid = None
    return rec
