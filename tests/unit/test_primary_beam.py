"""Primary-beam models and correction (pure)."""
from __future__ import annotations

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
