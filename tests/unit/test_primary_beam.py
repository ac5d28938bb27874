"""Primary-beam models and correction (pure)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from selfcal_batch.imaging import primary_beam as P
from selfcal_batch.simulate.sky import vla_primary_beam


def test_vla_poly_half_power_and_frequency_scaling():
    hpr = P.half_power_radius_arcmin(6.0)
    assert float(P.poly_beam(hpr, 6.0)) == pytest.approx(0.5, abs=1e-6)
    # HPBW ~ 44.6'/f_GHz (x_hp = 22.3 arcmin GHz), scaling as 1/frequency.
    assert hpr * 6.0 == pytest.approx(22.3, abs=0.1)
    assert P.half_power_radius_arcmin(1.5) == pytest.approx(4 * hpr, rel=1e-6)
    assert float(P.poly_beam(0.0, 6.0)) == 1.0
    assert float(P.poly_beam(50.0 / 6.0, 6.0)) == 0.0  # beyond the model's range


def test_simulator_beam_is_the_same_model_coded_independently():
    r = np.linspace(0, 7, 50)  # arcmin
    assert vla_primary_beam(0.0, np.array([6e9]))[0] == 1.0
    sim = np.array([vla_primary_beam(60 * x, np.array([6e9]))[0] for x in r])
    assert sim == pytest.approx(P.poly_beam(r, 6.0), abs=1e-9)


def test_emerlin_beam_lovell_narrows_the_array_beam():
    r = np.linspace(0, 4, 200)
    without = P.emerlin_beam(r, 5e9, [25.0] * 6)
    with_lovell = P.emerlin_beam(r, 5e9, [76.0] + [25.0] * 6)
    assert without[0] == pytest.approx(1.0) and with_lovell[0] == pytest.approx(1.0)
    assert (with_lovell[1:] < without[1:]).all()
    # Equal dishes: a Gaussian of FWHM 1.13 lambda/D (half power at half that).
    fwhm_arcmin = 1.13 * (3e8 / 5e9) / 25.0 * 180 / np.pi * 60
    assert float(P.emerlin_beam(fwhm_arcmin / 2, 5e9, [25.0, 25.0])) == pytest.approx(0.5, rel=1e-3)
    assert P.dish_diameter_m("Lo", 25.0) == 76.0 and P.dish_diameter_m("ea01", 25.0) == 25.0
    with pytest.raises(ValueError):
        P.emerlin_beam(r, 5e9, [25.0])


def test_pb_correct_blanks_below_cutoff():
    img = np.array([[1.0, 2.0], [3.0, 4.0]])
    pb = np.array([[1.0, 0.5], [0.19, np.nan]])
    out = P.pb_correct(img, pb, 0.2)
    assert out[0, 0] == 1.0 and out[0, 1] == 4.0 and np.isnan(out[1]).all()
    with pytest.raises(ValueError):
        P.pb_correct(img, pb, 0.0)
    with pytest.raises(ValueError):
        P.pb_correct(img, pb[:1], 0.2)


def test_same_grid():
    h = {"NAXIS1": 64, "NAXIS2": 64, "CDELT1": -1e-4, "CDELT2": 1e-4, "CRPIX1": 33.0, "CRPIX2": 33.0,
         "CRVAL1": 150.0, "CRVAL2": 40.0}
    assert P.same_grid(h, dict(h)) == ""
    assert "CRPIX1" in P.same_grid(h, {**h, "CRPIX1": 32.0})
    assert "NAXIS2" in P.same_grid(h, {**h, "NAXIS2": 65})


def test_emerlin_products_on_a_fits_grid(tmp_path):
    """e-MERLIN path of make_pb_products (no CASA: the model is computed here)."""
    from types import SimpleNamespace

    from astropy.io import fits

    n, cell_deg = 64, 2.0 / 3600
    h = fits.Header()
    for k, v in (("CTYPE1", "RA---SIN"), ("CRVAL1", 150.0), ("CDELT1", -cell_deg), ("CRPIX1", n / 2 + 1),
                 ("CTYPE2", "DEC--SIN"), ("CRVAL2", 50.0), ("CDELT2", cell_deg), ("CRPIX2", n / 2 + 1),
                 ("CTYPE3", "FREQ"), ("CRVAL3", 5.07e9), ("CDELT3", 1e8), ("CRPIX3", 1.0),
                 ("CTYPE4", "STOKES"), ("CRVAL4", 1.0), ("CDELT4", 1.0), ("CRPIX4", 1.0)):
        h[k] = v
    img = tmp_path / "final-image.fits"
    fits.PrimaryHDU(np.ones((1, 1, n, n), np.float32), h).writeto(img)
    ctx = SimpleNamespace(cfg=SimpleNamespace(pb_cutoff=0.2), instrument="eMERLIN",
                          info={"antenna_names": ["Lo", "Mk2", "Kn", "De", "Pi", "Da", "Cm"],
                                "antennas_present": [0, 1, 2, 3, 4, 5, 6]})
    out = P.make_pb_products(ctx, tmp_path / "x.ms", img, pointing=(150.0, 50.0))
    pb = np.squeeze(fits.getdata(out["pb"]))
    cor = np.squeeze(fits.getdata(out["pbcor"]))
    assert "76" in fits.getheader(out["pb"])["PBMODEL"] and out["pb_cutoff"] == 0.2
    assert pb[n // 2, n // 2] == pytest.approx(1.0, abs=1e-4)
    r = P.radius_grid_arcmin(fits.getheader(img))
    expect = P.emerlin_beam(r, 5.07e9, [76, 25, 25, 25, 25, 25, 32])
    ok = expect >= 0.2
    assert np.allclose(pb[ok], expect[ok], rtol=1e-5) and np.isnan(pb[~ok]).all()
    assert np.allclose(cor[ok], 1 / expect[ok], rtol=1e-4)


def _header(n: int, cell_deg: float, ra: float = 150.0, dec: float = 50.0) -> Any:
    from astropy.io import fits

    h = fits.Header()
    for k, v in (("NAXIS", 2), ("NAXIS1", n), ("NAXIS2", n), ("CTYPE1", "RA---SIN"), ("CRVAL1", ra),
                 ("CDELT1", -cell_deg), ("CRPIX1", n / 2 + 1), ("CTYPE2", "DEC--SIN"), ("CRVAL2", dec),
                 ("CDELT2", cell_deg), ("CRPIX2", n / 2 + 1)):
        h[k] = v
    return h


def test_separation_arcmin():
    assert P.separation_arcmin((150.0, 50.0), (150.0, 50.0 + 1.5 / 60)) == pytest.approx(1.5, rel=1e-9)
    # RA offsets shrink by cos(dec)
    assert P.separation_arcmin((150.0, 60.0), (150.0 + 2.0 / 60, 60.0)) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("offset_arcmin", [0.5, 1.5, 3.0])
def test_off_centre_beam_from_a_radial_profile(offset_arcmin):
    """Phase-shifted data (tester finding F3): the beam is centred on the pointing. A beam image
    centred on the phase centre, read as a radial profile, evaluated at every pixel's distance
    from the pointing, reproduces the model centred there (VLA polynomial, 6 GHz)."""
    small, wide = _header(96, 2.0 / 3600), _header(600, 2.0 / 3600)
    pointing = (150.0, 50.0 + offset_arcmin / 60)
    beam_wide = P.poly_beam(P.radius_grid_arcmin(wide), 6.0)
    radii, values = P.radial_profile(P.radius_grid_arcmin(wide), beam_wide, 2.0 / 60)
    got = P.beam_from_profile(P.radius_grid_arcmin(small, pointing), radii, values)
    want = P.poly_beam(P.radius_grid_arcmin(small, pointing), 6.0)
    assert np.nanmax(np.abs(got - want)) < 2e-3
    iy, ix = np.unravel_index(np.nanargmax(got), got.shape)
    # the peak sits at the pointing, offset_arcmin north of the centre (Dec increases with row),
    # or on the image's northern edge when the pointing lies outside the 96 px x 2" image
    assert iy - 48 == pytest.approx(min(offset_arcmin * 60 / 2.0, 47), abs=1) and ix == pytest.approx(48, abs=1)


def test_profile_never_extrapolates():
    r = np.array([[0.0, 1.0], [2.0, 3.0]])
    radii, values = P.radial_profile(r, 1.0 - r / 10, 1.0)
    assert np.isnan(P.beam_from_profile(np.array([5.0]), radii, values)).all()
    assert P.beam_from_profile(np.array([1.5]), radii, values)[0] == pytest.approx(0.85)
    with pytest.raises(ValueError):
        P.radial_profile(r, r, 0.0)


def test_emerlin_beam_centred_on_the_pointing(tmp_path):
    from types import SimpleNamespace

    from astropy.io import fits

    n = 64
    h = _header(n, 2.0 / 3600)
    h["NAXIS"] = 3
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = "FREQ", 5.07e9, 1e8, 1.0
    img = tmp_path / "final-image.fits"
    fits.PrimaryHDU(np.ones((1, n, n), np.float32), h).writeto(img)
    ctx = SimpleNamespace(cfg=SimpleNamespace(pb_cutoff=0.05), instrument="eMERLIN",
                          info={"antenna_names": ["Mk2", "Kn", "De"], "antennas_present": [0, 1, 2]})
    out = P.make_pb_products(ctx, tmp_path / "x.ms", img, pointing=(150.0, 50.0 + 0.5 / 60))
    pb = np.squeeze(fits.getdata(out["pb"]))
    iy, ix = np.unravel_index(np.nanargmax(pb), pb.shape)
    assert (iy, ix) == (n // 2 + 15, n // 2) and "30.0 arcsec" in out["pb_centre"]
