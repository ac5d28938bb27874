"""Tests of the synthetic-data simulator, pure parts (no MS written, no program run but a
``python -c`` import check). The MS-writing tests are in tests/integration/test_simulate_ms.py.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from selfcal_batch.errors import SimulationError
from selfcal_batch.simulate import (
    Component,
    SimSpec,
    predict,
    spec_from_preset,
    truth_path_for,
)
from selfcal_batch.simulate.cli import simulate_command
from selfcal_batch.simulate.corrupt import phase_walk, rng_for

# -- pure unit tests --------------------------------------------------------------------


def test_import_does_not_load_casatools() -> None:
    code = "import sys, selfcal_batch.simulate, selfcal_batch.simulate.cli; assert 'casatools' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_predict_point_gaussian_spectral_index() -> None:
    uvw = np.array([[100.0, 0.0, 0.0], [0.0, 2000.0, 5.0], [0.0, 0.0, 0.0]])
    freqs = np.array([1.0e9, 2.0e9])
    v = predict(uvw, freqs, [Component("point", 1.0, spectral_index=-1.0)], ref_freq_hz=1.0e9)
    np.testing.assert_allclose(v, [[1.0, 0.5]] * 3, rtol=1e-6)
    g = predict(uvw, freqs, [Component("gaussian", 2.0, major_arcsec=10.0, minor_arcsec=5.0)], 1.0e9)
    assert abs(g[2, 0] - 2.0) < 1e-6  # zero spacing = total flux
    assert np.all(np.abs(g[1]) < 2.0) and np.all(np.abs(g[1, 1]) < np.abs(g[1, 0]))


def test_phase_walk_statistics() -> None:
    t = np.arange(20000) * 10.0
    ph = phase_walk(rng_for(7, "phase"), t, 40.0, 300.0, 4)
    assert abs(ph.std() / 40.0 - 1.0) < 0.15
    lag1 = np.mean(ph[:, 1:] * ph[:, :-1]) / ph.var()
    assert abs(lag1 - np.exp(-10.0 / 300.0)) < 0.02


def test_spec_json_round_trip(tmp_path: Path) -> None:
    spec = spec_from_preset("emerlin-c", extended_flux_jy=0.05, phase_rms_deg=10.0, seed=9)
    assert SimSpec.from_json(spec.to_json(tmp_path / "s.json")) == spec
    assert spec.dec_deg == 50.0 and len(spec.components) == 3
    assert truth_path_for("a/b/X.ms") == Path("a/b/X.truth.json")


# -- argument errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, preset, match",
    [
        ({"duration_s": -5.0}, "vla-c", "duration_s"),
        ({}, "vla-w", "unknown preset"),
        ({"dead_antenna": 27}, "vla-c", "dead_antenna"),
        ({"dead_antenna": 7}, "emerlin-l", "dead_antenna"),
        ({"missing_spw": 2, "n_scans": 2}, "vla-c", "missing_spw"),
        ({"missing_spw": 1}, "vla-c", "n_scans"),
        ({"correlations": "RR XX"}, "vla-c", "correlations"),
        ({"array_config": "A"}, "emerlin-l", "array_config"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, preset: str, match: str) -> None:
    with pytest.raises(SimulationError, match=match) as info:
        spec_from_preset(preset, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--preset", "vla-c", "--duration", "-5"], "--duration"),
        (["--preset", "nope"], "unknown preset"),
        (["--preset", "vla-c", "--dead-antenna", "27"], "--dead-antenna"),
        (["--preset", "vla-c", "--missing-spw", "2", "--n-scans", "2"], "--missing-spw"),
        (["--preset", "vla-c", "--missing-spw", "1"], "--n-scans"),
        ([], "--preset or --spec"),
    ],
)
def test_cli_bad_arguments(tmp_path: Path, argv: list[str], needle: str) -> None:
    res = CliRunner().invoke(simulate_command, argv + ["--out", str(tmp_path / "x.ms")])
    assert res.exit_code != 0
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert needle in lines[0]
    assert not (tmp_path / "x.ms").exists()


def test_delays_give_phase_slopes() -> None:
    """Per-antenna delays: phase 2 pi nu (tau_i - tau_j) per channel, nothing else."""
    from selfcal_batch.simulate.corrupt import apply_gains, make_gains

    g = make_gains(5, np.array([0.0]), 3, 1, phase_rms_deg=0.0, phase_timescale_s=300.0,
                   spw_phase_rms_deg=0.0, amp_rms=0.0, delay_rms_ns=4.0)
    assert g.delay_ns is not None and np.std(g.delay_ns) > 0
    freqs = np.array([6.0e9, 6.01e9, 6.02e9])
    vis = np.ones((1, 3), dtype=np.complex64)
    out = apply_gains(vis, np.array([0]), np.array([2]), np.array([0]), 0, g, freqs)
    want = np.exp(2j * np.pi * (g.delay_ns[0] - g.delay_ns[2]) * 1e-9 * freqs)
    assert np.allclose(out[0], want, atol=1e-3)
    slope = np.angle(out[0, 1] * np.conj(out[0, 0]))
    assert slope == pytest.approx(np.angle(np.exp(2j * np.pi * (g.delay_ns[0] - g.delay_ns[2]) * 1e-9 * 1e7)), abs=1e-3)
    with pytest.raises(ValueError):
        apply_gains(vis, np.array([0]), np.array([2]), np.array([0]), 0, g)


def test_truth_image_flux_and_beam() -> None:
    """A point source of S Jy is S Jy/beam at its pixel; a Gaussian keeps its total flux."""
    from astropy.io import fits

    from selfcal_batch.simulate.evaluate import truth_image

    h = fits.Header()
    for i, (ct, crpix, crval, cd) in enumerate([("RA---SIN", 33, 150.0, -0.2 / 3600), ("DEC--SIN", 33, 40.0, 0.2 / 3600)], 1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CUNIT{i}"] = ct, crpix, crval, cd, "deg"
    h["NAXIS1"] = h["NAXIS2"] = 64
    h["BMAJ"], h["BMIN"], h["BPA"] = 1.0 / 3600, 0.8 / 3600, 30.0
    point = {"kind": "point", "flux_jy": 0.2, "ra_deg": 150.0, "dec_deg": 40.0, "major_arcsec": 0.0,
             "minor_arcsec": 0.0, "pa_deg": 0.0}
    t = truth_image({"components": [point]}, h)
    assert t.max() == pytest.approx(0.2, rel=1e-3) and np.unravel_index(t.argmax(), t.shape) == (32, 32)
    gauss = dict(point, kind="gaussian", major_arcsec=2.0, minor_arcsec=1.0)
    t = truth_image({"components": [gauss]}, h)
    beam_area_px = math.pi / (4 * math.log(2)) * 1.0 * 0.8 / 0.2**2
    assert t.sum() / beam_area_px == pytest.approx(0.2, rel=0.01)


def test_fitted_flux_sees_a_shifted_source_at_its_flux(tmp_path: Path) -> None:
    """An image of the truth x 0.95 shifted by one pixel: the fixed-region ratio reads it
    lower (and a large error), the position-free fit gives 0.95, the shift and ~0 error."""
    from astropy.io import fits

    from selfcal_batch.simulate.evaluate import error_vs_truth, fitted_flux_vs_truth, truth_image

    h = fits.Header()
    for i, (ct, crval, cd) in enumerate([("RA---SIN", 150.0, -0.2 / 3600), ("DEC--SIN", 40.0, 0.2 / 3600)], 1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CUNIT{i}"] = ct, 33, crval, cd, "deg"
    h["NAXIS1"] = h["NAXIS2"] = 64
    h["BMAJ"], h["BMIN"], h["BPA"] = 1.0 / 3600, 0.8 / 3600, 30.0
    truth = {"components": [{"kind": "point", "flux_jy": 0.05, "ra_deg": 150.0, "dec_deg": 40.0,
                             "major_arcsec": 0.0, "minor_arcsec": 0.0, "pa_deg": 0.0}]}
    shifted = dict(truth["components"][0], dec_deg=40.0 + 0.2 / 3600)  # one pixel north
    img = 0.95 * truth_image({"components": [shifted]}, h)
    path = tmp_path / "img.fits"
    hdu = fits.PrimaryHDU(img)
    hdu.header.update({k: v for k, v in h.items() if not k.startswith("NAXIS")})
    hdu.writeto(path)
    fixed = error_vs_truth(path, truth)
    fit = fitted_flux_vs_truth(path, truth)
    assert fixed["flux_ratio"] < 0.93 and fixed["err"] > 0.01
    assert fit["flux_ratio_fit"] == pytest.approx(0.95, abs=2e-3)
    assert fit["shift_arcsec"] == pytest.approx(0.2, abs=0.01) and fit["err_fit"] < 2e-3


def test_multi_field_truth_is_judged_against_the_imaged_fields_sky(tmp_path: Path) -> None:
    """Tester s6 G7: a multi-field truth's top-level ``components`` is the spec's reference
    sky, no field's. An image of target T2 is compared with T2's own sky, chosen by the
    image centre (or by name); an image centred on no field is refused, not judged."""
    from astropy.io import fits

    from selfcal_batch.errors import SimulationError
    from selfcal_batch.simulate.evaluate import error_vs_truth, image_truth, truth_image
    from selfcal_batch.simulate.fields import field_truth

    def point(ra: float, dec: float, flux: float) -> dict:
        return {"kind": "point", "flux_jy": flux, "ra_deg": ra, "dec_deg": dec, "major_arcsec": 0.0,
                "minor_arcsec": 0.0, "pa_deg": 0.0}

    def fld(name: str, dec: float, comps: list) -> dict:
        return {"name": name, "phase_centre": {"ra_deg": 150.0, "dec_deg": dec, "frame": "J2000"}, "components": comps}

    # the reference sky: a 50 mJy source at the spec's centre, which is also T2's
    truth = {"phase_centre": {"ra_deg": 150.0, "dec_deg": 41.0}, "components": [point(150.0, 41.0, 0.05)],
             "fields": [fld("CAL", 38.5, [point(150.0, 38.5, 1.0)]),
                        fld("T1", 40.0 + 1 / 60, [point(150.0, 40.0 + 1 / 60, 0.03)]),
                        fld("T2", 41.0, [point(150.0, 41.0, 0.02), point(150.0, 41.0 + 2 / 3600, 0.01)])]}
    h = fits.Header()
    for i, (ct, crval, cd) in enumerate([("RA---SIN", 150.0, -0.2 / 3600), ("DEC--SIN", 41.0, 0.2 / 3600)], 1):
        h[f"CTYPE{i}"], h[f"CRPIX{i}"], h[f"CRVAL{i}"], h[f"CDELT{i}"], h[f"CUNIT{i}"] = ct, 33, crval, cd, "deg"
    h["NAXIS1"] = h["NAXIS2"] = 64
    h["BMAJ"], h["BMIN"], h["BPA"] = 1.0 / 3600, 0.8 / 3600, 30.0
    assert image_truth(truth, h)["field"] == "T2" and image_truth(truth, h, field="T1")["field"] == "T1"
    assert image_truth(field_truth(truth, "T1"), h)["field"] == "T1"  # already one field's
    single = {"components": [point(150.0, 41.0, 0.02)]}
    assert image_truth(single, h) is single
    path = tmp_path / "t2.fits"
    hdu = fits.PrimaryHDU(truth_image(field_truth(truth, "T2"), h))
    hdu.header.update({k: v for k, v in h.items() if not k.startswith("NAXIS")})
    hdu.writeto(path)
    e = error_vs_truth(path, truth)
    assert e["err"] < 1e-9 and e["flux_ratio"] == pytest.approx(1.0)
    # what it was: the reference sky as T2's truth
    wrong = error_vs_truth(path, {"components": truth["components"]})
    assert wrong["err"] > 0.02 and wrong["flux_ratio"] < 0.9
    h2 = h.copy()
    h2["CRVAL2"] = 39.0
    with pytest.raises(SimulationError, match="phase centre of no field.*T2 7.2e\\+03 arcsec"):
        image_truth(truth, h2)
