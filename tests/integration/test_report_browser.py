"""Open the survey report (and a comparison page) in a real headless Chromium.

Needs Debian's ``chromium`` at /usr/bin/chromium (``apt-get install -y chromium``); the
test is skipped with a message when it is absent. Uses the shared real campaign of
``report_fixtures``.
"""
from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from report_fixtures import check_links, html_refs

from selfcal_batch.report import build_report, compare_runs

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]
#: Lines of Chromium's log that mean the page misbehaved.
BAD = re.compile(r"CONSOLE|Uncaught|Failed to load resource|net::ERR_")

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="headless browser test needs /usr/bin/chromium "
                                       "(apt-get install -y chromium)")


def chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *extra,
            page.resolve().as_uri()]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=tmp)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def page_problems(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if BAD.search(ln)]


class _Rows(HTMLParser):
    """Rows (class dataset-row / compare-row) inside the table with a given id."""

    def __init__(self, table_id: str, row_class: str) -> None:
        super().__init__()
        self.table_id, self.row_class = table_id, row_class
        self.depth = 0  # >0 inside the wanted table
        self.rows: list[str] = []
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = {k: v or "" for k, v in attrs}
        if tag == "table":
            if self.depth:
                self.depth += 1
            elif a.get("id") == self.table_id:
                self.depth = 1
        if tag == "tr" and self.depth and self.row_class in (a.get("class") or "").split():
            self.rows.append(a.get("data-dataset") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1


def dom_rows(dom: str, table_id: str, row_class: str) -> _Rows:
    p = _Rows(table_id, row_class)
    p.feed(dom)
    return p


def test_report_in_headless_chromium(campaign_out: Path, tmp_path: Path) -> None:
    report = build_report(campaign_out)
    names = list(pd.read_csv(campaign_out / "survey" / "datasets.csv", keep_default_na=False)["name"])
    assert len(names) == 3

    res = chromium(report, tmp_path, "--dump-dom")
    assert not page_problems(res.stderr), page_problems(res.stderr)
    dom = res.stdout
    parsed = dom_rows(dom, "dataset-table", "dataset-row")
    assert sorted(parsed.rows) == sorted(names)  # one row per dataset, in the live DOM
    # the page's own load-time check: every <img> loaded with a non-zero size
    refs, _ = html_refs(report)
    n_img = sum(1 for tag, attr, _ in refs if tag == "img" and attr == "src")
    assert parsed.body.get("data-images") == str(n_img) and n_img >= 6 + 2 * 2
    assert parsed.body.get("data-broken-images") == "0"
    assert check_links(report) > 20  # every relative src/href resolves to a file

    shot = campaign_out / "survey" / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    res = chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1400,2000")
    assert not page_problems(res.stderr), page_problems(res.stderr)
    assert shot.is_file() and shot.stat().st_size > 20_000
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1400)
    assert float(np.std(pixels[..., :3])) > 0.05  # not a blank page
    print(f"\nreport screenshot: {shot}")


def test_compare_page_in_headless_chromium(campaign_out: Path, tmp_path: Path) -> None:
    build_report(campaign_out)
    page = compare_runs(campaign_out, campaign_out, tmp_path / "cmp")
    res = chromium(page, tmp_path, "--dump-dom")
    assert not page_problems(res.stderr), page_problems(res.stderr)
    parsed = dom_rows(res.stdout, "compare-table", "compare-row")
    assert len(parsed.rows) == 3
    assert parsed.body.get("data-broken-images") == "0"
    check_links(page)
    t = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert set(t["winner"]) == {"tie"}  # a run compared with itself


def test_detector_catches_broken_pages(tmp_path: Path) -> None:
    """The checks above would notice a script error and a missing image."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="missing.png">'
                   "<script>nope();</script></body></html>")
    res = chromium(bad, tmp_path, "--dump-dom")
    assert any("Uncaught" in ln for ln in page_problems(res.stderr))
    with pytest.raises(AssertionError, match="does not exist"):
        check_links(bad)
