"""Benchmark configuration: dataclasses, TOML loading, strict validation, CLI overrides.

Why strict: a typo in a key silently falling back to a default would produce a benchmark that
measures something other than what the user asked for. Unknown keys and wrong types are errors.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from benchmark.settings import (  # noqa: F401 - the key declarations, re-exported where they were
    PAPER_TRAIN,
    PAPER_TRAIN_CUDA,
    BackboneConfig,
    DataConfig,
    EvalConfig,
    RunConfig,
    SyntheticConfig,
    TPMEConfig,
    TrainConfig,
    paper_common,
)
from core.errors import BenchError, nearest
from core.keys import in_hash, role_of


@dataclass
class BenchConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    tpme: TPMEConfig = field(default_factory=TPMEConfig)
    source: str = "<defaults>"
    origins: dict[str, str] = field(default_factory=dict)  # dotted key -> where its value came from

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        d.pop("origins")
        return d

    def where(self, *keys: str) -> str:
        """Where the keys' values came from, the command line's first: ``--set KEY`` or a flag, else
        the config file (a section's source is that of any key set under it)."""
        srcs = list(dict.fromkeys(source_of(k, self.origins, self.source) for k in keys))
        return ", ".join(sorted(srcs, key=lambda s: s == self.source))

    def value(self, key: str) -> Any:
        node: Any = self
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else getattr(node, part)
        return node

    def blame(self, keys: tuple[str, ...] | list[str], text: str) -> BenchError:
        """The one-line error of a check on ``keys``: every key's source first and, when the check
        involves several keys, each one's value and its own source."""
        if len(keys) == 1:
            return BenchError(f"{self.where(*keys)}: {text}")
        each = "; ".join(f"{k} = {self.value(k)!r} from {source_of(k, self.origins, self.source)}" for k in keys)
        return BenchError(f"{self.where(*keys)}: {text} ({each})")

    def hash_for(self, method: str, version: int = 1) -> str:
        """Stable hash of everything that determines one method's run (the resume key): every key
        whose role is in the hash (``core.keys.ROLES``), the method's own table and its code
        ``version`` (``Method.version``: a resume after the method changed does not keep stale runs)."""
        d = {key: v for key, v in flat_settings(self).items() if in_hash(roles()[key])}
        d["methods"] = {method: self.methods.get(method, {}), "version": version}
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def flat_settings(cfg: "BenchConfig") -> dict[str, Any]:
    """Every config key's value by dotted name (``methods`` tables apart)."""
    return {key: cfg.value(key) for key in _fields(BenchConfig)}


def _fields(cls: type, prefix: str = "") -> dict[str, dataclasses.Field]:
    return {key: f for key, (f, _) in _typed_fields(cls, prefix).items()}


def _typed_fields(cls: type, prefix: str = "") -> dict[str, tuple[dataclasses.Field, Any]]:
    """Every config key of ``cls`` by dotted name, with its field and its resolved type."""
    out: dict[str, tuple[dataclasses.Field, Any]] = {}
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if cls is BenchConfig and f.name in ("source", "origins", "methods"):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_typed_fields(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (f, hints[f.name])
    return out


@functools.lru_cache(maxsize=None)
def key_fields() -> dict[str, tuple[dataclasses.Field, Any]]:
    """Dotted key -> (its field, its resolved type): what the CLI's flags are built from."""
    return _typed_fields(BenchConfig)


@functools.lru_cache(maxsize=None)
def roles() -> dict[str, str]:
    """Dotted key -> its role, from the fields' declarations (``core.keys.setting``)."""
    return {key: role_of(f) for key, f in _fields(BenchConfig).items()}


@functools.lru_cache(maxsize=None)
def flags() -> dict[str, tuple[str, str]]:
    """CLI flag (click's parameter name) -> (section, key), from the fields' declarations."""
    out = {}
    for key, f in _fields(BenchConfig).items():
        if "flag" in f.metadata:
            section, _, name = key.rpartition(".")
            out[f.metadata["flag"]] = (section, name)
    return out


def _type_ok(value: Any, tp: Any) -> bool:
    origin = get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in get_args(tp)
    if origin is Union:
        return any(_type_ok(value, a) for a in get_args(tp))
    if origin is list:
        (inner,) = get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def source_of(key: str, origins: dict[str, str], default: str) -> str:
    """``key``'s source: its own (``--set KEY``, a flag), else that of a key set under it (a section
    named by ``--set foo.bar``), else ``default`` (the config file)."""
    if key in origins:
        return origins[key]
    return next((v for k, v in origins.items() if k.startswith(key + ".")), default)


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) is list:
        return f"a list of {_describe(get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _got(value: Any, tp: Any) -> str:
    """What was wrong: the value and its type, or a list's first bad element and its type."""
    if get_origin(tp) is list and isinstance(value, list):
        (inner,) = get_args(tp)
        bad = next(v for v in value if not _type_ok(v, inner))
        return f"{type(bad).__name__} {bad!r} in {value!r}"
    return f"{type(value).__name__} {value!r}"


def build_dataclass(cls: type, data: dict[str, Any], where: str, prefix: str,
                    origins: dict[str, str] | None = None) -> Any:
    """Build ``cls`` from ``data``, rejecting unknown keys and wrong types with one line naming
    where the key came from (``origins``: dotted key -> ``--set KEY`` or a flag; else ``where``)."""
    origins = origins or {}
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name not in ("source", "origins")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        src = source_of(full, origins, where)
        if key not in names:
            raise BenchError(f"{src}: unknown key '{full}'{nearest(key, names)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise BenchError(f"{src}: '{full}' must be a table")
            kwargs[key] = build_dataclass(tp, value, where, full, origins)
            continue
        if not _type_ok(value, tp):
            raise BenchError(
                f"{src}: '{full}' must be {_describe(tp)}, got {_got(value, tp)}"
            )
        kwargs[key] = float(value) if tp is float else value
    return cls(**kwargs)


def parse_sets(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--set section.key=VALUE`` pairs as a nested override dict. VALUE is read as a TOML value
    (``2``, ``true``, ``[5, 10]``, ``"x"``); anything TOML cannot read is taken as a plain string.
    Unknown keys and wrong types are then rejected by ``load_config`` like keys in a file."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or not all(parts):
            raise BenchError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.max_steps_per_epoch=2")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        node = out
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                where = ".".join(parts[:i + 1])
                raise BenchError(f"--set {item!r}: '{where}' was already set to a value, not a section")
        node[parts[-1]] = value
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def default_config_path() -> Path:
    """The embedded default, ``bench.toml``: beside the package in a checkout, else installed data."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "bench.toml", Path(sys.prefix) / "share" / "iisan-bench" / "bench.toml"):
        if cand.is_file():
            return cand
    raise BenchError("embedded default bench.toml not found; pass --config FILE")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise BenchError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except IsADirectoryError:
        raise BenchError(f"{path}: is a folder, not a config file") from None


def override_origins(overrides: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``--set KEY`` for every leaf of an override dict (the CLI relabels its named flags)."""
    out: dict[str, str] = {}
    for k, v in overrides.items():
        key = f"{prefix}{k}"
        out.update(override_origins(v, key + ".") if isinstance(v, dict) else {key: f"--set {key}"})
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                origins: dict[str, str] | None = None) -> BenchConfig:
    """Read a TOML config (default: the embedded bench.toml), apply overrides, validate. Errors name
    their source: the file, ``--set KEY``, or the flag given in ``origins``."""
    p = Path(path) if path else default_config_path()
    raw = read_toml(p)
    origins = {**override_origins(overrides or {}), **(origins or {})}
    if overrides:
        raw = merge(raw, overrides)
    cfg = build_dataclass(BenchConfig, raw, str(p), "", origins)
    cfg.source, cfg.origins = str(p), origins
    validate(cfg)
    return cfg


def validate(cfg: BenchConfig) -> None:
    """Ranges, finiteness and combinations (``benchmark.config_checks``)."""
    from benchmark.config_checks import check

    check(cfg)
