"""report.md's opening lines: how every number below was obtained (device, versions, data,
backbone, training budget and precision, evaluation rule, memory source, repeats) and what the
numbers cannot claim (random-init weights, synthetic images, mixed devices)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from .load import CV_THRESHOLD, Results, Run
from .tables import NOISY, batch_sizes, ok_methods
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


def _distinct(runs, describe) -> list[str]:
    """Each run's description (None: nothing to say), once each, in file order."""
    out: list[str] = []
    for r in runs:
        text = describe(r)
        if text and text not in out:
            out.append(text)
    return out


def _device(r: Run) -> str:
    env = r.record.env
    detail = [env.device_name] if env.device_name else []
    if env.device == "cpu" and env.torch_threads:  # CPU times scale with it
        detail.append(f"{env.torch_threads} torch threads")
    return " ".join(x for x in (env.device, f"({', '.join(detail)})" if detail else None) if x)


def _dataset(r: Run) -> str | None:
    d = r.record.data
    counts = {"users": d.users, "items": d.items, "interactions": d.interactions}
    if d.name is None and not any(counts.values()):
        return None
    parts = [f"{_int(v)} {k}" for k, v in counts.items() if v is not None]
    return f"`{d.name or 'unknown'}`" + (f" ({', '.join(parts)})" if parts else "")


def _backbone(r: Run) -> str | None:
    b = r.record.backbone
    if b is None:
        return None
    vision = f"vision `{b.vision}`{_encoder(b.vision_encoder)}" if b.vision else "no vision encoder (text only)"
    return (f"preset `{b.preset or '?'}`, text `{b.text or '?'}`{_encoder(b.text_encoder)}, {vision}, "
            f"{'**random-init**' if b.init == 'random' else str(b.init or 'init unknown')}")


def _encoder(e) -> str:
    """' (Qwen2 96 wide, 6 layers, last-token pooling, 3.4M parameters)' of an encoder's record, or ''."""
    if e is None or e.family is None:
        return ""
    pooling = {"cls": "CLS pooling", "last": "last-token pooling", "mean": "mean pooling"}.get(e.pooling, e.pooling)
    size = f", {e.params / 1e6:,.1f}M parameters" if e.params else ""
    return f" ({e.family} {e.hidden_size} wide, {e.layers} layers, {pooling}{size})"


def _repeats(results: Results) -> str:
    reps = sorted({m.n_ok for m in ok_methods(results)})
    text = (f"{reps[0]} per method" if len(reps) == 1 else f"{reps[0]}–{reps[-1]} per method") if reps else "none ok"
    if reps and reps[-1] > 1:
        text += (" (time, memory and energy: median [95% interval] over repeats; quality: the mean, its "
                 f"standard deviation in summary.csv; {NOISY} marks a coefficient of variation above {CV_THRESHOLD:.0%})")
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
    devices = _distinct(runs, _device)
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
        *_build_line(runs),
        f"- **Dataset:** {_join(_distinct(runs, _dataset))}",
        f"- **Images:** {_join(images)}",
        f"- **Backbone:** {_join(_distinct(runs, _backbone))}",
        *_training_line(runs),
        *_evaluation_line(runs),
        *_bounded_steps(runs),
        *_batch_line(results),
        f"- **Memory source:** {src_text}",
        f"- **Repeats:** {_repeats(results)}",
        *_processes_line(results),
        *machine_lines(runs),
        *_caveats(runs, sources, devices),
    ]


def _build_line(runs: list[Run]) -> list[str]:
    """The build and machine behind the versions, and the data by content (``env`` / ``data``)."""
    parts = []
    for label, key in (("CPU", "cpu_model"), ("driver", "driver"), ("cuDNN", "cudnn"), ("NCCL", "nccl"),
                       ("torch build", "torch_config_sha")):
        vals = [v for v in _uniq(runs, "env", key) if v is not None]
        if vals:
            parts.append(f"{label} {_join(vals)}")
    data = [str(v)[:12] for v in _uniq(runs, "data", "content_sha256") if v]
    if data:
        parts.append(f"data sha256 {_join(data)}…")
    return [f"- **Build:** {'; '.join(parts)}"] if parts else []


def machine_lines(runs: list[Run]) -> list[str]:
    """Whether the machine was quiet (``record.conditions``): one line, or the busy runs' evidence first."""
    checked = [r for r in runs if r.record.conditions is not None]
    if not checked:
        return ["- **Machine load:** not checked (records before the check, or `run.quiet_check = false`)"]
    busy = [r for r in checked if r.record.conditions.busy]
    if busy:
        lines = [f"- **Measured on a busy machine:** {len(busy)} of {len(runs)} runs shared it; their times "
                 "and step profiles carry that load:"]
        return lines + [f"  - `{r.method}` r{r.repeat}: " + "; ".join(r.record.conditions.evidence) for r in busy]
    most = max((r.record.conditions.others_cores or 0.0) for r in checked)
    gpus = [s.gpu_others for r in checked for s in r.record.conditions.snapshots if s.gpu_others is not None]
    text = f"quiet: other processes used at most {most:.2f} cores on average over a run"
    if gpus:
        text += "; no other process on the GPU"
    unchecked = len(runs) - len(checked)
    return [f"- **Machine load:** {text}" + (f" ({unchecked} runs not checked)" if unchecked else "")]


def _processes_line(results: Results) -> list[str]:
    """Said only when a run was data-parallel: which world size the main tables show."""
    if results.world == 1 and not results.scaling:
        return []
    main = f"{results.world} DDP processes per run" if results.world > 1 else "one process per run"
    d = next((m.distributed for m in results.methods if m.distributed is not None), None)
    if d is not None and d.nodes is not None:
        main += f" on {d.nodes} node{'s' if d.nodes != 1 else ''} ({d.ranks_per_node} per node, {d.launcher})"
    more = ", ".join(str(n) for n in sorted(results.scaling))
    return [f"- **Processes:** main tables: {main}"
            + (f"; runs with {more} processes are in the scaling section" if more else "")]


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
    return " / ".join(_distinct(runs, _run_precision)) or "unknown"


def _run_precision(r: Run) -> str | None:
    p = r.get("config", "resolved", "train", "precision")
    if p is None:
        return None
    return (f"{p} autocast" if p != "fp32" else "fp32") + (" with a GradScaler" if r.record.env.grad_scaler else "")


MASKING = {
    "all_history": "every past item masked, a repeated target too (counted as a miss): the IISAN paper's rule",
    "history_except_target": "past items masked except the target (a repeated target can be hit)",
    "none": "nothing masked (repeat-aware)",
}


def _evaluation_line(runs) -> list[str]:
    """The masking rule (it changes HR/NDCG) and how many targets it concerns, and the encoder workload."""
    rules = _uniq(runs, "config", "resolved", "eval", "masking")
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
