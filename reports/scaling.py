"""The scaling table: the same methods trained by 1 and by N data-parallel processes (``run.nproc``).

Why a table of its own: under DDP every step all-reduces the trainable gradients, so what a method
gains from more devices depends on how much it trains (FFT's 195M parameters against IISAN's
4.1M). Each world size keeps its own TPME (min-max normalised over the methods of that world
size), so the main table's scores never mix 1-process and N-process runs.
"""

from __future__ import annotations

from .load import MethodSummary, Results
from .tables import DASH, Table, fmt_mb, fmt_metric, fmt_seconds
from .tpme import TpmeResult, compute_tpme


def _procs(n: int) -> str:
    return f"{n} process" if n == 1 else f"{n} processes"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _key_metric(m: MethodSummary) -> str | None:
    test = m.metrics.get("test") or {}
    return next((k for k in ("hr@10", "ndcg@10") if k in test), next(iter(test), None))


def _row(base: MethodSummary, par: MethodSummary, n: int, main: int, tpme: tuple[float | None, float | None]) -> list[str]:
    t1, tn = base.time_epoch_s.mean, par.time_epoch_s.mean
    speed = _ratio(t1, tn)
    eff = speed / (n / main) if speed is not None else None
    d = par.distributed
    key = _key_metric(par)
    m1 = base.metrics.get("test", {}).get(key) if key else None
    mn = par.metrics.get("test", {}).get(key) if key else None
    metric = DASH if m1 is None or mn is None else f"{fmt_metric(m1.mean)} → {fmt_metric(mn.mean)}"
    score = " → ".join(DASH if v is None else f"{v:.3f}" for v in tpme)
    return [f"`{par.method}`", fmt_seconds(t1), fmt_seconds(tn), DASH if speed is None else f"{speed:.2f}×",
            DASH if eff is None else f"{eff:.0%}", f"{fmt_mb(base.peak_mb.mean)} → {fmt_mb(par.peak_mb.mean)}",
            fmt_mb(d and d.allreduce_mb_per_step), fmt_seconds(d and d.allreduce_s_per_epoch),
            metric + (f" ({key.upper()})" if key and metric != DASH else ""), score]


def scaling_table(results: Results, n: int, main_tp: TpmeResult) -> Table | None:
    """Methods that ran ok both at the main world size (TPME ``main_tp``) and at ``n`` processes."""
    par = {m.method: m for m in results.scaling.get(n, []) if m.ok}
    both = [m for m in results.methods if m.ok and m.method in par]
    if not both:
        return None
    par_tp = compute_tpme(results.at_world(n))
    score = lambda tp, name: tp.rows[name].tpme if name in tp.rows else None  # noqa: E731
    rows = [_row(m, par[m.method], n, results.world, (score(main_tp, m.method), score(par_tp, m.method)))
            for m in both]
    w = results.world
    return Table(["Method", f"Epoch, {_procs(w)}", f"Epoch, {_procs(n)}", "Speed-up", "Scaling efficiency",
                  "Peak memory per process", "All-reduce per step", "All-reduce time per epoch",
                  "Test metric", "TPME (within each)"], rows, right={1, 2, 3, 4, 5, 6, 7})


def _nodes(runs: list) -> str:
    """", 2 nodes × 1 (torchrun)": where the ranks ran, as the records state it."""
    if not runs or runs[0].nodes is None:
        return ""
    d = runs[0]
    hosts = sorted({f.host for f in d.ranks if f.host})
    where = f" on {', '.join(hosts)}" if hosts else ""
    return f", {d.nodes} node{'s' if d.nodes != 1 else ''} × {d.ranks_per_node} ranks, {d.launcher}{where}"


def scaling_section(results: Results, tp: TpmeResult) -> list[str]:
    """``## Scaling`` for every other world size in the results file; nothing when there is none."""
    lines: list[str] = []
    for n in sorted(results.scaling):
        table = scaling_table(results, n, tp)
        if table is None:
            continue
        runs = [m.distributed for m in results.scaling[n] if m.distributed]
        backend = runs[0].backend if runs else "?"
        threads = runs[0].threads_per_rank if runs else None
        lines += [f"## Scaling: {_procs(results.world)} → {_procs(n)} ({backend}{_nodes(runs)})", "",
                  table.markdown(), "",
                  f"Each of the {n} DDP processes trains on its share of every global batch (same batch size, "
                  "same steps); the in-batch softmax still spans the whole batch (its item embeddings are "
                  "all-gathered), so the loss is the one-process loss. Epoch time is the slowest process's, "
                  "memory the busiest process's peak. Scaling efficiency = speed-up / "
                  f"{n // results.world if results.world else n} (100% = ideal). All-reduce: the trainable "
                  "gradients DDP averages every step (fp32), and the host-observed time those all-reduces "
                  "were in flight (overlapping the backward pass). TPME is min-max normalised within each "
                  "world size, never across them."
                  + (f" On CPU each process ran {threads} torch thread(s): the processes share this host's "
                     "cores, so the speed-up is the harness's parallel efficiency here, not a GPU cluster's."
                     if threads else ""), ""]
    return lines
