"""Tests of selfcal_batch.imaging.masks: thresholds, growth, FITS output, seed growth table."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from selfcal_batch.imaging.masks import (MaskResult, combine_masks, grow_iterations, make_clean_mask,
                                 mask_from_array)

FWHM_PX = 5.0
SIG_B = FWHM_PX / (2 * math.sqrt(2 * math.log(2)))


def header_for(ny: int, nx: int) -> fits.Header:
    h = fits.Header()
    for i, (ctype, crpix, crval, cdelt, unit) in enumerate([
        ("RA---SIN", nx // 2 + 1, 201.365, -1.0 / 3600, "deg"),
        ("DEC--SIN", ny // 2 + 1, -43.019, 1.0 / 3600, "deg"),
        ("FREQ", 1, 1.28e9, 8e8, "Hz"),
        ("STOKES", 1, 1.0, 1.0, ""),
    ], start=1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"] = ctype, crpix, crval
        h[f"CDELT{i}"], h[f"CUNIT{i}"] = cdelt, unit
    h["BMAJ"] = h["BMIN"] = FWHM_PX / 3600
    h["BPA"] = 0.0
    h["BUNIT"] = "JY/BEAM"
    return h


def write_image(path: Path, img: np.ndarray) -> Path:
    fits.writeto(path, img.reshape((1, 1) + img.shape).astype(np.float32),
                 header_for(*img.shape), overwrite=True)
    return path


def blob(shape=(200, 200), x=90, y=110, peak=1.0, noise=1e-3, seed=0) -> np.ndarray:
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    img = np.random.default_rng(seed).normal(0.0, noise, shape) if noise else np.zeros(shape)
    return img + peak * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * SIG_B**2))


def test_bright_source_mask_written_with_image_wcs(tmp_path):
    img_path = write_image(tmp_path / "img.fits", blob())
    out = tmp_path / "masks" / "p0.mask.fits"
    res = make_clean_mask(img_path, out, sigma_mask=25.0, grow_iterations=4)
    assert isinstance(res, MaskResult)
    assert res == MaskResult(path=out, sigma_used=25.0, npix=res.npix, empty=False)
    assert out.exists() and not list(out.parent.glob(".*tmp*"))

    with fits.open(out) as hdul:
        data, hdr = hdul[0].data, hdul[0].header
    assert data.shape == (1, 1, 200, 200) and (data.dtype.kind, data.dtype.itemsize) == ("f", 4)
    assert set(np.unique(data)) <= {0.0, 1.0}
    m = data[0, 0] > 0
    assert m[110, 90]                       # the source
    assert not m[:20, :20].any() and not m[-20:, -20:].any() and not m[:20, -20:].any()
    assert m.sum() == res.npix
    # WCS identical to the image's (all four axes).
    img_hdr = fits.getheader(img_path)
    w_mask, w_img = WCS(hdr), WCS(img_hdr)
    assert list(w_mask.wcs.ctype) == list(w_img.wcs.ctype)
    assert np.allclose(w_mask.wcs.crval, w_img.wcs.crval)
    assert np.allclose(w_mask.wcs.crpix, w_img.wcs.crpix)
    assert np.allclose(w_mask.wcs.cdelt, w_img.wcs.cdelt)
    assert hdr["BMAJ"] == img_hdr["BMAJ"]


def test_growth_adds_pixels(tmp_path):
    img_path = write_image(tmp_path / "img.fits", blob())
    small = make_clean_mask(img_path, tmp_path / "a.fits", 25.0, grow_iterations=0)
    big = make_clean_mask(img_path, tmp_path / "b.fits", 25.0, grow_iterations=5)
    assert big.npix > small.npix > 0


def test_single_pixel_cross_growth_exact(tmp_path):
    img = np.zeros((41, 41))
    img[20, 20] = 1.0
    p = write_image(tmp_path / "pt.fits", img)
    res = make_clean_mask(p, tmp_path / "m.fits", 25.0, grow_iterations=3, rms=0.01)
    m = fits.getdata(tmp_path / "m.fits")[0, 0] > 0
    yy, xx = np.nonzero(m)
    assert res.npix == 25 == m.sum()           # diamond |dx|+|dy| <= 3
    assert np.all(np.abs(yy - 20) + np.abs(xx - 20) <= 3)


def test_sigma_is_lowered_in_steps_until_found(tmp_path):
    # Noise-free source of peak 10*rms: 25, 23, ..., 11 are empty, 9 is found.
    p = write_image(tmp_path / "faint.fits", blob(peak=10e-3, noise=0.0))
    res = make_clean_mask(p, tmp_path / "m.fits", 25.0, grow_iterations=2, rms=1e-3)
    assert not res.empty and res.sigma_used == 9.0
    m = fits.getdata(tmp_path / "m.fits")[0, 0] > 0
    # threshold at 8 sigma: pixels >= 8e-3 are all inside the mask
    img = blob(peak=10e-3, noise=0.0)
    assert np.all(m[img >= 8e-3])


def test_empty_mask_stops_at_min_sigma(tmp_path):
    p = write_image(tmp_path / "noise.fits", blob(peak=0.0, noise=1e-3, seed=3))
    out = tmp_path / "m.fits"
    out.write_bytes(b"stale")
    res = make_clean_mask(p, out, sigma_mask=25.0, grow_iterations=4, min_sigma=6.0)
    assert res.empty and res.path is None and res.npix == 0
    assert res.sigma_used == 6.0
    assert not out.exists()


def test_all_zero_image_gives_empty_mask(tmp_path):
    p = write_image(tmp_path / "z.fits", np.zeros((32, 32)))
    res = make_clean_mask(p, tmp_path / "m.fits", 10.0, grow_iterations=4)
    assert res.empty and res.path is None


def test_grow_iterations_table():
    assert grow_iterations("p0", 0.8, "faint") == 4
    assert grow_iterations("p0", 0.2, "faint") == 8
    assert grow_iterations("p1", 0.8, "bright") == 6
    assert grow_iterations("p1", 0.2, "bright") == 12
    assert grow_iterations("p2", 0.8, "bright") == 10
    assert grow_iterations("p2", 0.8, "faint") == 2
    assert grow_iterations("p2", 0.2, "bright") == 15
    assert grow_iterations("p2", 0.2, "faint") == 3
    assert grow_iterations("ap1", 0.8, "bright") == 10
    assert grow_iterations("ap1", 0.8, "medium") == 6
    assert grow_iterations("ap1", 0.2, "bright") == 15
    assert grow_iterations("ap1", 0.2, "medium") == 12
    # extended ladder steps behave like p2
    assert grow_iterations("p3", 0.8, "bright") == 10
    assert grow_iterations("p4", 0.2, "faint") == 3
    # 0.5 is compact, NaN is extended
    assert grow_iterations("p0", 0.5, "faint") == 4
    assert grow_iterations("p0", float("nan"), "faint") == 8
    assert grow_iterations("ap1", float("nan"), "bright") == 15


def test_mask_from_array_and_combine(tmp_path):
    hdr = header_for(50, 60)
    a = np.zeros((50, 60), bool)
    a[10, 10] = True
    b = np.zeros((50, 60), bool)
    b[40, 50] = True
    pa = mask_from_array(a, hdr, tmp_path / "a.fits")
    pb = mask_from_array(b, hdr, tmp_path / "b.fits")
    assert fits.getdata(pa).shape == (1, 1, 50, 60)
    out = combine_masks([pa, None, tmp_path / "missing.fits", pb], tmp_path / "u.fits")
    u = fits.getdata(out)[0, 0]
    assert u[10, 10] == 1 and u[40, 50] == 1 and u.sum() == 2
    assert combine_masks([tmp_path / "missing.fits"], tmp_path / "x.fits") is None
    with pytest.raises(ValueError):
        mask_from_array(np.zeros((10, 10), bool), fits.getheader(pa), tmp_path / "bad.fits")
