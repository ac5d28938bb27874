"""Primary-beam correction on a generated VLA dataset (real WSClean + CASA, issue 19).

The simulator attenuates the sky by the VLA beam (``SimSpec.primary_beam``: CASA's
published 'VLA' polynomial, coded independently in ``simulate/sky.py``); the pipeline's
``.pb`` image comes from CASA itself (tclean on the final image's grid). The offset source
sits at 0.5 x the half-power radius, on a pixel centre (offset = whole cells).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from selfcal_batch.config import PipelineConfig
from selfcal_batch.imaging.primary_beam import half_power_radius_arcmin
from selfcal_batch.pipeline.runner import run_dataset
from selfcal_batch.simulate import Component, load_truth, simulate_ms_isolated, spec_from_preset

pytestmark = pytest.mark.integration

CELL_ARCSEC = 2.0
FREQ_GHZ = 6.0


def _peak_at(path: Path, ra: float, dec: float) -> float:
    """Largest pixel within 1 pixel of (ra, dec) (deg) in a FITS image."""
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(path) as h:
        data, header = np.squeeze(h[0].data), h[0].header
    x, y = WCS(header).celestial.world_to_pixel_values(ra, dec)
    x, y = int(round(float(x))), int(round(float(y)))
    return float(np.nanmax(data[y - 1:y + 2, x - 1:x + 2]))


def test_pbcor_recovers_offset_source_flux(tmp_path: Path) -> None:
    hpr_arcsec = 60.0 * half_power_radius_arcmin(FREQ_GHZ)
    offset = CELL_ARCSEC * round(0.5 * hpr_arcsec / CELL_ARCSEC)
    comps = (Component("point", 0.05, 0.0, 0.0), Component("point", 0.02, offset, 0.0))
    spec = spec_from_preset("vla-c", array_config="D", duration_s=1200, integration_s=20, n_spw=2, n_chan=4,
                            components=comps, primary_beam=True, phase_rms_deg=20.0, seed=19)
    ms = simulate_ms_isolated(spec, tmp_path / "pb.ms")
    truth = load_truth(ms)
    cfg = PipelineConfig.from_dict({"imsize": 160, "cell": f"{CELL_ARCSEC}arcsec", "threads": 1, "plots": False,
                                    "solint": {"extend_ladder": False}, "final_multiscale": False,
                                    "pb_cutoff": 0.5})  # 0.5: the image corners (PB 0.46) get blanked
    t0 = time.monotonic()
    res = run_dataset("pb", ms, cfg, tmp_path / "out")
    wall = time.monotonic() - t0
    root = tmp_path / "out" / "datasets" / "pb"
    assert res.status in ("finished", "unchanged"), res.error
    for name in ("final-image.fits", "final-image.pb.fits", "final-image.pbcor.fits"):
        assert (root / name).exists(), name
    from astropy.io import fits

    pb_header = fits.getheader(root / "final-image.pb.fits")
    assert "VLA" in pb_header["PBMODEL"] and pb_header["PBCUTOFF"] == 0.5
    pb = np.squeeze(fits.getdata(root / "final-image.pb.fits"))
    cor = np.squeeze(fits.getdata(root / "final-image.pbcor.fits"))
    assert np.isnan(pb[0, 0]) and np.nanmin(pb) >= 0.5 and np.nanmax(pb) == pytest.approx(1.0, abs=1e-3)
    assert (np.isnan(cor) == np.isnan(pb)).all()  # blanked below the cutoff
    off = truth["components"][1]
    apparent = _peak_at(root / "final-image.fits", off["ra_deg"], off["dec_deg"])
    corrected = _peak_at(root / "final-image.pbcor.fits", off["ra_deg"], off["dec_deg"])
    centre = _peak_at(root / "final-image.pbcor.fits", truth["components"][0]["ra_deg"],
                      truth["components"][0]["dec_deg"])
    err_cor = corrected / off["flux_jy"] - 1.0
    err_raw = apparent / off["flux_jy"] - 1.0
    report = {"offset_arcsec": offset, "hpr_arcsec": round(hpr_arcsec, 2),
              "sim_attenuation": off["pb_attenuation"], "apparent_jy": apparent, "pbcor_jy": corrected,
              "err_pbcor": round(err_cor, 4), "err_uncorrected": round(err_raw, 4), "centre_pbcor_jy": centre,
              "status": res.status, "wall_s": round(wall, 1)}
    print("PBCOR " + json.dumps(report))
    assert abs(err_cor) < 0.05, report
    assert abs(centre / 0.05 - 1.0) < 0.05, report
    assert err_raw < -0.1, report  # the uncorrected image is off by the attenuation


PHASESHIFT = """
import sys
from selfcal_batch.casa.env import configure_inprocess
configure_inprocess()
from casatasks import phaseshift
phaseshift(vis=sys.argv[1], outputvis=sys.argv[2], phasecenter=sys.argv[3], datacolumn="data")
"""


def test_beam_centred_on_the_pointing_of_phase_shifted_data(tmp_path: Path) -> None:
    """Tester finding F3: after CASA ``phaseshift`` the beam was centred on the new phase centre,
    so a source at the pointing (response 1) was 'corrected' by 1/0.9. The beam must peak at
    the pointing (FIELD REFERENCE_DIR) and the corrected flux of the source there be right."""
    import subprocess
    import sys

    from astropy.io import fits

    spec = spec_from_preset("vla-c", array_config="D", duration_s=600, integration_s=20, n_spw=1, n_chan=4,
                            components=(Component("point", 0.05, 0.0, 0.0),), primary_beam=True,
                            phase_rms_deg=5.0, seed=23)
    base = simulate_ms_isolated(spec, tmp_path / "base.ms")
    truth = load_truth(base)
    ra, dec = truth["phase_centre"]["ra_deg"], truth["phase_centre"]["dec_deg"]
    shift_arcsec = 60.0
    centre = f"J2000 {ra:.8f}deg {dec + shift_arcsec / 3600:.8f}deg"
    shifted = tmp_path / "shifted.ms"
    subprocess.run([sys.executable, "-c", PHASESHIFT, str(base), str(shifted), centre], check=True,
                   capture_output=True, cwd=tmp_path, timeout=600)
    cfg = PipelineConfig.from_dict({"imsize": 128, "cell": f"{CELL_ARCSEC}arcsec", "threads": 1, "plots": False,
                                    "solint": {"extend_ladder": False}, "final_multiscale": False,
                                    "pb_cutoff": 0.2})
    res = run_dataset("ps", shifted, cfg, tmp_path / "out")
    assert res.status in ("finished", "unchanged"), res.error
    root = tmp_path / "out" / "datasets" / "ps"
    pb_path = root / "final-image.pb.fits"
    pb = np.squeeze(fits.getdata(pb_path))
    from astropy.wcs import WCS

    x, y = WCS(fits.getheader(pb_path)).celestial.world_to_pixel_values(ra, dec)
    iy, ix = np.unravel_index(np.nanargmax(pb), pb.shape)
    assert abs(iy - float(y)) <= 1 and abs(ix - float(x)) <= 1, (iy, ix, float(y), float(x))
    assert _peak_at(pb_path, ra, dec) == pytest.approx(1.0, abs=2e-3)
    corrected = _peak_at(root / "final-image.pbcor.fits", ra, dec)
    apparent = _peak_at(root / "final-image.fits", ra, dec)
    print("PBSHIFT", json.dumps({"pb_peak_pix": [int(iy), int(ix)], "pointing_pix": [float(y), float(x)],
                                 "apparent_jy": apparent, "pbcor_jy": corrected, "status": res.status}))
    assert abs(corrected / 0.05 - 1.0) < 0.05
    assert abs(corrected / apparent - 1.0) < 0.01  # at the pointing the correction is ~1
