"""Generated "execution block" data for the survey-input tests (issue 18)."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from selfcal_batch.simulate import Component, SimSpec, simulate_ms_isolated, spec_from_preset
from selfcal_batch.simulate.fields import FieldSpec

#: The three science targets of the EB: (name, Dec offset deg, components).
TARGETS = (
    ("J1001+4000", 0.0, (Component("point", 0.08, spectral_index=-0.7),
                         Component("point", 0.008, 18.0, 11.0, spectral_index=-0.7))),
    ("J1003+4100", 1.0, (Component("point", 0.06, spectral_index=-0.7),)),
    ("J1000+4200", 2.0, (Component("point", 0.05, spectral_index=-0.7),
                         Component("gaussian", 0.01, -14.0, -9.0, 6.0, 3.0, 30.0, -0.8))),
)
CALIBRATOR = FieldSpec("J0959+3830", "CALIBRATE_BANDPASS,CALIBRATE_PHASE,CALIBRATE_AMPLI,CALIBRATE_FLUX",
                       ddec_deg=-1.5, components=(Component("point", 1.5),), scan_fraction=0.5)
#: Common settings: 4 cycles of 75 s per target, 2 spw x 4 channels, 40 deg phase errors.
COMMON = dict(duration_s=300.0, n_scans=4, integration_s=10.0, n_spw=2, n_chan=4, phase_rms_deg=40.0,
              phase_timescale_s=200.0)


#: Campaign manifest head of the survey tests: small images, one thread, no plots.
QUICK_TOML = """
[campaign]
output_dir = "out"
[defaults]
imsize = 128
threads = 1
plots = false
solint = { extend_ladder = false }
"""


#: run-one / pipeline settings of the short joint-EB runs (up to p0, then the final split).
JOINT_P0_CONFIG = """
imsize = 128
threads = 1
plots = false
steps = ["startup", "test_image", "select_refant", "p0", "split_calibrated"]
solint = { extend_ladder = false }
"""


def eb_spec(seed: int = 11, short: str | None = None, **over) -> SimSpec:
    """Calibrator + three targets; ``short``: that target gets scans 10x shorter."""
    fields = [CALIBRATOR] + [FieldSpec(n, "OBSERVE_TARGET", ddec_deg=dd, components=c,
                                       scan_fraction=0.1 if n == short else 1.0) for n, dd, c in TARGETS]
    return spec_from_preset("vla-c", fields=fields, seed=seed, **{**COMMON, **over})


def alone_spec(name: str, seed: int = 11) -> SimSpec:
    """The target ``name`` simulated alone: same sky, time on source, noise and error level."""
    _n, dd, comps = next(t for t in TARGETS if t[0] == name)
    return spec_from_preset("vla-c", components=comps, dec_deg=40.0 + dd, source_name=name,
                            seed=seed, **COMMON)


def make(spec: SimSpec, path: Path) -> Path:
    if not path.exists():
        simulate_ms_isolated(spec, path)
    return path


# -- joint EBs of one target (issue 18, item 2) -------------------------------------------

#: The target of the joint-EB tests: a point source and a fainter companion (flat spectrum).
JOINT_SKY = (Component("point", 0.05), Component("point", 0.006, 15.0, -10.0))
#: EB1: 2 spw x 4 channels; EB2: 3 spw x 4 channels, its spws 1, 2 on EB1's 0, 1 and spw 0
#: without rows (removed by :func:`drop_spw_rows`): the target's data sit in spw ids {1, 2}.
#: (Equal channel counts here; EBs of different counts are averaged to one count at startup,
#: tests/integration/test_joint_ebs_channels.py.)
JOINT_COMMON = dict(duration_s=240.0, n_scans=4, integration_s=10.0, phase_rms_deg=50.0,
                    phase_timescale_s=150.0)
#: EB2's flux scale relative to EB1 and the truth (a flux-calibration error of 5 %).
JOINT_FLUX_OFFSET = 1.05


def joint_eb_specs(seed1: int = 31, seed2: int = 32, flux_scale: float = 1.0,
                   flux_offset: float = JOINT_FLUX_OFFSET, phase_rms2_deg: float | None = None
                   ) -> tuple[SimSpec, SimSpec]:
    """Two EBs of one target: different antenna phase errors (seeds), spw layout and flux scale
    (EB2 x ``flux_offset``, default JOINT_FLUX_OFFSET); ``flux_scale`` scales the whole sky
    (the truth is EB1's); ``phase_rms2_deg``: EB2's phase-error rms instead of JOINT_COMMON's."""
    sky = tuple(dataclasses.replace(c, flux_jy=c.flux_jy * flux_scale) for c in JOINT_SKY)
    eb1 = spec_from_preset("vla-c", components=sky, n_spw=2, n_chan=4, seed=seed1,
                           start_date="2024-01-01", **JOINT_COMMON)
    bw, fc = eb1.spw_bw_hz, eb1.centre_hz
    sky2 = tuple(dataclasses.replace(c, flux_jy=c.flux_jy * flux_offset) for c in sky)
    common2 = {**JOINT_COMMON, **({"phase_rms_deg": phase_rms2_deg} if phase_rms2_deg is not None else {})}
    eb2 = spec_from_preset("vla-c", components=sky2, n_spw=3, n_chan=4, seed=seed2, centre_freq_hz=fc - bw / 2,
                           spw_bandwidth_hz=bw, ref_freq_hz=fc, start_date="2024-01-03", **common2)
    return eb1.replace(ref_freq_hz=fc), eb2


def drop_spw_rows(ms: Path, spw: int) -> None:
    """Remove the main-table rows of ``spw`` (our own generated MS, python-casacore): the spw
    stays in SPECTRAL_WINDOW without data, so the data's spw ids no longer start at 0."""
    from casacore.tables import table  # test data only: edits the generated MS in place

    with table(str(ms / "DATA_DESCRIPTION"), ack=False) as dd:
        ddids = [i for i, s in enumerate(dd.getcol("SPECTRAL_WINDOW_ID")) if s == spw]
    tmp = ms.with_name(ms.name + ".tmp")
    with table(str(ms), ack=False) as t:
        sel = t.query(f"DATA_DESC_ID NOT IN [{','.join(map(str, ddids))}]")
        sel.copy(str(tmp), deep=True, valuecopy=True).close()
        sel.close()
    shutil.rmtree(ms)
    tmp.rename(ms)


# -- targets of several EBs grouped per target (issue 18, item 2: group = "name") ----------

#: A small EB for the grouping tests: the calibrator and the first two targets, 2 x 60 s each.
GROUP_COMMON = {**COMMON, "duration_s": 120.0, "n_scans": 2}


def group_eb_spec(seed: int, start_date: str, shift_arcsec: float = 0.0, **over) -> SimSpec:
    """Calibrator + two targets (J1001+4000, J1003+4100) observed on ``start_date``;
    ``shift_arcsec``: the second target's centre moved north by that much (another pointing
    under the same name)."""
    fields = [CALIBRATOR] + [FieldSpec(n, "OBSERVE_TARGET", ddec_deg=dd + (shift_arcsec / 3600.0 if k else 0.0),
                                       components=c) for k, (n, dd, c) in enumerate(TARGETS[:2])]
    return spec_from_preset("vla-c", fields=fields, seed=seed, start_date=start_date, **{**GROUP_COMMON, **over})
