"""Method registry: ``@register_method("name")`` on a class, lazy imports, wildcard selection.

Built-in methods are imported only when asked for, so ``iisan-bench list`` and config validation
stay fast and a broken optional dependency breaks only the method that needs it.
"""

from __future__ import annotations

import fnmatch
import importlib
from typing import TYPE_CHECKING, Any

from benchmark.errors import BenchError, nearest

if TYPE_CHECKING:
    from .base import Method

# name -> module that registers it (imported lazily)
BUILTIN: dict[str, str] = {
    "fft": "methods.fft",
    "lora": "methods.lora",
    "adapter": "methods.adapter",
    "bitfit": "methods.bitfit",
    "iisan": "methods.iisan",
    "iisan-cached": "methods.iisan",
}
# Registered like the others but never listed or selected by name: the generic peft tuner that
# configured names ([methods.NAME] peft_type = "...") map to.
CONFIGURED_ONLY: dict[str, str] = {
    "peft": "methods.peft_tuner",
}
_REGISTRY: dict[str, type["Method"]] = {}


def register_method(name: str):
    """Class decorator: make ``cls`` available as ``name``."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method '{name}' is already registered by {_REGISTRY[name].__module__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Every method name, in the order the benchmark runs them."""
    return [n for n in dict.fromkeys([*BUILTIN, *_REGISTRY]) if n not in CONFIGURED_ONLY]


def get_method(name: str) -> type["Method"]:
    if name not in _REGISTRY:
        module = BUILTIN.get(name) or CONFIGURED_ONLY.get(name)
        if module is None:
            raise BenchError(f"unknown method '{name}'{nearest(name, available())}")
        importlib.import_module(module)
    return _REGISTRY[name]


def select(patterns: list[str] | str, extra: list[str] | None = None) -> list[str]:
    """Expand 'all', comma lists and shell wildcards ('iisan*') to method names, in run order.

    ``extra`` are names that configuration adds (e.g. peft tuners declared under [methods.NAME]).
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    names = available() + [e for e in (extra or []) if e not in available()]
    chosen: list[str] = []
    for pat in (p.strip() for item in patterns for p in item.split(",")):
        if not pat:
            continue
        if pat == "all":
            matched = names
        else:
            matched = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not matched:
            raise BenchError(f"unknown method '{pat}'{nearest(pat, names)}")
        chosen.extend(m for m in matched if m not in chosen)
    if not chosen:
        raise BenchError(f"no method selected (available: {', '.join(names)})")
    return chosen


def describe(name: str) -> str:
    return get_method(name).description


def options_for(name: str, cfg: Any) -> Any:
    """Validated options dataclass for one method from its [methods.NAME] table."""
    from benchmark.config import build_dataclass

    options_cls = get_method_for(name, cfg).Options
    table, prefix = cfg.methods.get(name) or {}, f"methods.{name}"
    if hasattr(options_cls, "from_table"):  # options with open-ended keys (the generic peft tuner)
        return options_cls.from_table(table, cfg.source, prefix)
    return build_dataclass(options_cls, table, cfg.source, prefix)


def configured_extra(cfg: Any) -> list[str]:
    """Method names that configuration declares: a [methods.NAME] table with a ``peft_type`` key
    registers NAME as a generic peft tuner (no new code)."""
    return [name for name, table in cfg.methods.items()
            if name not in available() and isinstance(table, dict) and "peft_type" in table]


def get_method_for(name: str, cfg: Any) -> type["Method"]:
    """The class behind ``name``: a registered method, or the generic peft tuner for a configured one."""
    if name in configured_extra(cfg):
        return get_method("peft")
    return get_method(name)
