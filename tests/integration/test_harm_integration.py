"""Do no harm (issue 14) on generated data with a known truth (real WSClean and CASA).

Each case is the KIND of dataset that was harmed or mis-reported: already calibrated data,
raw data with instrumental delays, a source below the detection limit, and per-antenna
amplitude errors. Small images (128 px), 10-minute observations.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from selfcal_batch.config import PipelineConfig
from selfcal_batch.pipeline.runner import run_dataset
from selfcal_batch.simulate import load_truth, simulate_ms_isolated, spec_from_preset
from selfcal_batch.simulate.evaluate import error_vs_truth

pytestmark = pytest.mark.integration
QUICK = {"imsize": 128, "threads": 1, "plots": False, "solint": {"extend_ladder": False}}


def _run(tmp_path, name, **sim):
    sim.setdefault("duration_s", 600)
    flux = sim.pop("flux_jy", 0.1)
    ext = sim.pop("extended_flux_jy", 0.0)
    ms = simulate_ms_isolated(spec_from_preset("vla-c", flux_jy=flux, extended_flux_jy=ext, **sim),
                              tmp_path / f"{name}.ms")
    res = run_dataset(name, str(ms), PipelineConfig.from_dict(QUICK), tmp_path / "out")
    state = json.loads((tmp_path / "out" / "datasets" / name / "state.json").read_text())
    return ms, res, state


def _data(ms):
    from casacore.tables import table

    with table(str(ms), ack=False) as t:
        return t.getcol("DATA"), t.getcol("FLAG")


def test_calibrated_data_are_delivered_unchanged(tmp_path):
    """No gain errors, bright core + faint extended emission: nothing to gain, nothing lost."""
    ms, res, state = _run(tmp_path, "calm", flux_jy=0.1, extended_flux_jy=0.01, phase_rms_deg=0.0, seed=71)
    print("calibrated:", res.status, res.reason, res.decisions)
    assert res.status == "unchanged" and res.reason
    got, flags = _data(res.final_ms)
    want, want_flags = _data(ms)
    assert got.shape == want.shape and np.array_equal(got, want), "final.ms DATA differs from the input"
    assert np.array_equal(flags, want_flags)


def test_raw_data_with_delays_need_calibration(tmp_path):
    ms, res, state = _run(tmp_path, "raw", flux_jy=0.1, phase_rms_deg=30.0, delay_rms_ns=4.0, seed=72)
    print("delays:", res.status, res.reason, state.get("decorrelation"))
    assert res.status == "needs_calibration"
    assert "uncalibrated" in res.reason and "\n" not in res.reason
    assert res.steps_accepted == [] and "p0" in res.steps_skipped
    got, _ = _data(res.final_ms)
    assert np.array_equal(got, _data(ms)[0])


def test_source_below_detection_limit(tmp_path):
    ms, res, state = _run(tmp_path, "nosrc", flux_jy=0.0001, phase_rms_deg=30.0, seed=73)
    print("undetected:", res.status, res.reason)
    assert res.status == "no_detection" and "sigma" in res.reason
    assert res.steps_accepted == [] and res.final_ms


def test_amplitude_errors_corrected_flux_scale_kept(tmp_path):
    """10 % per-antenna amplitude errors: ap1 is kept and the flux stays within 2 % of the truth.

    Seed 346: the errors carry no net scale (median(a)^2 = 1.003; an overall gain is
    degenerate with the sky flux, self-calibration cannot restore one). Slow, mild phases so
    that residual phase errors do not lower the flux by themselves."""
    ms, res, state = _run(tmp_path, "amp", flux_jy=0.056, extended_flux_jy=0.014, phase_rms_deg=20.0,
                          phase_timescale_s=600.0, amp_rms=0.1, seed=346, duration_s=1200)
    truth = load_truth(ms)
    print("amp10:", res.status, res.steps_accepted, res.decisions.get("ap1"), res.peak_final)
    assert res.status == "finished"
    assert "ap1" in res.steps_accepted
    # The flux scale: the final image summed where the true sky (convolved with the
    # restoring beam) is above 5 % of its peak, over the same sum of the truth.
    flux = error_vs_truth(res.final_image, truth)["flux_ratio"]
    print("amp10 flux / truth:", flux)
    assert abs(flux - 1) <= 0.02
