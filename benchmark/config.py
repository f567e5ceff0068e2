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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import tomllib

from core.errors import BenchError, nearest
from core.keys import bounded, in_hash, role_of, setting


@dataclass
class RunConfig:
    methods: list[str] = setting(factory=lambda: ["all"], role="sweep", flag="methods")
    epochs: int = bounded(4, 1, 1000, flag="epochs")
    seed: int = bounded(42, 0, 2**32, hi_open=True, flag="seed")
    device: Literal["auto", "cpu", "cuda"] = setting("auto", role="variant", flag="device")  # compared as resolved (env.device)
    out: str = setting("runs/default", role="sweep", flag="out")
    repeats: int = bounded(1, 1, 100, role="sweep", flag="repeats")
    isolate: bool = setting(True, role="variant", flag="isolate")
    nproc: int = bounded(1, 1, 1024, role="variant", flag="nproc")  # (and at most the cores, or GPUs, the run has) data-parallel processes per run (torch DDP; gloo on CPU, NCCL on GPUs)
    sample_interval_ms: float = bounded(0.0, 1, 60_000, zero="by device", role="sweep")  # 0 = by device: 10 ms on GPU, 50 ms on CPU
    floors: Literal["auto", "on", "off"] = setting("auto", role="sweep")  # time the plain-PyTorch floors after the sweep; auto = on a GPU
    # each run's own estimate (iisan-bench estimate for the device it ran on) beside its measurement, and
    # its MFU from the traced FLOPs; auto = on a GPU in the device table (benchmark.measure.devices)
    estimate: Literal["auto", "on", "off"] = setting("auto", role="sweep")


@dataclass
class SyntheticConfig:
    users: int = bounded(1000, 2, 100_000)
    items: int = bounded(300, 2, 100_000)
    clusters: int = bounded(8, 1, 10_000)
    min_len: int = bounded(6, 3, 1024)
    max_len: int = bounded(14, 3, 1024)
    noise: float = bounded(0.1, 0, 1)


@dataclass
class DataConfig:
    dataset: str = setting("synthetic", flag="dataset")
    max_seq_len: int = bounded(10, 1, 1024)
    min_seq_len: int = bounded(5, 3, 1024, note="train, valid and test items")
    text_tokens: int = bounded(30, 2, 512, note="[CLS] and at least one word; BERT's positions")
    image_size: int = bounded(32, 1, 1024)
    images: Literal["real", "synthetic", "none"] = setting("synthetic", flag="images")
    trust_pickle: bool = setting(False, role="sweep", flag="trust_pickle")  # a permission: changes no figure
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class BackboneConfig:
    preset: Literal["tiny", "minilm", "base"] = setting("tiny", flag="backbone")
    text_model: str = ""
    vision_model: str = ""
    # auto: the weights a preset or a named model has (minilm: pretrained MiniLM text; base: BERT-base +
    # ViT-base; tiny: random); pretrained; random (architecture only: efficiency does not depend on weights)
    init: Literal["auto", "pretrained", "random"] = setting("auto", flag="init")
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"


@dataclass
class TrainConfig:
    batch_size: int = bounded(64, 1, 65_536)
    lr_backbone: float = bounded(1e-4, 0, 1)
    lr_peft: float = bounded(1e-3, 0, 1)
    lr_head: float = bounded(1e-3, 0, 1)
    lr_backbone_vision: float = bounded(0.0, 0, 1, note="0 = lr_backbone")  # the vision encoder's trained weights
    weight_decay: float = bounded(0.0, 0, 1)
    precision: Literal["fp32", "bf16", "fp16"] = setting("fp32", flag="precision")
    patience: int = bounded(3, 0, 1000, note="0 = no early stopping")
    max_steps_per_epoch: int = bounded(0, 0, 10_000_000, note="0 = a full epoch")
    item_dim: int = bounded(64, 1, 4096)
    num_blocks: int = bounded(2, 1, 48)
    num_heads: int = bounded(2, 1, 64)
    dropout: float = bounded(0.1, 0, 1, hi_open=True)
    # True: the IISAN paper's recipe per method (batch size, learning rates, LoRA scaling), selection
    # by valid HR@10 with patience 11, popularity count/total and architecture = paper (docs/protocol.md)
    paper_protocol: bool = False
    select_by: Literal["ndcg", "hr", "mrr"] = "ndcg"  # validation metric (at K = 10, else the first K) for the best epoch
    popularity: Literal["smoothed", "count"] = "smoothed"  # log-popularity debiasing: (count + 1) / sum, or count / total
    # paper: the paper's code's model details (SASRec: ReLU FFN, LayerNorm eps 1e-6, bias-free attention,
    # xavier init; GELU after each modality projection of end-to-end towers; SAN blocks N(0, 0.01) with
    # zero bias and the first intra step gated); ours: PyTorch's defaults (docs/protocol.md)
    architecture: Literal["ours", "paper"] = "ours"
    profile_steps: int = bounded(0, 0, 1000, role="sweep")  # after training, apart from every figure; >0: after training, trace this many steps with torch.profiler (OUT/traces/)
    # torch.compile the loss; auto = the method's own choice on a GPU (iisan-cached: reduce-overhead,
    # i.e. CUDA graphs), off on CPU
    compile: Literal["auto", "off", "default", "reduce-overhead", "max-autotune"] = "auto"
    # seconds of compiling (and CUDA-graph recording) before the clock; past it the remaining step
    # shapes run eagerly (checked between shapes: one shape's compile may overrun it by its own time)
    compile_budget_s: float = bounded(60.0, 0, 86_400)
    # distinct: each step encodes its distinct items once (fast); every_slot: every slot of every
    # sequence, padding and repeats included, as the paper's code does (2.5x the encoder work)
    encoder_workload: Literal["distinct", "every_slot"] = "distinct"
    item_bucket: int = bounded(64, 1, 4096, note="1 = no padding")  # each step's distinct items padded up to a multiple: few shapes (cuDNN plans, graphs)
    sdpa_backend: Literal["auto", "default", "cudnn", "flash", "efficient", "math"] = "auto"  # attention kernel


# The IISAN paper's recipe every method shares under ``train.paper_protocol`` (selection by valid HR@10,
# patience 11, popularity count/total, the paper code's model details); each method adds its own
# (``Method.paper_train``: batch size, learning rates). Read by ``paper_common`` and the recipe alone.
PAPER_TRAIN: dict[str, Any] = {"select_by": "hr", "patience": 11, "popularity": "count", "architecture": "paper"}
# ... and on a CUDA device its precision: fp16 autocast with a GradScaler (run.py). On a CPU the
# configured precision stays: CPUs have no fp16 matmul kernels, and the paper's scaler is CUDA's.
PAPER_TRAIN_CUDA: dict[str, Any] = {"precision": "fp16"}


def paper_common(train: TrainConfig) -> TrainConfig:
    """``train`` with the recipe every method shares applied when ``paper_protocol`` is on (what the
    sweep's shared data, e.g. the popularity floor, is prepared under)."""
    return dataclasses.replace(train, **PAPER_TRAIN) if train.paper_protocol else train


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [10], metadata=bounded(None, 1, 10_000).metadata)
    # which of the user's past items compete in the ranking (benchmark.training.metrics): all_history = the
    # paper's (a repeated target is masked too: a miss), history_except_target, none (repeat-aware)
    masking: Literal["all_history", "history_except_target", "none"] = "all_history"
    eval_batch_size: int = bounded(256, 1, 65_536)
    item_batch_size: int = bounded(256, 1, 65_536)


@dataclass
class TPMEConfig:
    alpha_time: float = bounded(0.45, 0, 1, role="report")
    alpha_params: float = bounded(0.10, 0, 1, role="report")
    alpha_memory: float = bounded(0.45, 0, 1, role="report")
    reference: str = setting("fft", role="report")


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
    out: dict[str, dataclasses.Field] = {}
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if cls is BenchConfig and f.name in ("source", "origins", "methods"):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_fields(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = f
    return out


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
