"""Phases too scrambled to self-calibrate from the test image are said, not "calibrated"
(tester finding s6-break2 G1), real WSClean + CASA on generated data.

1 Jy at the centre with a 120 deg phase random walk (200 s timescale): the test image shows a
5-sigma artefact as its brightest emission; self-calibration locked onto it and delivered the
source 9" from its position as "finished". The shortest baselines hold 23x the flux of the
test image's model while the band's slopes show no source away from the centre.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.conftest import MSFactory, quick_config, run_pipeline

pytestmark = pytest.mark.integration


def test_scrambled_phases_need_calibration(ms_factory: MSFactory, tmp_path: Path) -> None:
    from selfcal_batch.simulate import Component

    ms = ms_factory.get("scrambled120", duration_s=900, n_scans=3, n_spw=2, n_chan=8, phase_rms_deg=120.0,
                        phase_timescale_s=200.0, seed=5, components=(Component("point", 1.0),))
    res = run_pipeline("s", ms.path, tmp_path / "out", quick_config())
    print("SCRAMBLED", res["status"], res.get("reason"))
    assert res["status"] == "needs_calibration", res
    assert res["reason"].startswith("phases too scrambled to self-calibrate"), res["reason"]
    assert ms.changes() == []
