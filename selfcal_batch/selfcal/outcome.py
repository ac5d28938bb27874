"""Honest outcomes (issue 14): no_detection, needs_calibration, unchanged.

A dataset ends ``finished`` only when calibrated data that is measurably better than the
input is delivered. Otherwise the input (the working copy before self-calibration, DATA
unchanged) is delivered with one of:

* ``no_detection``: the test image shows no source above ``detection_sigma``;
* ``needs_calibration``: the visibilities look uncalibrated (phase slopes with frequency
  decorrelate the channel average: instrumental delays); self-calibration of a spectral
  window's average cannot fix that, so it is not attempted (one-line warning);
* ``unchanged``: self-calibration was tried, but no step was kept or the final guard
  (:mod:`selfcal_batch.selfcal.guard`) found the result not better beyond the noise.

Pure decisions (:func:`detection`, :func:`band_decorrelation`, :func:`looks_uncalibrated`)
are unit tested; the thin wrappers that read the working copy, image and restore flags
follow them.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from selfcal_batch.numeric import float_or_nan
from selfcal_batch.imaging import imstats
from selfcal_batch.pipeline.registry import BY_NAME, is_ladder
from selfcal_batch.selfcal import guard
from selfcal_batch.selfcal import outside as outside_mod
# The band-decorrelation decisions live in selfcal/decorrelation.py; re-exported (tests, callers).
from selfcal_batch.selfcal.decorrelation import (  # noqa: F401
    GEOMETRIC_DELAY_RATIO, band_decorrelation, looks_uncalibrated, measure_decorrelation, read_sample,
    slopes_geometric)

if TYPE_CHECKING:  # pragma: no cover
    from selfcal_batch.pipeline.context import Context

log = logging.getLogger("selfcal_batch.pipeline")

#: Statuses of a dataset that ran to the end (the input may be delivered unchanged).
SUCCESS_STATUSES = ("finished", "unchanged", "no_detection", "needs_calibration")
#: Every status a DatasetResult may carry.
ALL_STATUSES = SUCCESS_STATUSES + ("failed", "skipped", "interrupted", "not_started")
#: Statuses of a campaign stopped by Ctrl-C / SIGTERM: the dataset was running
#: (``interrupted``) or had not started (``not_started``); rerunning resumes both.
STOPPED_STATUSES = ("interrupted", "not_started")


# -- pure decisions -------------------------------------------------------------------


#: Image noise of the test image's weighting relative to the natural-weighting thermal
#: noise from the visibilities: robust weighting (0.5 ... -0.5) raises it by up to ~2x.
WEIGHTING_NOISE_FACTOR = 2.0


def detection(snr: float, detection_sigma: float, peak: float = math.nan,
              thermal_jy: float = math.nan) -> tuple[bool, str]:
    """Is there a source? ``snr`` = test-image peak / off-source robust rms.

    The off-source rms of a poorly sampled or badly calibrated image is dominated by the
    source's own sidelobes, not noise (measured: 4 antennas, a 72 mJy source, thermal
    noise 0.47 mJy, image peak/rms 3.6): so a source also counts as detected when its
    ``peak`` (Jy) exceeds ``detection_sigma`` x :data:`WEIGHTING_NOISE_FACTOR` x the
    thermal noise ``thermal_jy`` measured from the visibilities.

    The default ``detection_sigma`` = 5 follows from the number of independent beams: a
    512^2 image at 5 px per beam holds ~10^4 beams, and Gaussian noise exceeds 5 sigma in
    one of them with probability 10^4 x 2.9e-7 = 0.3 % (4 sigma: 10^4 x 3.2e-5 = 30 %).
    """
    if math.isfinite(peak) and math.isfinite(thermal_jy) and thermal_jy > 0 \
            and peak >= detection_sigma * WEIGHTING_NOISE_FACTOR * thermal_jy:
        return True, ""
    if not math.isfinite(snr):
        return False, "test image peak/rms not measurable"
    if snr < detection_sigma:
        extra = (f"; peak {peak / thermal_jy:.1f} x the thermal noise" if math.isfinite(peak)
                 and math.isfinite(thermal_jy) and thermal_jy > 0 else "")
        return False, f"no source above {detection_sigma:g} sigma in the test image (peak/rms {snr:.1f}{extra})"
    return True, ""


def antenna_flag_verdict(beam_area_before: float, beam_area_after: float, decision: Any,
                         beam_tolerance: float, signal_free: bool = False) -> tuple[bool, str]:
    """Keep an antenna flag? ``decision`` is a :class:`guard.GuardDecision` of the images
    without / with the flag (same settings).

    Antennas with usable signal (some solutions against the model succeed): only when the
    image is better beyond the noise and the beam area changed by at most
    ``beam_tolerance`` (a fraction): flagging an outer antenna widens the beam, and a wider
    beam raises the peak of extended emission in Jy/beam without any better calibration
    (issue 14: +25 % beam area). ``signal_free`` antennas (their solutions against the
    current model all but fail: dead, or data without the source) carry no signal, so the
    "beam" they shape is not the source's, and applycal would flag them at the first step
    anyway: their flag is kept unless the image gets worse beyond the noise (measured on a
    dead antenna: undoing it made p0's beam change +6.5 % and the whole ladder revert).
    """
    if signal_free:
        worse = [r for r in decision.reasons if r.startswith("worse")]
        return (not worse), "; ".join(worse) if worse else f"antenna without signal ({decision.reason})"
    reasons = []
    if beam_area_before > 0 and math.isfinite(beam_area_after):
        change = beam_area_after / beam_area_before - 1
        if abs(change) > beam_tolerance:
            reasons.append(f"beam area changed {100 * change:+.1f}% (> {100 * beam_tolerance:.0f}%)")
    if not decision.deliver:
        reasons.append(decision.reason)
    return (not reasons), "; ".join(reasons) if reasons else decision.reason


# -- thin wrappers (read the working copy, image, restore flags) -----------------------


def set_outcome(ctx: "Context", status: str, reason: str) -> None:
    """Record the dataset's outcome (kept unless a later step overrides it)."""
    ctx.state.set("outcome", {"status": status, "reason": reason})


def check_after_test_image(ctx: "Context", stats: Mapping[str, Any], model_fits: str = "") -> None:
    """After the test image: unchanged (bright emission outside the image, from ``model_fits``,
    the test image's clean model: :mod:`selfcal_batch.selfcal.outside`) / needs_calibration /
    no_detection, or nothing (state 'outcome')."""
    cfg = ctx.cfg
    ctx.state.set("outcome", None)
    sample = None  # one read of the working copy, shared by both checks
    if cfg.decorrelation_limit > 0 or (float(getattr(cfg, "outside_ratio", 0.0)) > 0 and model_fits):
        try:
            sample = read_sample(str(ctx.work_ms))
        except Exception as exc:  # noqa: BLE001  (a diagnostic must not fail the dataset)
            log.warning("%s: reading the working copy for the checks failed: %s", ctx.name, exc)
    outside = _outside_check(ctx, model_fits, sample)
    detected, why = detection(float_or_nan(stats.get("snr")), cfg.detection_sigma,
                              peak=float_or_nan(stats.get("peak")),
                              thermal_jy=float_or_nan(ctx.info.get("thermal_noise_jy")))
    decor: list[dict[str, float]] = []
    if cfg.decorrelation_limit > 0 or outside:
        try:
            decor = measure_decorrelation(str(ctx.work_ms), sample=sample)
        except Exception as exc:  # noqa: BLE001  (a diagnostic must not fail the dataset)
            log.warning("%s: decorrelation check failed: %s", ctx.name, exc)
    ctx.state.set("decorrelation", decor)
    spws = ctx.info.get("spws") or []
    band = (max(s["freq_max"] for s in spws) - min(s["freq_min"] for s in spws)) if spws else 0.0
    bad, why_cal = looks_uncalibrated(decor, cfg.decorrelation_limit, band) if decor and cfg.decorrelation_limit > 0 \
        else (False, "")
    geometric, slope_ratio, how = slopes_geometric(decor, GEOMETRIC_DELAY_RATIO)
    if ctx.state.get("outside"):
        ctx.state.set("outside", {**ctx.state.get("outside"), "slope_ratio": slope_ratio if math.isfinite(slope_ratio)
                                  else None, "slopes": how, "stop": bool(outside and geometric and not bad)})
    if outside and not geometric:  # phase errors/delays decorrelate the test image: its model is short of flux
        out_rec = ctx.state.get("outside") or {}
        scrambled = outside_mod.scrambled_reason(float_or_nan(out_rec.get("data_jy")),
                                                 float_or_nan(out_rec.get("model_jy")), float_or_nan(stats.get("peak")))
        bad, why_cal = (True, scrambled) if scrambled and not bad else (bad, why_cal)
        log.info("%s: the test image's model is short of flux on the shortest baselines, but the band's phase "
                 "slopes %s: not emission outside the image", ctx.name, how)
        outside = ""
    if outside and not bad:
        outside += f" (phase slopes across the band {how}: emission away from the phase centre)"
        log.warning("%s: UNCHANGED: %s", ctx.name, outside)
        ctx.state.set("outcome", {"status": "unchanged", "reason": outside, "stop": True})
    elif bad:
        log.warning("%s: NEEDS CALIBRATION: %s", ctx.name, why_cal)
        set_outcome(ctx, "needs_calibration", why_cal)
    elif not detected:
        log.warning("%s: NO DETECTION: %s; input delivered unchanged", ctx.name, why)
        set_outcome(ctx, "no_detection", why)


def _outside_check(ctx: "Context", model_fits: str, sample: dict | None = None) -> str:
    """The reason of :func:`outside.measure_outside` when it fires ('' otherwise, when
    ``outside_ratio`` is 0 or no model image is given); the numbers go to state 'outside'."""
    ratio = float(getattr(ctx.cfg, "outside_ratio", outside_mod.DEFAULT_RATIO))
    if ratio <= 0 or not model_fits:
        ctx.state.set("outside", None)
        return ""
    try:
        v = outside_mod.measure_outside(str(ctx.work_ms), model_fits, ratio=ratio, sample=sample)
    except Exception as exc:  # noqa: BLE001  (a diagnostic must not fail the dataset)
        log.warning("%s: outside-emission check failed: %s", ctx.name, exc)
        return ""
    ctx.state.set("outside", {"fires": v.fires, "data_jy": v.data_jy, "model_jy": v.model_jy,
                              "ratio": v.ratio if math.isfinite(v.ratio) else None, **v.per_bin})
    log.info("%s: shortest baselines: data %.4g Jy, test-image model %.4g Jy", ctx.name, v.data_jy, v.model_jy)
    return v.reason


def stop_reason(ctx: "Context") -> str:
    """Why self-calibration is not attempted ('' = go ahead)."""
    out = ctx.state.get("outcome") or {}
    if out.get("status") in ("no_detection", "needs_calibration") or out.get("stop"):
        return f"{out['status']}: {out.get('reason', '')}"
    return ""


def final_status(state_outcome: Mapping[str, Any] | None, status: str) -> tuple[str, str]:
    """The dataset's status and reason at the end of a run that did not fail."""
    if status != "finished" or not state_outcome:
        return status, ""
    return str(state_outcome.get("status") or status), str(state_outcome.get("reason") or "")


def undelivered_reason(status: str, steps: Sequence[str], delivered: bool) -> str:
    """The honest reason of a run that ended well but delivered no ``final.ms``, or "".

    A ``steps`` list that stops before ``split_calibrated`` (e.g. ``["startup", "test_image"]``
    for the diagnostics only) ends ``finished`` with nothing calibrated; the result must say so
    rather than read like a delivered dataset. Pure.
    """
    if status != "finished" or delivered or "split_calibrated" in steps:
        return ""
    last = steps[-1] if steps else "none"
    return f"diagnostics only: the steps list ends at {last} (no split_calibrated); nothing delivered"


# -- the final guard and the antenna-flag judgement (wrappers of selfcal_batch.selfcal.guard) ---


def _residual_of(image: str) -> str:
    """WSClean's residual next to a restored image (``-image.fits`` -> ``-residual.fits``)."""
    return image[: -len("image.fits")] + "residual.fits"


def compare_images(ctx: "Context", before: tuple[str, Mapping[str, Any]], after: tuple[str, Mapping[str, Any]],
                   amplitude: bool = True):
    """:func:`guard.judge` of two images made with the same settings ((image path, stats)).

    The regions are fixed for both: the source mask is the union of the two images'
    5-sigma emission masks (imstats.flux_mask); the flux is summed over the "after" image's
    own mask (:func:`guard.regions`). ``amplitude``: the delivered chain has an amplitude step."""

    arrays = []
    for path, _stats in (before, after):
        img, hdr = imstats.read_image(path)
        res, _ = imstats.read_image(_residual_of(path))
        arrays.append((img, res, hdr))
    mask = np.zeros(arrays[0][0].shape, dtype=bool)
    after_mask = np.zeros_like(mask)
    for k, (img, _res, hdr) in enumerate(arrays):
        m = imstats.flux_mask(img, hdr, 5.0, float(guard._mad_std(img.ravel())))
        if m is not None:
            mask |= m
            if k == 1:
                after_mask = m
    st_b = before[1]
    cell = float(st_b.get("cell_arcsec") or math.nan)
    fwhm_px = math.sqrt(float(st_b.get("bmaj_arcsec") or math.nan) * float(st_b.get("bmin_arcsec") or math.nan)) / cell
    if not math.isfinite(fwhm_px) or fwhm_px <= 0:
        fwhm_px = ctx.cfg.pixels_per_beam
    reg = guard.regions(mask.shape, mask, fwhm_px, ctx.cfg.guard.near_beams,
                        flux_mask=after_mask if after_mask.any() else None)
    metrics = [guard.image_metrics(img, res, float(s.get("beam_area_pix") or math.nan), reg)
               for (img, res, _h), (_p, s) in zip(arrays, (before, after), strict=True)]
    return guard.judge(metrics[0], metrics[1], sigma=ctx.cfg.guard.sigma, tolerance=ctx.cfg.guard.tolerance,
                       amplitude=amplitude)


def common_mask_flux(image_a: str, image_b: str, sigma: float = 5.0) -> tuple[float, float]:
    """Integrated flux (Jy) of two images over the SAME pixels: the union of their
    ``sigma`` emission masks (imstats.flux_mask). Each image's own mask grows when its noise
    drops (more of the faint extended emission passes the threshold), so comparing each
    image's own masked flux calls a better image a flux-scale change (measured: ap1 on 10 %
    amplitude errors, rms 0.31 -> 0.10 mJy, "integrated flux +16 %", with the flux in fact
    moving from 87 % to 100 % of the truth)."""

    imgs = [imstats.read_image(p) for p in (image_a, image_b)]
    mask = np.zeros(imgs[0][0].shape, dtype=bool)
    for img, hdr in imgs:
        m = imstats.flux_mask(img, hdr, sigma, float(guard._mad_std(img.ravel())))
        if m is not None:
            mask |= m
    if not mask.any():
        return math.nan, math.nan
    return tuple(float(img[mask].sum()) / imstats.beam_area_pixels(hdr) for img, hdr in imgs)  # type: ignore[return-value]


def chain_has_amplitude(chain: list[dict[str, Any]]) -> bool:
    """True when a gain table of ``chain`` (entries with ``step``) solved amplitudes (calmode
    'a' or 'ap' in the step registry; extension steps are phase-only)."""
    return any("a" in (getattr(BY_NAME.get(str(c.get("step"))), "calmode", "") or "p") for c in chain)


def _ladder_ran(ctx: "Context") -> list[str]:
    return [s for s, r in ctx.state.steps.items()
            if is_ladder(s) and isinstance(r, dict) and r.get("status") in ("done", "skipped")]


def guard_precheck(ctx: "Context", chain: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """What is delivered when no image has to be judged (the guard's record reset): [] when
    self-calibration was not attempted or nothing was kept (flags restored, outcome
    ``unchanged`` when a ladder step ran), ``chain`` with the guard off; None when the final
    guard must judge the calibrated image (:func:`judge_delivery`)."""
    st = ctx.state
    if (st.get("outcome") or {}).get("status") == "unchanged" and not (st.get("outcome") or {}).get("stop"):
        st.set("outcome", None)  # a re-run decides afresh (a stop set after the test image stays)
    st.set("guard", None)
    if stop_reason(ctx):
        return []
    if not chain:
        if _ladder_ran(ctx):
            restore_input_flags(ctx)
            set_outcome(ctx, "unchanged", "no self-calibration step was kept; input delivered unchanged")
        return []
    if not ctx.cfg.guard.enabled:
        return chain
    return None


def test_image_shows_input(test_imaging: str, steps_done: set[str]) -> bool:
    """Is the test image the image of the input as it is delivered "unchanged" (pure)? Yes
    when it has the final-image settings (``test_imaging`` 'final') and the flags restored for
    an unchanged delivery (:func:`restore_input_flags`: the 'Original' version, saved by
    ``save_init_flags``) are the test image's: ``save_init_flags`` ran and ``autoflag_init``
    (which flags between the two) did not."""
    return test_imaging == "final" and "save_init_flags" in steps_done and "autoflag_init" not in steps_done


def judge_delivery(ctx: "Context", chain: list[dict[str, Any]], after: tuple[str, Mapping[str, Any]]) -> bool:
    """The final guard: is ``after`` ((image path, stats) of final.ms, the calibrated data as
    delivered, final-image settings) better beyond the noise than the other deliverable, the
    input unchanged? That image is the test image when :func:`test_image_shows_input` (flags
    applycal added since are part of the calibrated deliverable, not of the input), else the
    working copy's DATA imaged now with the current flags. Records ``guard``; when not
    better, the flags are restored and the outcome is ``unchanged``. Returns the verdict."""
    from selfcal_batch.pipeline.step_tools import final_options  # lazy: pipeline/ is above selfcal/

    st = ctx.state
    done = {s for s, r in st.steps.items() if isinstance(r, dict) and r.get("status") == "done"}
    initial = st.get("initial") or {}
    if initial.get("image") and test_image_shows_input(ctx.cfg.test_imaging, done):
        before = (str(initial["image"]), initial["stats"])
    else:
        b_prod, b_stats = ctx.image(final_options(ctx, "guard_before", "DATA"), step="guard", role="before",
                                    template=st.get("template_final", ""))
        before = (b_prod.image, b_stats)
    dec = compare_images(ctx, before, after, amplitude=chain_has_amplitude(chain))
    st.set("guard", {"deliver": dec.deliver, "reason": dec.reason,
                     "changes": {k: [float(f"{v:.6g}") for v in vals] for k, vals in dec.changes.items()}})
    if dec.deliver:
        log.info("%s: final guard: deliver the self-calibrated data (%s)", ctx.name, dec.reason)
        return True
    restore_input_flags(ctx)
    reason = f"self-calibrated image not better beyond its noise ({dec.reason}); input delivered unchanged"
    log.warning("%s: final guard: %s", ctx.name, reason)
    set_outcome(ctx, "unchanged", reason)
    return False


def coherence_kept(ctx: "Context") -> bool:
    """The guard outside the image (:mod:`selfcal_batch.selfcal.coherence`): final.ms (the
    calibrated data, just split) against the working copy's DATA (the input) on the short
    baselines. Records state ``coherence``; when self-calibration destroyed coherent flux
    there, restores the input's flags, sets the outcome ``unchanged`` with the reason and
    returns False (the caller delivers the input). True when ``coherence_loss`` is 0 or the
    measurement failed (a warning)."""
    from selfcal_batch.selfcal import coherence  # lazy: casacore is read only on this path

    limit = float(getattr(ctx.cfg, "coherence_loss", coherence.DEFAULT_MAX_LOSS))
    if limit <= 0:
        ctx.state.set("coherence", None)
        return True
    try:
        v = coherence.measure_coherence(str(ctx.work_ms), str(ctx.final_ms), max_loss=limit)
    except Exception as exc:  # noqa: BLE001  (a diagnostic must not fail the dataset)
        log.warning("%s: short-baseline coherence check failed: %s", ctx.name, str(exc).splitlines()[0][:300])
        return True
    ctx.state.set("coherence", {**v.record(), "note": v.reason if not v.fires else ""})
    if v.skipped:
        log.warning("%s: short-baseline coherence check skipped: %s", ctx.name, v.reason)
        return True
    log.info("%s: short-baseline map, the source that lost most: %.4g -> %.4g Jy (%d compared)%s", ctx.name,
             v.peak_in, v.peak_out, v.sources, f" ({v.reason})" if v.reason and not v.fires else "")
    if not v.fires:
        return True
    restore_input_flags(ctx)
    log.warning("%s: UNCHANGED: %s", ctx.name, v.reason)
    set_outcome(ctx, "unchanged", v.reason)
    return False


def restore_input_flags(ctx: "Context") -> None:
    """Before delivering the input 'unchanged': the working copy's flags as they were before
    any self-calibration step -- the 'Original' version (saved by save_init_flags), else the
    version saved before the first solve. Antennas flagged by the reference-antenna search
    (kept when they had no signal) are otherwise left flagged in a final.ms called unchanged
    (measured on the real VLA MS: 2 of 18 antennas, 21.7% of the data)."""
    from selfcal_batch.casa import calibration as cal  # the ctx-taking part: no casa/ at import

    st = ctx.state
    rec = st.steps.get("save_init_flags")
    if isinstance(rec, dict) and rec.get("status") == "done":
        version = "Original"
    else:
        first = next((s for s, r in st.steps.items() if isinstance(r, dict) and r.get("table")), None)
        version = f"pre_{first}" if first else ""
    if version:
        ctx.casa([cal.flagmanager_call(str(ctx.work_ms), "restore", version)], label="restore-input-flags")


def judge_antenna_flag(ctx: "Context", antennas: list[str], signal_free: bool = False) -> dict[str, Any]:
    """Flag ``antennas`` in the working copy and keep the flag only if the image with the
    same settings as the (final-settings) test image is better beyond the noise and its beam
    area changed by at most ``gate.beam_tolerance``; otherwise restore the flags. Returns a
    record with ``kept``, ``reason``."""
    from selfcal_batch.casa import calibration as cal  # the ctx-taking part: no casa/ at import
    from selfcal_batch.pipeline.step_tools import final_options  # nor pipeline/ (selfcal/ is below it)

    vis = str(ctx.work_ms)
    version = "before_antenna_flag"
    ctx.casa([cal.flagmanager_call(vis, "save", version),
              cal.task("flagdata", vis=vis, mode="manual", antenna=",".join(antennas), flagbackup=False)],
             label="flag-bad-antennas")
    before = ctx.state.get("initial") or {}
    if not before.get("image"):
        return {"kept": True, "reason": "no like-for-like image to judge against (test_imaging = 'seed')"}
    opts = final_options(ctx, "antflag_after").replace(taper_gaussian=ctx.cfg.test_uvtaper)
    prod, stats = ctx.image(opts, step="select_refant", role="antenna_flag")
    dec = compare_images(ctx, (before["image"], before["stats"]), (prod.image, stats))
    kept, reason = antenna_flag_verdict(float(before["stats"].get("beam_area_pix") or math.nan),
                                        float(stats.get("beam_area_pix") or math.nan), dec, ctx.cfg.gate.beam_tolerance,
                                        signal_free)
    if not kept:
        ctx.casa([cal.flagmanager_call(vis, "restore", version)], label="unflag-antennas")
        log.warning("%s: antenna flag of %s undone: %s", ctx.name, ",".join(antennas), reason)
    else:
        log.warning("%s: flagged antennas with failed solutions: %s (%s)", ctx.name, ", ".join(antennas), reason)
    return {"kept": kept, "reason": reason}
