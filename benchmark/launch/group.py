"""A data-parallel run (``run.nproc`` > 1): its ranks started together, waited on together, and
their records combined into the run's one record.

Why the parent does this (and not torchrun's agent): each rank is an isolated child like any other
run, so the parent samples every rank's memory from outside, sees each one's exit status, and turns
a rank that dies into a ``failed`` record for that run while the sweep goes on (torchrun's agent
would tear the whole job down). The ranks find each other through torchrun's environment variables
and the run's store prefix (``launch.job``, ``launch.ranks``); under torchrun each worker waits on
its own rank here and learns of the others' through the store.
"""

from __future__ import annotations

import os
import signal
import statistics
import time

from core.record import Distributed, RankFigures, RunRecord

CLEAN_EXIT_GRACE_S = 120.0  # after one rank ended cleanly, the others must end within this
POLL_S = 0.05


def wait_group(launcher, pids: list[int], grace_s: float = CLEAN_EXIT_GRACE_S, term_grace_s: float = 10.0,
               peer_failed=lambda: None) -> tuple[dict[int, tuple[int, float | None]], int | None]:
    """Wait for every rank; ``(exits by pid in the order they came, the pid that failed first or None)``.

    A rank that exits non-zero (a crash, a signal) takes the others down at once (SIGTERM, then
    SIGKILL after ``term_grace_s``): they would wait on it in a collective until the timeout. A rank
    that ends cleanly leaves the others ``grace_s`` to end too (they finish the same evaluation, a
    moment apart). ``peer_failed()`` says when a rank on another node failed (torchrun: the job's
    store): ours are taken down the same way.
    """
    exits: dict[int, tuple[int, float | None]] = {}
    first_failed, first_exit_at, term_at = None, None, None
    while len(exits) < len(pids):
        for pid in pids:
            ended = None if pid in exits else launcher.poll(pid)
            if ended is not None:
                exits[pid] = ended
                first_failed = first_failed or (pid if ended[0] != 0 else None)
                first_exit_at = first_exit_at or time.monotonic()
        now = time.monotonic()
        late = first_exit_at is not None and now - first_exit_at > grace_s
        elsewhere = len(exits) < len(pids) and first_failed is None and peer_failed() is not None
        if len(exits) < len(pids) and (first_failed is not None or late or elsewhere):
            if term_at is None or now - term_at > term_grace_s:
                sig = signal.SIGTERM if term_at is None else signal.SIGKILL
                for pid in set(pids) - set(exits):
                    _kill(pid, sig)
                term_at = now if term_at is None else term_at
        time.sleep(POLL_S)
    return exits, first_failed


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _figures(rank: int, rec: RunRecord) -> RankFigures:
    ranks = rec.distributed.ranks if rec.distributed is not None else []
    fig = ranks[0] if ranks else RankFigures(rank)
    fig.rank, fig.pid = rank, rec.env.pid or fig.pid
    fig.peak_mb = rec.memory.peak_mb if rec.memory is not None else None
    fig.status, fig.error = rec.status, rec.error
    return fig


def _spread(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) - min(vals) if len(vals) == len(values) and vals else None


def combine(recs: list[RunRecord], backend: str, first_failed: int | None = None) -> RunRecord:
    """One record for the run: rank 0's metrics (every rank gathers the same ranks, so they agree),
    the slowest rank's epoch times, the busiest rank's memory, every rank's figures, and the first
    rank that failed (if one did) as the run's status."""
    out = recs[0]
    figs = [_figures(r, rec) for r, rec in enumerate(recs)]
    own = [rec.distributed for rec in recs if rec.distributed is not None]
    out.distributed = Distributed(
        world_size=len(recs), backend=backend,
        threads_per_rank=own[0].threads_per_rank if own else None,
        allreduce_mb_per_step=own[0].allreduce_mb_per_step if own else None,
        epoch_s_spread=_spread([f.epoch_s_median for f in figs]), peak_mb_spread=_spread([f.peak_mb for f in figs]),
        allreduce_s_per_epoch=max((f.allreduce_s_per_epoch for f in figs if f.allreduce_s_per_epoch is not None),
                                  default=None),
        ranks=figs)
    _slowest_times(out, figs)
    busiest = max((rec for rec in recs if rec.memory is not None and rec.memory.peak_mb is not None),
                  key=lambda rec: rec.memory.peak_mb, default=None)
    if busiest is not None:
        out.memory, out.timeline = busiest.memory, busiest.timeline
        out.isolation = {**(out.isolation or {}), "memory_rank": recs.index(busiest)}
    bad = _failed_rank(recs, figs, first_failed)
    if bad is not None:
        rec = recs[bad]
        out.status, out.error = rec.status, f"rank {bad} of {len(recs)}: {rec.error}"
        out.traceback = rec.traceback
    return out


def _failed_rank(recs: list[RunRecord], figs: list[RankFigures], first_failed: int | None) -> int | None:
    """The rank whose failure came first: the first to die (non-zero exit), else the one that raised
    first (``failed_at``). Why: a rank that raised (an OOM) leaves its peers failing in a collective
    a moment later ("connection closed by peer"); the cause is the earliest."""
    pids = [rec.env.pid for rec in recs]
    if first_failed is not None and first_failed in pids:
        return pids.index(first_failed)
    bad = [r for r, rec in enumerate(recs) if rec.status != "ok"]
    return min(bad, key=lambda r: (figs[r].failed_at or float("inf"), r), default=None)


def _slowest_times(out: RunRecord, figs: list[RankFigures]) -> None:
    """The run's epoch times are the slowest rank's, epoch by epoch (a step waits for every rank)."""
    per_rank = [f.epoch_s for f in figs]
    if out.time is None or not per_rank or any(len(e) != len(per_rank[0]) or not e for e in per_rank):
        return
    slowest = [max(epoch) for epoch in zip(*per_rank)]
    t = out.time
    if t.samples_per_s is not None and sum(slowest) > 0:
        t.samples_per_s *= sum(t.epoch_s) / sum(slowest)
    t.epoch_s, t.epoch_s_median = slowest, statistics.median(slowest)
    evals = [f.eval_s for f in figs if f.eval_s is not None]
    t.eval_s = max(evals) if evals else t.eval_s
