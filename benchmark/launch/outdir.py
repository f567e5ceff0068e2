"""One out folder, one comparison: a results folder holds runs that can be compared.

Why: TPME is min-max normalised over the methods in a report and "best" is picked among them, so
a report that mixes a 4-epoch sweep with 5-epoch reruns, or two datasets, ranks incomparable
numbers. Before anything runs, the settings that make runs comparable (dataset, backbone,
training, evaluation, epochs, seed, device) are compared with those of every record already in
``OUT/results.jsonl``. A difference stops the run with one line naming the keys, unless
``--force``, which removes the incomparable records and runs anew.

What may differ is declared on each key (its role, ``core.keys.ROLES``): the methods and
their own options, repeats, isolation, the number of data-parallel processes (the report's scaling
table compares them), the sampler interval, the out folder and the TPME weights (the report reads
those, from ``OUT/tpme.json``: a changed weighting re-scores, it trains nothing again). Under ``train.paper_protocol`` each
method trains with its own recipe (batch size, learning rates, selection), so those keys are not
compared there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_text
from core.errors import BenchError
from core.keys import compared
from core.names import TPME_FILE
from core.plain import flatten


def comparable_settings(resolved: dict[str, Any], device: str | None) -> dict[str, Any]:
    """The flattened settings two runs must share to sit in one report: every key whose role is
    compared (``core.keys.ROLES``; a key an older record has and this version does not know
    is compared too), the device as resolved, and not the methods' own tables."""
    from benchmark.config import roles

    known = roles()
    out = {k: v for k, v in flatten({s: v for s, v in resolved.items() if s != "methods"}).items()
           if compared(known.get(k, "result"))}
    if out.get("train.paper_protocol"):
        for key in recipe_keys():
            out.pop(f"train.{key}", None)
    out["device"] = device
    return out


def recipe_keys() -> set[str]:
    """Training keys the paper protocol sets per method (they differ between methods by design)."""
    from benchmark.config import PAPER_TRAIN
    from methods.registry import available, get_method

    return set(PAPER_TRAIN) | {k for name in available() for k in get_method(name).paper_train}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key (old there, new now)`` for every key whose value differs."""
    keys = sorted(set(old) | set(new))
    return [f"{k} ({json.dumps(old.get(k))} there, {json.dumps(new.get(k))} now)" for k in keys
            if old.get(k) != new.get(k)]


def _record_settings(rec: dict[str, Any]) -> dict[str, Any] | None:
    resolved = (rec.get("config") or {}).get("resolved")
    if not isinstance(resolved, dict):
        return None
    return comparable_settings(resolved, (rec.get("env") or {}).get("device"))


# what a sweep writes in OUT (the reporter's report.md, summary.csv and plots/ are its own)
SWEEP_FILES = ("results.jsonl", "floors.json", TPME_FILE)
SWEEP_DIRS = ("logs", "memory", "traces")


def check_outputs(out: Path) -> None:
    """Each path a sweep writes is absent or of the kind it writes, before anything runs."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"{out}: run.out is a file, not a folder; use another --out")
    for name, kind, ok in [(f, "a file", Path.is_file) for f in SWEEP_FILES] + \
                          [(d, "a folder", Path.is_dir) for d in SWEEP_DIRS]:
        p = out / name
        if p.exists() and not ok(p):
            raise BenchError(f"{p}: iisan-bench writes {kind} there, and something else is in the way; "
                             f"move it or use another --out")


def check_out_dir(out: Path) -> None:
    """OUT exists and takes a file (created here: the last check before the sweep writes)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"run.out: cannot write to output directory '{out}': {exc.strerror or exc}") from None


def _check_version(results: Path, line_no: int, rec: Any) -> None:
    """A record newer than this iisan-bench writes: stop before training, not at the report (the
    reporter's rule, ``core.record.newer_schema``)."""
    from core.record import newer_schema

    problem = newer_schema(rec) if isinstance(rec, dict) else None
    if problem:
        raise BenchError(f"{results}:{line_no}: {problem} or use another --out")


def check_comparable(results: Path, current: dict[str, Any], force: bool, echo=print) -> None:
    """Stop (or, with ``force``, clear the way) when ``results`` holds runs with other settings, or
    runs of a newer record schema (never removed, even with ``force``)."""
    if not results.exists():
        return
    lines = results.read_text(encoding="utf-8", errors="replace").splitlines()
    keep, dropped, diffs = [], 0, None
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise BenchError(f"{results}:{i}: malformed JSON; fix or remove that line, or use another --out") from None
        _check_version(results, i, rec)
        settings = _record_settings(rec) if isinstance(rec, dict) else None
        diff = differences(settings, current) if settings is not None else ["config.resolved (missing)"]
        if diff:
            diffs = diffs or (diff, rec.get("method") if isinstance(rec, dict) else "?", i)
            dropped += 1
        else:
            keep.append(line)
    if not dropped:
        return
    diff, method, line_no = diffs
    if not force:
        raise BenchError(f"{results}:{line_no}: earlier runs ({method}) used other settings: {'; '.join(diff[:4])}"
                         f"{f' (+{len(diff) - 4} more)' if len(diff) > 4 else ''}; "
                         "use another --out, or --force to replace them")
    atomic_write_text(results, "".join(f"{ln}\n" for ln in keep))
    echo(f"--force: removed {dropped} run(s) with other settings from {results} ({'; '.join(diff[:2])})")
