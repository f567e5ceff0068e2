"""The registry (#17): a built-in method is one file with one decorator, found without any table;
registration checks the class; option and group errors name what the user can fix."""

from __future__ import annotations

import pytest

import methods
from benchmark.cli import main
from benchmark.config import load_config
from core.errors import BenchError
from methods import registry
from methods.base import Method

NEW_METHOD = '''
from methods.base import Method
from methods.registry import register_method
from methods.fft import FullFineTuning


@register_method("t-dropped-in")
class DroppedIn(FullFineTuning):
    description = "a method that is one new file"
'''


@pytest.fixture
def extra_folder(tmp_path, monkeypatch):
    """A second folder of the methods package, as a new file in methods/ would be."""
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path)])
    registry.found.cache_clear()
    yield tmp_path
    registry.found.cache_clear()
    registry._REGISTRY.pop("t-dropped-in", None)


def test_a_new_method_is_one_file_and_shows_in_list(extra_folder, capsys):
    (extra_folder / "dropped_in.py").write_text(NEW_METHOD)
    assert "t-dropped-in" in registry.available()
    assert registry.available()[:6] == ["fft", "lora", "adapter", "bitfit", "iisan", "iisan-cached"]
    main(["list", "t-drop*"])
    assert "t-dropped-in  a method that is one new file" in capsys.readouterr().out
    assert registry.get_method("t-dropped-in").__module__ == "methods.dropped_in"


def test_the_generic_peft_tuner_is_registered_but_never_listed():
    assert "peft" in registry.found() and "peft" not in registry.available()
    assert registry.get_method("peft").listed is False


def test_registration_checks_the_class():
    with pytest.raises(TypeError, match="is not a subclass of methods.base.Method"):
        registry.register_method("t-bad")(type("NotAMethod", (), {}))
    with pytest.raises(TypeError, match="NoBuild has no build"):
        registry.register_method("t-bad")(type("NoBuild", (Method,), {}))
    assert "t-bad" not in registry._REGISTRY


def test_option_errors_name_the_methods_own_table():
    cfg = load_config(None, {"methods": {"iisan-cached": {"bottleneck": 0}}})
    with pytest.raises(BenchError, match=r"'methods.iisan-cached.bottleneck' must be in \[1, 4096\], got 0"):
        registry.options_for("iisan-cached", cfg)
    cfg = load_config(None, {"methods": {"lora": {"r": 0}}})
    with pytest.raises(BenchError, match=r"'methods.lora.r' must be in \[1, 1024\]"):
        registry.options_for("lora", cfg)


def test_an_unknown_parameter_group_is_one_line_naming_the_tower(tmp_path):
    import torch

    from benchmark.models.recommender import SeqRecommender
    from benchmark.training.trainer import Trainer
    from tests.helpers import trainer_for

    _, prep = trainer_for("fft", tmp_path)

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Embedding(prep.data.n_items + 1, 8)

        def forward(self, ids):
            return self.w(ids)

        def param_groups(self):
            return {"adapters": [self.w.weight]}

    cfg = load_config(None)
    model = SeqRecommender(Odd(), 8, 10, 1, 1, 0.0)
    with pytest.raises(BenchError, match=r"Odd.param_groups\(\): unknown group\(s\) \['adapters'\]; groups are "):
        Trainer(model, prep.split, cfg.train, cfg.eval, torch.device("cpu"), 0)
