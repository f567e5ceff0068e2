"""report.md: a setup header that says what the numbers can and cannot claim (``header.py``), then
tables and plots.

Why the long header: efficiency numbers are only meaningful with the device, versions and memory
source next to them, and quality numbers from random-init backbones or synthetic images must not
be mistaken for model-quality claims.
"""

from __future__ import annotations

from core.paper import PAPER_SOURCE

from .estimates import estimates_section
from .floors import floors_section
from .header import header
from .load import Results
from .figures import Plot
from .scaling import scaling_section
from .steps import interval_lines, step_section
from .tables import (
    AT_FLOOR,
    Table,
    checkpoint_table,
    efficiency_table,
    eval_cost_table,
    ok_methods,
    popularity,
    quality_table,
    relative_table,
    show_paper,
)
from .targets import NOTE as TARGETS_NOTE
from .targets import applies as targets_apply
from .targets import paper_targets, targets_table
from .tpme import TpmeResult


def _memory_meaning(results: Results) -> str:
    """One line: what the peak memory column is (and what the other memory columns are)."""
    oks = ok_methods(results)
    if oks and all(m.memory_phase for m in oks):
        return ("Peak memory is the **training** phase's peak: what the device must hold to train (model, "
                "optimizer state, activations), each phase's peaks reset at its edges; evaluation (the item table "
                "of all items, then ranking) and one-off cache builds are in their own columns and not in TPME.")
    return ("Peak memory spans the **whole run**, evaluation included, for records written before phases were "
            "measured (schema 1); re-run them for the training phase's peak.")


def _checks(results: Results) -> list[str]:
    """Failed memory cross-checks, shown rather than hidden."""
    bad = [(m.method, c) for m in ok_methods(results) for c in m.check_failures]
    if not bad:
        return []
    return ["**Memory cross-checks failed** (allocated ≤ NVML process ≤ reserved + context):", ""] + [
        f"- `{method}` {c}" for method, c in bad] + [""]


def _efficiency(results: Results, tp: TpmeResult) -> list[str]:
    c = tp.config
    lines = ["## Efficiency", "", efficiency_table(results, tp).markdown(), "", _memory_meaning(results)]
    lines += interval_lines(results)
    lines.append(
        f"TPME (lower is better) = {c.alpha_time:g}·time + {c.alpha_params:g}·params + {c.alpha_memory:g}·memory, "
        "each term min-max normalised over the methods that ran ok (a term equal for all methods counts 0). "
        "Time is the median training time per epoch (evaluation excluded), averaged over repeats."
    )
    if tp.relative:
        lines.append(
            f"Relative cost = {c.alpha_time:g}·time/time({c.reference}) + {c.alpha_params:g}·params/params({c.reference}) "
            f"+ {c.alpha_memory:g}·memory/memory({c.reference}), as a percentage: {c.reference} itself is 100%."
        )
    else:
        lines.append(f"Relative cost omitted: {tp.reference_note}.")
    no_tpme = {k: v for k, v in tp.excluded.items() if (m := results.method(k)) is not None and m.ok}
    if no_tpme:
        lines.append("No TPME for " + ", ".join(f"`{k}` ({v})" for k, v in no_tpme.items()) + ".")
    failed = [m for m in results.methods if not m.ok]
    if failed:
        lines.append("Not shown (see [Failed runs](#failed-runs)): "
                     + ", ".join(f"`{m.method}` ({m.status})" for m in failed) + ".")
    lines.append("")
    lines += _checks(results)
    rel = relative_table(results, tp)
    if rel is not None:
        lines += [f"### Relative to `{c.reference}`", "", rel.markdown(), ""]
        if show_paper(tp, [m.method for m in ok_methods(results) if m.method in tp.relative]):
            lines += [f"Paper columns: as reported by {PAPER_SOURCE}; ours are measured in one run on the "
                      "device in the header, with this report's data, backbone and batch size.", ""]
    return (lines + step_section(results) + _eval_cost(results) + _checkpoints(results) + floors_section(results)
            + estimates_section(results))


def _section(title: str, table: Table | None, note: str) -> list[str]:
    """A sub-section with one table and its note; nothing when the records do not carry the table."""
    return [] if table is None else [f"### {title}", "", table.markdown(), "", note, ""]


def _checkpoints(results: Results) -> list[str]:
    return _section("What a user ships per task", checkpoint_table(results),
                    "The trainable tensors as stored (fp32): one task's checkpoint; the frozen backbone is "
                    "shared by every task (an IISAN checkpoint holds no encoder weights at all).")


def _eval_cost(results: Results) -> list[str]:
    """Evaluation is timed apart from training; this splits it into its two parts, when recorded."""
    return _section("Evaluation cost", eval_cost_table(results),
                    "Mean seconds per evaluation: the item-embedding table is computed once per evaluation and "
                    "shared by the splits; ranking is one split's users against that table, device synchronised.")


def _targets(results: Results, tp: TpmeResult) -> list[str]:
    """The paper-scale issue's targets, after the evaluation cost; only against fft with an IISAN variant."""
    if not targets_apply(results, tp.config.reference):
        return []
    return ["## Targets (paper-scale)", "", targets_table(paper_targets(results)).markdown(), "", TARGETS_NOTE, ""]


def _quality(results: Results) -> list[str]:
    lines = ["## Quality", ""]
    any_table = False
    for split, name in (("valid", "Validation"), ("test", "Test")):
        t = quality_table(results, split)
        if t is None:
            continue
        any_table = True
        lines += [f"### {name}", "", t.markdown(), ""]
    if not any_table:
        return lines + ["No quality metrics in the results.", ""]
    reps = max((m.n_ok for m in ok_methods(results)), default=1)
    note = "Metrics are full-ranking over all items; best per column in bold"
    if reps > 1:
        note += "; mean over repeats (standard deviations are in summary.csv)"
    if popularity(results):
        note += ("; the popularity row ranks items by training frequency, the floor a model must beat; "
                 f"{AT_FLOOR} marks a figure at or below it")
    return lines + [note + ".", ""]


def _failures(results: Results) -> list[str]:
    bad = [(m.method, r) for m in results.methods for r in m.failures]
    if not bad:
        return []
    lines = ["## Failed runs", "", "Excluded from TPME and from the tables above.", ""]
    for method, r in bad:
        err = " ".join(str(r.error or "no error recorded").split())
        lines.append(f"- `{method}` repeat {r.repeat}: **{r.status}** — {err}")
    partial = [m for m in results.methods if m.ok and m.failures]
    if partial:
        lines += ["", "Methods with some failed repeats are summarised over their ok repeats only: "
                  + ", ".join(f"`{m.method}` ({m.n_ok} of {m.n_runs})" for m in partial) + "."]
    return lines + [""]


def _plots(plots: list[Plot]) -> list[str]:
    lines = ["## Plots", ""]
    for p in plots:
        lines += [f"### {p.title}", ""]
        if p.path is not None:
            lines += [f"![{p.title}](plots/{p.path.name})", ""]
        else:
            lines += [f"Plot skipped: {p.skipped}.", ""]
        if p.notes:
            lines += [" ".join(p.notes), ""]
    return lines


def _methods(results: Results) -> list[str]:
    described = [m for m in results.methods if m.description]
    if not described:
        return []
    return ["## Methods", ""] + [f"- `{m.method}`: {m.description}" for m in described] + [""]


def render(results: Results, tp: TpmeResult, plots: list[Plot]) -> str:
    lines = header(results, tp)
    if ok_methods(results):
        lines += _efficiency(results, tp) + _targets(results, tp) + _quality(results)
    else:
        lines += ["**No method finished ok**; only failures are listed.", ""]
    lines += scaling_section(results, tp) + _failures(results) + _plots(plots) + _methods(results)
    source = tp.config.source.replace(str(results.path), results.path.name)
    lines.append(f"*TPME alphas from `{source}`; raw numbers in `summary.csv`.*")
    return "\n".join(lines).rstrip() + "\n"
