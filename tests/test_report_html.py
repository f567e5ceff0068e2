"""report.html in a real headless browser (Debian's chromium, driven by Playwright): it loads with no
console error, its tables sort, its numbers are summary.csv's, the method filter hides a method
everywhere, the Pareto points answer a hover and the CSV downloads.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; .ci/run installs it) and the ``playwright``
package (the test extra); skipped, saying which is missing, without them.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from report_helpers import four_methods, write

from reports import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _results(tmp_path: Path) -> Path:
    recs = four_methods(failed=False)
    for r, top in zip(recs, (900.0, 500.0, 100.0, 600.0)):
        r["memory"]["samples_csv"] = f"memory/{r['method']}.csv"
    recs[2]["time"]["step_s"] = [0.2] * 40 + [5.0] * 10
    d = write(tmp_path / "out", recs)
    (d / "memory").mkdir()
    for r, top in zip(recs, (900.0, 500.0, 100.0, 600.0)):
        (d / "memory" / f"{r['method']}.csv").write_text("t_s,mb,phase\n" + "".join(
            f"{i * 0.1:.1f},{top * (i + 1) / 30:.1f},{'setup' if i < 5 else 'train'}\n" for i in range(30)))
    build_report(d)
    return d


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def test_the_page_loads_sorts_filters_and_matches_summary_csv(tmp_path: Path, browser) -> None:
    d = _results(tmp_path)
    errors: list[str] = []
    page = browser.new_page(accept_downloads=True)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((d / "report.html").as_uri())
    page.wait_for_selector("#efficiency table")
    assert errors == []

    rows = {r["method"]: r for r in csv.DictReader((d / "summary.csv").open()) if r["status"] == "ok"}
    cells = page.eval_on_selector_all("#efficiency tbody tr", """trs => trs.map(tr => Object.fromEntries(
        [...tr.cells].map(td => [td.dataset.col, td.dataset.value])))""")
    assert sorted(c["method"] for c in cells) == sorted(rows)
    for c in cells:  # every number on the page is summary.csv's
        for key, value in c.items():
            want = rows[c["method"]][key]
            assert (float(value) == pytest.approx(float(want))) if want not in ("", None) and key != "method" \
                else value == want, (c["method"], key)

    order = lambda: page.eval_on_selector_all("#efficiency tbody tr", "trs => trs.map(t => t.dataset.method)")  # noqa: E731
    page.click("#efficiency th[data-col=time_epoch_s_median]")
    by_time = sorted(rows, key=lambda m: float(rows[m]["time_epoch_s_median"]))
    assert order() == by_time == ["iisan", "lora", "bitfit", "fft"]
    page.click("#efficiency th[data-col=time_epoch_s_median]")
    assert order() == by_time[::-1]

    # the filter hides a method in the tables, the Pareto plot and the timelines
    assert page.locator("#pareto circle").count() == 4 and page.locator("#memory svg.timeline").count() == 4
    page.uncheck("#filter input[value=lora]")
    for sel in ("#efficiency tr[data-method=lora]", "#pareto circle[data-method=lora]", "#memory svg[data-method=lora]"):
        assert not page.locator(sel).is_visible(), sel
    assert page.locator("#efficiency tr[data-method=fft]").is_visible()

    page.hover("#pareto circle[data-method=iisan]")
    assert page.locator("#tip").is_visible() and page.locator("#tip").inner_text().startswith("iisan — TPME 0.")
    # one y scale for every timeline: the same top tick in each panel
    tops = page.eval_on_selector_all("#memory svg.timeline", "ss => ss.map(s => [...s.querySelectorAll('text.tick')].map(t => t.textContent).slice(-2, -1)[0])")
    assert len(set(tops)) == 1
    assert "bimodal" in page.inner_text("#steps")

    with page.expect_download() as dl:
        page.click("#csv")
    assert Path(dl.value.path()).read_text() == (d / "summary.csv").read_text()
    assert errors == []
    page.close()
