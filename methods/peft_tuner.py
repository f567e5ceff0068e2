"""Any HF peft tuner by configuration: ``[methods.NAME] peft_type = "IA3"`` plus its kwargs.

A table such as::

    [methods.ia3]
    peft_type = "IA3"
    target_modules = ["key", "value", "output.dense"]
    feedforward_modules = ["output.dense"]

registers a benchmarkable method ``ia3`` without new code (``registry.configured_extra``): the
registry maps it to this generic method, whose options are ``peft_type`` (validated against peft's
registry) and the keyword arguments of that type's config class (validated against its fields and
their types). When ``target_modules`` is not given, peft's own default for the text encoder's
model type (BERT) is used for both encoders, spelled as each encoder names its modules
(``_common.targets_for``: transformers 5's ViT calls BERT's ``query`` ``q_proj``); if peft has
none, ``["query", "value"]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, get_type_hints

from core.errors import BenchError, nearest

from ._common import first_line, peft_tower
from .base import PAPER_PEFT, BuildContext, ItemTower, Method
from .registry import register_method

# Fields of every PeftConfig that the benchmark sets itself or that make no sense here.
RESERVED = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode",
            "auto_mapping", "peft_version"}
FALLBACK_TARGETS = ["query", "value"]


def peft_config_class(peft_type: str, where: str, prefix: str):
    """The peft config class for ``peft_type`` (case-insensitive), or a one-line error."""
    from peft import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.config import PromptLearningConfig

    names = {str(getattr(k, "value", k)).upper(): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    key = peft_type.strip().upper().replace("-", "_")
    if key not in names:
        raise BenchError(f"{where}: '{prefix}.peft_type' = {peft_type!r} is not a peft tuner{nearest(key, names)}")
    cls = names[key]
    if issubclass(cls, PromptLearningConfig) or key in ("ADAPTION_PROMPT", "XLORA", "TRAINABLE_TOKENS"):
        raise BenchError(f"{where}: '{prefix}.peft_type' = {peft_type!r} is not supported: it needs a task model "
                         f"or token embeddings, not an encoder's layers (use LoRA-like tuners: LORA, IA3, LOHA, "
                         f"LOKR, VERA, BOFT, OFT, ...)")
    return key, cls


@dataclass
class PeftOptions:
    """``peft_type`` and the kwargs of its config class (built by ``from_table``)."""

    peft_type: str = "LORA"
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_table(cls, table: dict[str, Any], where: Callable[[str], str], prefix: str) -> "PeftOptions":
        """Options from a [methods.NAME] table; ``where(key)``: where that key's value came from."""
        from benchmark.config import _describe, _got, _type_ok

        key_src = where(f"{prefix}.peft_type")
        if "peft_type" not in table:
            raise BenchError(f"{where(prefix)}: '{prefix}.peft_type' is required (e.g. peft_type = \"IA3\")")
        peft_type = table["peft_type"]
        if not isinstance(peft_type, str):
            raise BenchError(f"{key_src}: '{prefix}.peft_type' must be str, got {type(peft_type).__name__} {peft_type!r}")
        key, config_cls = peft_config_class(peft_type, key_src, prefix)
        fields = {f.name for f in dataclasses.fields(config_cls)} - RESERVED
        try:
            hints = get_type_hints(config_cls)
        except Exception:  # noqa: BLE001 - unresolvable annotations: skip type checks, peft still validates
            hints = {}
        kwargs = {k: v for k, v in table.items() if k != "peft_type"}
        for k, v in kwargs.items():
            src = where(f"{prefix}.{k}")
            if k not in fields:
                raise BenchError(f"{src}: unknown key '{prefix}.{k}' for peft {config_cls.__name__}{nearest(k, fields)}")
            tp = hints.get(k)
            if tp is not None and not _type_ok(v, tp):
                raise BenchError(f"{src}: '{prefix}.{k}' must be {_describe(tp)}, got {_got(v, tp)}")
        try:
            config_cls(**kwargs)  # peft's own checks (__post_init__)
        except Exception as exc:  # noqa: BLE001 - any rejection is a config error
            raise BenchError(f"{where(prefix)}: [{prefix}] rejected by peft {config_cls.__name__}: {first_line(exc)}") from None
        return cls(peft_type=key, kwargs=kwargs)


@register_method("peft", listed=False)
class PeftTuner(Method):
    description = "Any HF peft tuner configured as [methods.NAME] peft_type = \"...\" on both encoders."
    paper_train = PAPER_PEFT
    Options = PeftOptions

    def build(self, ctx: BuildContext) -> ItemTower:
        _key, config_cls = peft_config_class(self.opts.peft_type, ctx.cfg.source, "methods.peft")
        user = dict(self.opts.kwargs)
        fields = {f.name for f in dataclasses.fields(config_cls)}
        defaultable = [k for k in ("target_modules", "feedforward_modules") if k in fields and k not in user]

        def make(kind: str, resolved):
            kw = dict(user)
            if resolved is not None:  # vision: reuse what peft resolved for the text encoder
                for k in defaultable:
                    val = getattr(resolved, k, None)
                    if val is not None:
                        kw[k] = sorted(val) if isinstance(val, (set, frozenset)) else val
            return config_cls(**kw)

        try:
            return peft_tower(ctx, make)
        except ValueError as exc:
            if "target_modules" not in defaultable or "target_modules" not in str(exc):
                raise
        # peft knows no default modules for this model type: use query/value
        user["target_modules"] = list(FALLBACK_TARGETS)
        if "feedforward_modules" in defaultable:
            user["feedforward_modules"] = []
        defaultable = []
        return peft_tower(ctx, make)
