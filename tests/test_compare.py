"""``iisan-bench compare``: several result folders in one report, refused when they cannot be compared."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_helpers import record, write

from benchmark.cli import main
from reports import ReportError
from reports.compare import compare


def _folder(d: Path, times: dict[str, list[float]], device: str = "Intel Xeon", sha: str = "abc123",
            cfg: dict | None = None) -> Path:
    recs = []
    for name, ts in times.items():
        for i, t in enumerate(ts):
            r = record(name, t, 1000 if name != "fft" else 100_000, 100.0 * t, repeat=i)
            r["env"]["device_name"], r["env"]["git_sha"] = device, sha
            r["config"]["resolved"].update(cfg or {"data": {"dataset": "synthetic"}, "eval": {"masking": "paper"}})
            recs.append(r)
    return write(d, recs)


def test_two_folders_rows_and_ratios_with_overlap_marked(tmp_path: Path) -> None:
    a = _folder(tmp_path / "cpu", {"fft": [10.0, 11.0, 12.0], "lora": [4.0, 4.1, 4.2]})
    b = _folder(tmp_path / "gpu", {"fft": [1.0, 1.1, 1.2], "lora": [4.1, 4.15, 4.3]}, device="H100", sha="def456")
    md, path = compare([a, b], tmp_path / "cmp")
    assert path == tmp_path / "cmp" / "compare.md" and (tmp_path / "cmp" / "compare.csv").is_file()
    assert "- **Device:** cpu: Intel Xeon; gpu: H100" in md and "- **Commit:** cpu: abc123; gpu: def456" in md
    assert "| `fft` | cpu | Intel Xeon | 100K | 11.0 s [10.0–12.0] ⚠ CV 9% | 1.07 GB [0.98–1.17] ⚠ CV 9% | 1.000 |" in md
    # fft: 1.1 / 11 = 0.10x, resolved; lora: 4.15 / 4.1 = 1.01x, its intervals [4.0-4.2] and [4.1-4.3] overlap
    assert "| `fft` | gpu / cpu | 0.10× | 0.10× | 1.00× |" in md
    assert "| `lora` | gpu / cpu | 1.01× (≈, intervals overlap) | 1.01× (≈, intervals overlap) | 1.00× |" in md
    rows = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    assert rows[0].startswith("method,folder,device,git_sha") and len(rows) == 5
    assert rows[1].startswith("fft,cpu,Intel Xeon,abc123,100000,11.0,10.0,12.0,")


def test_folders_of_other_data_or_masking_are_refused_naming_the_keys(tmp_path: Path) -> None:
    a = _folder(tmp_path / "a", {"fft": [1.0]})
    b = _folder(tmp_path / "b", {"fft": [1.0]}, cfg={"data": {"dataset": "Scientific"}, "eval": {"masking": "ours"}})
    with pytest.raises(ReportError) as err:
        compare([a, b])
    msg = str(err.value)
    assert msg.startswith("cannot compare: the folders differ in data.dataset (\"synthetic\" in a, \"Scientific\" in b); "
                          "eval.masking (\"paper\" in a, \"ours\" in b)")
    assert "\n" not in msg
    with pytest.raises(ReportError, match="two or more result folders"):
        compare([a])


def test_compare_command_prints_or_writes_and_exits_2_on_a_refusal(tmp_path: Path, capsys) -> None:
    a = _folder(tmp_path / "a", {"fft": [1.0]})
    b = _folder(tmp_path / "b", {"fft": [2.0]})
    main(["compare", str(a), str(b)])
    out = capsys.readouterr().out
    assert out.startswith("# iisan-bench comparison") and "| `fft` | b / a | 2.00× |" in out
    c = _folder(tmp_path / "c", {"fft": [1.0]}, cfg={"data": {"dataset": "other"}})
    with pytest.raises(SystemExit) as ex:
        main(["compare", str(a), str(c), "--out", str(tmp_path / "o")])
    assert ex.value.code == 2 and not (tmp_path / "o").exists()
    assert "cannot compare: the folders differ in data.dataset" in capsys.readouterr().err
