"""Pure decisions behind issue 13 (no WSClean, no CASA): correlation choice, TIME sampling,
data flagged by applycal, reference-antenna filtering, row keys, spw correspondence."""
from __future__ import annotations

import math

import numpy as np
import pytest

from selfcal_batch.selfcal.applied_flags import gate_applied_flags, newly_flagged_fraction
from selfcal_batch.selfcal.spwmap import spw_correspondence
from selfcal_batch.selfcal.acceptance import GateDecision
from selfcal_batch.imaging.wsclean import WSCleanOptions, build_argv
from selfcal_batch.ms.inspection import corr_names, parallel_indices, row_keys, time_columns_disagree, time_sampling
from selfcal_batch.ms.polarisation import PolarisationError, choose_polarisation, gaintype_for
from selfcal_batch.selfcal.refant import filter_refants


# -- correlations ------------------------------------------------------------------------

@pytest.mark.parametrize("corr, pol, single", [
    ({"0": ["RR", "LL"]}, "i", False),
    ({"0": ["RR", "RL", "LR", "LL"], "1": ["RR", "LL"]}, "i", False),
    ({"0": ["XX", "XY", "YX", "YY"]}, "i", False),
    ({"0": ["I"]}, "i", False),
    ({"0": ["RR"]}, "rr", True),
    ({"0": ["LL"]}, "ll", True),
    ({"0": ["YY"], "1": ["XX", "YY"]}, "yy", True),
    ({"0": ["RR", "LL"], "1": ["RR"]}, "rr", True),
    ({1: ["XX"], 2: ["XX"]}, "xx", True),
])
def test_polarisation_choice(corr, pol, single):
    c = choose_polarisation(corr)
    assert (c.wsclean_pol, c.single_hand) == (pol, single)
    assert gaintype_for("G", c.as_dict()) == ("T" if single else "G")
    assert gaintype_for("T", c.as_dict()) == "T"


@pytest.mark.parametrize("corr, named", [
    ({"0": ["RR"], "1": ["LL"]}, "spw 0: RR; spw 1: LL"),
    ({"0": ["RL", "LR"]}, "spw 0: RL LR"),
    ({"0": ["RR", "LL"], "3": ["XX", "YY"]}, "spw 3: XX YY"),
    ({"2": ["XX"], "10": ["YY"]}, "spw 2: XX; spw 10: YY"),
])
def test_polarisation_refusal_names_spws_and_correlations(corr, named):
    with pytest.raises(PolarisationError) as e:
        choose_polarisation(corr)
    assert named in str(e.value) and "\n" not in str(e.value)


def test_polarisation_needs_data():
    with pytest.raises(ValueError):
        choose_polarisation({})


def test_corr_names_and_parallel_hands():
    assert corr_names([5, 6, 7, 8]) == ["RR", "RL", "LR", "LL"]
    assert corr_names([9, 12]) == ["XX", "YY"] and corr_names([1]) == ["I"]
    assert parallel_indices(["RR", "RL", "LR", "LL"]) == [0, 3]
    assert parallel_indices(["LL"]) == [0] and parallel_indices(["RL", "LR"]) == [0, 1]


def test_wsclean_pol_flag():
    base = WSCleanOptions(name="x", size=64, scale="1arcsec")
    assert "-pol" not in build_argv(base, "m.ms")
    argv = build_argv(base.replace(pol="rr"), "m.ms")
    assert argv[argv.index("-pol") + 1] == "rr"
    pred = build_argv(base.replace(pol="xx", predict=True), "m.ms")
    assert pred[pred.index("-pol") + 1] == "xx"
    assert base.imaging_key() != base.replace(pol="rr").imaging_key()


# -- TIME sampling -----------------------------------------------------------------------

def _layout(n_times=60, dt=10.0, n_bl=3, n_dd=2, interval=None):
    t = np.repeat(5e9 + dt * np.arange(n_times), n_bl * n_dd)
    a1 = np.tile(np.repeat(np.arange(n_bl), n_dd), n_times)
    a2 = a1 + 1
    dd = np.tile(np.arange(n_dd), n_times * n_bl)
    iv = np.full(t.size, dt if interval is None else interval)
    return t, a1, a2, dd, iv


def test_time_sampling_from_time_stamps():
    t, a1, a2, dd, iv = _layout()
    s = time_sampling(t, a1, a2, dd, iv, iv)
    assert s["integration_s"] == 10.0 and s["time_on_source_s"] == 600.0 and s["time_span_s"] == 590.0
    assert s["time_warning"] == ""


def test_time_sampling_ignores_placeholder_interval():
    t, a1, a2, dd, _ = _layout()
    iv = np.full(t.size, 0.01)
    s = time_sampling(t, a1, a2, dd, iv, iv)
    assert s["integration_s"] == 10.0 and s["time_on_source_s"] == 600.0
    assert "INTERVAL 0.01 s and EXPOSURE 0.01 s do not match the TIME spacing 10 s" == s["time_warning"]


def test_time_sampling_with_scan_gaps_and_single_stamp():
    t, a1, a2, dd, iv = _layout()
    t = np.where(t > 5e9 + 300, t + 1000, t)  # a gap between two scans
    s = time_sampling(t, a1, a2, dd, iv, iv)
    assert s["integration_s"] == 10.0 and s["time_on_source_s"] == 600.0
    one = time_sampling(np.full(3, 5e9), np.zeros(3), np.arange(1, 4), np.zeros(3), np.full(3, 4.0), np.full(3, 4.0))
    assert one["integration_s"] == 4.0 and one["time_warning"] == ""


def test_on_source_time_when_baselines_do_not_share_time_stamps():
    """Real VLA data: each baseline 8 stamps 10 s apart, offsets differ between baselines."""
    t = np.concatenate([5e9 + off + 10.0 * np.arange(8) for off in (0.0, 1.0, 2.5)])
    a1, a2 = np.repeat([0, 0, 1], 8), np.repeat([1, 2, 2], 8)
    s = time_sampling(t, a1, a2, np.zeros(t.size), np.full(t.size, 0.04), np.full(t.size, 0.04))
    assert s["integration_s"] == 10.0 and s["time_on_source_s"] == 80.0
    assert "INTERVAL 0.04 s" in s["time_warning"]


def test_time_columns_disagree_thresholds():
    assert time_columns_disagree(10.0, 10.0, 9.0) == ""
    assert time_columns_disagree(10.0, 10.0, 5.0) == ""  # half the spacing: dead time
    assert "EXPOSURE" in time_columns_disagree(10.0, 10.0, 4.0)
    assert "INTERVAL" in time_columns_disagree(10.0, 20.0, 10.0)
    assert "INTERVAL" in time_columns_disagree(10.0, math.nan, 10.0)


# -- data flagged by applycal ----------------------------------------------------------------

def test_newly_flagged_fraction():
    assert newly_flagged_fraction(0.0, 0.0) == 0.0
    assert newly_flagged_fraction(0.5, 0.75) == 0.5
    assert newly_flagged_fraction(0.2, 0.1) == 0.0
    assert newly_flagged_fraction(1.0, 1.0) == 1.0
    assert math.isnan(newly_flagged_fraction(math.nan, 0.3))


def test_gate_counts_data_flagged_by_applycal():
    ok = GateDecision(True, (), {"snr_ratio": 2.0})
    kept = gate_applied_flags(ok, 0.1, 0.12, 0.2)
    assert kept.accepted and kept.metrics["data_flagged_by_apply"] == pytest.approx(0.02 / 0.9)
    # every solution flagged after the solve (refant absent): the table looked clean
    reverted = gate_applied_flags(ok, 0.0, 1.0, 0.2)
    assert not reverted.accepted and "flagged 100% of the data" in reverted.reason
    already = GateDecision(False, ("SNR decreased 5.0 -> 4.0",), {})
    both = gate_applied_flags(already, 0.0, 0.5, 0.2)
    assert not both.accepted and len(both.reasons) == 2
    assert not gate_applied_flags(ok, math.nan, 0.5, 0.2).accepted


# -- reference antennas ------------------------------------------------------------------

def test_configured_refants_filtered():
    ranking = ["ea05", "ea03", "ea04", "ea01"]
    usable = ["ea03", "ea04", "ea05"]
    assert filter_refants("ea04, ea01", usable, ranking) == (["ea04", "ea05", "ea03"], ["ea01"], False)
    assert filter_refants("ea01,ea02", usable, ranking) == (["ea05", "ea03", "ea04"], ["ea01", "ea02"], True)
    assert filter_refants("ea03", usable, ranking) == (["ea03", "ea05", "ea04"], [], False)


# -- row keys and spw correspondence ---------------------------------------------------------

def test_row_keys_unique_and_exact():
    t = 5.2e9 + np.arange(3) * 10.0
    keys = row_keys(np.repeat(t, 4), np.tile([0, 0, 1, 1000], 3), np.tile([1, 2, 2, 1001], 3))
    assert len(set(keys.tolist())) == 12
    assert row_keys(np.array([5.2e9 + 0.0004]), np.array([3]), np.array([7]))[0] == \
        row_keys(np.array([5.2e9]), np.array([3]), np.array([7]))[0]


def test_spw_correspondence_after_renumbering():
    src = [{"id": 1, "freq_min": 1.0e9, "freq_max": 1.1e9}, {"id": 2, "freq_min": 1.2e9, "freq_max": 1.3e9}]
    work = [{"id": 0, "freq_min": 1.0e9, "freq_max": 1.1e9}, {"id": 1, "freq_min": 1.25e9, "freq_max": 1.3e9}]
    assert spw_correspondence(src, work) == {1: 0, 2: 1}
