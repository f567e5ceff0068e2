"""The class rules of bad input (#29), walked over every key rather than case by case: every numeric
key has a range and both ends are refused in one line naming ``--set KEY``; every cross-key check
names each of its keys with its own source; sizes a machine cannot hold are refused before the data
exist. Config-level: no data, no runs, milliseconds each."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
from pathlib import Path
from typing import get_type_hints

import pytest
import torch

from benchmark.cli import PipeSafe, _config
from benchmark.config import BenchConfig, default_config_path, load_config
from benchmark.config_checks import CROSS, sections
from benchmark.launch.fits import check_fits, needs
from benchmark.training.metrics import fewest_candidates
from core.errors import BenchError
from core.keys import range_of
from methods.registry import available, get_method, options_for

FILE = str(default_config_path())


def _numeric(cls) -> list[tuple[dataclasses.Field, bool]]:
    """Every int/float (or list of int) field of a dataclass, with whether it is an integer."""
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if tp in (int, float) or tp == list[int]:
            out.append((f, tp is not float))
    return out


def config_keys() -> list[tuple[str, dataclasses.Field, bool]]:
    keys = []
    for section, prefix in sections(load_config(None)):
        for f, is_int in _numeric(type(section)):
            keys.append((f"{prefix}.{f.name}" if prefix else f.name, f, is_int))
    return keys


def option_classes() -> list[tuple[str, type]]:
    return [(n, get_method(n).Options) for n in available()
            if not hasattr(get_method(n).Options, "from_table") and dataclasses.fields(get_method(n).Options)]


def test_every_numeric_key_of_the_config_and_of_every_methods_options_has_a_range():
    missing = [key for key, f, _ in config_keys() if range_of(f) is None]
    missing += [f"methods.{n}.{f.name}" for n, cls in option_classes() for f, _ in _numeric(cls) if range_of(f) is None]
    assert not missing
    assert len(config_keys()) >= 35  # the walk sees the whole config


@pytest.mark.parametrize("key, field, is_int", config_keys(), ids=[k for k, _, _ in config_keys()])
def test_both_ends_of_every_config_keys_range_are_one_line_naming_set_key(key, field, is_int):
    rng = range_of(field)
    for bad in rng.outside(is_int):
        value = int(bad) if is_int else bad
        text = f"[{value}]" if key == "eval.ks" else repr(value)
        with pytest.raises(BenchError) as exc:
            _config(None, (f"{key}={text}",))
        assert str(exc.value).startswith(f"--set {key}: '{key}' must be {rng.text()}, got "), str(exc.value)
    for edge in (rng.lo, rng.hi if not rng.hi_open else None):  # the ends themselves pass the range check
        if edge is None:
            continue
        value = int(edge) if is_int else float(edge)
        try:
            _config(None, (f"{key}={[value] if key == 'eval.ks' else value!r}",))
        except BenchError as exc:  # another rule (a cross check) may refuse it: never this range
            assert f"'{key}' must be {rng.text()}" not in str(exc)


@pytest.mark.parametrize("name, cls", option_classes(), ids=[n for n, _ in option_classes()])
def test_both_ends_of_every_method_options_range_are_one_line_naming_set_key(name, cls):
    for f, is_int in _numeric(cls):
        rng, key = range_of(f), f"methods.{name}.{f.name}"
        for bad in rng.outside(is_int):
            value = int(bad) if is_int else bad
            cfg = _config(None, (f"{key}={[value] if f.name == 'taps' else value!r}",))
            with pytest.raises(BenchError) as exc:
                options_for(name, cfg)
            assert str(exc.value).startswith(f"--set {key}: '{key}' must be {rng.text()}, got "), str(exc.value)


@pytest.mark.parametrize("rule", CROSS, ids=[" ".join(r.keys) for r in CROSS])
def test_every_cross_key_check_names_each_key_with_its_own_source(rule):
    sets = tuple(f"{k}={v!r}".replace("False", "false").replace("'", '"') if not isinstance(v, list)
                 else f"{k}={v}" for k, v in rule.breaks.items())
    with pytest.raises(BenchError) as exc:
        _config(None, sets)
    msg = str(exc.value)
    given = [f"--set {k}" for k in rule.keys if k in rule.breaks]
    prefix = ", ".join(given + ([FILE] if len(given) < len(rule.keys) else []))
    assert msg.startswith(f"{prefix}: {rule.text}"), msg
    if len(rule.keys) > 1:
        for k in rule.keys:
            assert re.search(rf"{re.escape(k)} = .* from {re.escape(f'--set {k}' if k in rule.breaks else FILE)}", msg)


@pytest.mark.parametrize("sets, line", [
    (("foo.bar=1",), "--set foo.bar: unknown key 'foo'"),
    (("methods.bogus.r=1",), "--set methods.bogus.r: [methods.bogus] names no method"),
    (('data.dataset=""',), "--set data.dataset: 'data.dataset' must be 'synthetic' or a folder, not empty, got ''"),
    (("eval.ks=[1.5]",), "--set eval.ks: 'eval.ks' must be a list of int, got float 1.5 in [1.5]"),
    (("data.synthetic.users=1000000000",), "--set data.synthetic.users: 'data.synthetic.users' must be in [2, 100_000]"),
    (("run.sample_interval_ms=0.001",), "--set run.sample_interval_ms: 'run.sample_interval_ms' must be 0 (by device) or in [1, 60_000]"),
])
def test_the_listed_cases_blame_the_set_value(sets, line):
    from benchmark.launch.recipe import check_methods, method_names

    with pytest.raises(BenchError) as exc:
        cfg = _config(None, sets)
        check_methods(cfg, method_names(cfg))
    assert str(exc.value).startswith(line), str(exc.value)


def test_a_key_in_a_file_is_blamed_on_the_file_and_one_set_beside_it_on_set(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(default_config_path().read_text().replace("alpha_time = 0.45", "alpha_time = 0.5"))
    with pytest.raises(BenchError) as exc:
        load_config(path, None)
    assert str(exc.value).startswith(f"{path}: the [tpme] alphas must sum to 1 (tpme.alpha_time = 0.5 from {path};")


# --------------------------------------------------------------------------- sizes the machine cannot hold


def test_the_data_a_config_implies_is_counted_by_hand():
    cfg = load_config(None)
    got = {n.what: n.mb * 2**20 for n in needs(cfg, 300, 1000)}
    assert got["item images (uint8)"] == 301 * 3 * 32 * 32
    assert got["title tokens and masks (int64)"] == 301 * 30 * 16
    assert got["the user encoder's weights, gradients and Adam state (fp32)"] == (2 * 12 * 64 ** 2 + 11 * 64) * 16


def test_a_config_past_the_memory_is_refused_naming_the_largest_terms_keys():
    cfg = _config(None, ("data.image_size=1024", "data.synthetic.items=100000"))
    with pytest.raises(BenchError) as exc:
        check_fits(cfg, 100_000, 1000, avail_mb=24 * 1024)
    msg = str(exc.value)
    assert msg.startswith("--set data.image_size, --set data.synthetic.items: this config needs at least 293.")
    assert "item images (uint8) alone 293.0 GB" in msg
    check_fits(load_config(None), 300, 1000, avail_mb=24 * 1024)  # the default fits
    total_mb = sum(n.mb for n in needs(load_config(None), 300, 1000))
    with pytest.raises(BenchError, match="more than 80% of the"):
        check_fits(load_config(None), 300, 1000, avail_mb=total_mb / 0.8 - 0.01)
    check_fits(load_config(None), 300, 1000, avail_mb=total_mb / 0.8 + 0.01)


def test_the_fewest_candidates_after_masking_are_counted_by_hand():
    target = torch.tensor([5, 2])
    history = torch.tensor([[1, 2, 3, 3, 0], [2, 4, 0, 0, 0]])  # user 0: 3 distinct; user 1: 4 only (2 is the target)
    assert fewest_candidates(10, target, history, "all_history") == 7
    assert fewest_candidates(10, target, history, "history_except_target") == 7
    assert fewest_candidates(10, target, history, "none") == 10


# --------------------------------------------------------------------------- process edges, in-process


def test_a_closed_stdout_swallows_output_instead_of_ending_the_sweep():
    read, write = os.pipe()
    os.close(read)
    out = PipeSafe(os.fdopen(write, "w"))
    out.write("x" * 100_000)  # more than a pipe buffer: the write meets the closed reader
    out.flush()
    out.write("more\n")
    out.flush()


def test_a_full_disk_during_an_append_leaves_no_half_line(tmp_path, monkeypatch):
    from benchmark.measure import results

    path = tmp_path / "results.jsonl"
    results.append_result(path, {"method": "a"})
    before = path.read_bytes()

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results.os, "fsync", full)
    with pytest.raises(OSError):
        results.append_result(path, {"method": "b"})
    assert path.read_bytes() == before


def test_an_unreachable_hub_is_asked_once_and_answers_at_once():
    from benchmark.models.hub import hub_reachable

    assert hub_reachable("http://127.0.0.1:9") is False  # the discard port: nothing listens


def test_forced_kernels_on_cpu_are_judged_by_a_masked_call():
    from benchmark.models.kernels import refused_on_cpu

    assert refused_on_cpu("flash").startswith("No available kernel")
    assert refused_on_cpu("cudnn").startswith("No viable backend")
    assert refused_on_cpu("math") is None and refused_on_cpu("auto") is None


def test_bench_toml_states_every_range_it_sets():
    """bench.toml is what users read: each bounded key it sets says its range, the field's own text."""
    lines = default_config_path().read_text().splitlines()
    section, missing = "", []
    for line in lines:
        if m := re.match(r"^\[([\w.]+)\]", line):
            section = m.group(1)
        elif m := re.match(r"^(\w+)\s*=", line):
            key = f"{section}.{m.group(1)}"
            field = next((f for k, f, _ in config_keys() if k == key), None)
            if field is not None and f"range {range_of(field).text()}" not in line:
                missing.append(key)
    assert not missing, missing


def test_every_config_dataclass_is_reached_by_the_walk():
    names = {prefix for _, prefix in sections(BenchConfig())}
    assert {"", "run", "data", "data.synthetic", "backbone", "train", "eval", "tpme"} <= names
