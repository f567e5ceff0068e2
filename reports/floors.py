"""How far each method is from its plain-PyTorch floor (``floors.json`` beside ``results.jsonl``).

The floor is the same work in a bare loop on the same machine (``iisan-bench floors``): fixed
shapes, inputs already on the device, fused Adam, nothing else. A method at 1.0x its floor is
measured, not the harness; at 3x, something besides the method costs time.
"""

from __future__ import annotations

import json
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
    runs_on = {str(r.get("env", "device_name")) for r in results.runs if r.get("env", "device_name")}
    lines = ["### Distance from the plain-PyTorch floor", "", table.markdown(), "",
             f"Floors from `{FLOORS_FILE}`: {data.get('items')} items a step (bucketed), batch "
             f"{data.get('batch_size')}, {data.get('precision')}, {data.get('steps_per_epoch')} steps an epoch, on "
             f"{env.get('device_name', 'unknown device')} (torch {env.get('torch', '?')})."]
    if env.get("device_name") and runs_on and runs_on != {str(env.get("device_name"))}:
        lines.append("**Warning:** the floors were measured on another device than the runs.")
    return lines + [""]
