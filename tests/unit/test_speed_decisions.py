"""Issue 16 decisions that save WSClean runs: a step its solutions reject needs no "after"
image, a failed beam fit is not compared, a reverted model is swapped back (pure numbers)."""
import itertools
import math

from selfcal_batch.config import GateConfig
from selfcal_batch.pipeline.model_keep import swap_plan
from selfcal_batch.selfcal import acceptance as gate
from selfcal_batch.selfcal.applied_flags import gate_applied_flags

CFG = GateConfig()
PRE = {"snr": 100.0, "rms_offsource": 1e-3, "beam_area_pix": 30.0, "total_flux_mask": 0.1,
       "bmaj_arcsec": 5.0, "bmin_arcsec": 4.0, "cell_arcsec": 1.0}
GOOD_SOLS = gate.SolutionStats({"a": (10, 10), "b": (10, 10), "c": (10, 9)})
BAD_SOLS = gate.SolutionStats({"a": (10, 2), "b": (10, 10), "c": (10, 10)})  # antenna a lost 80 %
POSTS = [dict(PRE, snr=150.0, rms_offsource=0.7e-3), dict(PRE, snr=60.0, rms_offsource=2e-3),
         dict(PRE, snr=100.2, rms_offsource=1e-3), dict(PRE, snr=150.0, beam_area_pix=40.0)]


def test_solutions_alone_reject_what_the_full_gate_rejects_with_the_same_stop():
    """Every combination: when evaluate_solutions rejects, evaluate_step (whatever the image)
    rejects too, with the same stops_ladder answer; when it accepts, only the image decides."""
    sigs = [{"phase": 40.0, "amp": 5.0}, {"phase": 1.0, "amp": 0.5}]
    for sols, sig, amplitude, post in itertools.product((GOOD_SOLS, BAD_SOLS), sigs, (False, True), POSTS):
        early = gate.evaluate_solutions(sols, cfg=CFG, amplitude=amplitude, significance=sig)
        full = gate.evaluate_step(PRE, post, original_beam_area=30.0, solutions=sols, est_snr=3.0, cfg=CFG,
                                  amplitude=amplitude, significance=sig)
        if not early.accepted:
            assert not full.accepted
            assert gate.stops_ladder(early) == gate.stops_ladder(full) is True
            assert set(early.reasons) <= set(full.reasons)
    good = gate.evaluate_solutions(GOOD_SOLS, cfg=CFG, significance=sigs[0])
    assert good.accepted and good.metrics["phase_significance"] == 40.0


def test_noise_like_amplitudes_rejected_before_imaging():
    d = gate.evaluate_solutions(GOOD_SOLS, cfg=CFG, amplitude=True, significance={"phase": 30.0, "amp": 0.5})
    assert not d.accepted and "amplitude corrections consistent with noise" in d.reason


def test_applied_flags_reject_before_imaging():
    early = gate_applied_flags(gate.evaluate_solutions(GOOD_SOLS, cfg=CFG), 0.1, 0.6, CFG.max_flagged_solutions)
    assert not early.accepted and gate.stops_ladder(early)


def test_beam_measured_rejects_sub_pixel_fits():
    # Measured on the 1.0" X-band dataset at robust -0.5: WSClean fitted 0.165" x 0.163".
    assert not gate.beam_measured({"bmaj_arcsec": 0.165, "bmin_arcsec": 0.163, "cell_arcsec": 1.0})
    assert gate.beam_measured({"bmaj_arcsec": 1.85, "bmin_arcsec": 1.63, "cell_arcsec": 1.0})
    assert gate.beam_measured({"bmaj_arcsec": 1.0, "bmin_arcsec": 1.0, "cell_arcsec": 1.0})
    assert not gate.beam_measured({"bmaj_arcsec": math.nan, "bmin_arcsec": 1.0, "cell_arcsec": 1.0})
    assert not gate.beam_measured({"bmin_arcsec": 2.0})


def test_swap_plan():
    assert swap_plan("", "p0_pre", True) == ("none", "", "p0_pre")
    assert swap_plan("p0_pre", "", False) == ("copy", "p0_pre", "p0_pre")
    # MODEL_DATA -> MODEL_KEPT and back: the stale kept model is what MODEL_DATA holds now.
    assert swap_plan("p1_post", "p0_pre", True) == ("swap", "p0_pre", "p1_post")
    assert swap_plan("p1_post", "", True) == ("swap", "", "p1_post")


def test_guard_before_is_the_test_image_only_when_it_shows_the_input_as_delivered():
    from selfcal_batch.selfcal.outcome import test_image_shows_input

    prep = {"startup", "save_init_flags", "test_image", "select_refant", "p0"}
    assert test_image_shows_input("final", prep)
    assert not test_image_shows_input("seed", prep)  # other settings than the final image
    assert not test_image_shows_input("final", prep | {"autoflag_init"})  # flagged after 'Original'
    assert not test_image_shows_input("final", prep - {"save_init_flags"})  # no 'Original' to restore
