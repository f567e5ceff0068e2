"""Reporter: the paper-scale targets section, met / missed / not measured with the measured numbers."""

from __future__ import annotations

from pathlib import Path

from report_helpers import TPME_DEFAULT, record, section, write  # noqa: E402  (tests/ is on sys.path)

from reports import build_report  # noqa: E402
from reports.targets import MEMORY_GATE, MFU_UNKNOWN, NOTE

TITLE = "## Targets (paper-scale)"


def gpu(recs: list[dict], users: int = 12076, max_steps: int = 0) -> list[dict]:
    """The records of a CUDA run on the full Amazon Scientific data, unbounded unless asked."""
    for r in recs:
        r["env"].update(device="cuda:0", device_name="NVIDIA H100 80GB HBM3")
        r["memory"]["source"] = "cuda"
        r["data"]["users"] = users
        r["config"]["resolved"]["train"] = {"max_steps_per_epoch": max_steps}
    return recs


def methods(iisan_s: float = 30.0, mfu: float | None = 0.45, rank_s: float = 0.2) -> list[dict]:
    """fft 100 s / 40000 MB; iisan 30 s / 6000 MB; iisan-cached 0.8 s / 1000 MB; lora 60 s / 30000 MB."""
    recs = [
        record("fft", 100.0, 100_000_000, 40000.0),
        record("iisan", iisan_s, 5_000_000, 6000.0),
        record("iisan-cached", 0.8, 5_000_000, 1000.0),
        record("lora", 60.0, 1_000_000, 30000.0),
    ]
    for r in recs:
        r["time"]["eval_rank_s"] = rank_s
    recs[0]["flops"] = {"mfu": mfu}
    return recs


def targets(md: str) -> str:
    assert TITLE in md
    return section(md, TITLE)


def test_all_targets_met_on_a_full_scale_gpu_run(tmp_path: Path) -> None:
    md = build_report(write(tmp_path, gpu(methods()))).read_text()
    t = targets(md)
    assert "| Target | Threshold | Measured | Status |" in t
    # 0.8/100 = 0.80%; 1000/40000 = 2.5%; 30/100 = 30%; 6000/40000 = 15%
    assert "| `iisan-cached` time / epoch | ≤ 1% of `fft` | 0.80% (800 ms vs 100 s) | ✅ met |" in t
    assert "| `iisan-cached` peak memory | ≤ 3% of `fft` | 2.5% (1000 MB vs 39.1 GB) | ✅ met |" in t
    assert "| `iisan-cached` time / epoch (absolute) | ≤ 1 s | 800 ms | ✅ met |" in t
    assert "| `iisan` time / epoch | ≤ 35% of `fft` | 30% (30.0 s vs 100 s) | ✅ met |" in t
    assert "| `iisan` peak memory | ≤ 18% of `fft` | 15% (5.86 GB vs 39.1 GB) | ✅ met |" in t
    assert "| `fft` MFU (model FLOPs utilisation) | ≥ 40% of the GPU's bf16 peak | 45% | ✅ met |" in t
    assert "| Ranking all users × all items | ≤ 1 s for every method | 200 ms (`fft`, slowest) | ✅ met |" in t
    assert t.count("✅ met") == 7 and "❌" not in t and "not measured" not in t
    assert NOTE in t
    # after the evaluation cost, before quality
    assert md.index("### Evaluation cost") < md.index(TITLE) < md.index("## Quality")


def test_uncached_iisan_over_its_share_is_missed(tmp_path: Path) -> None:
    t = targets(build_report(write(tmp_path, gpu(methods(iisan_s=40.0)))).read_text())
    assert "| `iisan` time / epoch | ≤ 35% of `fft` | 40% (40.0 s vs 100 s) | ❌ missed |" in t
    assert t.count("✅ met") == 6 and t.count("❌ missed") == 1


def test_misses_for_mfu_and_slowest_ranking(tmp_path: Path) -> None:
    recs = gpu(methods(mfu=0.31))
    recs[3]["time"]["eval_rank_s"] = 1.5  # lora ranks slowly: one method over 1 s misses the target
    t = targets(build_report(write(tmp_path, recs)).read_text())
    assert "| `fft` MFU (model FLOPs utilisation) | ≥ 40% of the GPU's bf16 peak | 31% | ❌ missed |" in t
    assert "| 1.50 s (`lora`, slowest) | ❌ missed |" in t


def test_no_targets_for_cpu_or_reduced_scale_runs(tmp_path: Path) -> None:
    """A tiny CPU run (or a bounded or small GPU run) has nothing to say about paper-scale targets:
    no section and no met/missed marks."""
    for name, recs in (("cpu", methods(mfu=None)), ("bounded", gpu(methods(), max_steps=2)),
                       ("small", gpu(methods(), users=600))):
        md = build_report(write(tmp_path / name, recs)).read_text()
        assert TITLE not in md and "✅" not in md and "❌" not in md, name


def test_unknown_mfu_and_non_gpu_memory_are_not_measured_at_full_scale(tmp_path: Path) -> None:
    recs = gpu(methods(mfu=None))
    recs[2]["memory"]["source"] = "nvml-process"  # iisan-cached measured without the allocator
    t = targets(build_report(write(tmp_path, recs)).read_text())
    assert (f"| `fft` MFU (model FLOPs utilisation) | ≥ 40% of the GPU's bf16 peak | — "
            f"| — not measured ({MFU_UNKNOWN}) |") in t
    assert f"2.5% (1000 MB vs 39.1 GB) | — not measured ({MEMORY_GATE}; source nvml-process) |" in t
    assert t.count("✅ met") == 5


def test_missing_or_failed_method_is_not_measured(tmp_path: Path) -> None:
    recs = gpu(methods())
    recs[1] = record("iisan", status="oom", error="CUDA out of memory")
    t = targets(build_report(write(tmp_path / "oom", gpu(recs))).read_text())
    assert "| `iisan` time / epoch | ≤ 35% of `fft` | — | — not measured (`iisan` did not run ok (oom)) |" in t
    assert "| `iisan` peak memory | ≤ 18% of `fft` | — | — not measured (`iisan` did not run ok (oom)) |" in t
    assert t.count("✅ met") == 5

    only_iisan = [r for r in gpu(methods()) if r["method"] != "iisan-cached"]
    t = targets(build_report(write(tmp_path / "nocache", only_iisan)).read_text())
    assert t.count("— not measured (`iisan-cached` did not run)") == 3
    assert "| `iisan` time / epoch | ≤ 35% of `fft` | 30% (30.0 s vs 100 s) | ✅ met |" in t


def test_no_section_without_iisan_methods_or_fft_reference(tmp_path: Path) -> None:
    no_iisan = [r for r in gpu(methods()) if not r["method"].startswith("iisan")]
    assert TITLE not in build_report(write(tmp_path / "none", no_iisan)).read_text()

    no_fft = [r for r in gpu(methods()) if r["method"] != "fft"]
    assert TITLE not in build_report(write(tmp_path / "nofft", no_fft)).read_text()

    recs = gpu(methods())
    for r in recs:
        r["config"]["resolved"]["tpme"] = dict(TPME_DEFAULT, reference="lora")
    assert TITLE not in build_report(write(tmp_path / "lora", recs)).read_text()
    assert TITLE not in build_report(write(tmp_path / "kw", gpu(methods())), reference="iisan").read_text()
