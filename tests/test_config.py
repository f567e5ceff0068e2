"""Config loading: defaults, overrides, and one-line errors that name the key."""

import pytest

from benchmark.config import BenchConfig, load_config
from core.errors import BenchError


def test_embedded_default_loads_and_matches_dataclass_defaults():
    cfg = load_config()
    assert cfg.data.dataset == "synthetic" and cfg.backbone.preset == "tiny"
    assert cfg.data.max_seq_len == 10 and cfg.data.text_tokens == 30 and cfg.train.batch_size == 64
    default = BenchConfig()
    assert (cfg.tpme.alpha_time, cfg.tpme.alpha_params, cfg.tpme.alpha_memory) == (0.45, 0.10, 0.45)
    assert cfg.train == default.train and cfg.eval == default.eval and cfg.run.epochs == default.run.epochs


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, needle", [
    ("[run]\nepoch = 3\n", "unknown key 'run.epoch' (did you mean 'epochs'?)"),
    ("[trian]\nbatch_size = 3\n", "unknown key 'trian' (did you mean 'train'?)"),
    ("[train]\nbatch_size = 'big'\n", "'train.batch_size' must be int, got str 'big'"),
    ("[train]\nprecision = 'fp8'\n", "'train.precision' must be one of 'fp32', 'bf16', 'fp16'"),
    ("[data.synthetic]\nuser = 3\n", "unknown key 'data.synthetic.user' (did you mean 'users'?)"),
    ("[tpme]\nalpha_time = 0.5\n", "alphas must sum to 1"),
    ("[eval]\nks = [10, 'x']\n", "'eval.ks' must be a list of int, got str 'x' in [10, 'x']"),
    ("[run\n", "invalid TOML"),
])
def test_bad_config_names_the_key(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(BenchError) as err:
        load_config(path)
    msg = str(err.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


def test_overrides_win_and_are_validated():
    cfg = load_config(None, {"run": {"epochs": 1}, "data": {"synthetic": {"users": 50}}})
    assert cfg.run.epochs == 1 and cfg.data.synthetic.users == 50
    with pytest.raises(BenchError, match="run.epochs"):
        load_config(None, {"run": {"epochs": "one"}})


def test_hash_depends_on_method_options_only_for_that_method():
    a = load_config(None, {"methods": {"lora": {"r": 4}}})
    b = load_config(None, {"methods": {"lora": {"r": 8}}})
    assert a.hash_for("lora") != b.hash_for("lora")
    assert a.hash_for("fft") == b.hash_for("fft")


def test_set_overrides_read_toml_values_and_flags_win():
    from benchmark.config import merge, parse_sets

    sets = parse_sets(["train.max_steps_per_epoch=2", "eval.ks=[5, 10]", "data.synthetic.users=64",
                       "run.device=cpu", "train.paper_protocol=true", "run.out=runs/x"])
    assert sets == {"train": {"max_steps_per_epoch": 2, "paper_protocol": True}, "eval": {"ks": [5, 10]},
                    "data": {"synthetic": {"users": 64}}, "run": {"device": "cpu", "out": "runs/x"}}
    cfg = load_config(None, merge(sets, {"run": {"out": "runs/flag"}}))
    assert cfg.train.max_steps_per_epoch == 2 and cfg.eval.ks == [5, 10] and cfg.data.synthetic.users == 64
    assert cfg.train.paper_protocol is True and cfg.run.out == "runs/flag"
    with pytest.raises(BenchError, match="'data.synthetic' was already set"):
        parse_sets(["data.synthetic=1", "data.synthetic.users=2"])


def test_paper_config_builds_the_papers_models():
    """configs/paper.toml is the paper's setting: counted on the meta device, its models have the
    paper's trainable parameters, at the paper's image size, as the params command counts them."""
    from benchmark.commands.params import PAPER_IMAGE_SIZE, count_all, params_config
    from core.paper import PAPER_TRAINABLE as PAPER

    cfg = load_config("configs/paper.toml")
    assert params_config(cfg).data.image_size == cfg.data.image_size == PAPER_IMAGE_SIZE
    rows = {r["method"]: r["trainable"] for r in count_all(params_config(cfg), ["fft", "iisan"])}
    assert {k: round(v / 1e6, 1) for k, v in rows.items()} == {k: round(PAPER[k] / 1e6, 1) for k in rows}
