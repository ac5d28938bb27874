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
    # the 6 survey plots (thumbnails and gain plots are on the per-dataset pages)
    assert parsed.body.get("data-images") == str(n_img) and n_img >= 6
    assert parsed.body.get("data-broken-images") == "0"
    assert check_links(report) > 10  # every relative src/href resolves to a file

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


class _Text(HTMLParser):
    """Visible text of a DOM (script and style contents left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.skip = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self.skip -= tag in ("script", "style") and self.skip > 0

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def visible_text(dom: str) -> str:
    p = _Text()
    p.feed(dom)
    return " ".join(" ".join(p.parts).split())


NAN = re.compile(r"\b(nan|NaN|None)\b")


def test_legend_and_dataset_pages_in_headless_chromium(campaign_out: Path, tmp_path: Path) -> None:
    """Summary page: the legend defines SNR, DR and rms/thermal once, rms is in µJy/beam, no
    'nan' anywhere; every dataset name links to its own page. One per-dataset page: the
    observation summary, image statistics, decisions and gain plots, no 'nan', all images
    loaded; screenshots of both are written next to the report."""
    report = build_report(campaign_out)
    res = chromium(report, tmp_path, "--dump-dom")
    assert not page_problems(res.stderr), page_problems(res.stderr)
    text = visible_text(res.stdout)
    assert not NAN.search(text), NAN.search(text)
    for phrase in ("peak / off-source rms", "peak / residual rms", "rms / thermal", "rms final (µJy/beam)",
                   "campaign elapsed", "summed dataset time"):
        assert phrase in text, phrase
    assert text.count("peak / residual rms") == 1  # defined once (the legend)
    for name in ("bright", "faint", "broken"):
        assert f'href="datasets/ds-{name}.html"' in res.stdout

    page = campaign_out / "survey" / "datasets" / "ds-bright.html"
    res = chromium(page, tmp_path, "--dump-dom")
    assert not page_problems(res.stderr), page_problems(res.stderr)
    dom = res.stdout
    ptext = visible_text(dom)
    assert not NAN.search(ptext), NAN.search(ptext)
    for phrase in ("Observation", "fields", "antennas", "time on source", "spectral windows",
                   "thermal noise (from the visibilities)", "Image statistics per step",
                   "rms off-source (µJy/beam)", "Self-calibration decisions", "Gain solutions",
                   "self-calibrated: final.ms", "Legend"):
        assert phrase in ptext, phrase
    body = dom_rows(dom, "x", "x").body
    assert body.get("data-broken-images") == "0" and int(body.get("data-images", "0")) >= 4
    broken = visible_text(chromium(campaign_out / "survey" / "datasets" / "ds-broken.html", tmp_path,
                                   "--dump-dom").stdout)
    assert "failed: no usable output" in broken and not NAN.search(broken)

    for src, shot in ((report, "report-screenshot.png"), (page, "dataset-screenshot.png")):
        out = campaign_out / "survey" / shot
        out.unlink(missing_ok=True)
        res = chromium(src, tmp_path, f"--screenshot={out}", "--window-size=1400,2400")
        assert not page_problems(res.stderr), page_problems(res.stderr)
        pixels = imread(out)
        assert pixels.shape[:2] == (2400, 1400) and float(np.std(pixels[..., :3])) > 0.05
        print(f"\nscreenshot: {out}")
