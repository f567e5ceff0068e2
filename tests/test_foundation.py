"""End to end: a method trains, evaluates and writes a complete, reproducible result record."""

import json

import pytest

from benchmark.cli import main
from benchmark.launch.sweep import run_benchmark
from tests.helpers import small_cfg


def test_record_is_complete_and_seeded_runs_repeat(tmp_path):
    recs = []
    for name in ("a", "b"):
        path = run_benchmark(small_cfg(tmp_path, name), progress=False, echo=lambda *_: None)
        lines = path.read_text().splitlines()
        assert len(lines) == 1
        recs.append(json.loads(lines[0]))
    rec = recs[0]
    assert rec["status"] == "ok" and rec["method"] == "fft"
    for key in ("params", "time", "memory", "metrics", "data", "backbone", "env", "config", "seed"):
        assert rec[key] is not None, key
    assert rec["params"]["trainable"] == rec["params"]["total"] > 0  # fft trains everything
    assert len(rec["time"]["epoch_s"]) == 1 and rec["time"]["samples_per_s"] > 0
    assert rec["memory"]["source"] == "cpu-rss" and rec["memory"]["peak_mb"] > 0
    assert set(rec["metrics"]["test"]) == {"hr@10", "ndcg@10", "mrr@10"}
    timings = rec["data"].pop("timings")  # one-off data costs (data.summary)
    assert timings["tokenize_s"] > 0 and timings["load_s"] > 0
    sha = rec["data"].pop("content_sha256")  # the data by content: same seed, same data, same hash
    assert len(sha) == 64 and sha == recs[1]["data"]["content_sha256"]
    assert rec["data"] == {"name": "synthetic", "users": 240, "items": 120,
                           "interactions": rec["data"]["interactions"], "images": "synthetic",
                           "image_source": None}
    assert rec["backbone"]["init"] == "random" and rec["env"]["torch"]
    assert rec["env"]["torch_threads"] == __import__("torch").get_num_threads() >= 1
    assert rec["config"]["resolved"]["train"]["batch_size"] == 64
    # FLOPs and the estimate come with run.estimate, on by default only on a GPU the device table knows
    assert rec["flops"] is None and rec["estimate"] is None
    # same seed, same metrics (CPU)
    assert recs[0]["metrics"]["test"] == recs[1]["metrics"]["test"]
    assert recs[0]["metrics"]["valid"] == recs[1]["metrics"]["valid"]


@pytest.mark.parametrize("args, needle", [
    (["--methods", "ftt"], "unknown method 'ftt' (did you mean 'fft'?)"),
    (["--backbone", "huge"], "backbone.preset' must be one of 'tiny', 'minilm', 'base'"),
    (["--dataset", "/nonexistent/folder"], "/nonexistent/folder: dataset folder not found"),
    (["--set", "train.max_steps"], "--set 'train.max_steps': expected SECTION.KEY=VALUE"),
    (["--set", "train.max_step_per_epoch=2"], "unknown key 'train.max_step_per_epoch'"),
    (["--set", "train.batch_size=big"], "train.batch_size"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, needle):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(out), *args])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_list_names_methods_with_descriptions(capsys):
    main(["list"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("fft ") and "fine-tuning" in line.lower() for line in lines)
