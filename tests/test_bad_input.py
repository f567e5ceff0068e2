"""Bad input: one line on stderr naming the file, line or key, a non-zero exit, and no output folder."""

import json
import os
import re
import socket
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.config import DataConfig, load_config
from benchmark.data.dataset import tsv_dataset
from core.errors import BenchError


def write_dataset(root: Path, items: str | bytes | None = None, users: str | bytes | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    items = "".join(f"i{i}\tthing number {i}\n" for i in range(1, 9)) if items is None else items
    users = "".join(f"u{u}\t{' '.join(f'i{(u + j) % 8 + 1}' for j in range(5))}\n" for u in range(6)) if users is None else users
    for name, body in (("Toy_items.tsv", items), ("am_Toy_users.tsv", users)):
        if body is not False:
            (root / name).write_bytes(body if isinstance(body, bytes) else body.encode())
    return root


def fails(tmp_path, capsys, args, *needles, out=None):
    """Run the CLI, expect exit 2 with exactly one stderr line containing every needle, and no output folder."""
    out = out or tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(out), "--methods", "fft", "--epochs", "1", "--no-progress", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not Path(out).exists()
    return err


def images_dataset(tmp_path, skip=(), corrupt=()):
    from PIL import Image

    root = write_dataset(tmp_path / "d")
    (root / "images").mkdir()
    for i in range(1, 9):
        key = f"i{i}"
        if key in skip:
            continue
        path = root / "images" / f"{key}.jpg"
        if key in corrupt:
            path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        else:
            Image.new("RGB", (20, 20), (30 * i, 0, 0)).save(path)
    return root


# --------------------------------------------------------------------------- dataset files


def test_missing_items_file(tmp_path, capsys):
    root = write_dataset(tmp_path / "d", items=False)
    fails(tmp_path, capsys, ["--dataset", str(root)], str(root), "no items file matching '*_items.tsv'")


def test_missing_users_file(tmp_path, capsys):
    root = write_dataset(tmp_path / "d", users=False)
    fails(tmp_path, capsys, ["--dataset", str(root)], str(root), "no users file matching '*users*.tsv'")


def test_row_with_the_wrong_number_of_columns(tmp_path, capsys):
    root = write_dataset(tmp_path / "d", items="i1\tone\ni2\ttwo\textra\n")
    fails(tmp_path, capsys, ["--dataset", str(root)], f"{root / 'Toy_items.tsv'}:2: expected 2 tab-separated columns", "got 3")
    root = write_dataset(tmp_path / "e", users="u1\ti1 i2 i3 i4 i5\nu2 i1 i2 i3\n")
    fails(tmp_path, capsys, ["--dataset", str(root)], f"{root / 'am_Toy_users.tsv'}:2: expected 2 tab-separated columns")


def test_empty_title(tmp_path, capsys):
    root = write_dataset(tmp_path / "d", items="i1\tone\ni2\t  \ni3\tthree\n")
    fails(tmp_path, capsys, ["--dataset", str(root)], f"{root / 'Toy_items.tsv'}:2: empty title for item 'i2'")


def test_duplicate_item_id(tmp_path, capsys):
    root = write_dataset(tmp_path / "d", items="i1\tone\ni2\ttwo\ni1\tagain\n")
    fails(tmp_path, capsys, ["--dataset", str(root)], f"{root / 'Toy_items.tsv'}:3: duplicate item id 'i1' (first on line 1)")


def test_sequence_naming_unknown_items(tmp_path, capsys):
    users = "u1\ti1 i2 i3 i4 i5\nu2\ti1 x9 i3 x7 i5\nu3\tx9 x8 i1 i2 i3\n"
    root = write_dataset(tmp_path / "d", users=users)
    fails(tmp_path, capsys, ["--dataset", str(root)], f"{root / 'am_Toy_users.tsv'}:2: 3 item ids not in Toy_items.tsv",
          "e.g. x9, x7, x8")


def test_every_user_filtered_out_by_min_seq_len(tmp_path, capsys):
    root = write_dataset(tmp_path / "d", users="u1\ti1 i2 i3\nu2\ti4 i5\n")
    fails(tmp_path, capsys, ["--dataset", str(root)], "every user was filtered out: all 2 have fewer than "
          "data.min_seq_len=5 items (longest: 3)")


def test_undecodable_bytes(tmp_path, capsys):
    root = write_dataset(tmp_path / "d", items=b"i1\tone\ni2\tcaf\xe9 latte\n")
    fails(tmp_path, capsys, ["--dataset", str(root)], f"{root / 'Toy_items.tsv'}:2: undecodable bytes (not UTF-8)")


# --------------------------------------------------------------------------- images


def test_missing_images(tmp_path, capsys):
    root = images_dataset(tmp_path, skip=("i3", "i7"))
    fails(tmp_path, capsys, ["--dataset", str(root), "--images", "real"],
          f"{root / 'images'}: 2 of 8 items have no image", "e.g. i3, i7", 'data.images = "synthetic"')


def test_no_images_at_all(tmp_path, capsys):
    root = write_dataset(tmp_path / "d")
    fails(tmp_path, capsys, ["--dataset", str(root), "--images", "real"], str(root), "no images/ folder", "no *.lmdb store")


def test_corrupt_image_file(tmp_path, capsys):
    root = images_dataset(tmp_path, corrupt=("i5",))
    fails(tmp_path, capsys, ["--dataset", str(root), "--images", "real"],
          f"{root / 'images' / 'i5.jpg'}: corrupt or unreadable image")
    assert not (root / ".iisan-cache").exists() or not list((root / ".iisan-cache").iterdir())


def test_lmdb_needs_trust_pickle(tmp_path, capsys):
    root = write_dataset(tmp_path / "d")
    (root / "Toy_image.lmdb").mkdir()
    fails(tmp_path, capsys, ["--dataset", str(root), "--images", "real"],
          f"{root / 'Toy_image.lmdb'}: the LMDB image store holds pickled Python objects", "--trust-pickle")


def test_lmdb_with_trust_pickle_but_no_lmdb_package(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lmdb", None)
    root = write_dataset(tmp_path / "d")
    (root / "Toy_image.lmdb").mkdir()
    fails(tmp_path, capsys, ["--dataset", str(root), "--images", "real", "--trust-pickle"], "pip install lmdb")


# --------------------------------------------------------------------------- config, device, output, models


def test_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[data]\nimage = 'real'\n")
    fails(tmp_path, capsys, ["--config", str(cfg)], str(cfg), "unknown key 'data.image' (did you mean 'images'?)")


def test_wrong_config_type(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[data]\ntrust_pickle = 'yes'\n")
    fails(tmp_path, capsys, ["--config", str(cfg)], str(cfg), "'data.trust_pickle' must be bool, got str 'yes'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is available")
def test_cuda_without_a_gpu(tmp_path, capsys):
    fails(tmp_path, capsys, ["--device", "cuda"], "run.device = 'cuda' but no CUDA GPU is available", "--device cpu")


def test_output_directory_that_cannot_be_written(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fails(tmp_path, capsys, ["--dataset", str(write_dataset(tmp_path / "d")), "--set", "eval.ks=[3]"], "run.out: cannot write to output directory",
          str(blocker / "out"), out=blocker / "out")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_pretrained_model_not_available_offline(tmp_path, capsys, offline):
    fails(tmp_path, capsys, ["--dataset", str(write_dataset(tmp_path / "d")), "--backbone", "base", "--init", "pretrained"],
          "backbone.preset = 'base' (text)", "hub id 'bert-base-uncased'", "HF_HUB_OFFLINE set, nothing downloaded",
          'backbone.init = "random"')


def test_pretrained_vision_model_not_available_offline(tmp_path, capsys, offline):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[data]\ndataset = '{write_dataset(tmp_path / 'd')}'\n"
                   "[backbone]\npreset = 'minilm'\ninit = 'pretrained'\nvision_model = 'google/vit-base-patch16-224'\n")
    fails(tmp_path, capsys, ["--config", str(cfg)], "backbone.vision_model", "hub id 'google/vit-base-patch16-224'",
          "HF_HUB_OFFLINE set")


def test_loaders_raise_bench_error_directly(tmp_path):
    root = write_dataset(tmp_path / "d", items="i1\tone\ni1\ttwo\n")
    with pytest.raises(BenchError, match=r"Toy_items.tsv:2: duplicate item id"):
        tsv_dataset(root, DataConfig(dataset=str(root), images="none"))


def test_a_run_with_other_settings_into_the_same_out_exits_2_and_writes_nothing(tmp_path, capsys):
    """One out folder, one comparison: 4-epoch runs and then a 5-epoch rerun (or another dataset)
    would be ranked together by TPME; the second run stops before anything is written."""
    out = tmp_path / "out"
    tiny = ["--set", "data.synthetic.users=60", "--set", "data.synthetic.items=40", "--set", "train.max_steps_per_epoch=1"]
    main(["run", "--out", str(out), "--methods", "iisan-cached", "--epochs", "1", "--no-progress", "--no-isolate",
          "--set", f"methods.iisan-cached.cache_dir=\"{tmp_path}\"", *tiny])
    capsys.readouterr()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(out), "--methods", "fft", "--epochs", "2", "--no-progress", "--no-isolate", *tiny])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "results.jsonl:1: earlier runs (iisan-cached) used other settings" in err
    assert "run.epochs (1 there, 2 now)" in err and "--force" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing written


# --------------------------------------------------------------------------- values (#15): at load time,
# one line naming the key and where it came from, nothing written


@pytest.mark.parametrize("args, needles", [
    (["--set", "train.max_steps_per_epoch=-1"], ["--set train.max_steps_per_epoch", "must be in [0, 10_000_000] (0 = a full epoch)"]),
    (["--set", "train.lr_head=-0.01"], ["--set train.lr_head", "must be in [0, 1]"]),
    (["--set", "train.lr_head=nan"], ["--set train.lr_head", "must be a finite number"]),
    (["--set", "tpme.alpha_time=nan"], ["--set tpme.alpha_time", "finite"]),
    (["--set", "tpme.alpha_time=-0.1", "--set", "tpme.alpha_params=0.65"], ["--set tpme.alpha_time", "must be in [0, 1]"]),
    (["--seed", "-1"], ["--seed: 'run.seed' must be in [0, 2^32)"]),
    (["--epochs", "0"], ["--epochs: 'run.epochs' must be in [1, 1000]"]),
    (["--set", "data.text_tokens=1"], ["--set data.text_tokens", "in [2, 512]"]),
    (["--set", "run.sample_interval_ms=-5"], ["--set run.sample_interval_ms", "must be 0 (by device) or in [1, 60_000]"]),
    (["--set", "train.dropout=1.5"], ["--set train.dropout", "in [0, 1)"]),
    (["--set", "eval.ks=[1000]"], ["--set eval.ks", "must be below 288, the fewest items"]),
    (["--set", "data.synthetic.items=3"], ["--set data.synthetic.items", "'data.synthetic.clusters' must be <= 'data.synthetic.items'"]),
])
def test_bad_values_fail_at_load_naming_their_source(tmp_path, capsys, args, needles):
    fails(tmp_path, capsys, args, *needles)


def test_an_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", "", "--methods", "fft", "--no-progress"])
    assert exc.value.code == 2 and "--out: 'run.out' must be a folder name, not empty" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_value_from_the_config_file_names_the_file(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nlr_peft = -1.0\n")
    fails(tmp_path, capsys, ["--config", str(cfg)], f"{cfg}: 'train.lr_peft' must be in [0, 1], got -1.0")
    cfg.write_bytes(b"[train]\nlr_peft = 1.0 # \xff\xfe\n")
    fails(tmp_path, capsys, ["--config", str(cfg)], f"{cfg}:", "UTF-8")


def test_a_small_synthetic_topic_no_longer_hangs():
    from benchmark.config import DataConfig, SyntheticConfig
    from benchmark.data.dataset import synthetic_dataset

    ds = synthetic_dataset(DataConfig(images="none", synthetic=SyntheticConfig(items=8, clusters=1)), 0)
    assert ds.sequences and all(len(set(s)) == len(s) <= 8 for s in ds.sequences)
    ds = synthetic_dataset(DataConfig(images="none", synthetic=SyntheticConfig(items=20, clusters=8, noise=0.0)), 0)
    assert all(len(set(s)) == len(s) for s in ds.sequences)  # topics of 2-3 items: users move on


def test_a_sweep_with_a_failed_run_exits_1_after_writing_its_report(tmp_path, capsys, plugin_methods, monkeypatch):
    monkeypatch.setenv("IISAN_BENCH_IMPORTS", "bench_test_methods")
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(out), "--methods", "t-fail,t-tiny", "--epochs", "1", "--no-progress", "--no-isolate",
              "--set", "data.synthetic.users=60", "--set", "data.synthetic.items=40"])
    assert exc.value.code == 1
    assert "1 run(s) did not finish ok: t-fail r0 (failed)" in capsys.readouterr().err
    assert (out / "report.md").is_file() and len((out / "results.jsonl").read_text().splitlines()) == 2


def test_two_sweeps_appending_at_once_lose_no_record(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "results.jsonl"
    code = ("import sys; from pathlib import Path; from benchmark.measure.results import append_result\n"
            "for i in range(200): append_result(Path(sys.argv[1]), {'who': sys.argv[2], 'i': i, 'pad': 'x' * 2000})")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), w], cwd=Path(__file__).parent.parent)
             for w in ("a", "b")]
    assert [p.wait(120) for p in procs] == [0, 0]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 400 and {(r["who"], r["i"]) for r in lines} == {(w, i) for w in "ab" for i in range(200)}


def test_payloads_left_by_a_killed_sweep_are_removed_at_the_next_start(tmp_path):
    import subprocess
    import sys

    from benchmark.launch.isolation import OWNER, clean_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone, live, fresh = (tmp_path / ".isolate-gone", tmp_path / ".isolate-live", tmp_path / ".isolate-new")
    for d, owner in ((gone, dead.pid), (live, os.getpid()), (fresh, None)):
        d.mkdir()
        (d / "payload.pt").write_bytes(b"x" * 1024)
        if owner is not None:
            (d / OWNER).write_text(str(owner))
    assert clean_stale(tmp_path) == [gone]
    assert not gone.exists() and live.exists() and fresh.exists()  # a live sweep's, and one being created


def test_an_image_size_off_the_patch_grid_fails_before_data_preparation(tmp_path, capsys):
    fails(tmp_path, capsys, ["--set", "data.image_size=33"], "data.image_size=33 is not a multiple of the ViT patch size 8")


def test_params_with_a_negative_image_size_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["params", "--image-size", "-16"])
    assert exc.value.code == 2 and capsys.readouterr().err.strip() == "iisan-bench: error: --image-size must be > 0, got -16"


def test_a_full_disk_while_writing_the_payload_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    from benchmark.launch import isolation

    def full(*_a, **_k):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")

    monkeypatch.setattr(isolation.torch, "save", full)
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(out), "--methods", "fft", "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1
    assert "cannot write the isolation payload" in err and "MB free" in err and "--no-isolate" in err
    assert not list(out.glob(".isolate-*")) and not (out / "results.jsonl").exists()


def test_a_damaged_results_file_is_named_at_its_line_and_never_appended_to(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    good = json.dumps({"method": "fft", "status": "ok", "repeat": 0})
    (out / "results.jsonl").write_text(good + "\n{\"method\": \"lora\", \"stat\n")
    before = (out / "results.jsonl").read_bytes()
    for force in ([], ["--force"]):
        with pytest.raises(SystemExit) as exc:
            main(["run", "--out", str(out), "--methods", "fft", "--epochs", "1", "--no-progress", *force])
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and "results.jsonl:2: malformed JSON" in err, err
        assert (out / "results.jsonl").read_bytes() == before


def test_a_diverged_run_is_diverged_with_its_last_finite_loss_and_strict_json(tmp_path, monkeypatch):
    from benchmark.config import load_config
    from benchmark.launch.prepare import prepare
    from benchmark.launch.runner import run_method
    from benchmark.measure.results import append_result
    from benchmark.models.recommender import SeqRecommender

    real = SeqRecommender.loss
    calls = []

    def nan_after_one(self, *args, **kw):  # 60 users at batch 64: one step an epoch
        calls.append(1)
        loss = real(self, *args, **kw)
        return loss * float("nan") if len(calls) > 1 else loss

    monkeypatch.setattr(SeqRecommender, "loss", nan_after_one)
    cfg = load_config(None, {"data": {"synthetic": {"users": 60, "items": 40}}, "run": {"epochs": 3},
                             "train": {"max_steps_per_epoch": 2}})
    rec = run_method(cfg, "fft", prepare(cfg), torch.device("cpu"), progress=False)
    assert rec.status == "diverged" and "the training loss became nan in epoch 2" in rec.error
    assert rec.metrics.last_finite_loss > 0  # epoch 1's
    rec.metrics.valid = {"hr@10": float("nan")}  # whatever slips through is written as null
    append_result(tmp_path / "r.jsonl", rec.to_dict())
    line = (tmp_path / "r.jsonl").read_text()
    back = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert back["status"] == "diverged" and back["metrics"]["valid"]["hr@10"] is None


@pytest.mark.slow  # a real sweep killed mid-run: 12 s
def test_sigterm_of_a_sweep_kills_its_run_and_leaves_no_payload(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", "run", "--methods", "fft", "--epochs", "50",
                             "--out", str(out), "--no-progress"], cwd=Path(__file__).parent.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob(".isolate-*/*/stderr.log")):
        time.sleep(0.2)  # a run is under way in its child
    assert list(out.glob(".isolate-*/*/stderr.log")), proc.stderr.read().decode()[-2000:]
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    assert not list(out.glob(".isolate-*"))  # the payload folder went with the sweep


# --------------------------------------------------------------------------- round three (#29): checked
# before anything runs, one line naming the file or key, nothing written or lost


def test_a_folder_where_results_jsonl_goes_is_one_line_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "o"
    (out / "results.jsonl").mkdir(parents=True)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(out), "--methods", "bitfit", "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err == [f"iisan-bench: error: {out / 'results.jsonl'}: iisan-bench writes a file "
                                           f"there, and something else is in the way; move it or use another --out"]
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl"]


def test_a_record_of_a_newer_schema_stops_the_sweep_before_training(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    line = '{"schema_version": 99, "method": "fft", "status": "ok"}\n'
    (out / "results.jsonl").write_text(line)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(out), "--methods", "bitfit", "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert err[0].endswith("results.jsonl:1: schema_version 99 is newer than this iisan-bench reads (2); "
                           "update iisan-bench or use another --out")
    assert (out / "results.jsonl").read_text() == line and sorted(p.name for p in out.iterdir()) == ["results.jsonl"]


def test_k_not_below_the_fewest_candidates_after_masking_is_refused(tmp_path, capsys):
    """One user of 12 items: the paper's masking leaves the test target one candidate (12 - 11), so
    any model scores HR@10 = 1; the guard compares K with that, not with the 12 items."""
    items = "".join(f"i{i}\ttitle number {i} widget\n" for i in range(1, 13))
    users = "u1\t" + " ".join(f"i{i}" for i in range(1, 13)) + "\n"
    err = fails(tmp_path, capsys, ["--dataset", str(write_dataset(tmp_path / "d", items, users))],
                "'eval.ks' must be below 1, the fewest items a user's target is ranked among (12 items less")
    assert "eval.masking = 'all_history' from" in err


def test_more_ranks_than_cores_is_refused_naming_both_keys(tmp_path, capsys, monkeypatch):
    from benchmark.launch import sweep

    monkeypatch.setattr(sweep, "_cores", lambda: 2)
    fails(tmp_path, capsys, ["--nproc", "3"], "--nproc, ", "'run.nproc' = 3 needs a process per CPU core, this machine "
                                                          "has 2 CPU cores (run.nproc = 3 from --nproc; run.device")


def test_fp16_on_cpu_is_a_one_line_warning(tmp_path, capsys):
    from benchmark.launch.sweep import _device_for

    _device_for(load_config(None, {"run": {"device": "cpu"}, "train": {"precision": "fp16"}}, {"train.precision": "--precision"}))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iisan-bench: warning: --precision: 'train.precision' = 'fp16' on cpu")


def test_a_full_disk_when_a_run_starts_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """The spec write right after the payload (a traceback before): one line naming the file; the
    payload folder goes; nothing is appended (a full disk during the append itself leaves no half
    line: test_bad_input_rules)."""
    import errno

    from benchmark.launch import isolation

    out = tmp_path / "o"

    def full(self, name, repeat, run_dir, env):
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "spec.json"))

    monkeypatch.setenv("IISAN_BENCH_NO_ZYGOTE", "1")  # a fresh interpreter per run: nothing to start here
    monkeypatch.setattr(isolation.IsolatedRunner, "_spawn", full)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(out), "--methods", "fft", "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1, err
    assert re.match(rf"iisan-bench: error: {re.escape(str(out))}/\.isolate-\w+/fft-0-\w+/spec\.json: cannot write \(No "
                    rf"space left on device\) for fft r0; the results already in .*results\.jsonl are intact$", err[0])
    assert not (out / "results.jsonl").exists() and not list(out.glob(".isolate-*"))


def test_the_batch_size_used_is_recorded_and_reported_when_users_are_fewer(tmp_path, capsys):
    out = tmp_path / "o"
    main(["run", "--out", str(out), "--methods", "bitfit", "--epochs", "1", "--no-progress", "--no-isolate",
          "--set", "data.synthetic.users=60", "--set", "data.synthetic.items=40", "--set", "train.batch_size=65536"])
    said = capsys.readouterr().out
    rec = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert rec["time"]["batch_size"] == 60 and rec["config"]["resolved"]["train"]["batch_size"] == 65536
    assert "train.batch_size = 65536 (--set train.batch_size) is more than the 60 training users" in said
    assert "- **Batch size:** 60 for every method" in (out / "report.md").read_text()


def test_an_unreachable_hub_fails_at_once_without_retries(monkeypatch):
    import time

    from benchmark.config import BackboneConfig, DataConfig
    from benchmark.models import backbones

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(backbones, "hub_reachable", lambda *a: False)
    monkeypatch.setattr(backbones, "hub_offline", lambda: None)  # no process-wide flag left behind
    t0 = time.perf_counter()
    with pytest.raises(BenchError, match=r"hub id 'nobody/no-such-model' \(looked in .* only: https://huggingface.co is "
                                         r"unreachable, nothing downloaded\)"):
        backbones.check_backbones(BackboneConfig(text_model="nobody/no-such-model", init="pretrained"),
                                  DataConfig(images="none"))
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("sets, line", [
    (["foo.bar=1"], "--set foo.bar: unknown key 'foo'"),
    (["tpme.alpha_params=0"], "--set tpme.alpha_params, {file}: the [tpme] alphas must sum to 1 (tpme.alpha_time = "
                              "0.45 from {file}; tpme.alpha_params = 0.0 from --set tpme.alpha_params;"),
    (["data.synthetic.min_len=20"], "--set data.synthetic.min_len, {file}: 'data.synthetic.max_len' must be >= "
                                    "'data.synthetic.min_len' (data.synthetic.min_len = 20 from --set"),
    (["train.item_dim=63"], "--set train.item_dim, {file}: 'train.num_heads' must divide 'train.item_dim'"),
    (["methods.lora.r=-1"], "--set methods.lora.r: 'methods.lora.r' must be in [1, 1024], got -1"),
    (["methods.bogus.r=1"], "--set methods.bogus.r: [methods.bogus] names no method"),
    (['data.dataset=""'], "--set data.dataset: 'data.dataset' must be 'synthetic' or a folder, not empty"),
    (["eval.ks=[1.5]"], "--set eval.ks: 'eval.ks' must be a list of int, got float 1.5 in [1.5]"),
    (["data.max_seq_len=1000000000"], "--set data.max_seq_len: 'data.max_seq_len' must be in [1, 1024]"),
    (["data.text_tokens=1000000000"], "--set data.text_tokens: 'data.text_tokens' must be in [2, 512]"),
    (["data.image_size=1000000000"], "--set data.image_size: 'data.image_size' must be in [1, 1024]"),
    (["data.synthetic.items=1000000000"], "--set data.synthetic.items: 'data.synthetic.items' must be in [2, 100_000]"),
    (["data.synthetic.clusters=1000000000"], "--set data.synthetic.clusters: 'data.synthetic.clusters' must be in [1, 10_000]"),
    (["data.synthetic.users=1000000000"], "--set data.synthetic.users: 'data.synthetic.users' must be in [2, 100_000]"),
    (["train.item_dim=1000000000"], "--set train.item_dim: 'train.item_dim' must be in [1, 4096]"),
    (["train.num_blocks=1000000000"], "--set train.num_blocks: 'train.num_blocks' must be in [1, 48]"),
    (["run.nproc=1000000000"], "--set run.nproc: 'run.nproc' must be in [1, 1024]"),
    (["train.batch_size=1000000000"], "--set train.batch_size: 'train.batch_size' must be in [1, 65_536]"),
    (["run.sample_interval_ms=0.001"], "--set run.sample_interval_ms: 'run.sample_interval_ms' must be 0 (by device) or in [1, 60_000]"),
    (['train.sdpa_backend="cudnn"'], "--set train.sdpa_backend: 'train.sdpa_backend' = 'cudnn' cannot run masked attention on cpu"),
    (['train.sdpa_backend="flash"', "run.isolate=false"], "--set train.sdpa_backend: 'train.sdpa_backend' = 'flash' cannot run masked"),
    (["data.image_size=1024", "data.synthetic.items=100000"], "--set data.image_size, --set data.synthetic.items: this "
                                                              "config needs at least 293."),
], ids=lambda v: v[0] if isinstance(v, list) else None)
def test_each_listed_value_is_one_line_naming_its_set_and_writes_nothing(tmp_path, capsys, sets, line):
    """#29's cases end to end: exit 2, one stderr line that starts with every key's source, no folder."""
    from benchmark.config import default_config_path

    args = [a for s in sets for a in ("--set", s)] + ["--device", "cpu"]
    args += ["--methods", "lora"] if sets[0].startswith("methods.lora") else []
    err = fails(tmp_path, capsys, args)
    assert err.startswith("iisan-bench: error: " + line.format(file=default_config_path())), err
