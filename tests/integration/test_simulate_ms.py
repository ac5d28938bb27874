"""Tests of the synthetic-data simulator on real MSs (real casatools child, WSClean and CASA
gaincal); moved from tests/test_simulate.py, whose pure tests are in tests/unit/test_simulate.py.

casatools is never imported in this (pytest) process: MSs are built in a child
(``simulate_ms_isolated`` / the CLI) and read with python-casacore.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from selfcal_batch.errors import SimulationError
from selfcal_batch.simulate import (
    Component,
    SimSpec,
    load_truth,
    simulate_ms_isolated,
    spec_from_preset,
    truth_phase_deg,
)
from selfcal_batch.simulate.cli import simulate_command

tables = pytest.importorskip("casacore.tables")


def _table(path: Path, sub: str = ""):
    return tables.table(str(path) + (f"/{sub}" if sub else ""), ack=False)


def _wrap(deg: np.ndarray) -> np.ndarray:
    return (np.asarray(deg) + 180.0) % 360.0 - 180.0


# -- real MSs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vla_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The preset vla-c MS, written through the CLI; generation time asserted < 10 s."""
    out = tmp_path_factory.mktemp("vlac") / "X.ms"
    t0 = time.monotonic()
    res = CliRunner().invoke(simulate_command, ["--preset", "vla-c", "--out", str(out)])
    seconds = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    print(f"\nvla-c preset MS (27 ant, 120 x 10 s, 2 spw x 8 chan) generated in {seconds:.2f} s")
    assert seconds < 10.0
    return out


@pytest.mark.integration
def test_vla_c_preset_opens_and_truth(vla_c: Path, tmp_path: Path) -> None:
    assert (vla_c.parent / "X.truth.json").is_file()
    truth = load_truth(vla_c)
    spec = spec_from_preset("vla-c")
    assert SimSpec.from_dict(truth["spec"]) == spec
    assert truth["spec"] == json.loads(json.dumps(spec.to_dict()))
    assert len(truth["antennas"]) == 27 and truth["noise_jy"] == spec.noise_jy
    assert len(truth["gains"]["times"]) == 120
    with _table(vla_c) as t:
        assert t.nrows() == 351 * 120 * 2
        cols = t.colnames()
        assert "DATA" in cols and "MODEL_DATA" not in cols and "CORRECTED_DATA" not in cols
        assert t.getcell("DATA", 0).shape == (8, 2)
        np.testing.assert_allclose(t.getcol("SIGMA"), spec.noise_jy)
        np.testing.assert_allclose(t.getcol("WEIGHT"), 1.0 / spec.noise_jy**2, rtol=1e-6)
        assert not t.getcol("FLAG").any()
    # casatools opens it too (in the CASA child), via the pipeline's inspect_ms job.
    from selfcal_batch.casa.calibration import job, run_casa

    info = run_casa([job("inspect_ms", vis=str(vla_c))], workdir=tmp_path, label="inspect")[0]
    assert info["n_antennas_present"] == 27 and len(info["spws"]) == 2
    assert info["fields"] == ["TARGET"] and abs(info["integration_s"] - 10.0) < 1e-6
    assert abs(info["spws"][0]["freq_min"] + info["spws"][1]["freq_max"] - 12e9) < 1e3


@pytest.mark.integration
def test_cli_refuses_overwrite(vla_c: Path) -> None:
    res = CliRunner().invoke(simulate_command, ["--preset", "vla-c", "--out", str(vla_c)])
    assert res.exit_code != 0 and "--force" in res.output


@pytest.mark.integration
def test_wsclean_images_truth(tmp_path: Path) -> None:
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.wcs import WCS

    from selfcal_batch.process import run_tool

    base = spec_from_preset("vla-c")
    beam = 299792458.0 / base.centre_hz / 11100.0 * 206264.806
    scale = beam / 5.0
    # (+3", -2") rounded to whole pixels: a point source on a pixel restores to its flux.
    dra, ddec = round(3.0 / scale) * scale, round(-2.0 / scale) * scale
    spec = base.replace(components=(Component("point", 0.1, dra, ddec), Component("point", 0.01, -8.0, 6.0)))
    ms = simulate_ms_isolated(spec, tmp_path / "img.ms")
    truth = load_truth(ms)
    name = str(tmp_path / "img")
    argv = ["wsclean", "-name", name, "-size", "256", "256", "-scale", f"{scale}asec", "-niter", "2000",
            "-mgain", "0.8", "-auto-threshold", "3", "-use-wgridder", "-weight", "briggs", "0", "-j", "2",
            "-no-update-model-required", str(ms)]
    run_tool(argv, tool="wsclean", log_path=tmp_path / "wsclean.log", env={**os.environ, "OMP_NUM_THREADS": "2"})
    with fits.open(name + "-image.fits") as hdul:
        img = hdul[0].data[0, 0]
        wcs = WCS(hdul[0].header).celestial
    y, x = np.unravel_index(np.argmax(img), img.shape)
    comp = truth["components"][0]
    true = SkyCoord(comp["ra_deg"], comp["dec_deg"], unit="deg")
    tx, ty = wcs.world_to_pixel(true)
    assert abs(tx - x) <= 1.0 and abs(ty - y) <= 1.0, (x, y, tx, ty)
    assert wcs.pixel_to_world(x, y).separation(true).arcsec <= scale * 1.01
    assert abs(img[y, x] / comp["flux_jy"] - 1.0) < 0.05, img[y, x]
    # The faint component is there too (> 10 sigma).
    fx, fy = (int(round(float(v))) for v in wcs.world_to_pixel(
        SkyCoord(truth["components"][1]["ra_deg"], truth["components"][1]["dec_deg"], unit="deg")))
    assert img[fy - 1:fy + 2, fx - 1:fx + 2].max() > 10 * np.std(img[:60, :60])


@pytest.mark.integration
def test_gaincal_recovers_injected_phases(tmp_path: Path) -> None:
    from selfcal_batch.casa.calibration import gaincal_call, run_casa

    spec = spec_from_preset("vla-c", flux_jy=1.0, phase_rms_deg=60.0, phase_timescale_s=120.0,
                            spw_phase_rms_deg=20.0, amp_rms=0.1, seed=11, write_model=True)
    ms = simulate_ms_isolated(spec, tmp_path / "gc.ms")
    truth = load_truth(ms)
    with _table(ms) as t:
        assert "MODEL_DATA" in t.colnames()
    refant = truth["antennas"][0]["name"]
    cal = tmp_path / "gc.G"
    run_casa([gaincal_call(str(ms), str(cal), solint="int", calmode="p", gaintype="G", refant=refant)],
             workdir=tmp_path, label="gc")
    with _table(cal) as t:
        times, ant, spw = t.getcol("TIME"), t.getcol("ANTENNA1"), t.getcol("SPECTRAL_WINDOW_ID")
        cparam, flag = t.getcol("CPARAM"), t.getcol("FLAG")
    ttimes = np.asarray(truth["gains"]["times"])
    tidx = np.abs(times[:, None] - ttimes[None, :]).argmin(axis=1)
    assert np.abs(ttimes[tidx] - times).max() < 1.0
    errs = []
    for s in range(spec.n_spw):
        ref = truth_phase_deg(truth, refant, s)
        for a in range(27):
            sel = (ant == a) & (spw == s)
            want = truth_phase_deg(truth, a, s)[tidx[sel]] - ref[tidx[sel]]
            for p in range(2):
                ok = ~flag[sel, 0, p]
                got = np.degrees(np.angle(cparam[sel, 0, p]))
                errs.append(_wrap(got - want)[ok])
    errs = np.concatenate(errs)
    assert errs.size > 0.95 * 27 * 120 * 2 * 2
    rms = float(np.sqrt(np.mean(errs**2)))
    print(f"\ngaincal phase error rms vs truth: {rms:.3f} deg ({errs.size} solutions)")
    assert rms < 5.0


@pytest.mark.integration
def test_emerlin_preset(tmp_path: Path) -> None:
    ms = simulate_ms_isolated(spec_from_preset("emerlin-l", phase_rms_deg=30.0, seed=2), tmp_path / "em.ms")
    truth = load_truth(ms)
    with _table(ms, "ANTENNA") as t:
        assert list(t.getcol("NAME")) == ["Lo", "Mk2", "Pi", "Da", "Kn", "De", "Cm"]
    with _table(ms) as t:
        uvw = t.getcol("UVW")
        assert np.abs(t.getcol("DATA")).max() > 0
    assert np.linalg.norm(uvw, axis=1).max() > 200e3  # |uvw| = baseline length
    assert truth["max_baseline_m"] > 200e3
    assert {a["name"]: a["dish_diameter_m"] for a in truth["antennas"]}["Lo"] == 76.0


@pytest.mark.integration
def test_missing_spw_and_dead_antenna(tmp_path: Path) -> None:
    spec = spec_from_preset("vla-c", flux_jy=1.0, n_scans=3, n_spw=3, missing_spw=1, duration_s=600.0,
                            dead_antenna=4, seed=5)
    ms = simulate_ms_isolated(spec, tmp_path / "ms.ms")
    truth = load_truth(ms)
    with _table(ms) as t:
        scan, ddid, time_ = t.getcol("SCAN_NUMBER"), t.getcol("DATA_DESC_ID"), t.getcol("TIME")
        a1, a2, data, flag = t.getcol("ANTENNA1"), t.getcol("ANTENNA2"), t.getcol("DATA"), t.getcol("FLAG")
    with _table(ms, "DATA_DESCRIPTION") as t:
        dd_spw = t.getcol("SPECTRAL_WINDOW_ID")
    spws = {int(s): sorted(set(dd_spw[ddid[scan == s]].tolist())) for s in np.unique(scan)}
    assert spws == {1: [0, 1, 2], 2: [0, 2], 3: [0, 1, 2]}
    assert truth["missing_spw"] == {"spw": 1, "absent_from_scans": [2]}
    ends = [time_[scan == s].max() for s in (1, 2)]
    starts = [time_[scan == s].min() for s in (2, 3)]
    assert all(b - e > 30.0 for e, b in zip(ends, starts, strict=True))  # real gaps between scans
    dead = (a1 == 4) | (a2 == 4)
    assert not flag[dead].any()
    assert abs(data[dead].mean()) < 0.01 and abs(data[~dead].mean()) > 0.5
    assert truth["dead_antenna"] == "ea05" and truth["gains"]["amp"]["ea05"] == 0.0


@pytest.mark.integration
def test_four_correlations(tmp_path: Path) -> None:
    spec = spec_from_preset("vla-l", correlations="RR RL LR LL", duration_s=300.0, seed=4)
    ms = simulate_ms_isolated(spec, tmp_path / "pol.ms")
    with _table(ms, "POLARIZATION") as t:
        assert list(t.getcol("CORR_TYPE")[0]) == [5, 6, 7, 8]
    with _table(ms) as t:
        data = t.getcol("DATA")
        assert data.shape[1:] == (8, 4) and t.getcol("SIGMA").shape[1] == 4
    n = data[..., 0].size
    assert abs(data[..., 0].mean() - 0.1) < 0.01 and abs(data[..., 3].mean() - 0.1) < 0.01
    for k in (1, 2):
        assert abs(data[..., k].mean()) < 5 * spec.noise_jy / np.sqrt(n)
        assert abs(data[..., k].real.std() / spec.noise_jy - 1.0) < 0.05


@pytest.mark.integration
def test_isolated_reports_child_errors(tmp_path: Path) -> None:
    out = tmp_path / "e.ms"
    out.mkdir()
    with pytest.raises(SimulationError, match="already exists"):
        simulate_ms_isolated(spec_from_preset("vla-c"), out)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SimulationError, match="cannot create"):
        simulate_ms_isolated(spec_from_preset("vla-c"), tmp_path / "afile" / "x.ms")
