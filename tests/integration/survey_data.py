"""Generated "execution block" data for the survey-input tests (issue 18)."""
from __future__ import annotations

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
