"""Tests of selfcal_batch.imaging.imstats on synthetic WSClean-like FITS images."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from selfcal_batch.imaging import imstats
from selfcal_batch.imaging.imstats import STAT_COLUMNS, beam_area_pixels, image_statistics, read_image

CELL = 1.0  # arcsec
FWHM_PX = 5.0
SIG_B = FWHM_PX / (2 * math.sqrt(2 * math.log(2)))
AREA = math.pi * FWHM_PX**2 / (4 * math.log(2))


def header_for(ny: int, nx: int) -> fits.Header:
    """WSClean-like 4-D header with a SIN WCS, a FREQ axis and a restoring beam."""
    h = fits.Header()
    for i, (ctype, crpix, crval, cdelt, _n, unit) in enumerate([
        ("RA---SIN", nx // 2 + 1, 150.0, -CELL / 3600, nx, "deg"),
        ("DEC--SIN", ny // 2 + 1, 30.0, CELL / 3600, ny, "deg"),
        ("FREQ", 1, 1.4e9, 1e6, 1, "Hz"),
        ("STOKES", 1, 1.0, 1.0, 1, ""),
    ], start=1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"] = ctype, crpix, crval
        h[f"CDELT{i}"], h[f"CUNIT{i}"] = cdelt, unit
    h["BMAJ"] = FWHM_PX * CELL / 3600
    h["BMIN"] = FWHM_PX * CELL / 3600
    h["BPA"] = 0.0
    h["BUNIT"] = "JY/BEAM"
    return h


def gaussian_image(shape=(256, 256), sources=((128, 128, 1.0, 0.0),), noise=1e-3, seed=0):
    """Sum of beam-convolved Gaussians (x, y, total flux Jy, intrinsic sigma px) + noise."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    img = np.random.default_rng(seed).normal(0.0, noise, shape) if noise else np.zeros(shape)
    for x, y, flux, sig_s in sources:
        s2 = SIG_B**2 + sig_s**2
        img += flux * SIG_B**2 / s2 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s2))
    return img


def write_fits(path: Path, img: np.ndarray, header: fits.Header | None = None) -> Path:
    h = header if header is not None else header_for(*img.shape)
    fits.writeto(path, img.reshape((1, 1) + img.shape).astype(np.float32), h, overwrite=True)
    return path


def test_read_image_squeezes_and_handles_nan(tmp_path):
    img = gaussian_image(shape=(64, 80))
    img[0, :5] = np.nan
    p = write_fits(tmp_path / "a.fits", img)
    data, hdr = read_image(p)
    assert data.shape == (64, 80) and data.dtype == np.float64
    assert np.all(data[0, :5] == 0.0)
    assert hdr["NAXIS"] == 4
    raw, _ = read_image(p, nan_to_zero=False)
    assert np.isnan(raw[0, :5]).all()


def test_beam_area_and_header_quantities(tmp_path):
    h = header_for(64, 64)
    assert beam_area_pixels(h) == pytest.approx(AREA, rel=1e-9)
    p = write_fits(tmp_path / "a.fits", gaussian_image(shape=(64, 64), sources=()))
    st = image_statistics(p)
    assert st["bmaj_arcsec"] == pytest.approx(5.0)
    assert st["cell_arcsec"] == pytest.approx(1.0)
    assert st["freq_hz"] == pytest.approx(1.4e9)
    assert st["beam_area_pix"] == pytest.approx(AREA)
    del h["BMAJ"]
    assert math.isnan(beam_area_pixels(h))


def test_point_source_flux_noise_peak(tmp_path):
    img = gaussian_image(sources=((100, 140, 1.0, 0.0),), noise=1e-3, seed=1)
    res = np.random.default_rng(2).normal(0.0, 2e-3, img.shape)
    p = write_fits(tmp_path / "img.fits", img)
    r = write_fits(tmp_path / "res.fits", res)

    st = image_statistics(p, r, sigma=6.0)
    assert list(st) == STAT_COLUMNS
    assert st["total_flux_mask"] == pytest.approx(1.0, rel=0.02)
    assert st["total_flux"] == pytest.approx(1.0, rel=0.02)
    assert st["peak"] == pytest.approx(1.0, rel=0.01)
    assert (st["peak_x"], st["peak_y"]) == (100, 140)
    ra, dec = WCS(header_for(256, 256)).celestial.pixel_to_world_values(100, 140)
    assert st["peak_ra_deg"] == pytest.approx(float(ra), abs=1e-9)
    assert st["peak_dec_deg"] == pytest.approx(float(dec), abs=1e-9)
    # Off-source noise comes from the residual when it is given.
    assert st["rms_offsource"] == pytest.approx(2e-3, rel=0.10)
    assert st["rms_residual"] == pytest.approx(2e-3, rel=0.05)
    assert st["mad_std_residual"] == pytest.approx(2e-3, rel=0.05)
    assert st["snr"] == pytest.approx(st["peak"] / st["rms_offsource"])
    assert st["dynamic_range"] == pytest.approx(st["peak"] / st["rms_residual"])
    assert st["rms_box"] == pytest.approx(1e-3, rel=0.10)
    assert st["DR_pk_rmsbox"] == pytest.approx(st["max_im"] / st["rms_box"])
    assert st["snr_seed"] == pytest.approx(st["flux_im"] / st["rms_box"])
    # flux_error: the seed formula, literally.
    expect = math.sqrt((0.05 * st["total_flux_mask"]) ** 2
                       + (st["mad_std_residual"] / st["beam_area_pix"]) ** 2
                       + st["flux_residual"] ** 2)
    assert st["flux_error"] == pytest.approx(expect)
    assert abs(st["flux_residual"]) < 0.01
    assert st["n_finite"] == st["n_pix"] == 256 * 256

    # Image only: rms_offsource from the image outside the mask.
    st2 = image_statistics(p)
    assert st2["rms_offsource"] == pytest.approx(1e-3, rel=0.10)
    assert math.isnan(st2["flux_error"]) and math.isnan(st2["rms_residual"])
    assert math.isnan(st2["dynamic_range"])  # peak / residual rms: needs a residual


def test_flux_bands_of_a_gaussian(tmp_path):
    # For a Gaussian the flux outside the contour at level L is S*L/peak. With peak = 1 Jy/beam
    # and sigma = 1 mJy the bands hold S*(0.9, 0.09, 0.004, 0.003). A well-sampled (extended)
    # Gaussian keeps pixelisation errors small.
    sig_s = 6.0
    flux = (SIG_B**2 + sig_s**2) / SIG_B**2  # -> peak 1 Jy/beam
    img = gaussian_image(sources=((128, 128, flux, sig_s),), noise=1e-3, seed=3)
    st = image_statistics(write_fits(tmp_path / "g.fits", img))
    assert st["peak"] == pytest.approx(1.0, rel=0.01)
    total = 0.997 * flux
    assert st["total_flux"] == pytest.approx(total, rel=0.02)
    assert st["inner_flux_f"] == pytest.approx(0.9 / 0.997, abs=0.01)
    assert st["mid_flux_f"] == pytest.approx(0.09 / 0.997, abs=0.01)
    assert st["low_flux_f"] == pytest.approx(0.004 / 0.997, abs=0.003)
    assert st["uncertain_flux_f"] == pytest.approx(0.003 / 0.997, abs=0.003)
    parts = sum(st[k] for k in ("inner_flux", "mid_flux", "low_flux", "uncertain_flux"))
    assert st["total_flux"] == pytest.approx(parts)
    fr = sum(st[k] for k in ("inner_flux_f", "mid_flux_f", "low_flux_f", "uncertain_flux_f"))
    assert fr == pytest.approx(1.0)
    assert st["number_of_beams"] > 3


def test_extended_source_flux_and_growth_radii(tmp_path):
    sig_s = 6.0
    img = gaussian_image(sources=((120, 130, 2.0, sig_s),), noise=1e-3, seed=4)
    st = image_statistics(write_fits(tmp_path / "e.fits", img))
    assert st["total_flux_mask"] == pytest.approx(2.0, rel=0.03)
    sig_c = math.sqrt(SIG_B**2 + sig_s**2)
    assert st["C50radii"] == pytest.approx(sig_c * math.sqrt(2 * math.log(2)), rel=0.10)
    assert st["C95radii"] == pytest.approx(sig_c * math.sqrt(2 * math.log(20)), rel=0.10)
    assert st["mask_npix"] > math.pi * (2.4 * sig_c) ** 2


def test_two_sources_mask_and_peak(tmp_path):
    img = gaussian_image(sources=((60, 60, 0.5, 0.0), (190, 180, 0.3, 2.0)), seed=5)
    st = image_statistics(write_fits(tmp_path / "two.fits", img))
    assert st["total_flux_mask"] == pytest.approx(0.8, rel=0.03)
    assert (st["peak_x"], st["peak_y"]) == (60, 60)


def test_all_zero_and_all_nan_images_are_nan_safe(tmp_path):
    zero = write_fits(tmp_path / "zero.fits", np.zeros((64, 64)))
    st = image_statistics(zero, zero)
    assert list(st) == STAT_COLUMNS
    assert st["n_finite"] == 64 * 64
    assert st["peak"] == 0.0
    for k in ("snr", "dynamic_range", "total_flux_mask", "total_flux", "inner_flux_f",
              "C95radii", "snr_seed", "flux_error"):
        assert math.isnan(st[k]), k

    nan = write_fits(tmp_path / "nan.fits", np.full((64, 64), np.nan))
    st = image_statistics(nan, nan)
    assert st["n_finite"] == 0
    assert math.isnan(st["peak"]) and math.isnan(st["rms_offsource"])
    assert st["beam_area_pix"] == pytest.approx(AREA)


def test_nan_border_does_not_spoil_statistics(tmp_path):
    img = gaussian_image(sources=((128, 128, 1.0, 0.0),), seed=6)
    img[:, :20] = np.nan
    st = image_statistics(write_fits(tmp_path / "nb.fits", img))
    assert st["n_finite"] == 256 * 236
    assert st["total_flux_mask"] == pytest.approx(1.0, rel=0.02)
    assert st["rms_offsource"] == pytest.approx(1e-3, rel=0.10)


def test_no_source_gives_zero_masked_flux(tmp_path):
    st = image_statistics(write_fits(tmp_path / "n.fits", gaussian_image(sources=(), seed=7)))
    assert st["mask_npix"] == 0
    assert st["total_flux_mask"] == 0.0
    assert math.isnan(st["inner_flux_f"])
    assert st["rms_offsource"] == pytest.approx(1e-3, rel=0.10)


def test_residual_shape_mismatch_raises(tmp_path):
    a = write_fits(tmp_path / "a.fits", np.zeros((32, 32)))
    b = write_fits(tmp_path / "b.fits", np.zeros((32, 40)))
    with pytest.raises(ValueError):
        image_statistics(a, b)


def test_binary_dilate_matches_full_image_dilation():
    from scipy import ndimage

    rng = np.random.default_rng(8)
    mask = np.zeros((100, 120), bool)
    mask[rng.integers(0, 100, 5), rng.integers(0, 120, 5)] = True
    disk = imstats.disk_structure(3)
    full = ndimage.binary_dilation(mask, structure=disk, iterations=2)
    assert np.array_equal(imstats.binary_dilate(mask, disk, 2), full)
    assert np.array_equal(imstats.binary_dilate(mask, disk, 0), mask)
    assert disk.sum() == 29


def test_near_field_and_offsource_beam_counts():
    """rms_near: the ring around the mask (artefacts there raise it, not rms_offsource much)."""
    from selfcal_batch.imaging.imstats import NEAR_FIELD_BEAMS, array_statistics

    img = gaussian_image(noise=1e-3, seed=3)
    hdr = header_for(*img.shape)
    res = img - gaussian_image(noise=0.0)  # the noise alone
    st = array_statistics(img, hdr, res)
    area = st["beam_area_pix"]
    assert st["offsource_beams"] == pytest.approx((img.size - st["mask_npix"]) / area)
    assert st["rms_near"] == pytest.approx(1e-3, rel=0.25) and st["near_beams"] > 5
    # Artefacts next to the source: the near-field rms rises far more than the global one.
    yy, xx = np.mgrid[0:256, 0:256]
    r_ring = math.sqrt(st["mask_npix"] / math.pi) + 0.5 * NEAR_FIELD_BEAMS * FWHM_PX  # mid near field
    ring = np.exp(-((np.hypot(yy - 128, xx - 128) - r_ring) ** 2) / 50.0) * np.sin(xx)
    st2 = array_statistics(img + 5e-3 * ring, hdr, res + 5e-3 * ring)
    assert st2["rms_near"] > 1.5 * st["rms_near"]
    assert st2["rms_offsource"] < 1.2 * st["rms_offsource"]


@pytest.mark.parametrize("snr", [6.3, 6.5, 6.7])
def test_initial_flux_is_measured_like_the_final(tmp_path, snr):
    """Why total_flux_initial read 0.0 against a final 0.00093 Jy for data delivered
    unchanged: the test image's mask is 8 sigma (template selection), the final's 6. A source
    between the two gets the initial flux re-measured at the final's threshold."""
    import types

    from selfcal_batch.pipeline.steps_finish import _initial_flux_like_final

    noise = 1e-4
    img = gaussian_image(sources=((128, 128, snr * noise, 0.0),), noise=noise, seed=3)
    # the peak of a point source is its flux: snr sigma above the noise
    image = write_fits(tmp_path / "test_image-MFS-image.fits", img)
    at8 = image_statistics(image, sigma=8.0)
    assert at8["total_flux_mask"] == 0.0  # the cause: nothing above 8 sigma
    state = {"initial": {"image": str(image), "stats": at8}}
    ctx = types.SimpleNamespace(state=types.SimpleNamespace(get=state.get, set=state.__setitem__))
    final = image_statistics(image, sigma=6.0)  # the same data imaged again, at 6 sigma
    _initial_flux_like_final(ctx, final)
    assert state["initial"]["total_flux_like_final"] == pytest.approx(final["total_flux_mask"])
    assert final["total_flux_mask"] > 0
    # same threshold: nothing to re-measure
    state2 = {"initial": {"image": str(image), "stats": final}}
    _initial_flux_like_final(types.SimpleNamespace(state=types.SimpleNamespace(get=state2.get, set=state2.__setitem__)),
                             final)
    assert "total_flux_like_final" not in state2["initial"]
