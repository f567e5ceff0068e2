"""report.md: a setup header that says what the numbers can and cannot claim, then tables and plots.

Why the long header: efficiency numbers are only meaningful with the device, versions and memory
source next to them, and quality numbers from random-init backbones or synthetic images must not
be mistaken for model-quality claims.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .estimates import estimates_section
from .floors import floors_section
from .scaling import scaling_section
from .load import CV_THRESHOLD, Results, Run
from .paper import PAPER_SOURCE
from .plots import Plot
from .tables import (
    NOISY,
    Table,
    batch_sizes,
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

MEMORY_SOURCES = {
    "cpu-rss": "`cpu-rss` = peak resident set size (RSS) of the whole process: model, optimizer, data, "
               "Python and the torch runtime, not only tensors",
    "cuda": "`cuda` = CUDA caching-allocator reserved peak plus the CUDA context: what the process holds "
            "on the GPU, larger than the tensors actually allocated",
}
IMAGES = {
    "synthetic": "**synthetic images** (generated placeholders, not real item images)",
    "real": "real item images",
    "none": "no images (text only)",
}


def _uniq(runs: list[Run], *keys: str) -> list[Any]:
    out: list[Any] = []
    for r in runs:
        v = r.get(*keys)
        if v not in (None, "") and v not in out:
            out.append(v)
    return out


def _join(vals: list[Any], unknown: str = "unknown") -> str:
    return " / ".join(str(v) for v in vals) if vals else unknown


def _int(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) else str(v)


def _devices(runs) -> list[str]:
    devices = []
    for r in runs:
        detail = [str(v) for v in (r.get("env", "device_name"),) if v]
        if r.get("env", "device") == "cpu" and r.get("env", "torch_threads"):  # CPU times scale with it
            detail.append(f"{r.get('env', 'torch_threads')} torch threads")
        d = " ".join(str(x) for x in (r.get("env", "device"), f"({', '.join(detail)})" if detail else None) if x)
        if d and d not in devices:
            devices.append(d)
    return devices


def _datasets(runs) -> list[str]:
    datasets = []
    for r in runs:
        d = r.get("data") or {}
        if not d:
            continue
        parts = [f"{_int(d[k])} {k}" for k in ("users", "items", "interactions") if d.get(k) is not None]
        text = f"`{d.get('name', 'unknown')}`" + (f" ({', '.join(parts)})" if parts else "")
        if text not in datasets:
            datasets.append(text)
    return datasets


def _backbones(runs) -> list[str]:
    backbones = []
    for r in runs:
        b = r.get("backbone") or {}
        if not b:
            continue
        vision = f"vision `{b['vision']}`" if b.get("vision") else "no vision encoder (text only)"
        text = (f"preset `{b.get('preset', '?')}`, text `{b.get('text') or '?'}`, {vision}, "
                f"{'**random-init**' if b.get('init') == 'random' else str(b.get('init') or 'init unknown')}")
        if text not in backbones:
            backbones.append(text)
    return backbones


def _repeats(results: Results) -> str:
    reps = sorted({m.n_ok for m in ok_methods(results)})
    text = (f"{reps[0]} per method" if len(reps) == 1 else f"{reps[0]}–{reps[-1]} per method") if reps else "none ok"
    if reps and reps[-1] > 1:
        text += (" (tables show the mean ± sample standard deviation over repeats; "
                 f"{NOISY} marks a coefficient of variation above {CV_THRESHOLD:.0%})")
    return text


def _caveats(runs, sources: list[str], devices: list[str]) -> list[str]:
    """Warnings and notes a reader must see before any number."""
    lines = []
    if len(sources) > 1:
        lines.append("- **Warning:** methods were measured with different memory sources; "
                     "their peak memory (and TPME) are not directly comparable.")
    if len(devices) > 1:
        lines.append("- **Warning:** runs come from more than one device; times are not directly comparable.")
    lines.append("")
    if "random" in _uniq(runs, "backbone", "init"):
        lines += ["> **Random-init backbones.** Efficiency numbers (time, memory, parameters, TPME) do not "
                  "depend on the weights, but quality numbers (HR, NDCG, MRR) do: here they only show the "
                  "pipeline learns, not how the methods compare with pretrained encoders.", ""]
    if "synthetic" in _uniq(runs, "data", "images"):
        lines += ["> **Synthetic images.** Item images are generated placeholders, so the vision path costs "
                  "what real images would cost but carries no real visual signal.", ""]
    return lines


def header(results: Results, tp: TpmeResult) -> list[str]:
    """The report's opening lines: how every number below was obtained."""
    runs = results.runs
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    stamps = sorted(str(s) for s in _uniq(runs, "timestamp"))
    ran = f"{stamps[0]} … {stamps[-1]}" if len(stamps) > 1 else (stamps[0] if stamps else "unknown")
    devices = _devices(runs)
    versions = ", ".join(f"{name} {_join(_uniq(runs, 'env', name))}"
                         for name in ("python", "torch", "transformers", "peft"))
    images = [IMAGES.get(str(v), f"images: {v}") for v in _uniq(runs, "data", "images")]
    sources = sorted({m.memory_source for m in results.methods if m.memory_source})
    src_text = "; ".join(MEMORY_SOURCES.get(s, f"`{s}`") for s in sources) or "unknown"
    return [
        "# iisan-bench report",
        "",
        f"- **Generated:** {now} from `{results.path.name}` (runs finished {ran})",
        f"- **Device:** {_join(devices)}",
        f"- **Versions:** {versions}",
        f"- **Git sha:** {_join(_uniq(runs, 'env', 'git_sha'))}",
        f"- **Dataset:** {_join(_datasets(runs))}",
        f"- **Images:** {_join(images)}",
        f"- **Backbone:** {_join(_backbones(runs))}",
        *_training_line(runs),
        *_evaluation_line(runs),
        *_bounded_steps(runs),
        *_batch_line(results),
        f"- **Memory source:** {src_text}",
        f"- **Repeats:** {_repeats(results)}",
        *_processes_line(results),
        *_caveats(runs, sources, devices),
    ]


def _processes_line(results: Results) -> list[str]:
    """Said only when a run was data-parallel: which world size the main tables show."""
    if results.world == 1 and not results.scaling:
        return []
    main = f"{results.world} DDP processes per run" if results.world > 1 else "one process per run"
    more = ", ".join(str(n) for n in sorted(results.scaling))
    return [f"- **Processes:** main tables: {main}"
            + (f"; runs with {more} processes are in the scaling section" if more else "")]


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
    return (lines + _eval_cost(results) + _checkpoints(results) + floors_section(results)
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
        note += "; the popularity row ranks items by training frequency, the floor a model must beat"
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


def _batch_line(results: Results) -> list[str]:
    """Batch size in the header: one value, or each method's when ``train.paper_protocol`` varies it."""
    sizes = batch_sizes(results)
    if all(b is None for b in sizes.values()):
        return []
    if len(set(sizes.values())) == 1:
        return [f"- **Batch size:** {next(iter(sizes.values()))} for every method"]
    why = " (paper protocol)" if any(m.paper_protocol for m in ok_methods(results)) else ""
    per = ", ".join(f"{k} {'unknown' if b is None else b}" for k, b in sizes.items())
    return [f"- **Batch size:** per method{why}: {per}"]


def _training_line(runs) -> list[str]:
    """Epochs (with early stopping) and optimizer steps per epoch, so a reader sees the budget."""
    epochs = _uniq(runs, "config", "resolved", "run", "epochs")
    patience = _uniq(runs, "config", "resolved", "train", "patience")
    steps = sorted({int(v) for r in runs if r.status == "ok" and isinstance(v := r.get("time", "steps_per_epoch"), int)})
    if not epochs:
        return []
    stop = f", early stopping after {_join(patience)} epochs without a better validation metric" if patience and patience != [0] else ""
    per = (f"; {steps[0]:,} steps per epoch" if len(steps) == 1 else
           f"; {steps[0]:,}–{steps[-1]:,} steps per epoch (by method)" if steps else "")
    plural = "" if epochs == [1] else "s"
    arch = _uniq(runs, "config", "resolved", "train", "architecture") or ["ours"]  # older records: ours
    model = ("; model details: the paper code's (`train.architecture = paper`: SASRec with ReLU, eps 1e-6, "
             "bias-free attention, FFN dropout after its second Linear only, xavier; GELU heads, xavier image "
             "projection; SAN N(0, 0.01), first step gated; iisan's frozen encoders with dropout on while "
             "training)" if arch == ["paper"] else
             "; model details: mixed (`train.architecture` differs between methods)" if len(arch) > 1 else "")
    return [f"- **Training:** up to {_join(epochs)} epoch{plural}{stop}{per}{model}; precision {_precision(runs)}"]


def _precision(runs) -> str:
    """Each precision the runs trained in, and whether a GradScaler scaled the loss (fp16 on CUDA)."""
    seen: list[str] = []
    for r in runs:
        p = r.get("config", "resolved", "train", "precision")
        if p is None:
            continue
        text = f"{p} autocast" if p != "fp32" else "fp32"
        if r.get("env", "grad_scaler"):
            text += " with a GradScaler"
        if text not in seen:
            seen.append(text)
    return " / ".join(seen) if seen else "unknown"


MASKING = {
    "all_history": "every past item masked, a repeated target too (counted as a miss): the IISAN paper's rule",
    "history_except_target": "past items masked except the target (a repeated target can be hit)",
    "none": "nothing masked (repeat-aware)",
}


def _evaluation_line(runs) -> list[str]:
    """The masking rule (it changes HR/NDCG) and how many targets it concerns, and the encoder workload."""
    rules = _uniq(runs, "metrics", "masking")
    if not rules:  # records from before the rule was an option used history_except_target
        rules = ["history_except_target (records before [eval] masking)"] if runs else []
    shares = _uniq(runs, "metrics", "target_repeats_history", "test")
    text = "; ".join(f"`{r}`: {MASKING.get(r, '')}".rstrip(": ") for r in rules)
    if shares:
        text += f"; {100 * shares[0]:.1f}% of test targets repeat one of the user's earlier items"
    lines = [f"- **Evaluation:** full ranking over all items, masking {text} (docs/protocol.md)"] if rules else []
    work = _uniq(runs, "config", "resolved", "train", "encoder_workload")
    if work:
        per = sorted({int(v) for r in runs if isinstance(v := r.get("time", "items_encoded_per_epoch"), int)})
        what = {"distinct": "each step's distinct items once", "every_slot": "every slot of every sequence (the paper's code)"}
        lines.append(f"- **Encoder workload:** {' / '.join(what.get(w, w) for w in work)}"
                     + (f", {per[0]:,}–{per[-1]:,} items encoded an epoch" if per and per[0] != per[-1]
                        else f", {per[0]:,} items encoded an epoch" if per else "") + " (bucket padding included)")
    return lines


def _bounded_steps(runs) -> list[str]:
    """A header line when training was bounded by train.max_steps_per_epoch (epochs are partial)."""
    bounds = sorted({int(v) for r in runs
                     if isinstance(v := ((r.get("config") or {}).get("resolved") or {}).get("train", {})
                                   .get("max_steps_per_epoch"), int) and v > 0})
    if not bounds:
        return []
    return [f"- **Bounded training:** at most {', '.join(map(str, bounds))} steps per epoch "
            "(`train.max_steps_per_epoch`): \"time / epoch\" is the time of those steps, and quality is at "
            "that training budget, not at convergence"]
