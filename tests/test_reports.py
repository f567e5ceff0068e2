"""Reporter tests on hand-written results.jsonl files with hand-computed expectations."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # plain `pytest` puts tests/ on sys.path, not the repo root
    sys.path.insert(0, str(ROOT))

from report_helpers import TPME_DEFAULT, four_methods, read_csv, record, write  # noqa: E402

from reports import ReportError, build_report  # noqa: E402
from reports.load import load_results  # noqa: E402
from reports.plots import pareto_front  # noqa: E402
from reports.stats import Spread  # noqa: E402
from reports.tables import fmt_mb, fmt_params, fmt_pct, fmt_seconds  # noqa: E402
from reports.tpme import compute_tpme  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "reports"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# ------------------------------------------------------------------ TPME


def test_tpme_hand_computed_and_failed_method_excluded(tmp_path: Path) -> None:
    res = load_results(write(tmp_path, four_methods()) / "results.jsonl")
    tp = compute_tpme(res)
    # ok methods: fft, lora, iisan, bitfit (adapter is oom and excluded)
    # time:   min 2, max 10, range 8        -> fft 8/8=1, lora 4/8=0.5, iisan 0, bitfit 6/8=0.75
    # params: min 1e5, max 1e8, range 9.99e7 -> fft 1, lora 9e5/9.99e7=0.009009.., iisan 4.9e6/9.99e7=0.049049..,
    #         bitfit 0
    # memory: min 1000, max 9000, range 8000 -> fft 1, lora 4000/8000=0.5, iisan 0, bitfit 5000/8000=0.625
    # TPME = 0.45 t + 0.10 p + 0.45 m
    #   fft    = 0.45 + 0.10 + 0.45                         = 1.0
    #   lora   = 0.45*0.5 + 0.10*0.009009.. + 0.45*0.5      = 0.4509009..
    #   iisan  = 0 + 0.10*0.049049.. + 0                    = 0.0049049..
    #   bitfit = 0.45*0.75 + 0 + 0.45*0.625 = 0.3375+0.28125 = 0.61875
    assert set(tp.rows) == {"fft", "lora", "iisan", "bitfit"}
    assert tp.excluded == {"adapter": "status oom"}
    r = tp.rows
    assert r["lora"].norm_time == pytest.approx(0.5)
    assert r["lora"].norm_params == pytest.approx(900_000 / 99_900_000)
    assert r["iisan"].norm_params == pytest.approx(4_900_000 / 99_900_000)
    assert r["bitfit"].norm_memory == pytest.approx(0.625)
    assert r["fft"].tpme == pytest.approx(1.0)
    assert r["lora"].tpme == pytest.approx(0.225 + 0.1 * 900_000 / 99_900_000 + 0.225)
    assert r["lora"].tpme == pytest.approx(0.4509009, abs=1e-7)
    assert r["iisan"].tpme == pytest.approx(0.0049049, abs=1e-7)
    assert r["bitfit"].tpme == pytest.approx(0.61875)


def test_relative_to_reference_hand_computed(tmp_path: Path) -> None:
    tp = compute_tpme(load_results(write(tmp_path, four_methods()) / "results.jsonl"))
    rel = tp.relative
    assert set(rel) == {"fft", "lora", "iisan", "bitfit"}
    # iisan vs fft: time 2/10 = 20%, params 5e6/1e8 = 5%, memory 1000/9000 = 11.11%
    # cost = 0.45*0.2 + 0.10*0.05 + 0.45*(1/9) = 0.09 + 0.005 + 0.05 = 0.145 -> 14.5%
    assert rel["iisan"].time_pct == pytest.approx(20.0)
    assert rel["iisan"].params_pct == pytest.approx(5.0)
    assert rel["iisan"].memory_pct == pytest.approx(100 / 9)
    assert rel["iisan"].cost_pct == pytest.approx(14.5)
    # lora: 0.45*0.6 + 0.10*0.01 + 0.45*(5/9) = 0.27 + 0.001 + 0.25 = 0.521 -> 52.1%
    assert rel["lora"].cost_pct == pytest.approx(52.1)
    assert rel["fft"].cost_pct == pytest.approx(100.0)


def test_tie_term_contributes_zero(tmp_path: Path) -> None:
    # params and memory equal for all methods -> those terms are 0; time 1, 2, 3 -> 0, 0.5, 1
    recs = [record("a", 1.0, 5000, 300.0), record("b", 2.0, 5000, 300.0), record("c", 3.0, 5000, 300.0)]
    tp = compute_tpme(load_results(write(tmp_path, recs) / "results.jsonl"))
    assert [tp.rows[k].norm_params for k in "abc"] == [0.0, 0.0, 0.0]
    assert [tp.rows[k].norm_memory for k in "abc"] == [0.0, 0.0, 0.0]
    assert [tp.rows[k].tpme for k in "abc"] == pytest.approx([0.0, 0.225, 0.45])


def test_single_ok_method_has_tpme_zero(tmp_path: Path) -> None:
    recs = [record("iisan", 2.0, 5_000_000, 1000.0), record("fft", status="failed", error="boom")]
    tp = compute_tpme(load_results(write(tmp_path, recs) / "results.jsonl"))
    assert tp.rows["iisan"].tpme == 0.0
    assert "fft" not in tp.rows


def test_alphas_must_sum_to_one(tmp_path: Path) -> None:
    bad = {"alpha_time": 0.5, "alpha_params": 0.1, "alpha_memory": 0.5}
    d = write(tmp_path, [record("a"), record("b", 2.0, tpme=bad)])
    with pytest.raises(ReportError, match=r"results\.jsonl:2: TPME alphas must sum to 1.*= 1\.1"):
        build_report(d)
    # within tolerance is accepted (0.45 + 0.1 + 0.45 in floating point, plus 1e-7)
    ok = {"alpha_time": 0.45 + 1e-7, "alpha_params": 0.1, "alpha_memory": 0.45}
    tp = compute_tpme(load_results(write(tmp_path / "ok", [record("a", tpme=ok)]) / "results.jsonl"))
    assert tp.config.alpha_time == pytest.approx(0.45)


def test_reference_absent_or_failed_is_omitted(tmp_path: Path) -> None:
    no_fft = [r for r in four_methods(failed=False) if r["method"] != "fft"]
    d = write(tmp_path / "absent", no_fft)
    report = build_report(d).read_text()
    assert "Relative cost ↓" not in report and "### Relative to" not in report
    assert "Relative cost omitted: reference method 'fft' is not in the results" in report
    assert all(r["rel_cost_pct"] == "" for r in read_csv(d / "summary.csv").values())

    fft_oom = no_fft + [record("fft", status="oom", error="CUDA out of memory")]
    tp = compute_tpme(load_results(write(tmp_path / "oom", fft_oom) / "results.jsonl"))
    assert tp.relative == {}
    assert tp.reference_note == "reference method 'fft' did not run ok (status oom)"


def test_reference_from_kwarg_and_config(tmp_path: Path) -> None:
    d = write(tmp_path / "kw", four_methods(failed=False))
    build_report(d, reference="lora")
    rows = read_csv(d / "summary.csv")
    # fft vs lora: time 10/6, params 1e8/1e6, memory 9000/5000
    # cost = 0.45*1.6667 + 0.10*100 + 0.45*1.8 = 0.75 + 10 + 0.81 = 11.56 -> 1156%
    assert float(rows["fft"]["rel_cost_pct"]) == pytest.approx(1156.0)
    assert rows["fft"]["reference"] == "lora"

    cfg = dict(TPME_DEFAULT, reference="iisan")
    recs = [dict(r, config={"resolved": {"tpme": cfg}}) for r in four_methods(failed=False)]
    tp = compute_tpme(load_results(write(tmp_path / "cfg", recs) / "results.jsonl"))
    assert tp.config.reference == "iisan"
    assert tp.relative["iisan"].cost_pct == pytest.approx(100.0)
    assert tp.relative["fft"].time_pct == pytest.approx(500.0)


# ------------------------------------------------------------------ loading


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    d = write(tmp_path, [record("a")], raw_lines=["", '{"method": "b", "status": "ok",'])
    with pytest.raises(ReportError) as exc:
        build_report(d)
    msg = str(exc.value)
    assert f"{d / 'results.jsonl'}:3:" in msg and "malformed JSON" in msg and "\n" not in msg

    write(tmp_path / "t", [record("a")], raw_lines=['{"method": "b", "status": "ok", "params": {"trainable": "4M"}}'])
    with pytest.raises(ReportError, match=r"results\.jsonl:2: 'params\.trainable' must be a number"):
        build_report(tmp_path / "t")
    write(tmp_path / "n", [], raw_lines=['{"status": "ok"}'])
    with pytest.raises(ReportError, match=r"results\.jsonl:1: missing or non-string 'method'"):
        build_report(tmp_path / "n")


def test_missing_or_empty_results(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"results\.jsonl: results file not found"):
        build_report(tmp_path)
    (tmp_path / "results.jsonl").write_text("\n")
    with pytest.raises(ReportError, match="empty"):
        build_report(tmp_path)


def test_repeats_mean_std_and_cv_flag(tmp_path: Path) -> None:
    # time 10, 11, 12 -> mean 11, sample std 1.0, CV 1/11 = 9.1% > 5% -> flagged
    # memory 100, 101, 102 -> mean 101, std 1.0, CV 0.99% -> not flagged
    recs = [record("lora", 10.0 + i, 1000, 100.0 + i, repeat=i, ndcg=0.04 + 0.01 * i) for i in range(3)]
    recs.append(record("fft", 20.0, 10_000, 300.0))
    d = write(tmp_path, recs)
    lora = load_results(d / "results.jsonl").method("lora")
    assert lora is not None and lora.n_ok == 3
    assert lora.time_epoch_s.mean == pytest.approx(11.0)
    assert lora.time_epoch_s.std == pytest.approx(1.0)
    assert lora.time_epoch_s.cv == pytest.approx(1 / 11)
    assert lora.time_epoch_s.noisy and not lora.peak_mb.noisy
    assert lora.metrics["test"]["ndcg@10"].mean == pytest.approx(0.05)

    report = build_report(d).read_text()
    # medians 11 s and 101 MB; the bootstrap medians of three values range over them: [10–12], [100–102]
    assert "| 11.0 s [10.0–12.0] ⚠ CV 9% | 101 MB [100–102] |" in report
    assert lora.time_spread == Spread(11.0, 10.0, 12.0, 3, "repeats")
    assert "a bootstrap of the median over repeats" in report
    row = read_csv(d / "summary.csv")["lora"]
    assert (row["repeats"], row["time_cv_flag"], row["memory_cv_flag"]) == ("3", "1", "0")
    assert float(row["time_epoch_s_std"]) == pytest.approx(1.0)


def test_rerun_of_same_repeat_supersedes_earlier_line(tmp_path: Path) -> None:
    recs = [record("lora", status="oom", error="OOM"), record("lora", 4.0, 1000, 100.0), record("fft", 8.0)]
    res = load_results(write(tmp_path, recs) / "results.jsonl")
    lora = res.method("lora")
    assert lora is not None and lora.ok and lora.failures == [] and lora.time_epoch_s.mean == 4.0


# ------------------------------------------------------------------ report, csv, plots


def test_report_with_failed_method_renders_everything(tmp_path: Path) -> None:
    d = write(tmp_path, four_methods())
    path = build_report(d)
    assert path == d / "report.md"
    md = path.read_text()
    for needle in ("## Efficiency", "### Validation", "### Test", "## Failed runs", "**synthetic images**",
                   "**random-init**", "Efficiency numbers (time, memory, parameters, TPME) do not depend on the weights", "cpu-rss", "peak resident set size",
                   "cpu (Intel Xeon)", "python 3.11.7, torch 2.13.0, transformers 4.57.6, peft 0.21.2",
                   "abc123", "(600 users, 400 items, 6,000 interactions)", "preset `tiny`",
                   "![Efficiency](plots/efficiency.png)", "![Quality vs TPME](plots/pareto.png)",
                   "*popularity (floor)*", "HR@5", "NDCG@10", "MRR@10"):
        assert needle in md, needle
    assert "`adapter` repeat 0: **oom** — RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" in md
    # human formatting in the efficiency table: 1e8 params = 100M, 9000 MB = 8.79 GB, lora 1M params = 1% of total
    assert "| `fft` | 100M (100%) | 10.0 s | 8.79 GB |" in md
    assert "| `lora` | 1.00M (1.0%) | 6.00 s | 4.88 GB |" in md
    assert "| `iisan` | 5.00M (5.0%) | 2.00 s | 0.977 GB | **0.005** | 14% |" in md  # one unit per column
    # efficiency table rows only for ok methods; the failure is listed, not tabulated
    eff = md.split("## Efficiency")[1].split("##")[0]
    assert "| `adapter`" not in eff

    rows = read_csv(d / "summary.csv")
    assert list(rows) == ["fft", "lora", "iisan", "bitfit", "adapter", "popularity"]
    assert rows["adapter"]["status"] == "oom" and rows["adapter"]["tpme"] == ""
    assert "CUDA out of memory" in rows["adapter"]["error"]
    assert float(rows["bitfit"]["tpme"]) == pytest.approx(0.61875)
    assert float(rows["iisan"]["rel_cost_pct"]) == pytest.approx(14.5)
    assert float(rows["lora"]["params_trainable"]) == 1_000_000 and float(rows["fft"]["peak_mb_mean"]) == 9000
    assert float(rows["iisan"]["test_ndcg@10"]) == pytest.approx(0.055)
    assert float(rows["popularity"]["test_ndcg@10"]) == pytest.approx(0.01)
    # recompute TPME from the CSV alone
    fft = rows["fft"]
    recomputed = sum(float(fft[a]) * float(fft[n]) for a, n in
                     (("alpha_time", "norm_time"), ("alpha_params", "norm_params"), ("alpha_memory", "norm_memory")))
    assert recomputed == pytest.approx(float(fft["tpme"]))
    # nothing half-written left behind
    assert not [p for p in d.rglob("*.tmp")]


def _png_ok(p: Path) -> bool:
    return p.is_file() and p.stat().st_size > 1000 and p.read_bytes()[:8] == PNG_MAGIC


def test_plots_written_and_memory_plot_skipped_gracefully(tmp_path: Path) -> None:
    recs = four_methods()
    recs[0]["memory"]["samples_csv"] = "mem/fft.csv"
    recs[1]["memory"]["samples_csv"] = "mem/lora.csv"  # named but missing: skipped, not fatal
    d = write(tmp_path, recs)
    (d / "mem").mkdir()
    (d / "mem" / "fft.csv").write_text("t_s,mb,phase\n" + "".join(f"{i * 0.5},{100 + 10 * i},train\n" for i in range(40)))
    md = build_report(d).read_text()
    for name in ("efficiency", "pareto", "memory"):
        assert _png_ok(d / "plots" / f"{name}.png"), name
    assert "![Memory timeline](plots/memory.png)" in md
    assert "`lora` (mem/lora.csv missing or unreadable)" in md

    # no method has a timeline: the plot is skipped with a note and a stale PNG is removed
    for r in recs:
        r["memory"]["samples_csv"] = None
    write(d, recs)
    md = build_report(d).read_text()
    assert "Plot skipped: no method recorded a memory timeline" in md
    assert not (d / "plots" / "memory.png").exists()
    assert _png_ok(d / "plots" / "efficiency.png")


def test_realistic_fixture_and_failed_build_keeps_previous_report(tmp_path: Path) -> None:
    d = tmp_path / "realistic"
    shutil.copytree(FIXTURES / "realistic", d)
    md = build_report(d).read_text()
    assert "real item images" in md and "random-init" not in md.lower()
    assert "NVIDIA H100 80GB HBM3" in md and "allocator reserved peak plus the CUDA context" in md
    assert "`prefix` repeat 0: **failed**" in md
    assert all(_png_ok(d / "plots" / f"{n}.png") for n in ("efficiency", "pareto", "memory"))

    before = (d / "report.md").read_bytes()
    with open(d / "results.jsonl", "a") as fh:
        fh.write("{not json\n")
    with pytest.raises(ReportError, match=r"results\.jsonl:14: malformed JSON"):
        build_report(d)
    assert (d / "report.md").read_bytes() == before


def test_reporter_does_not_import_torch_or_runner(tmp_path: Path) -> None:
    d = write(tmp_path, four_methods())
    code = ("import sys, reports; reports.build_report(sys.argv[1]); "
            "bad = [m for m in ('torch', 'benchmark', 'methods', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code, str(d)], check=True, cwd=ROOT, timeout=60)


# ------------------------------------------------------------------ helpers


def test_human_formatting() -> None:
    assert (fmt_params(4_110_000), fmt_params(195_000), fmt_params(512), fmt_params(999_600)) == \
        ("4.11M", "195K", "512", "1.00M")
    assert (fmt_mb(812), fmt_mb(1843), fmt_mb(45.25)) == ("812 MB", "1.80 GB", "45.2 MB")
    assert (fmt_seconds(0.0123), fmt_seconds(1.15, 0.05), fmt_seconds(4000)) == ("12.3 ms", "1.15 ± 0.05 s", "66.7 min")
    assert (fmt_pct(22.3), fmt_pct(2.06), fmt_pct(0.0523), fmt_pct(None)) == ("22%", "2.1%", "0.052%", "—")


def test_pareto_front() -> None:
    pts = {"fft": (1.0, 0.050), "lora": (0.45, 0.048), "iisan": (0.005, 0.055), "cheap": (0.0, 0.01),
           "bitfit": (0.62, 0.040)}
    # cheap (lowest TPME) and iisan (best NDCG, nearly as cheap) dominate everything else
    assert pareto_front(pts) == ["cheap", "iisan"]


def test_mfu_column_when_records_carry_it(tmp_path: Path) -> None:
    recs = four_methods(failed=False)
    recs[0]["flops"] = {"per_step": 3.4e13, "source": "traced", "device_peak": 989.4e12, "mfu": 0.4123}
    build_report(write(tmp_path, recs))
    text = (tmp_path / "report.md").read_text()
    assert "| MFU |" in text and "41%" in text
    assert float(read_csv(tmp_path / "summary.csv")[recs[0]["method"]]["mfu_mean"]) == pytest.approx(0.4123)
    build_report(write(tmp_path, four_methods(failed=False)))  # no flops anywhere: no column
    assert "| MFU |" not in (tmp_path / "report.md").read_text()


def test_header_states_text_only_and_bounded_training(tmp_path: Path) -> None:
    recs = four_methods(failed=False)
    for r in recs:
        r["backbone"] = {"preset": "minilm", "text": "all-MiniLM-L6-v2", "vision": None, "init": "pretrained"}
        r["config"]["resolved"].setdefault("train", {})["max_steps_per_epoch"] = 30
    build_report(write(tmp_path, recs))
    text = (tmp_path / "report.md").read_text()
    assert "no vision encoder (text only)" in text and "vision `?`" not in text
    assert "**Bounded training:** at most 30 steps per epoch" in text
    build_report(write(tmp_path, four_methods(failed=False)))
    assert "Bounded training" not in (tmp_path / "report.md").read_text()


def test_the_reporter_reads_every_line_through_the_runners_record_schema(tmp_path: Path) -> None:
    """One schema (core.record) for both sides: a value of the wrong type is refused by its path, and a
    field name the schema does not declare raises instead of reading as a silent None."""
    from core.record import RunRecord

    bad = record("fft")
    bad["metrics"]["test"]["hr@10"] = "high"
    with pytest.raises(ReportError, match=r"results\.jsonl:1: 'metrics\.test\.hr@10' must be a number or null, got 'high'"):
        load_results(write(tmp_path / "a", [bad]) / "results.jsonl")
    bad = record("fft")
    bad["env"] = "cpu"
    with pytest.raises(ReportError, match=r"results\.jsonl:1: 'env' must be an object"):
        load_results(write(tmp_path / "b", [bad]) / "results.jsonl")
    run = load_results(write(tmp_path / "c", [record("fft")]) / "results.jsonl").runs[0]
    assert isinstance(run.record, RunRecord) and run.get("time", "epoch_s_median") == 1.0
    assert run.get("cache", "status") is None  # a section this record lacks
    with pytest.raises(AttributeError, match="Timing has no field 'epoch_seconds'"):
        run.get("time", "epoch_seconds")


def test_floors_from_other_conditions_are_flagged(tmp_path: Path) -> None:
    """fft at 0.62× its floor from a floors.json written at another time, under another load: flagged."""
    import json

    d = write(tmp_path, [record("fft", 10.0, 100_000, 500.0)])  # run at 2026-11-22T10:00, torch 2.13.0
    floors = {"items": 41, "batch_size": 16, "precision": "fp32", "steps_per_epoch": 4,
              "env": {"device_name": "Intel Xeon", "torch": "2.12.0", "git_sha": "abc123"},
              "floors": {"fft_step": {"step_s": 4.0, "epoch_s": 16.0}}}
    (d / "floors.json").write_text(json.dumps(floors))
    md = build_report(d).read_text()
    assert "| `fft` | 10.0 s | 16.0 s | 0.62× |" in md
    assert ("**Floors not measured in the same conditions as the runs:** torch 2.12.0 (runs: 2.13.0); the floors' "
            "machine load was not recorded (floors.json older than the check); the floors carry no time of "
            "measurement.") in md
    floors["env"]["torch"] = "2.13.0"
    floors["measured_at"] = "2026-11-22T15:30:00+00:00"
    floors["conditions"] = {"busy": True, "evidence": ["at the start, other processes used 1.00 of 2 cores"]}
    (d / "floors.json").write_text(json.dumps(floors))
    md = build_report(d).read_text()
    assert ("conditions as the runs:** the floors were measured on a busy machine (at the start, other processes "
            "used 1.00 of 2 cores); measured 5.5 h away from the nearest run.") in md
    floors["measured_at"], floors["conditions"] = "2026-11-22T10:20:00+00:00", {"busy": False, "evidence": []}
    (d / "floors.json").write_text(json.dumps(floors))
    assert "not measured in the same conditions" not in build_report(d).read_text()


def test_pareto_frontier_is_a_step_through_attainable_points() -> None:
    from reports.plots import frontier_steps

    pts = {"cheap": (0.0, 0.01), "iisan": (0.005, 0.055), "fft": (1.0, 0.050)}
    xs, ys = frontier_steps(pts, pareto_front(pts), 1.08)
    # cheap's 0.01 holds until iisan's cost, then iisan's 0.055 to the axis' end: never a diagonal
    assert (xs, ys) == ([0.0, 0.005, 0.005, 1.08], [0.01, 0.01, 0.055, 0.055])


def test_memory_timelines_share_one_y_scale_from_zero(tmp_path: Path, monkeypatch) -> None:
    import reports.plots as plots
    import reports.timeline as timeline

    figs = []
    for module in (plots, timeline):
        monkeypatch.setattr(module, "save", lambda fig, path: figs.append(fig) or path)
    recs = four_methods(failed=False)[:2]
    recs[0]["memory"]["samples_csv"], recs[1]["memory"]["samples_csv"] = "mem/fft.csv", "mem/lora.csv"
    d = write(tmp_path, recs)
    (d / "mem").mkdir()
    for name, top in (("fft", 786.0), ("lora", 400.0)):
        (d / "mem" / f"{name}.csv").write_text("t_s,mb,phase\n" + "".join(
            f"{i * 0.5},{top * (i + 1) / 20},train\n" for i in range(20)))
    build_report(d)
    memory = next(f for f in figs if f._suptitle is not None and "Memory over time" in f._suptitle.get_text())
    limits = [ax.get_ylim() for ax in memory.axes]
    assert len(limits) == 2 and limits[0] == limits[1] == (0.0, pytest.approx(786.0 * 1.08))
    assert "one scale for all panels" in memory._suptitle.get_text()
    pareto = next(f for f in figs if f.axes and "Quality vs cost" in f.axes[0].get_title())
    assert pareto.axes[0].get_ylim()[0] == 0.0
