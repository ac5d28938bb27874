"""Pure parts of the report and the delivered images (issue 20 items 2, 4, 6)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from selfcal_batch.imaging.imstats import array_statistics
from selfcal_batch.imaging.provenance import (FINAL_IMAGE, FINAL_RESIDUAL, provenance_cards,
                                              publish_final_images)
from selfcal_batch.report.aggregate import with_gains
from selfcal_batch.report.dataset_page import LEGEND, observation_summary, status_text, text


def _header(n: int = 128) -> fits.Header:
    h = fits.Header()
    h.update(NAXIS=2, NAXIS1=n, NAXIS2=n, CTYPE1="RA---SIN", CTYPE2="DEC--SIN", CRPIX1=n / 2,
             CRPIX2=n / 2, CRVAL1=150.0, CRVAL2=7.0, CDELT1=-1 / 3600, CDELT2=1 / 3600,
             BMAJ=4 / 3600, BMIN=4 / 3600, BPA=0.0, BUNIT="JY/BEAM")
    return h


def test_snr_and_dr_are_different_numbers() -> None:
    """SNR = peak / robust off-source rms; DR = peak / rms of the whole residual: an
    artefact ring near the source lowers DR and leaves SNR (robust) nearly unchanged."""
    rng = np.random.default_rng(1)
    n = 128
    y, x = np.mgrid[:n, :n]
    r2 = (x - 64) ** 2 + (y - 64) ** 2
    img = np.exp(-r2 / (2 * 1.7**2)) + rng.normal(0, 1e-3, (n, n))
    clean_res = rng.normal(0, 1e-3, (n, n))
    ring = np.where((r2 > 15**2) & (r2 < 18**2), 2e-2 * np.cos(np.arctan2(y - 64, x - 64) * 6), 0)
    a = array_statistics(img, _header(), clean_res)
    b = array_statistics(img + ring, _header(), clean_res + ring)
    assert a["snr"] == pytest.approx(a["peak"] / a["rms_offsource"])
    assert a["dynamic_range"] == pytest.approx(a["peak"] / a["rms_residual"])
    assert b["dynamic_range"] < 0.5 * a["dynamic_range"]
    assert b["snr"] > 0.7 * a["snr"]
    assert b["snr"] != b["dynamic_range"]


def test_rms_over_thermal_column() -> None:
    import pandas as pd

    df = pd.DataFrame({"rms_initial": [3e-5, 1e-5], "rms_final": [1.2e-5, math.nan],
                       "thermal_noise_jy": [1e-5, 0.0]})
    g = with_gains(df)
    assert g["rms_thermal_initial"][0] == pytest.approx(3.0)
    assert g["rms_thermal_final"][0] == pytest.approx(1.2)
    assert math.isnan(g["rms_thermal_final"][1]) and math.isnan(g["rms_thermal_initial"][1])


def test_legend_defines_each_metric_once() -> None:
    names = [k for k, _ in LEGEND]
    assert len(names) == len(set(names))
    text_all = " ".join(v for _, v in LEGEND)
    for phrase in ("peak / off-source rms", "peak / residual rms", "µJy/beam", "thermal noise"):
        assert phrase in text_all


def test_text_never_nan() -> None:
    for v in (None, math.nan, "nan", "None", "", "  "):
        assert text(v) == "–"
    assert text(0) == "0" and text("p1") == "p1"


def test_status_text_tells_outcomes_apart() -> None:
    outs = {s: status_text(s, "why", "err") for s in
            ("finished", "unchanged", "no_detection", "needs_calibration", "failed", "interrupted",
             "not_started")}
    assert len(set(outs.values())) == len(outs)
    assert "err" in outs["failed"] and "why" in outs["unchanged"]
    assert "rerun" in outs["interrupted"] and "not started" in outs["not_started"]


def test_observation_summary() -> None:
    info = {"vis": "/d/x.ms", "fields": ["J1008"], "antenna_names": ["ea01", "ea02", "ea03"],
            "antennas_present": [0, 1, 2], "antennas_unflagged": [0, 2], "time_on_source_s": 1200.0,
            "time_span_s": 1300.0, "integration_s": 10.0,
            "spws": [{"id": 0, "nchan": 4, "freq_min": 5.9e9, "freq_max": 6.1e9, "chan_width": 5e7,
                      "corr": ["RR", "LL"]}],
            "scans": [{"scan": 1, "spws": [0]}, {"scan": 2, "spws": [0]}], "max_baseline_m": 3400.0,
            "flagged_fraction": 0.05, "thermal_noise_jy": 2.5e-5, "warnings": ["INTERVAL odd"]}
    o = observation_summary(info)
    rows = dict(o["rows"])
    assert rows["fields"] == "J1008"
    assert rows["antennas"].startswith("3 with data, 2 with unflagged data (3 in ANTENNA): ea01")
    assert rows["time on source"] == "20.0 min" and rows["scans"] == "2"
    assert rows["thermal noise (from the visibilities)"] == "25.0 µJy/beam"
    assert rows["correlations"] == "LL, RR" and rows["warning"] == "INTERVAL odd"
    assert o["spws"][0]["range"] == "5.9000 GHz – 6.1000 GHz"
    assert observation_summary(None) == {"rows": [], "spws": [], "scans": []}
    assert "nan" not in repr(observation_summary({"fields": []}))


def test_provenance_cards_and_publish(tmp_path: Path) -> None:
    cards = provenance_cards("1.2", "faint->standard_1", [("p0", "inf"), ("p1", "60s")],
                             {"rms_offsource": 2e-5, "snr": 300.0, "dynamic_range": math.nan},
                             "/data/very/long/path/J1008.ms", when="2026-01-01T00:00:00+00:00")
    d = {k: v for k, v, _ in cards}
    assert d["SCB_STEP"] == "p0:inf p1:60s" and d["SCB_NSTP"] == 2
    assert d["SCB_INMS"] == "J1008.ms" and d["SCB_RMS"] == 2e-5 and "SCB_DR" not in d
    assert all(len(k) <= 8 for k in d)
    img, res = tmp_path / "w-image.fits", tmp_path / "w-residual.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32), header=_header(8)).writeto(img)
    fits.PrimaryHDU(np.ones((8, 8), np.float32), header=_header(8)).writeto(res)
    out = publish_final_images(img, res, tmp_path, cards, "/data/very/long/path/J1008.ms")
    assert [p.name for p in out] == [FINAL_IMAGE, FINAL_RESIDUAL]
    for p in out:
        h = fits.getheader(p)
        assert h["SCB_VERS"] == "1.2" and h["SCB_TMPL"] == "faint->standard_1"
        assert "input MS: /data/very/long/path/J1008.ms" in str(h["HISTORY"])
    assert fits.getdata(tmp_path / FINAL_RESIDUAL).sum() == 64
    assert provenance_cards("1", "", [], {}, "x.ms")[2][1] == "none"


def test_steps_plot_draws_no_line_through_missing_steps() -> None:
    from selfcal_batch.report.figures import gapped

    xs, ys = gapped([0, 1, 2, 5, 6], [10.0, 20.0, 30.0, 40.0, 50.0])
    assert list(xs[:3]) == [0, 1, 2] and math.isnan(xs[3]) and list(xs[4:]) == [5, 6]
    xs, ys = gapped([0, 1, 2, 3], [10.0, math.nan, 30.0, 40.0])  # a missing value breaks too
    assert xs[0] == 0 and math.isnan(xs[1]) and list(xs[2:]) == [2, 3]
    assert gapped([], [])[0].size == 0


def test_before_after_shares_field_and_scale(tmp_path: Path) -> None:
    from matplotlib.image import imread

    from selfcal_batch.report.figures import before_after_box, plot_before_after

    assert before_after_box((128, 128), (64, 64), 10) == (54, 75, 54, 75)
    assert before_after_box((128, 128), (2, 125), 10) == (0, 21, 107, 128)  # shifted, not shrunk
    assert before_after_box((16, 16), (8, 8), 48) == (0, 16, 0, 16)
    rng = np.random.default_rng(3)
    y, x = np.mgrid[:128, :128]
    src = np.exp(-((x - 70) ** 2 + (y - 60) ** 2) / 8.0)
    for name, noise in (("a.fits", 1e-2), ("b.fits", 1e-3)):
        fits.PrimaryHDU((src + rng.normal(0, noise, src.shape)).astype(np.float32),
                        header=_header(128)).writeto(tmp_path / name)
    png = plot_before_after(tmp_path / "a.fits", tmp_path / "b.fits", tmp_path / "pair.png")
    img = imread(png)
    assert img.shape[1] > 2 * img.shape[0] * 0.9  # two panels side by side + a colour bar
    fits.PrimaryHDU(np.zeros((64, 64), np.float32), header=_header(64)).writeto(tmp_path / "c.fits")
    with pytest.raises(ValueError, match="different grids"):
        plot_before_after(tmp_path / "c.fits", tmp_path / "b.fits", tmp_path / "x.png")
