"""Method registry: ``@register_method("name")`` on a class, lazy imports, wildcard selection.

A built-in method is one file in this package with one decorator (or a sub-package, where a strategy
needs several files: ``methods/iisan/``): the registry finds it by reading the package's files for ``@register_method("...")`` (without importing them), so ``iisan-bench
list`` and config validation stay fast and a broken optional dependency breaks only the method
that needs it. Methods of one's own come from a module named in ``IISAN_BENCH_IMPORTS`` or from
an installed package's entry point in the group ``iisan_bench.methods`` (``name = "module"``).
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import BenchError, nearest

if TYPE_CHECKING:
    from .base import Method

ENTRY_POINTS = "iisan_bench.methods"
# The paper's order, for the built-ins; methods found besides them run after, in file order.
RUN_ORDER = ("fft", "lora", "adapter", "bitfit", "iisan", "iisan-cached")
_DECORATOR = re.compile(r"""^@register_method\(\s*["']([^"']+)["']([^)]*)\)""", re.M)
_OFF = r"\b{}\s*=\s*False\b"
_REGISTRY: dict[str, type["Method"]] = {}


@cache
def found() -> dict[str, tuple[str, bool, bool]]:
    """name -> (module, listed, in 'all') of every method this package's files (and entry points) register."""
    import methods  # the package's folders (its __path__), not its contents: it imports nothing

    out: dict[str, tuple[str, bool]] = {}
    for folder in methods.__path__:
        for path in sorted(Path(folder).rglob("*.py")):  # a strategy is a file, or a package (methods/iisan/)
            parts = path.relative_to(folder).with_suffix("").parts
            module = ".".join(("methods",) + (parts[:-1] if parts[-1] == "__init__" else parts))
            for m in _DECORATOR.finditer(path.read_text(encoding="utf-8")):
                kw = m.group(2)
                out.setdefault(m.group(1), (module, not re.search(_OFF.format("listed"), kw),
                                            not re.search(_OFF.format("in_all"), kw)))
    for ep in entry_points(group=ENTRY_POINTS):
        out.setdefault(ep.name, (ep.value.split(":")[0], True, True))
    return out


def register_method(name: str, listed: bool = True, in_all: bool = True):
    """Class decorator: make ``cls`` available as ``name`` (``listed=False``: selectable only through
    configuration, like the generic peft tuner; ``in_all=False``: listed and selectable by name or
    wildcard, but not by ``all``, which reproduces the paper's table). The class must be a ``Method``
    with a ``build``."""
    from .base import Method

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"@register_method({name!r}): {cls!r} is not a subclass of methods.base.Method")
        if cls.build is Method.build:
            raise TypeError(f"@register_method({name!r}): {cls.__name__} has no build(ctx) of its own")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method '{name}' is already registered by {_REGISTRY[name].__module__}")
        cls.name = name
        cls.listed = listed
        cls.in_all = in_all
        _REGISTRY[name] = cls
        return cls

    return deco


def available() -> list[str]:
    """Every listed method name, in the order the benchmark runs them."""
    listed = [n for n, (_, shown, _all) in found().items() if shown]
    listed += [n for n, c in _REGISTRY.items() if getattr(c, "listed", True) and n not in listed]
    return sorted(listed, key=lambda n: (RUN_ORDER.index(n) if n in RUN_ORDER else len(RUN_ORDER)))


def in_all(name: str) -> bool:
    """Whether ``--methods all`` runs ``name`` (the paper's methods, plugins and configured tuners do)."""
    if name in found():
        return found()[name][2]
    return getattr(_REGISTRY.get(name), "in_all", True)


def get_method(name: str) -> type["Method"]:
    if name not in _REGISTRY:
        if name not in found():
            raise BenchError(f"unknown method '{name}'{nearest(name, available())}")
        importlib.import_module(found()[name][0])
        if name not in _REGISTRY:
            raise BenchError(f"{found()[name][0]} does not register a method named '{name}'")
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
            matched = [n for n in names if in_all(n)]
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
    """Validated options dataclass for one method from its [methods.NAME] table; errors name each
    key's own source (the config file, ``--set KEY``)."""
    from benchmark.config import build_dataclass
    from core.keys import BadValue, check_options

    options_cls = get_method_for(name, cfg).Options
    table, prefix = cfg.methods.get(name) or {}, f"methods.{name}"
    if hasattr(options_cls, "from_table"):  # options with open-ended keys (the generic peft tuner)
        return options_cls.from_table(table, cfg.where, prefix)
    opts = build_dataclass(options_cls, table, cfg.source, prefix, cfg.origins)
    try:
        check_options(opts, prefix)  # each field's declared range
        if hasattr(opts, "check"):  # the rest (non-empty lists, duplicates)
            opts.check(prefix)
    except BadValue as exc:
        raise cfg.blame(exc.keys, exc.text) from None
    except BenchError as exc:
        raise BenchError(f"{cfg.where(prefix)}: {exc}") from None
    return opts


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
