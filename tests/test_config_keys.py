"""Each config key is declared once, on its dataclass field (#24): its role decides the resume hash
and the comparability check, its flag the CLI's mapping, its range the checks; bench.toml documents
every key. These tests hold every consumer to that one declaration."""

from __future__ import annotations

import json
import re

import pytest

from benchmark.cli import RUN_OPTIONS, main
from benchmark.config import _fields, BenchConfig, default_config_path, flags, load_config, roles
from benchmark.launch.outdir import comparable_settings
from core.keys import ROLES, key_doc


def bench_toml_comments() -> dict[str, str]:
    """Each key's comment in bench.toml, its continuation lines joined."""
    section, docs, cur = "", {}, None
    for line in default_config_path().read_text().splitlines():
        if m := re.match(r"^\[([\w.]+)\]", line):
            section, cur = m.group(1), None
        elif m := re.match(r"^(\w+)\s*=.*?#\s?(.*)$", line):
            cur = f"{section}.{m.group(1)}"
            docs[cur] = m.group(2).strip()
        elif (m := re.match(r"^\s+#\s?(.*)$", line)) and cur:
            docs[cur] += " " + m.group(1).strip()
        else:
            cur = None
    return docs


def test_every_key_has_a_known_role_and_bench_toml_documents_it_as_its_field_does():
    keys = roles()
    assert set(keys.values()) <= set(ROLES) and len(keys) >= 50
    docs = bench_toml_comments()
    assert set(keys) - set(docs) == set()  # a key added without its line in bench.toml fails here
    fields = _fields(BenchConfig)
    drifted = {k: (docs[k], key_doc(fields[k])) for k in keys if docs[k] != key_doc(fields[k])}
    assert not drifted, drifted  # the comment says what the field declares: range, then help text
    assert all(fields[k].metadata.get("help") for k in keys)


def test_the_clis_flags_are_the_declared_ones():
    params = {p for opt in RUN_OPTIONS for p in [opt(lambda **k: None).__click_params__[0].name]}
    assert params - {"config_path", "sets"} == set(flags())
    assert flags()["backbone"] == ("backbone", "preset") and flags()["nproc"] == ("run", "nproc")


@pytest.mark.parametrize("key, value", [("tpme.alpha_time", 0.9), ("run.out", "elsewhere"), ("run.repeats", 3),
                                        ("run.sample_interval_ms", 20.0), ("train.profile_steps", 2)])
def test_keys_outside_the_hash_leave_it_and_the_comparison_alone(key, value):
    base = load_config(None)
    section, name = key.split(".")
    changed = load_config(None, {section: {name: value, **({"alpha_memory": 0.0} if name == "alpha_time" else {})}})
    assert changed.hash_for("fft") == base.hash_for("fft")
    assert comparable_settings(changed.to_dict(), "cpu") == comparable_settings(base.to_dict(), "cpu")


@pytest.mark.parametrize("key, value, compared_too", [("run.nproc", 2, False), ("run.isolate", False, False),
                                                      ("train.lr_head", 5e-4, True), ("run.epochs", 3, True)])
def test_keys_in_the_hash_change_it_and_only_results_are_compared(key, value, compared_too):
    base = load_config(None)
    section, name = key.split(".")
    changed = load_config(None, {section: {name: value}})
    assert changed.hash_for("fft") != base.hash_for("fft")
    same = comparable_settings(changed.to_dict(), "cpu") == comparable_settings(base.to_dict(), "cpu")
    assert same is not compared_too


def test_a_methods_version_is_in_its_hash():
    cfg = load_config(None)
    assert cfg.hash_for("lora", 2) != cfg.hash_for("lora", 1) and cfg.hash_for("lora") == cfg.hash_for("lora", 1)


def test_new_tpme_weights_rescore_the_runs_without_training_them_again(tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    tiny = ["--out", str(out), "--methods", "bitfit,iisan-cached", "--epochs", "1", "--no-progress", "--no-isolate",
            "--set", "data.synthetic.users=60", "--set", "data.synthetic.items=40", "--set", "train.max_steps_per_epoch=1",
            "--set", f"methods.iisan-cached.cache_dir=\"{tmp_path}\"", "--set", "eval.eval_batch_size=64"]
    main(["run", *tiny])
    first = (out / "results.jsonl").read_text()
    assert "TPME (lower is better) = 0.45·time + 0.1·params + 0.45·memory" in (out / "report.md").read_text()
    capsys.readouterr()
    main(["run", *tiny, "--set", "tpme.alpha_time=0.9", "--set", "tpme.alpha_memory=0.0"])
    said = capsys.readouterr().out
    assert "skipping 2 run(s) already in" in said and (out / "results.jsonl").read_text() == first
    report = (out / "report.md").read_text()
    assert "TPME (lower is better) = 0.9·time + 0.1·params + 0·memory" in report
    assert "TPME alphas from `--set tpme.alpha_time, --set tpme.alpha_memory" in report
    assert json.loads((out / "tpme.json").read_text())["alpha_time"] == 0.9

    from methods.registry import get_method  # a method whose code changed (its version) trains again

    monkeypatch.setattr(get_method("bitfit"), "version", 2)
    main(["run", *tiny])
    said = capsys.readouterr().out
    assert "skipping 1 run(s) already in" in said and "(iisan-cached)" in said
    assert [json.loads(line)["method"] for line in (out / "results.jsonl").read_text().splitlines()] == \
        ["bitfit", "iisan-cached", "bitfit"]
