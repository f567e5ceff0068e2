"""The measured effect of each of the paper's last differences (#25) on Scientific, MiniLM, text only.

Every variant is ``configs/scientific-cpu.toml`` under ``[train] paper_protocol = true`` (the
paper's masking rule, recipe and model details) with one difference put back the other way. Where
the difference is an option it is set (``--set``-style overrides); where it is a fixed choice of
``architecture = "paper"`` (SASRec's FFN dropout, the encoders' mode) the script patches the one
module in its own process, so nothing of it reaches the package. Each variant runs in a fresh
process, in process (no isolation child: only quality is read here, never time or memory).

    python perf/paper_differences.py [--only NAME ...] [--out docs/results/scientific-cpu-paper-diffs]

Writes OUT/NAME/ (results.jsonl, report.md) per variant and OUT/summary.json + OUT/summary.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "scientific-cpu.toml"
CACHED_FULL = {"run": {"epochs": 6}, "train": {"max_steps_per_epoch": 0}}  # iisan-cached: 6 full epochs
# end-to-end methods: about 20 minutes each on 2 cores (a MiniLM step is seconds on a CPU and an
# evaluation encodes all 20,314 titles): one epoch of 100 steps, then the full-ranking evaluation
ADAPTER_BUDGET = {"run": {"epochs": 1}, "train": {"max_steps_per_epoch": 100}}
IISAN_BUDGET = {"run": {"epochs": 1}, "train": {"max_steps_per_epoch": 100}}


def _ffn_inner_dropout() -> None:
    """Put PyTorch's dropout after the FFN's activation back into the paper's SASRec."""
    from torch import nn

    from benchmark.models import recommender

    init = recommender.SASRec.__init__

    def patched(self, *a, **k):
        init(self, *a, **k)
        for layer in self.encoder.layers:
            if isinstance(layer.dropout, nn.Identity):
                layer.dropout = nn.Dropout(layer.dropout2.p)

    recommender.SASRec.__init__ = patched


def _encoders_in_eval_mode() -> None:
    """iisan's frozen encoders without dropout while training (ours), under the paper's architecture."""
    from methods.iisan import taps

    init = taps.BackboneTaps.__init__
    taps.BackboneTaps.__init__ = lambda self, models, inputs, t, dropout=False: init(self, models, inputs, t, False)


# name -> (method, overrides, patch, the difference it isolates)
VARIANTS: dict[str, tuple[str, dict[str, Any], Callable[[], None] | None, str]] = {
    "iisan-cached-paper": ("iisan-cached", CACHED_FULL, None, "the paper's recipe (reference)"),
    "iisan-cached-paper-seed43": ("iisan-cached", {**CACHED_FULL, "run": {"epochs": 6, "seed": 43}}, None,
                                  "the same, seed 43 (seed noise)"),
    "iisan-cached-side-lrs": ("iisan-cached", {**CACHED_FULL, "methods": {"iisan-cached": {"lr_groups": "side"}}},
                              None, "1: one rate for the whole side network (lr_groups = side)"),
    "iisan-cached-ffn-dropout": ("iisan-cached", CACHED_FULL, _ffn_inner_dropout,
                                 "3: SASRec's FFN also drops after its activation (PyTorch's layer)"),
    "adapter-paper": ("adapter", ADAPTER_BUDGET, None, "the paper's recipe (reference)"),
    "adapter-adapter-first": ("adapter", {**ADAPTER_BUDGET, "methods": {"adapter": {"order": "adapter_first"}}}, None,
                              "2: dense -> adapter -> dropout (before adapter version 2)"),
    "iisan-paper": ("iisan", IISAN_BUDGET, None, "the paper's recipe (reference)"),
    "iisan-encoders-eval": ("iisan", IISAN_BUDGET, _encoders_in_eval_mode,
                            "5: frozen encoders without dropout while training"),
}


def run_variant(name: str, out: Path) -> None:
    """One variant, in this process (called in a fresh one by ``main``)."""
    from benchmark.config import load_config, merge
    from benchmark.launch.sweep import run_benchmark
    from reports import build_report

    method, over, patch, _ = VARIANTS[name]
    if patch is not None:
        patch()
    base = {"run": {"methods": [method], "isolate": False, "out": str(out / name)}, "train": {"paper_protocol": True}}
    cfg = load_config(CONFIG, merge(base, over))
    results = run_benchmark(cfg, progress=False)
    build_report(results.parent)


def summarise(out: Path, names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        path = out / name / "results.jsonl"
        if not path.exists():
            continue
        rec = json.loads(path.read_text().splitlines()[-1])
        m = rec.get("metrics") or {}
        rows.append({"variant": name, "method": rec["method"], "status": rec["status"], "what": VARIANTS[name][3],
                     "steps_per_epoch": (rec.get("time") or {}).get("steps_per_epoch"),
                     "epochs": rec["config"]["resolved"]["run"]["epochs"], "best_epoch": m.get("best_epoch"),
                     **{f"{s}_{k}": (m.get(s) or {}).get(k) for s in ("valid", "test") for k in ("hr@10", "ndcg@10")}})
    return rows


def write_summary(out: Path, rows: list[dict[str, Any]]) -> None:
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| variant | difference | epochs x steps | best epoch | valid HR@10 | test HR@10 | test NDCG@10 |",
             "|---|---|---|---|---:|---:|---:|"]
    f = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    for r in rows:
        lines.append(f"| `{r['variant']}` | {r['what']} | {r['epochs']} x {r['steps_per_epoch']} | {r['best_epoch']} "
                     f"| {f(r['valid_hr@10'])} | {f(r['test_hr@10'])} | {f(r['test_ndcg@10'])} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "scientific-cpu-paper-diffs")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # the child: run this one variant here
    args = ap.parse_args()
    if args.variant:
        run_variant(args.variant, args.out)
        return
    for name in args.only:
        print(f"== {name}: {VARIANTS[name][3]}", flush=True)
        subprocess.run([sys.executable, __file__, "--variant", name, "--out", str(args.out)], check=False)
        write_summary(args.out, summarise(args.out, list(VARIANTS)))
    print((args.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
