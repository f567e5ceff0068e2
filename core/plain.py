"""Dataclasses to plain JSON values and back, and the check of a plain value against its declared
type: the generic half of the record schema (``core.record``), stdlib only."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Union, get_args, get_origin, get_type_hints


def to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get("transient")}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _convert(tp: Any, value: Any) -> Any:
    """A plain JSON value as the annotated type: dataclasses, and dicts/lists of them, rebuilt."""
    tp = _strip_optional(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_plain(tp, value)
    origin, args = get_origin(tp), get_args(tp)
    if origin is dict and dataclasses.is_dataclass(args[1]) and isinstance(value, dict):
        return {k: from_plain(args[1], v) for k, v in value.items()}
    if origin is list and dataclasses.is_dataclass(args[0]) and isinstance(value, list):
        return [from_plain(args[0], v) for v in value]
    if origin is list and args and get_origin(args[0]) is tuple and isinstance(value, list):
        return [tuple(v) for v in value]
    return value


def from_plain(cls: type, d: dict[str, Any]) -> Any:
    """Build ``cls`` from a plain dict; keys this version does not know are ignored (newer records)."""
    hints = get_type_hints(cls)
    kwargs = {f.name: _convert(hints[f.name], d[f.name]) for f in dataclasses.fields(cls)
              if f.name in d and not f.metadata.get("transient")}
    return cls(**kwargs)


def type_problem(obj: dict[str, Any], cls: type, prefix: str = "") -> str | None:
    """The first value of a plain record (a results line) that its declared type refuses, as
    "'time.epoch_s_median' must be a number or null, got 'x'"; None when every value fits. Nulls fit
    anywhere (older records, fields that do not apply)."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in obj and not f.metadata.get("transient"):
            problem = _value_problem(hints[f.name], obj[f.name], prefix + f.name)
            if problem:
                return problem
    return None


def _value_problem(tp: Any, value: Any, path: str) -> str | None:
    tp = _strip_optional(tp)
    if value is None or tp is Any:
        return None
    if dataclasses.is_dataclass(tp):
        return type_problem(value, tp, path + ".") if isinstance(value, dict) else f"'{path}' must be an object"
    origin, args = get_origin(tp), get_args(tp)
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"'{path}' must be a number or null, got {value!r}"
        return None if value == value and abs(value) != float("inf") else f"'{path}' must be finite, got {value!r}"
    if tp in (str, bool):
        return None if isinstance(value, tp) else f"'{path}' must be a {tp.__name__} or null, got {value!r}"
    if origin is dict:
        if not isinstance(value, dict):
            return f"'{path}' must be an object"
        return next((p for k, v in value.items() if (p := _value_problem(args[1], v, f"{path}.{k}"))), None)
    if origin is list:
        if not isinstance(value, list):
            return f"'{path}' must be a list"
        return next((p for v in value if (p := _value_problem(args[0], v, f"{path}[]"))), None)
    return None


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (``{"run": {"seed": 1}}`` -> ``{"run.seed": 1}``): how the config's
    keys are named everywhere (the comparability check, ``compare``, trackers' parameters)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) else {key: v})
    return out
