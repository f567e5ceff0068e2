"""Reporter: the IISAN paper's ratios next to ours, evaluation cost, per-method batch size."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_helpers import TPME_DEFAULT, read_csv, record, section, write  # noqa: E402  (tests/ is on sys.path)

from reports import build_report  # noqa: E402
from core.paper import PAPER


def paper_methods() -> list[dict]:
    """fft 100 s / 1000 MB; iisan 40 s / 178 MB; iisan-cached 5 s / 67 MB; lora 80 s / 900 MB."""
    return [
        record("fft", 100.0, 100_000_000, 1000.0),
        record("iisan", 40.0, 5_000_000, 178.0),
        record("iisan-cached", 5.0, 5_000_000, 67.0),
        record("lora", 80.0, 1_000_000, 900.0),
    ]


def test_paper_constants_match_the_paper_figures() -> None:
    # FFT 443 s / 46.8 GB; IISAN 179 s / 8.3 GB; cached 22 s / 3.1 GB (rounded figures, hence the tolerance)
    assert PAPER["iisan"].time.pct == pytest.approx(100 * 179 / 443, abs=0.5)
    assert PAPER["iisan"].memory.pct == pytest.approx(100 * 8.3 / 46.8, abs=0.2)
    assert PAPER["iisan-cached"].time.pct == pytest.approx(100 * 22 / 443, abs=0.1)
    assert PAPER["iisan-cached"].memory.pct == pytest.approx(100 * 3.1 / 46.8, abs=0.2)
    assert [PAPER[m].time.text for m in ("iisan", "iisan-cached")] == ["40%", "5.0%"]
    assert [PAPER[m].memory.text for m in ("iisan", "iisan-cached")] == ["17.8%", "6.7%"]


def test_paper_columns_next_to_measured_ratios(tmp_path: Path) -> None:
    d = write(tmp_path, paper_methods())
    md = build_report(d).read_text()
    rel = section(md, "### Relative to `fft`")
    assert ("| Method | Time / epoch (% of fft) | Paper time (% of FFT) | Trainable params (% of fft) "
            "| Peak memory (% of fft) | Paper memory (% of FFT) | Relative cost (% of fft) |") in rel
    # iisan: time 40/100 = 40%, params 5e6/1e8 = 5.0%, memory 178/1000 = 17.8% -> "18%" (fmt_pct: 0 decimals >= 10)
    #   cost = 0.45*0.4 + 0.10*0.05 + 0.45*0.178 = 0.18 + 0.005 + 0.0801 = 0.2651 -> 27%
    assert "| `iisan` | 40% | 40% | 5.0% | 18% | 17.8% | 27% |" in rel
    # iisan-cached: time 5%, params 5.0%, memory 6.7%; cost = 0.0225 + 0.005 + 0.03015 = 0.05765 -> 5.8%
    assert "| `iisan-cached` | 5.0% | 5.0% | 5.0% | 6.7% | 6.7% | 5.8% |" in rel
    # methods the paper has no figure for get a dash; fft is 100% of itself
    assert "| `lora` | 80% | — | 1.0% | 90% | — |" in rel
    assert "| `fft` | 100% | — | 100% | 100% | — | 100% |" in rel
    assert "arXiv 2404.02059" in rel and "ours are measured in one run on the device in the header" in rel

    rows = read_csv(d / "summary.csv")
    assert (float(rows["iisan"]["paper_time_pct"]), float(rows["iisan"]["paper_memory_pct"])) == (40.0, 17.8)
    assert (float(rows["iisan-cached"]["paper_time_pct"]), float(rows["iisan-cached"]["paper_memory_pct"])) == (5.0, 6.7)
    assert float(rows["iisan"]["rel_memory_pct"]) == pytest.approx(17.8)
    assert (rows["lora"]["paper_time_pct"], rows["fft"]["paper_memory_pct"]) == ("", "")
    assert rows["popularity"]["paper_time_pct"] == ""


def test_no_paper_columns_when_reference_is_not_fft(tmp_path: Path) -> None:
    recs = [dict(r, config={"resolved": {"tpme": dict(TPME_DEFAULT, reference="lora")}}) for r in paper_methods()]
    d = write(tmp_path / "cfg", recs)
    md = build_report(d).read_text()
    assert "### Relative to `lora`" in md
    assert "Paper time" not in md and "Paper memory" not in md and "2404.02059" not in md
    # iisan vs lora: time 40/80 = 50%
    assert "| `iisan` | 50% |" in section(md, "### Relative to `lora`")
    # the paper's shares of FFT stay in summary.csv: they do not depend on our reference
    assert float(read_csv(d / "summary.csv")["iisan"]["paper_time_pct"]) == 40.0

    d2 = write(tmp_path / "kw", paper_methods())
    assert "Paper time" not in build_report(d2, reference="iisan").read_text()


def test_no_paper_columns_without_iisan(tmp_path: Path) -> None:
    d = write(tmp_path, [record("fft", 100.0, 100_000_000, 1000.0), record("lora", 80.0, 1_000_000, 900.0)])
    md = build_report(d).read_text()
    assert "### Relative to `fft`" in md and "Paper time" not in md


def test_evaluation_cost_table(tmp_path: Path) -> None:
    recs = paper_methods()
    for r, table_s, rank_s in zip(recs, (2.5, 0.8, 0.012, None), (0.0456, 0.05, 0.04, None)):
        r["time"]["eval_item_table_s"], r["time"]["eval_rank_s"] = table_s, rank_s
    d = write(tmp_path, recs)
    md = build_report(d).read_text()
    ev = section(md, "### Evaluation cost")
    assert "| Method | Item embeddings (all items) | Ranking (all users of one split × all items) |" in ev
    assert "| `fft` | 2.50 s | 45.6 ms |" in ev
    assert "| `iisan` | 800 ms | 50.0 ms |" in ev
    assert "| `iisan-cached` | 12.0 ms | 40.0 ms |" in ev
    assert "| `lora` | — | — |" in ev
    # after the efficiency section (and its relative table), before quality
    assert md.index("### Relative to `fft`") < md.index("### Evaluation cost") < md.index("## Quality")
    rows = read_csv(d / "summary.csv")
    assert (float(rows["fft"]["eval_item_table_s_mean"]), float(rows["fft"]["eval_rank_s_mean"])) == (2.5, 0.0456)
    assert float(rows["iisan-cached"]["eval_item_table_s_mean"]) == 0.012
    assert (rows["lora"]["eval_item_table_s_mean"], rows["lora"]["eval_rank_s_mean"]) == ("", "")


def test_evaluation_cost_mean_over_repeats_and_absent_when_unrecorded(tmp_path: Path) -> None:
    recs = [record("fft", 100.0, 100_000_000, 1000.0, repeat=i) for i in range(2)]
    recs[0]["time"]["eval_rank_s"], recs[1]["time"]["eval_rank_s"] = 1.0, 1.2
    d = write(tmp_path / "rep", recs)
    # median 1.1 with the bootstrap interval of two values [1.0, 1.2]; mean 1.1, sample std 0.1414:
    # CV 12.9% flagged
    assert "| `fft` | — | 1.10 s [1.00–1.20] ⚠ CV 13% |" in build_report(d).read_text()
    assert float(read_csv(d / "summary.csv")["fft"]["eval_rank_s_mean"]) == pytest.approx(1.1)

    d2 = write(tmp_path / "none", paper_methods())
    assert "Evaluation cost" not in build_report(d2).read_text()
    assert read_csv(d2 / "summary.csv")["fft"]["eval_rank_s_mean"] == ""


def with_batch(recs: list[dict], sizes: dict[str, int], paper_protocol: bool | None) -> list[dict]:
    for r in recs:
        train: dict = {"batch_size": sizes[r["method"]]}
        if paper_protocol is not None:
            train["paper_protocol"] = paper_protocol
        r["config"]["resolved"]["train"] = train
    return recs


def test_batch_column_and_header_when_batch_sizes_differ(tmp_path: Path) -> None:
    sizes = {"fft": 32, "iisan": 64, "iisan-cached": 64, "lora": 32}
    d = write(tmp_path, with_batch(paper_methods(), sizes, True))
    md = build_report(d).read_text()
    assert "- **Batch size:** per method (paper protocol): fft 32, iisan 64, iisan-cached 64, lora 32" in md
    eff = section(md, "## Efficiency")
    assert "| Method | Batch | Trainable params (% of total) | Time / epoch | Peak memory |" in eff
    assert "| `fft` | 32 | 100M (100%) | 100 s | 1000 MB |" in eff
    assert "| `iisan` | 64 | 5.00M (5.0%) | 40.0 s | 178 MB |" in eff
    rows = read_csv(d / "summary.csv")
    assert (rows["fft"]["batch_size"], rows["iisan"]["batch_size"]) == ("32", "64")

    # differing without the flag (older records): listed, but not attributed to the paper protocol
    md = build_report(write(tmp_path / "old", with_batch(paper_methods(), sizes, None))).read_text()
    assert "- **Batch size:** per method: fft 32, iisan 64" in md and "| Batch |" in md


def test_no_batch_column_when_batch_sizes_agree_or_are_unknown(tmp_path: Path) -> None:
    sizes = dict.fromkeys(("fft", "iisan", "iisan-cached", "lora"), 64)
    md = build_report(write(tmp_path / "same", with_batch(paper_methods(), sizes, False))).read_text()
    assert "- **Batch size:** 64 for every method" in md
    assert "| Batch |" not in md and "| Method | Trainable params (% of total) |" in md

    md = build_report(write(tmp_path / "unknown", paper_methods())).read_text()
    assert "Batch size" not in md and "| Batch |" not in md


def test_cpu_device_line_states_the_torch_threads(tmp_path):
    recs = [record("fft", 10.0), record("iisan", 4.0)]
    for r in recs:
        r["env"]["torch_threads"] = 2
    md = build_report(write(tmp_path / "r", recs)).read_text()
    assert "- **Device:** cpu (Intel Xeon, 2 torch threads)" in md
