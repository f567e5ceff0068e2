"""Result records and files the report tests share (shaped like docs/results-schema.md); no torch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import core.record as R

TPME_DEFAULT = {"alpha_time": 0.45, "alpha_params": 0.10, "alpha_memory": 0.45, "reference": "fft"}


def record(method: str, time_s: float | None = 1.0, trainable: int | None = 1000, peak_mb: float | None = 100.0,
           status: str = "ok", repeat: int = 0, error: str | None = None, ndcg: float = 0.05,
           tpme: dict | None = None, samples_csv: str | None = None, total: int = 100_000_000) -> dict:
    """One results.jsonl line built through the record type the runner writes (``core.record``), so a
    renamed field fails the report tests too (tiny CPU run, random init)."""
    ok = status == "ok"
    mets = {"hr@10": ndcg * 2, "ndcg@10": ndcg, "mrr@10": ndcg * 0.7, "hr@5": ndcg * 1.4,
            "ndcg@5": ndcg * 0.8, "mrr@5": ndcg * 0.6}
    pop = {"valid": {"hr@10": 0.02, "ndcg@10": 0.01}, "test": {"hr@10": 0.02, "ndcg@10": 0.01}}
    rec = R.RunRecord(
        method=method, description=f"{method} test method", status=status, error=error, repeat=repeat,
        config_hash="abc", seed=42 + repeat, timestamp="2026-11-22T10:00:00+00:00",
        params=R.Params(trainable=trainable if ok else None, total=total if ok else None),
        time=R.Timing(epoch_s=[time_s] if ok else [], epoch_s_median=time_s if ok else None, samples_per_s=500.0,
                      setup_s=3.2, cache_build_s=None, eval_s=0.4),
        memory=R.Memory(peak_mb=peak_mb if ok else None, source="cpu-rss", samples_csv=samples_csv),
        metrics=R.Metrics(valid=mets, test=mets, best_epoch=2, popularity=pop) if ok else R.Metrics(),
        data=R.DataSummary(name="synthetic", users=600, items=400, interactions=6000, images="synthetic"),
        backbone=R.BackboneInfo(preset="tiny", text="tiny-bert", vision="tiny-vit", init="random"),
        env=R.Env(device="cpu", device_name="Intel Xeon", python="3.11.7", torch="2.13.0", transformers="4.57.6",
                  peft="0.21.2", git_sha="abc123", platform="linux"),
        config={"resolved": {"tpme": dict(TPME_DEFAULT if tpme is None else tpme)}},
    )
    return rec.to_dict()


def write(d: Path, records: list[dict], raw_lines: list[str] | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in records] + (raw_lines or [])
    (d / "results.jsonl").write_text("\n".join(lines) + "\n")
    return d


def four_methods(failed: bool = True) -> list[dict]:
    """The TPME fixture: time (s/epoch), trainable params, peak MB; adapter OOMs."""
    recs = [
        record("fft", 10.0, 100_000_000, 9000.0, ndcg=0.050),
        record("lora", 6.0, 1_000_000, 5000.0, ndcg=0.048),
        record("iisan", 2.0, 5_000_000, 1000.0, ndcg=0.055),
        record("bitfit", 8.0, 100_000, 6000.0, ndcg=0.040),
    ]
    if failed:
        recs.append(record("adapter", status="oom", error="RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"))
    return recs


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {r["method"]: r for r in csv.DictReader(fh)}


def section(md: str, title: str) -> str:
    """The text of a report section, up to the next heading."""
    return md.split(title, 1)[1].split("\n#", 1)[0]
