"""How far each method is from its plain-PyTorch floor (``floors.json`` beside ``results.jsonl``).

The floor is the same work in a bare loop on the same machine (``iisan-bench floors``): fixed
shapes, inputs already on the device, fused Adam, nothing else. A method at 1.0x its floor is
measured, not the harness; at 3x, something besides the method costs time.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from .load import ReportError, Results
from .tables import DASH, Table, fmt_seconds, ok_methods

FLOORS_FILE = "floors.json"
# method -> (floor, what the floor covers)
FLOOR_OF = {
    "fft": ("fft_step", "both encoders forward + backward + Adam"),
    "iisan": ("frozen_forward", "the frozen encoders' forward alone (a lower bound: no side network)"),
    "iisan-cached": ("cached_step", "side network + user encoder + loss + Adam on cached states, best of "
                                    "eager and one CUDA graph"),
}


def read_floors(out_dir: Path) -> dict[str, Any] | None:
    """The floors measured for this folder, None when there are none; malformed is a ReportError."""
    path = out_dir / FLOORS_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("floors"), dict):
            raise ValueError("no 'floors' object")
    except (OSError, ValueError, AttributeError) as exc:
        raise ReportError(f"{path}: cannot read floors ({exc})") from None
    return data


def floors_table(results: Results, data: dict[str, Any]) -> Table | None:
    rows = []
    for m in ok_methods(results):
        if m.method not in FLOOR_OF:
            continue
        key, what = FLOOR_OF[m.method]
        floor = data["floors"].get(key) or {}
        epoch = floor.get("epoch_s")
        ratio = (f"{m.time_epoch_s.mean / epoch:.2f}×" if epoch and m.time_epoch_s.mean is not None
                 else DASH if "error" not in floor else f"floor failed: {floor['error']}")
        rows.append([f"`{m.method}`", fmt_seconds(m.time_epoch_s.mean), fmt_seconds(epoch), ratio, what])
    if not rows:
        return None
    return Table(["Method", "Time / epoch", "Floor / epoch", "× floor", "Floor covers"], rows, right={1, 2, 3})


def floors_section(results: Results) -> list[str]:
    data = read_floors(results.path.parent)
    if data is None:
        return []
    table = floors_table(results, data)
    if table is None:
        return []
    env = data.get("env") or {}
    lines = ["### Distance from the plain-PyTorch floor", "", table.markdown(), "",
             f"Floors from `{FLOORS_FILE}`: {data.get('items')} items a step (bucketed), batch "
             f"{data.get('batch_size')}, {data.get('precision')}, {data.get('steps_per_epoch')} steps an epoch, on "
             f"{env.get('device_name', 'unknown device')} (torch {env.get('torch', '?')}), measured at "
             f"{data.get('measured_at', 'an unrecorded time')}."]
    differs = conditions_differ(results, data)
    if differs:
        lines.append("**Floors not measured in the same conditions as the runs:** " + "; ".join(differs)
                     + ". The × floor column compares across them: re-run `iisan-bench floors` beside the runs "
                       "(or `run.floors = \"on\"`, which measures them right after the sweep).")
    return lines + [""]


HOURS_APART = 1.0  # floors measured further from every run than this are another session


def conditions_differ(results: Results, data: dict[str, Any]) -> list[str]:
    """How the floors' conditions differ from the runs': device, versions, commit, data, load, time."""
    env, runs = data.get("env") or {}, results.runs
    out = []
    for key, what in (("device_name", "device"), ("torch", "torch"), ("git_sha", "commit")):
        theirs = {str(v) for r in runs if (v := r.get("env", key)) is not None}
        if env.get(key) is not None and theirs and theirs != {str(env[key])}:
            out.append(f"{what} {env[key]} (runs: {', '.join(sorted(theirs))})")
    data_sha = {str(v) for r in runs if (v := r.get("data", "content_sha256"))}
    if data.get("data_sha256") and data_sha and data_sha != {data["data_sha256"]}:
        out.append("other data (content sha256 differs)")
    cond = data.get("conditions")
    if cond is None:
        out.append("the floors' machine load was not recorded (floors.json older than the check)")
    elif cond.get("busy"):
        out.append("the floors were measured on a busy machine (" + "; ".join(cond.get("evidence") or []) + ")")
    busy_runs = [f"`{r.method}` r{r.repeat}" for r in runs if r.record.conditions and r.record.conditions.busy]
    if busy_runs:
        out.append("runs measured on a busy machine: " + ", ".join(busy_runs))
    gap = _hours_apart(data.get("measured_at"), [r.record.timestamp for r in runs])
    if gap is None:
        out.append("the floors carry no time of measurement")
    elif gap > HOURS_APART:
        out.append(f"measured {gap:.1f} h away from the nearest run")
    return out


def _hours_apart(at: Any, stamps: list[str]) -> float | None:
    try:
        t = datetime.fromisoformat(str(at))
        return min(abs((datetime.fromisoformat(s) - t).total_seconds()) for s in stamps) / 3600.0
    except (TypeError, ValueError):
        return None
