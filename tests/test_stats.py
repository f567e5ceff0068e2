"""Uncertainty in the report: bootstrap intervals, step-time profiles and their flags (reports.stats)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reports import build_report
from reports.load import load_results
from reports.stats import Spread, bimodality, bootstrap_ci, over_steps, step_profile
from report_helpers import read_csv, record, write


def test_bootstrap_interval_of_a_median_is_seeded_and_brackets_it() -> None:
    vals = [1.0, 1.1, 0.9, 1.05, 0.95, 1.2, 0.8]
    lo, hi = bootstrap_ci(vals)
    assert lo <= 1.0 <= hi and lo >= 0.8 and hi <= 1.2
    assert bootstrap_ci(vals) == (lo, hi)  # same seed, same interval
    assert bootstrap_ci([5.0]) is None
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_step_profile_quantiles_follow_the_nearest_rank_rule() -> None:
    steps = [0.1 * (i + 1) for i in range(100)]  # 0.1 .. 10.0
    p = step_profile(steps)
    # index min(99, int(q * 100)): p50 -> 50 -> 5.1, p90 -> 90 -> 9.1, p99 -> 99 -> 10.0
    assert (p.n, p.p50, p.p90, p.p99, p.max) == (100, pytest.approx(5.1), pytest.approx(9.1), pytest.approx(10.0),
                                                 pytest.approx(10.0))
    assert p.tail == pytest.approx(9.1 / 5.1)
    assert p.flags == ["long tail: p90/p50 1.78 > 1.5"]


def test_two_groups_of_steps_are_flagged_bimodal_and_one_group_is_not() -> None:
    # the 2-core stall the guide describes: 0.23 s steps among 5 s ones
    mixed = [0.23] * 40 + [0.24] * 40 + [5.0] * 20
    why = bimodality(mixed)
    assert why is not None and why.startswith("bimodal: 20 of 100 steps at ≥ 5 s, 20.8× the other 80")
    assert "bimodal" in step_profile(mixed).flags[0]
    # a smooth spread and a few outliers (under 10% of the steps) are not two groups
    assert bimodality([0.2 + 0.001 * i for i in range(100)]) is None
    assert bimodality([0.23] * 95 + [5.0] * 5) is None
    assert step_profile([0.2 + 0.001 * i for i in range(100)]).flags == []


def test_one_run_gets_its_interval_from_its_steps() -> None:
    s = over_steps(10.0, [0.1] * 50 + [0.12] * 50)
    # the step median's interval is [0.1, 0.12] around 0.11, scaled to the 10 s epoch
    assert s.basis == "steps" and s.median == 10.0
    assert (s.low, s.high) == (pytest.approx(10.0 * 0.1 / 0.11), pytest.approx(10.0 * 0.12 / 0.11))
    assert not Spread(1.0, 0.9, 1.1, 3, "repeats").overlaps(Spread(2.0, 1.2, 2.5, 3, "repeats"))
    assert Spread(1.0, 0.9, 1.3, 3, "repeats").overlaps(Spread(2.0, 1.2, 2.5, 3, "repeats"))


def test_report_marks_overlapping_intervals_and_flags_a_stalled_run(tmp_path: Path) -> None:
    recs = []
    for i, (lora_t, bitfit_t) in enumerate([(10.0, 10.5), (11.0, 10.8), (12.0, 11.5)]):
        recs.append(record("lora", lora_t, 1000, 100.0 + i, repeat=i))
        recs.append(record("bitfit", bitfit_t, 500, 300.0 + i, repeat=i))
        recs.append(record("fft", 50.0 + i, 10_000, 900.0 + i, repeat=i))
    recs[0]["time"]["step_s"] = [0.23] * 40 + [5.0] * 10  # lora's repeat 0 shared the cores
    recs[1]["time"]["step_s"] = [0.2] * 50
    md = build_report(write(tmp_path, recs)).read_text()
    # lora [10-12] and bitfit [10.5-11.5] overlap; fft [50-52] and the memories [100-102], [300-302] do not
    assert "Not resolved by these runs (time intervals overlap): `lora` ≈ `bitfit`." in md
    assert "memory intervals overlap" not in md
    assert "| `lora` | 0 | 50 | 230 ms | 5.00 s | 5.00 s | 5.00 s | 21.74 | bimodal: 10 of 50 steps" in md
    assert "| `bitfit` | 0 | 50 | 200 ms | 200 ms | 200 ms | 200 ms | 1.00 | — |" in md
    assert "**Unusual step times** in `lora`" in md
    lora = load_results(tmp_path / "results.jsonl").method("lora")
    assert lora.time_spread.basis == "repeats" and lora.steps[0][1].n == 50
    row = read_csv(tmp_path / "summary.csv")["lora"]
    assert (float(row["time_epoch_s_median"]), float(row["time_epoch_s_ci95_low"]),
            float(row["time_epoch_s_ci95_high"]), row["time_epoch_s_ci95_basis"]) == (11.0, 10.0, 12.0, "repeats")
    assert float(row["step_p90_s"]) == 5.0 and row["step_flags"].endswith("long tail: p90/p50 21.74 > 1.5")


def test_a_method_at_or_below_the_popularity_floor_is_marked(tmp_path: Path) -> None:
    # popularity floor: test hr@10 0.02, ndcg@10 0.01 (report_helpers); iisan-cached scores 0.0142 vs 0.0150 style
    recs = [record("fft", ndcg=0.05), record("iisan-cached", ndcg=0.009)]
    md = build_report(write(tmp_path, recs)).read_text()
    test = md.split("### Test")[1].split("\n\n")[1]
    row = next(line for line in test.splitlines() if line.startswith("| `iisan-cached`"))
    # hr@10 = 0.018 <= 0.02 and ndcg@10 = 0.009 <= 0.01 are marked; fft's are not
    assert "0.0180 ▽" in row and "0.0090 ▽" in row
    assert "▽" not in next(line for line in test.splitlines() if line.startswith("| `fft`"))
    assert "▽ marks a figure at or below it" in md
