"""Predicted vs measured: ``iisan-bench estimate`` for the design the H100 measurements were made at
(../shared/measurements/h100-2026-11-22, setting C), written as the table in docs/estimates.md.

That design differed from today's in four ways, each estimated as it was (``WhatIf``): every
item's uint8 image resident on the GPU (2.9 GB), the IISAN methods' frozen encoders in fp32 under
the trainer's bf16 autocast, IISAN reading ``output_hidden_states`` (every hidden state of both
encoders alive until the forward ends; today's hooks keep the tapped CLS vectors only), and no
item buckets (each step's exact distinct items). Measured: the NVML process peak of the training
phase (README table there) and the plain-PyTorch FFT step (anchor-plain-pytorch-fft.json).

    python perf/estimate_vs_h100.py [--measurements DIR] [--out docs/estimates-h100.md]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmark.launch.estimator import estimate_all
from benchmark.config import load_config
from benchmark.launch.estimate import WhatIf
from benchmark.measure.devices import gpu_named

ROOT = Path(__file__).resolve().parent.parent
# NVML process peak of the training phase, MB (setting C: expandable segments, cuDNN attention off)
TRAIN_NVML_MB = {"fft": 34628, "lora": 26614, "adapter": 24782, "bitfit": 22658, "iisan": 9110, "iisan-cached": 1378}
STEP_P50_MS = {"fft": 146, "lora": 147, "adapter": 153, "bitfit": 124, "iisan": 66, "iisan-cached": 40}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--measurements", default=str(ROOT.parent / "shared/measurements/h100-2026-11-22"))
    ap.add_argument("--dataset", default=str(ROOT.parent / "shared/datasets/Scientific"))
    ap.add_argument("--out", default=str(ROOT / "docs/estimates-h100.md"))
    args = ap.parse_args()
    anchor = json.loads((Path(args.measurements) / "anchor-plain-pytorch-fft.json").read_text())
    cfg = load_config(str(ROOT / "configs/paper.toml"), {"data": {"dataset": args.dataset},
                                                           "train": {"item_bucket": 1}})
    names = list(TRAIN_NVML_MB)
    t0 = time.perf_counter()
    rows = estimate_all(cfg, names, gpu_named("h100-80gb"), WhatIf(resident_images=True, frozen_fp32=True,
                                                                          all_hidden_states=True))
    seconds = time.perf_counter() - t0
    lines = ["| method | predicted train GiB | measured (NVML, train phase) GiB | predicted / measured | "
             "predicted step ms (typical) | measured step p50 ms | items traced / typical |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        meas = TRAIN_NVML_MB[r.method] / 1024
        lines.append(f"| `{r.method}` | {r.train_gb:.2f} | {meas:.2f} | {r.train_gb / meas:.2f} | "
                     f"{r.step_s * 1000:.0f} | {STEP_P50_MS[r.method]} | {r.items_traced} / {r.items_typical} |")
    fft = next(r for r in rows if r.method == "fft")
    step_at_anchor = fft.step_s * anchor["n_items"] / fft.items_typical
    lines += ["", f"FFT step at the anchor's {anchor['n_items']} items: predicted {step_at_anchor * 1000:.0f} ms, "
              f"measured {anchor['train_step_s'] * 1000:.0f} ms plain PyTorch "
              f"({step_at_anchor / anchor['train_step_s']:.2f}x); FLOPs a step predicted "
              f"{fft.flops_per_step * anchor['n_items'] / fft.items_traced / 1e12:.2f} T (scaled from the traced "
              f"{fft.items_traced} items), counted there {anchor['train_flops'] / 1e12:.2f} T.",
              f"Estimated in {seconds:.1f} s on this machine."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
