"""One screen of what a GPU session (scripts/gpu-session.sh) measured: its steps, each method's
figures and the GPU-first-time issue's targets, met or missed. Reads only the session's files.

    python scripts/gpu_session_summary.py WORK   # WORK: the session's folder (steps.tsv, paper/)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ("fft", "iisan", "iisan-cached", "lora", "adapter", "bitfit")


def _records(folder: Path) -> dict[str, dict]:
    path = folder / "results.jsonl"
    if not path.is_file():
        return {}
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["method"]: r for r in recs}


def _phase_mb(rec: dict, phase: str) -> float | None:
    p = ((rec.get("memory") or {}).get("phases") or {}).get(phase) or {}
    return p.get("allocated_peak_mb") or p.get("peak_mb")


def _epoch(rec: dict) -> float | None:
    t = rec.get("time") or {}
    return t.get("epoch_s_full_est") or t.get("epoch_s_median")


def _row(name: str, rec: dict) -> str:
    if rec.get("status") != "ok":
        return f"{name:13} {rec.get('status')}: {str(rec.get('error'))[:90]}"
    t, mem, env = rec.get("time") or {}, rec.get("memory") or {}, rec.get("env") or {}
    p50, p90 = t.get("step_p50_s"), t.get("step_p90_s")
    steps = f"{p50 * 1000:6.1f}/{p90 * 1000:6.1f} ms x{t.get('steps_timed')}" if p50 and p90 else "-"
    full = t.get("epoch_s_full_est")
    epoch = f"{t.get('epoch_s_median'):.2f}s" + (f" -> {full:.1f}s/{t.get('full_epoch_steps')}" if full else "")
    comp = f" compile {t['compile_s']:.0f}s/{t.get('compiled_shapes')}" if t.get("compile_s") else ""
    if t.get("compile_note"):
        comp += " (budget/failure: eager shapes)"
    staged = f" staged {t.get('staged_hits')}/{t.get('staged_misses')}" if t.get("staged_hits") is not None else ""
    sdpa = (env.get("sdpa") or {}).get("backend")
    est, mfu = rec.get("estimate") or {}, (rec.get("flops") or {}).get("mfu")
    if est.get("train_gb") and mem.get("peak_mb"):
        staged += f" est mem {est['train_gb'] * 1024 / mem['peak_mb']:.2f}x"
    if est.get("step_s") and p50:
        staged += f" step {est['step_s'] / p50:.2f}x"
    if mfu:
        staged += f" MFU {100 * mfu:.0f}%"
    return (f"{name:13} epoch {epoch:22} step p50/p90 {steps:24} train {mem.get('peak_mb') or 0:8.0f} MB "
            f"({mem.get('source')}) sdpa {sdpa}{comp}{staged}")


def _targets(recs: dict[str, dict], floors: dict) -> list[str]:
    """The issue's targets (#22), from the records as measured."""
    out = []
    fft, iisan, cached = recs.get("fft"), recs.get("iisan"), recs.get("iisan-cached")

    def say(name: str, ok: bool | None, measured: str) -> None:
        out.append(f"  {'MET   ' if ok else 'MISSED' if ok is False else 'n/a   '} {name}: {measured}")

    ok = lambda r: r is not None and r.get("status") == "ok"  # noqa: E731
    if ok(fft):
        floor = ((floors.get("floors") or {}).get("fft_step") or {}).get("step_s")
        p50 = fft["time"].get("step_p50_s")
        say("fft step <= 1.1x its plain-PyTorch floor", (p50 / floor <= 1.1) if floor and p50 else None,
            f"{p50 / floor:.2f}x" if floor and p50 else "no floor")
        p90 = fft["time"].get("step_p90_s")
        say("fft step p90/p50 <= 1.2", p90 / p50 <= 1.2 if p50 and p90 else None, f"{p90 / p50:.2f}" if p50 and p90 else "-")
    if ok(fft) and ok(iisan):
        r = _epoch(iisan) / _epoch(fft)
        say("iisan epoch <= 35% of fft's", r <= 0.35, f"{100 * r:.1f}%")
        a, b = _phase_mb(iisan, "train"), _phase_mb(fft, "train")
        say("iisan training memory <= 15% of fft's", a / b <= 0.15 if a and b else None,
            f"{100 * a / b:.1f}%" if a and b else "-")
    if ok(cached):
        e = _epoch(cached)
        say("iisan-cached epoch <= 1 s (Scientific)", e <= 1.0, f"{e:.2f}s")
        if ok(fft):
            a, b = _phase_mb(cached, "train"), _phase_mb(fft, "train")
            say("iisan-cached training memory <= 3.5% of fft's", a / b <= 0.035 if a and b else None,
                f"{100 * a / b:.2f}%" if a and b else "-")
        build = _phase_mb(cached, "cache_build")
        say("cache build <= 4 GB", build <= 4096 if build else None, f"{build:.0f} MB" if build else "cache reused")
    return out


def main(work: Path) -> None:
    steps = work / "steps.tsv"
    print("steps:")
    for line in (steps.read_text().splitlines()[1:] if steps.is_file() else []):
        name, status, seconds, limit = line.split("\t")
        print(f"  {name:12} {status:24} {seconds:>4} s (limit {limit} s)")
    paper = work / "paper"
    recs = _records(paper)
    floors = json.loads((paper / "floors.json").read_text()) if (paper / "floors.json").is_file() else {}
    env = next(iter(recs.values()), {}).get("env", {}) if recs else {}
    print(f"device {env.get('device_name') or env.get('device')}; torch {env.get('torch')}; "
          f"{len(recs)} of {len(ORDER)} methods recorded")
    for name in [m for m in ORDER if m in recs] + [m for m in recs if m not in ORDER]:
        print(_row(name, recs[name]))
    print("targets (issue #22; epochs extrapolated to the full epoch where bounded):")
    print("\n".join(_targets(recs, floors)) or "  nothing to judge yet")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
