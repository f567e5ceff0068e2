"""Reporter on phase-resolved records (#11): the training peak as the headline, evaluation and the
one-off cache build in their own columns, one unit per column, failed cross-checks shown, the
training budget in the header, old (schema 1) records still read and labelled."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_helpers import record, write  # tests/ is on sys.path

from reports import ReportError, build_report


def phased(method: str, time_s: float, train_mb: float, eval_mb: float, **cache) -> dict:
    r = record(method, time_s, 1_000_000, train_mb)
    r["schema_version"] = 2
    r["memory"].update(source="cuda", phase="train", phases={
        "setup": {"peak_mb": 900.0}, "train": {"peak_mb": train_mb}, "eval": {"peak_mb": eval_mb}})
    r["config"]["resolved"].update(run={"epochs": 4}, train={"patience": 3})
    r["time"]["steps_per_epoch"] = 189
    if cache:
        r["cache"] = {"status": cache["status"], "reason": "no cache yet", "build_s": cache.get("build_s", 0.0),
                      "load_s": 0.1}
        if cache["status"] == "built":
            r["memory"]["phases"]["cache_build"] = {"peak_mb": cache["peak_mb"]}
        r["time"]["cache_build_s"] = cache.get("build_s")
    return r


def test_phase_columns_one_unit_and_the_headline_line(tmp_path: Path) -> None:
    recs = [phased("fft", 28.9, 34_000.0, 34_600.0),
            phased("iisan", 13.5, 9_000.0, 18_800.0),
            phased("iisan-cached", 0.6, 1_400.0, 3_100.0, status="built", build_s=22.0, peak_mb=3_900.0)]
    md = build_report(write(tmp_path, recs)).read_text()
    assert ("| Method | Trainable params (% of total) | Time / epoch | Peak memory (training) | Eval peak "
            "| One-off: cache build |") in md
    # every memory figure of the table in GB, whatever its size (the largest sets the unit)
    assert "| `fft` | 1.00M (1.0%) | 28.9 s | 33.2 GB | 33.8 GB | — |" in md
    assert "| `iisan-cached` | 1.00M (1.0%) | 600 ms | 1.37 GB | 3.03 GB | 22.0 s, 3.81 GB peak |" in md
    assert "Peak memory is the **training** phase's peak" in md
    assert "- **Training:** up to 4 epochs, early stopping after 3 epochs without a better validation metric; " \
           "189 steps per epoch" in md
    # TPME uses the training peak: iisan-cached's larger evaluation and build do not count
    assert "| `iisan-cached` | 1.00M (1.0%) | 600 ms | 1.37 GB | 3.03 GB | 22.0 s, 3.81 GB peak | **0.000** |" in md


def test_a_loaded_cache_says_so_and_failed_checks_are_listed(tmp_path: Path) -> None:
    cached = phased("iisan-cached", 0.6, 1_400.0, 3_100.0, status="loaded")
    fft = phased("fft", 28.9, 34_000.0, 34_600.0)
    fft["memory"]["checks"] = [{"phase": "train", "check": "nvml_process <= reserved + context", "ok": False,
                                "detail": "NVML process 34296 MB, reserved 33400 + context 600 = 34000 MB"},
                               {"phase": "train", "check": "allocated <= nvml_process", "ok": True, "detail": "x"}]
    md = build_report(write(tmp_path, [fft, cached])).read_text()
    assert "| loaded; its build's cost is unknown (built before iisan-bench kept it) |" in md
    cached["cache"].update(built_s=22.0, built_peak_mb=3_900.0, built_on="NVIDIA H100 80GB HBM3",
                           built_at="2026-11-30T10:00:00+00:00")
    md = build_report(write(tmp_path, [fft, cached])).read_text()
    assert "| loaded; built earlier on NVIDIA H100 80GB HBM3, 2026-11-30: 22.0 s, 3.81 GB peak |" in md
    assert "**Memory cross-checks failed**" in md
    assert "- `fft` repeat 0, train: nvml_process <= reserved + context (NVML process 34296 MB" in md
    assert md.count("allocated <= nvml_process (") == 0  # passed checks are not listed


def test_schema_1_records_are_read_and_labelled_whole_run(tmp_path: Path) -> None:
    md = build_report(write(tmp_path, [record("fft", 10.0), record("lora", 6.0)])).read_text()
    assert "| Peak memory |" in md and "Eval peak" not in md
    assert "spans the **whole run**, evaluation included, for records written before phases" in md


def test_a_record_from_a_newer_schema_is_refused_with_its_line(tmp_path: Path) -> None:
    newer = record("fft")
    newer["schema_version"] = 99
    with pytest.raises(ReportError, match=r"results.jsonl:2: schema_version 99 is newer than this iisan-bench reads \(2\); update iisan-bench$"):
        build_report(write(tmp_path, [record("lora"), newer]))


def test_the_header_states_the_papers_model_details(tmp_path: Path) -> None:
    recs = [phased("fft", 28.9, 34_000.0, 34_600.0), phased("iisan", 13.5, 9_000.0, 18_800.0)]
    assert "model details" not in build_report(write(tmp_path / "ours", recs)).read_text()
    for r in recs:
        r["config"]["resolved"]["train"]["architecture"] = "paper"
    md = build_report(write(tmp_path / "paper", recs)).read_text()
    assert "189 steps per epoch; model details: the paper code's (`train.architecture = paper`" in md
    recs[0]["config"]["resolved"]["train"]["architecture"] = "ours"
    md = build_report(write(tmp_path / "mixed", recs)).read_text()
    assert "model details: mixed (`train.architecture` differs between methods)" in md


def test_the_per_task_checkpoint_is_the_trainable_tensors_and_the_report_lists_it(tmp_path: Path) -> None:
    """params.checkpoint_mb is what safetensors writes for the trainable tensors (within its header),
    and the report shows it per method; older records without it get no section."""
    import torch
    from safetensors.torch import save_file

    from benchmark.launch.factory import count_params

    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 8))
    model[0].requires_grad_(False)
    save_file({n: p.detach() for n, p in model.named_parameters() if p.requires_grad}, tmp_path / "task.safetensors")
    on_disk = (tmp_path / "task.safetensors").stat().st_size / 2**20
    checkpoint_mb = count_params(model)["checkpoint_mb"]
    assert checkpoint_mb == (32 * 8 + 8) * 4 / 2**20
    assert 0 <= on_disk - checkpoint_mb < 256 / 2**20  # only the header differs
    recs = [phased("fft", 28.9, 34_000.0, 34_600.0), phased("iisan", 13.5, 9_000.0, 18_800.0)]
    assert "ships per task" not in build_report(write(tmp_path / "old", recs)).read_text()
    recs[0]["params"]["checkpoint_mb"], recs[1]["params"]["checkpoint_mb"] = 743.5, 15.7
    md = build_report(write(tmp_path / "new", recs)).read_text()
    assert "| `fft` | 1.00M | 744 MB |" in md and "| `iisan` | 1.00M | 15.7 MB |" in md
