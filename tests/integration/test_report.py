"""Tests of selfcal_batch.report on a real small campaign (pure statistics: tests/unit/test_report_stats.py).

The campaign (two simulated datasets through the real pipeline + one failing dataset) is
built once by the ``campaign_out`` fixture (report_fixtures.make_campaign); tests that damage files work on copies.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
from click.testing import CliRunner
from report_fixtures import DATASETS, FAILED, check_links, html_refs

from selfcal_batch.report import build_report, compare_runs, template_summary
from selfcal_batch.report.aggregate import DATASET_COLUMNS
from selfcal_batch.report.figures import PLOT_FILES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL = sorted([*DATASETS, FAILED])


# ---------------------------------------------------------------------------- real campaign
@pytest.fixture(scope="module")
def report(campaign_out: Path) -> Path:
    return build_report(campaign_out)


def _results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "datasets").glob("*/result.json")}


def test_datasets_csv_rebuilt_from_results(campaign_out: Path, report: Path) -> None:
    res = _results(campaign_out)
    assert sorted(res) == ALL
    ds = pd.read_csv(campaign_out / "survey" / "datasets.csv", keep_default_na=False)
    assert tuple(ds.columns) == DATASET_COLUMNS
    assert sorted(ds["name"]) == ALL
    for _, r in ds.iterrows():
        src = res[r["name"]]
        assert r["status"] == src["status"]
        assert r["steps_accepted"] == ";".join(src["steps_accepted"])
        if src["snr_final"] is not None:
            assert float(r["snr_final"]) == pytest.approx(src["snr_final"], rel=1e-12)
    for name in DATASETS:
        assert res[name]["status"] == "finished", res[name]["error"]
    broken = ds[ds["name"] == FAILED].iloc[0]
    assert broken["status"] == "failed" and "does-not-exist.ms" in broken["error"]
    assert broken["snr_final"] == ""  # NaN/None written as empty


def test_steps_csv_matches_decisions(campaign_out: Path, report: Path) -> None:
    steps = pd.read_csv(campaign_out / "survey" / "steps.csv")
    for name, res in _results(campaign_out).items():
        mine = steps[steps["dataset"] == name]
        assert list(mine["step"]) == list(res["decisions"]), name
        assert list(mine.loc[mine["outcome"] == "accepted", "step"]) == res["steps_accepted"]
        assert list(mine.loc[mine["outcome"] == "reverted", "step"]) == res["steps_reverted"]
        state = json.loads((campaign_out / "datasets" / name / "state.json").read_text())
        for _, r in mine.iterrows():
            want = res["decisions"][r["step"]].get("solint")  # None for a skipped step: NaN in the CSV
            assert r["solint"] == want or (want is None and pd.isna(r["solint"]))
            snr_post = state["steps"][r["step"]].get("snr_post")
            assert r["snr_post"] == pytest.approx(snr_post) or (snr_post is None and pd.isna(r["snr_post"]))


def test_image_properties_aggregated(campaign_out: Path, report: Path) -> None:
    survey = campaign_out / "survey"
    agg = pd.read_csv(survey / "image_properties.csv")
    per = {n: pd.read_csv(campaign_out / "datasets" / n / "image_properties.csv") for n in DATASETS}
    assert not (campaign_out / "datasets" / FAILED / "image_properties.csv").exists()
    assert len(agg) == sum(len(d) for d in per.values())
    # test + p0 pre + p0/p1/p2 post + final (each post image is the next step's pre image; ap1's
    # post image is not made when its solutions already reject it; the final guard judges the
    # test image against the final image, issue 16)
    assert len(agg) >= 2 * 5
    # One row per use of an image: an image made once may serve two roles (issue 16:
    # the test image may also be the final guard's "before" image, imaging/reuse.py).
    want = {(n, s, r, p) for n, d in per.items() for s, r, p in zip(d["step"], d["role"], d["path"], strict=True)}
    got = set(zip(agg["dataset"], agg["step"], agg["role"], agg["path"], strict=True))
    assert got == want and len(got) == len(agg)
    for n, _s, _r, p in got:
        assert (campaign_out / "datasets" / n / p).is_file()
    for n, d in per.items():  # same rows, same order, same values
        mine = agg[agg["dataset"] == n].reset_index(drop=True)[list(d.columns)]
        pd.testing.assert_frame_equal(mine, d, check_dtype=False)
    pq = pd.read_parquet(survey / "image_properties.parquet")
    pd.testing.assert_frame_equal(pq, agg, check_dtype=False)


def test_templates_csv_recomputed(campaign_out: Path, report: Path) -> None:
    survey = campaign_out / "survey"
    written = pd.read_csv(survey / "templates.csv")
    recomputed = template_summary(pd.read_csv(survey / "datasets.csv", keep_default_na=False))
    pd.testing.assert_frame_equal(written, recomputed, check_dtype=False, rtol=1e-12)
    res = _results(campaign_out)
    for name in DATASETS:
        r = res[name]
        row = written[(written["selection"] == "initial") & (written["template"] == r["template_initial"])]
        assert row["n_datasets"].sum() >= 1
        if int(row["n_datasets"].iloc[0]) == 1:
            assert row["snr_gain_median"].iloc[0] == pytest.approx(r["snr_final"] / r["snr_initial"])
    none = written[written["template"] == "(none)"]
    assert list(none["n_failed"]) == [1, 1] and list(none["n_datasets"]) == [0, 0]
    assert written["n_failed"].sum() == 2  # the failed dataset, once per selection


def test_plots_written(campaign_out: Path, report: Path) -> None:
    plots = campaign_out / "survey" / "plots"
    for f in PLOT_FILES.values():
        data = (plots / f).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, f
    for name in DATASETS:  # thumbnails reused from the pipeline's plots
        assert (campaign_out / "datasets" / name / "plots" / "thumb_final.png").is_file()


def _pages_text(report: Path) -> str:
    """The summary page and every per-dataset page (survey/datasets/*.html), joined."""
    return "\n".join(p.read_text(encoding="utf-8")
                     for p in [report, *sorted((report.parent / "datasets").glob("*.html"))])


def test_html_rows_links_and_failure(campaign_out: Path, report: Path) -> None:
    assert report == campaign_out / "survey" / "report.html"
    text = report.read_text(encoding="utf-8")
    assert text.count('class="dataset-row') == len(ALL)
    for name in ALL:
        assert f'data-dataset="{name}"' in text
        assert f'href="datasets/ds-{name}.html"' in text  # every dataset has its own page
    assert "MS not found" in text and "does-not-exist.ms" in text
    refs, ids = html_refs(report)
    assert "dataset-table" in ids and "legend" in ids
    assert check_links(report) > 10
    srcs = {v for tag, a, v in refs if tag == "img"}
    assert {f"plots/{f}" for f in PLOT_FILES.values()} <= srcs
    for name in DATASETS:
        page = report.parent / "datasets" / f"ds-{name}.html"
        ptext = page.read_text(encoding="utf-8")
        assert check_links(page) > 5
        assert f"../plots/thumbs/{name}_before_after.png" in ptext
        for log in ("pipeline.log", "wsclean.log", "casa.log"):
            assert f'href="../../datasets/{name}/logs/{log}"' in ptext
    broken = (report.parent / "datasets" / "ds-broken.html").read_text(encoding="utf-8")
    assert 'href="../../datasets/broken/logs/pipeline.log"' in broken
    assert "no image_properties.csv" in broken  # the failed dataset says what is missing
    assert "<link" not in text and "http://" not in text and "https://" not in text


def test_cli_report(campaign_out: Path, report: Path) -> None:
    from selfcal_batch.cli import main

    res = CliRunner().invoke(main, ["report", str(campaign_out)])
    assert res.exit_code == 0, res.output
    assert res.output.strip().endswith("report.html")


def _copy(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.ms", "caltables", "survey")))


def test_missing_files_and_campaign_files(campaign_out: Path, tmp_path: Path) -> None:
    out = _copy(campaign_out, tmp_path / "damaged")
    bright = out / "datasets" / "bright"
    (bright / "image_properties.csv").unlink()
    for p in (bright / "plots").glob("thumb_*.png"):
        p.unlink()
    (bright / "images" / "test_image-MFS-image.fits").unlink()
    shutil.rmtree(bright / "logs")
    (out / "datasets" / "crashed").mkdir()  # no result.json at all
    (out / "campaign.json").write_text(json.dumps({
        "campaign": "demo", "status": "finished", "host": "nodeX",
        "versions": {"wsclean": "WSClean version 3.1-test"},
        "manifest_resolved": {"defaults": {"template_thresholds_mjy": [5, 15, 40, 90]}}}))
    html = build_report(out)
    text = _pages_text(html)
    check_links(html)
    assert text.count('class="dataset-row') == len(ALL) + 1
    assert "WSClean version 3.1-test" in text and "5, 15, 40, 90 mJy" in text and "nodeX" in text
    assert "no result.json" in text and "no image_properties.csv" in text
    assert "missing log(s): pipeline.log, wsclean.log, casa.log" in text
    # initial thumbnail: neither reused nor makeable; final made from final-image.fits
    assert "no initial image" in text
    assert (out / "survey" / "plots" / "thumbs" / "bright_final.png").stat().st_size > 0
    agg = pd.read_csv(out / "survey" / "image_properties.csv")
    assert set(agg["dataset"]) == set(DATASETS) - {"bright"}


def test_campaign_written_csv_and_empty(campaign_out: Path, tmp_path: Path) -> None:
    """A datasets.csv as the campaign runner writes it (decisions JSON column), and no data."""
    out = _copy(campaign_out, tmp_path / "camp")
    rows = [dict(r) for r in _results(out).values()]
    try:
        from selfcal_batch.campaign.run import normalise_row, write_survey_csv
    except ImportError:
        normalise_row = write_survey_csv = None
    if write_survey_csv is not None:
        write_survey_csv([normalise_row(r, r["name"], r["ms"]) for r in rows],
                         out / "survey" / "datasets.csv")
    else:
        df = pd.DataFrame(rows)
        for c in df.columns:
            df[c] = [";".join(v) if isinstance(v, list) else json.dumps(v) if isinstance(v, dict) else v
                     for v in df[c]]
        (out / "survey").mkdir(exist_ok=True)
        df.to_csv(out / "survey" / "datasets.csv", index=False)
    for name in DATASETS:  # the steps must still be found if result.json goes missing
        (out / "datasets" / name / "result.json").unlink()
    html = build_report(out)
    check_links(html)
    steps = pd.read_csv(out / "survey" / "steps.csv")
    assert set(steps["dataset"]) == set(DATASETS)
    assert html.read_text(encoding="utf-8").count('class="dataset-row') == len(ALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    html = build_report(empty)
    text = html.read_text(encoding="utf-8")
    assert "No datasets" in text and "no campaign.json" in text
    check_links(html)
    for f in PLOT_FILES.values():
        assert (empty / "survey" / "plots" / f).read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(FileNotFoundError):
        build_report(tmp_path / "does-not-exist")


def test_compare_runs(campaign_out: Path, tmp_path: Path) -> None:
    a = _copy(campaign_out, tmp_path / "run_a")
    b = _copy(campaign_out, tmp_path / "run_b")
    build_report(a)
    res_b = _results(b)
    big, small = sorted(DATASETS)
    for name, factor in ((big, 1.5), (small, 1.01)):
        r = res_b[name]
        r["dr_final"] *= factor
        (b / "datasets" / name / "result.json").write_text(json.dumps(r))
    html = compare_runs(a, b)
    dest = tmp_path / "compare-run_a-vs-run_b"
    assert html == dest / "compare.html"
    t = pd.read_csv(dest / "compare.csv", keep_default_na=False).set_index("name")
    assert sorted(t.index) == ALL
    assert t.loc[big, "winner"] == "b" and t.loc[small, "winner"] == "tie"
    assert t.loc[FAILED, "winner"] == "tie"
    assert (t.loc[FAILED, "status_a"], t.loc[FAILED, "status_b"]) == ("failed", "failed")
    ra = _results(a)[big]
    assert float(t.loc[big, "dr_gain_b"]) == pytest.approx(1.5 * ra["dr_final"] / ra["dr_initial"])
    assert float(t.loc[big, "snr_final_a"]) == pytest.approx(ra["snr_final"])
    for f in ("gain_scatter.png", "gain_bars.png"):
        assert (dest / "plots" / f).read_bytes().startswith(PNG_MAGIC)
    text = html.read_text(encoding="utf-8")
    assert text.count('class="compare-row"') == len(ALL)
    assert check_links(html) >= 4  # csv, 2 plots, run a's report
    custom = compare_runs(a, b, tmp_path / "cmp")
    assert custom == tmp_path / "cmp" / "compare.html" and custom.is_file()


def test_report_at_survey_scale_is_paged(campaign_out: Path, tmp_path: Path) -> None:
    """Above INLINE_DATASETS_MAX datasets each dataset gets its own page; the summary page
    links every one of them and stays small; the contact sheet is capped."""
    from survey_clone import clone

    from selfcal_batch.report import build_report
    from selfcal_batch.report.figures import SHEET_MAX_ROWS
    from selfcal_batch.report.html import INLINE_DATASETS_MAX

    n = INLINE_DATASETS_MAX + 10
    out = tmp_path / "big"
    names = clone(campaign_out, n, out)
    html = build_report(out)
    text = html.read_text()
    assert html.stat().st_size < 5_000_000
    assert '<article class="dataset"' not in text
    hrefs = re.findall(r'<td><a href="(datasets/[^"]+\.html)">', text)
    assert len(hrefs) == n
    for h in hrefs:
        page = (html.parent / unquote(h)).read_text()
        assert '<article class="dataset"' in page and 'href="../report.html"' in page
        for link in re.findall(r'(?:src|href)="([^"#]+)"', page):
            assert (html.parent / unquote(h)).parent.joinpath(unquote(link)).exists(), (h, link)
    assert sum(1 for nm in names if nm in text) == n
    from PIL import Image

    with Image.open(out / "survey" / "plots" / "thumbnails.png") as im:
        assert im.height < (SHEET_MAX_ROWS + 2) * 230


def test_final_image_provenance(campaign_out: Path) -> None:
    """final-image.fits and final-residual.fits carry the pipeline's provenance cards."""
    from astropy.io import fits

    from selfcal_batch import __version__

    for name in DATASETS:
        root = campaign_out / "datasets" / name
        res = json.loads((root / "result.json").read_text())
        for f in ("final-image.fits", "final-residual.fits"):
            h = fits.getheader(root / f)
            assert h["SCB_VERS"] == __version__ and h["SCB_INMS"] == f"{name}.ms"
            assert h["SCB_NSTP"] == len(h["SCB_STEP"].split()) or h["SCB_STEP"] == "none"
            assert h["SCB_RMS"] == pytest.approx(res["rms_final"], rel=1e-6)
            assert res["template_final"] in h["SCB_TMPL"]
            # a long path is continued over several HISTORY cards
            assert f"input MS: {res['ms']}" in "".join(str(x) for x in h["HISTORY"])
        if res["status"] == "finished":
            steps = [s.split(":")[0] for s in h["SCB_STEP"].split()]
            assert steps and set(steps) <= set(res["steps_accepted"])
