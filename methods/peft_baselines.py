"""The peft baselines side-tuning papers compare against, by name: ``ia3``, ``dora``, ``vera``,
``ln-tuning``. Each is the generic peft tuner (``peft_tuner.PeftTuner``) with its peft type and the
usual settings; its [methods.NAME] table takes that config class's keyword arguments (checked like
the generic tuner's), so a user can change r, targets or dropout without naming the type.
Target modules are spelled per encoder (``_common.targets_for``): BERT's ``query`` is the ViT's
``q_proj`` under transformers 5.
"""

from __future__ import annotations

from typing import Any, Callable

from core.errors import BenchError

from .peft_tuner import PeftOptions, PeftTuner
from .registry import register_method


def named_options(peft_type: str, defaults: dict[str, Any]) -> type[PeftOptions]:
    """Options of a named baseline: its own peft type, its defaults, the user's table on top."""

    class Options(PeftOptions):
        @classmethod
        def from_table(cls, table: dict[str, Any], where: Callable[[str], str], prefix: str) -> PeftOptions:
            given = str(table.get("peft_type", peft_type)).strip().upper().replace("-", "_")
            if given != peft_type:
                raise BenchError(f"{where(prefix + '.peft_type')}: '{prefix}.peft_type' = {table['peft_type']!r}: this built-in method is "
                                 f"{peft_type}; declare another [methods.NAME] table for another tuner")
            return PeftOptions.from_table({**defaults, **table, "peft_type": peft_type}, where, prefix)

    return Options


class NamedPeft(PeftTuner):
    """A generic peft tuner with a fixed type (not registered itself); the paper's recipe is the
    generic tuner's (``PeftTuner.paper_train``)."""


@register_method("ia3", in_all=False)
class IA3(NamedPeft):
    description = "(IA)^3 (peft): learned scaling of keys, values and FFN outputs in both encoders."
    Options = named_options("IA3", {})


@register_method("dora", in_all=False)
class DoRA(NamedPeft):
    description = "DoRA (peft): weight-decomposed LoRA, r = 8, on query/value of both encoders."
    Options = named_options("LORA", {"use_dora": True, "r": 8, "lora_alpha": 16, "lora_dropout": 0.1,
                                     "target_modules": ["query", "value"]})


@register_method("vera", in_all=False)
class VeRA(NamedPeft):
    description = "VeRA (peft): shared frozen random projections, trained scaling vectors, on query/value."
    Options = named_options("VERA", {"r": 256, "target_modules": ["query", "value"]})


@register_method("ln-tuning", in_all=False)
class LNTuning(NamedPeft):
    description = "LN tuning (peft): only the encoders' LayerNorms train."
    Options = named_options("LN_TUNING", {"target_modules": ["LayerNorm"]})
