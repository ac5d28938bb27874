"""Tests of selfcal_batch.imaging.plots with a small python-casacore caltable and synthetic FITS."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from matplotlib.image import imread

from selfcal_batch.imaging import imstats
from selfcal_batch.imaging import plots

FWHM_PX = 4.0
SIG_B = FWHM_PX / (2 * math.sqrt(2 * math.log(2)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_caltable(path: Path, antenna_ids, names, ntimes=10, npol=2, snr=None, flag=None,
                  seed=0) -> Path:
    """Minimal CASA-like gain caltable: cell shape [npol, 1] (numpy (1, npol))."""
    from casacore.tables import makearrcoldesc, makescacoldesc, maketabdesc, table

    rng = np.random.default_rng(seed)
    nrow = ntimes * len(antenna_ids)
    desc = maketabdesc([
        makescacoldesc("TIME", 0.0),
        makescacoldesc("ANTENNA1", 0),
        makescacoldesc("SPECTRAL_WINDOW_ID", 0),
        makearrcoldesc("CPARAM", 0j, shape=[1, npol], valuetype="complex"),
        makearrcoldesc("SNR", 0.0, shape=[1, npol], valuetype="float"),
        makearrcoldesc("FLAG", False, shape=[1, npol]),
    ])
    times = 4.9e9 + 60.0 * np.repeat(np.arange(ntimes), len(antenna_ids))
    ants = np.tile(np.asarray(antenna_ids), ntimes)
    phases = rng.uniform(-np.pi, np.pi, (nrow, 1, npol))
    gains = (1 + 0.1 * rng.normal(size=(nrow, 1, npol))) * np.exp(1j * phases)
    if snr is None:
        snr = rng.uniform(1, 50, (nrow, 1, npol))
    if flag is None:
        flag = np.zeros((nrow, 1, npol), bool)
    with table(str(path), desc, nrow=nrow, ack=False) as t:
        t.putcol("TIME", times)
        t.putcol("ANTENNA1", ants.astype(np.int32))
        t.putcol("SPECTRAL_WINDOW_ID", np.zeros(nrow, np.int32))
        t.putcol("CPARAM", gains.astype(np.complex64))
        t.putcol("SNR", np.asarray(snr, np.float32).reshape(nrow, 1, npol))
        t.putcol("FLAG", np.asarray(flag, bool).reshape(nrow, 1, npol))
        adesc = maketabdesc([makescacoldesc("NAME", "")])
        with table(str(path / "ANTENNA"), adesc, nrow=len(names), ack=False) as at:
            at.putcol("NAME", list(names))
        t.putkeyword("ANTENNA", f"Table: {path}/ANTENNA")
    return path


def assert_png(path: Path, min_bytes: int = 2000) -> None:
    assert path.exists()
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > min_bytes


def write_image(path: Path, shape=(128, 128), x=70, y=60, peak=1.0, noise=1e-3, seed=0):
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    img = np.random.default_rng(seed).normal(0, noise, shape)
    img += peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * SIG_B**2))
    h = fits.Header()
    for i, (ct, crpix, crval, cdelt) in enumerate([
        ("RA---SIN", nx // 2 + 1, 10.0, -2.0 / 3600), ("DEC--SIN", ny // 2 + 1, -30.0, 2.0 / 3600),
        ("FREQ", 1, 1.0e9, 1e6), ("STOKES", 1, 1.0, 1.0)], start=1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"] = ct, crpix, crval, cdelt
    h["BMAJ"], h["BMIN"], h["BPA"] = FWHM_PX * 2 / 3600, FWHM_PX * 1.5 / 3600, 30.0
    fits.writeto(path, img.reshape(1, 1, ny, nx).astype(np.float32), h, overwrite=True)
    return path


def colour_fraction(png: Path, rgb: tuple[int, int, int], tol: int = 40) -> float:
    """Fraction of the PNG's pixels within ``tol`` (per channel, 0-255) of ``rgb``."""
    arr = (imread(png)[..., :3] * 255).astype(int)
    return float(np.mean(np.all(np.abs(arr - np.asarray(rgb)) <= tol, axis=-1)))


TAB_BLUE, TAB_ORANGE, BLACK = (31, 119, 180), (255, 127, 14), (0, 0, 0)


def test_snr_histogram_fractions(tmp_path):
    nrow, npol = 3 * 10, 2
    snr = np.linspace(1, 40, nrow * npol).reshape(nrow, 1, npol)
    flag = np.zeros_like(snr, bool)
    flag.flat[:6] = True
    cal = make_caltable(tmp_path / "p0.g", [0, 1, 2], ["a", "b", "c"], snr=snr, flag=flag)
    out = tmp_path / "plots" / "snr.png"
    res = plots.plot_solution_snr_hist(cal, out, minsnr=5.0)
    assert_png(out)
    assert res["frac_below_minsnr"] == pytest.approx(np.mean(snr <= 5.0))
    assert res["frac_flagged"] == pytest.approx(6 / 60)
    assert res["n_solutions"] == 60
    assert colour_fraction(out, BLACK, 60) > 0.005  # histogram, frame, tick labels


def test_gains_phase_and_amplitude_with_antenna_gaps(tmp_path):
    names = ["ea01", "ea02", "ea03", "ea04", "ea05"]
    flag = np.zeros((8 * 3, 1, 2), bool)
    flag[0] = True
    cal = make_caltable(tmp_path / "ap1.g", [0, 1, 4], names, ntimes=8, flag=flag)
    assert plots._antenna_name_map(cal, [0, 1, 4], None) == {0: "ea01", 1: "ea02", 4: "ea05"}
    assert plots._antenna_name_map(cal, [0, 7], ["x", "y"]) == {0: "x", 7: "ant7"}

    res = plots.plot_gains(cal, tmp_path / "phase.png")
    assert_png(tmp_path / "phase.png")
    assert res["n_antennas"] == 3
    assert res["n_points"] == 8 * 3 * 2 - 2
    res = plots.plot_gains(cal, tmp_path / "amp.png", amplitude=True)
    assert_png(tmp_path / "amp.png")
    h_phase = imread(tmp_path / "phase.png").shape[0]
    assert imread(tmp_path / "amp.png").shape[0] > h_phase
    for png in (tmp_path / "phase.png", tmp_path / "amp.png"):  # both polarizations drawn
        assert colour_fraction(png, TAB_BLUE) > 1e-4
        assert colour_fraction(png, TAB_ORANGE) > 1e-4


def test_gains_many_antennas_one_figure(tmp_path):
    """27 antennas (VLA-like), 2 polarizations, flags: counts and a readable-size PNG."""
    names = [f"ea{i:02d}" for i in range(1, 28)]
    flag = np.zeros((20 * 27, 1, 2), bool)
    flag[::7, 0, 1] = True
    cal = make_caltable(tmp_path / "p1.G", list(range(27)), names, ntimes=20, flag=flag)
    out = tmp_path / "plots" / "p1_gains.png"
    res = plots.plot_gains(cal, out, antenna_names=names)
    assert res["n_antennas"] == 27
    assert res["n_points"] == 20 * 27 * 2 - int(flag.sum())
    assert res["frac_flagged"] == pytest.approx(flag.mean())
    assert_png(out, min_bytes=20000)
    h, w = imread(out).shape[:2]
    assert w >= 1000 and h >= 600  # 6 x 5 panels of ~185 x 105 px
    assert colour_fraction(out, TAB_BLUE) > 1e-3 and colour_fraction(out, TAB_ORANGE) > 1e-3
    assert colour_fraction(out, BLACK, 60) > 0.005  # frames, names and tick labels


def test_missing_caltable_gives_message_png(tmp_path):
    res = plots.plot_gains(tmp_path / "nope.G", tmp_path / "g.png")
    assert res["n_antennas"] == 0 and res["n_points"] == 0
    assert_png(tmp_path / "g.png", min_bytes=500)
    res = plots.plot_solution_snr_hist(tmp_path / "nope.G", tmp_path / "s.png", 3.0)
    assert res["n_solutions"] == 0
    assert_png(tmp_path / "s.png", min_bytes=500)


def test_labels_are_drawn(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    blank = plots.save_png_labelled(fig, ax, [], tmp_path / "blank.png")
    assert colour_fraction(blank, BLACK, 100) == 0.0
    out = plots.save_png_labelled(fig, ax, [
        plots.Label(0.5, 0.7, "phase (deg)", 12, frac=True),
        plots.Label(0.1, 0.5, "rotated", 10, angle=90, frac=True),
        plots.Label(0.5, 0.2, "a\nb", 10, "ma", color="tab:red", frac=True, mono=True)],
        tmp_path / "labels.png")
    assert imread(out).shape[:2] == (200, 300)
    assert colour_fraction(out, BLACK, 100) > 0.005
    assert colour_fraction(out, (214, 39, 40)) > 0.0002  # tab:red


def test_empty_caltable_does_not_fail(tmp_path):
    cal = make_caltable(tmp_path / "e.g", [], ["a"], ntimes=0)
    res = plots.plot_solution_snr_hist(cal, tmp_path / "s.png", 3.0)
    assert math.isnan(res["frac_flagged"])
    assert plots.plot_gains(cal, tmp_path / "g.png")["n_antennas"] == 0
    assert_png(tmp_path / "g.png", min_bytes=500)


def test_summary_with_missing_image(tmp_path):
    init = write_image(tmp_path / "init.fits", peak=0.2, noise=2e-3, seed=1)
    final = write_image(tmp_path / "final.fits", peak=0.25, noise=1e-3, seed=2)
    rows = [
        {"step": "test", "role": "test", "snr": 100.0, "dynamic_range": 100.0,
         "rms_offsource": 2e-3, "peak": 0.2},
        {"step": "p0", "role": "post", "snr": "180.5", "dynamic_range": 180.5,
         "rms_offsource": 1.4e-3, "peak": 0.25},
        {"step": "p1", "role": "post", "snr": float("nan"), "dynamic_range": None,
         "rms_offsource": 1e-3, "peak": 0.25},
    ]
    out = plots.plot_summary(tmp_path / "summary.png", rows,
                             {"initial": str(init), "final": str(final),
                              "p1": str(tmp_path / "nope.fits")})
    assert_png(out, min_bytes=20000)
    out2 = plots.plot_summary(tmp_path / "s2.png", [], {"initial": str(tmp_path / "x.fits")})
    assert_png(out2)


def test_summary_takes_image_statistics_from_rows(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    img = write_image(tmp_path / "images" / "final.fits", peak=0.25, noise=1e-3, seed=3)
    row = {"step": "final", "role": "final", "path": "images/final.fits",
           **imstats.image_statistics(img)}
    calls = []
    real = plots.array_statistics
    monkeypatch.setattr(plots, "array_statistics", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = plots.plot_summary(tmp_path / "summary.png", [row], {"final": str(img)})
    assert_png(out, min_bytes=20000)
    assert calls == []  # statistics of the row reused, not recomputed
    cut = plots._load_cutout(img)  # cached: the thumbnail reuses the summary's cutout
    assert cut["stats"]["snr"] == row["snr"]
    assert cut["data"].shape == (65, 65)  # max(64 px, 4·C95radii) around the peak
    assert cut["data"][32, 32] == pytest.approx(row["peak"])
    # a row that describes another version of the file (peak differs) is not trusted
    other = write_image(tmp_path / "images" / "other.fits", peak=0.5, seed=4)
    stale = {**row, "path": "images/other.fits"}
    plots.plot_summary(tmp_path / "s2.png", [stale], {"final": str(other)})
    assert calls == [1]


def test_thumbnail_size(tmp_path):
    img = write_image(tmp_path / "i.fits")
    out = plots.thumbnail(img, tmp_path / "t.png", size_px=150)
    assert_png(out, min_bytes=1000)
    arr = imread(out)
    assert arr.shape[:2] == (150, 150)
    assert arr[..., :3].std() > 0.01  # not a blank image
    with pytest.raises(FileNotFoundError):
        plots.thumbnail(tmp_path / "missing.fits", tmp_path / "m.png")
