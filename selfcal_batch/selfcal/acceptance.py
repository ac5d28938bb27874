"""Pure decisions from measured numbers: accept/revert a step, choose a solution interval.

Nothing here runs a program or reads a file; every function is unit-tested on numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from selfcal_batch.numeric import float_or_nan
from selfcal_batch.config import GateConfig


# -- solution statistics ------------------------------------------------------------


@dataclass(frozen=True)
class SolutionStats:
    """How many solutions a gaincal produced, per antenna (from solvestats or the table)."""

    #: antenna name -> (solutions with unflagged data, solutions that passed minsnr)
    per_antenna: Mapping[str, tuple[int, int]]

    @property
    def flagged_fraction(self) -> float:
        """Fraction of attempted solutions (antennas with data) that failed."""
        tried = sum(t for t, _ in self.per_antenna.values())
        ok = sum(o for _, o in self.per_antenna.values())
        return 1.0 - ok / tried if tried else 1.0

    def antenna_loss(self) -> dict[str, float]:
        """Failed fraction of each antenna that had data."""
        return {a: 1.0 - o / t for a, (t, o) in self.per_antenna.items() if t > 0}

    def without(self, antennas: set[str]) -> "SolutionStats":
        """The same statistics ignoring some (known-bad) antennas."""
        return SolutionStats({a: v for a, v in self.per_antenna.items() if a not in antennas})


def solution_stats_from_solvestats(solvestats: Mapping[str, Any], antenna_names: list[str]) -> SolutionStats:
    """Sum gaincal's ``solvestats`` (``spwN -> antN -> counts``) over spws, per antenna name."""
    acc: dict[str, list[int]] = {}
    for spw_key, spw in solvestats.items():
        if not spw_key.startswith("spw") or not isinstance(spw, Mapping):
            continue
        for ant_key, counts in spw.items():
            if not ant_key.startswith("ant") or not isinstance(counts, Mapping):
                continue
            aid = int(ant_key[3:])
            name = antenna_names[aid] if aid < len(antenna_names) else ant_key
            tried = int(sum(_as_list(counts.get("data_unflagged", 0))))
            ok = int(sum(_as_list(counts.get("above_minsnr", 0))))
            a = acc.setdefault(name, [0, 0])
            a[0] += tried
            a[1] += ok
    return SolutionStats({k: (v[0], v[1]) for k, v in acc.items()})


def _as_list(x: Any) -> list[float]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def antennas_to_flag(good_fraction: Mapping[str, float], *, limit: float = 0.5, array_min: float = 0.8,
                     max_fraction: float = 0.25) -> list[str]:
    """Antennas to flag before self-calibration: ones whose phase solutions mostly fail
    while the array as a whole solves well (median good fraction >= ``array_min``), worst
    first, at most ``max_fraction`` of the antennas. For a faint source (many antennas fail)
    nothing is flagged: low SNR is not a broken antenna."""
    bad = sorted((good_fraction[a], a) for a in bad_antennas(good_fraction, limit=limit, array_min=array_min))
    return [a for _, a in bad[: int(max_fraction * len(good_fraction))]]


def bad_antennas(good_fraction: Mapping[str, float], *, limit: float = 0.5, array_min: float = 0.8) -> list[str]:
    """Antennas whose phase solutions mostly fail (good fraction < ``limit``) while the array
    as a whole solves well (median >= ``array_min``), sorted by name; none otherwise. Low SNR
    fails every antenna alike and is not a broken antenna (tester s6-break2 G6: 2.5 mJy in
    30 s scans had 26 of 27 healthy antennas called bad, the solution-SNR estimate then used
    one antenna and skipped p0 with "estimated SNR 0.00"). Pure."""
    if not good_fraction:
        return []
    median = float(np.median(list(good_fraction.values())))
    if median < array_min:
        return []
    return sorted(a for a, f in good_fraction.items() if f < limit)


def solution_significance(gains: np.ndarray, snr: np.ndarray, flags: np.ndarray) -> dict[str, float]:
    """How far solutions stand above their own noise (pure numbers from a caltable).

    ``phase``: mean of (phase x SNR)^2 over unflagged, non-reference solutions: ~1 for pure
    noise at high SNR (a little more at SNR ~3), >> 1 when there are real phase errors to
    correct. ``amp``: mean of ((|g| / median|g| - 1) x SNR)^2 (~0.5 for pure noise with
    CASA's 'ap' SNR). A step whose corrections are consistent with noise can only add noise
    (and bias a faint source's peak upwards), however its image looks. ``snr_median``: the
    median SNR of every solution with a finite SNR, flagged ones included (minsnr failures
    count as low; selfcal.solint.MeasuredSNR).
    """
    g = np.asarray(gains).ravel()
    s = np.asarray(snr, dtype=float).ravel()
    finite_snr = s[np.isfinite(s)]
    ok = ~np.asarray(flags, dtype=bool).ravel() & np.isfinite(s) & (s > 0) & np.isfinite(g)
    g, s = g[ok], s[ok]
    ph = np.angle(g)
    nonref = np.abs(ph) > 1e-7
    out = {"n_solutions": float(ok.sum()), "phase": math.nan, "amp": math.nan,
           "snr_median": float(np.median(finite_snr)) if finite_snr.size else math.nan}
    if nonref.sum() >= 3:
        out["phase"] = float(np.mean((ph[nonref] * s[nonref]) ** 2))
    if g.size >= 3:
        amp = np.abs(g)
        med = float(np.median(amp))
        if med > 0:
            out["amp"] = float(np.mean(((amp / med - 1.0) * s) ** 2))
    return out


def amplitude_normalisation(calmode: str, enabled: bool, normtype: str = "median") -> dict[str, Any]:
    """gaincal's ``solnorm``/``normtype`` for a step of ``calmode`` ('p', 'a', 'ap').

    Amplitude steps normalise their solutions (``enabled``, median by default: robust to one
    antenna with a wild gain) so that per-antenna amplitude errors are corrected while the
    flux scale of the data stays put: without it, the solutions also absorb the model's
    flux deficit (CLEAN recovers less than the true flux) and the integrated flux moves by
    the mean gain (issue 14: ap1 reverted for "integrated flux changed -16.3%"). Phase-only
    steps never normalise (their amplitudes are 1 by construction).
    """
    amp = "a" in calmode
    return {"solnorm": bool(amp and enabled), "normtype": normtype if amp and enabled else "mean"}


# -- acceptance gate -----------------------------------------------------------------


def metric_noise(stats: Mapping[str, float]) -> dict[str, float]:
    """1-sigma uncertainty of an image's gate metrics from its own noise (pure numbers).

    ``rms_offsource`` / ``rms_near`` over N independent beams (``offsource_beams`` /
    ``near_beams``): ``rms / sqrt(2 (N - 1))``, the standard error of a standard deviation
    from N independent Gaussian samples (Kenney & Keeping 1951, *Mathematics of Statistics*
    II sec. 7.8), one sample per synthesised beam (Taylor, Carilli & Perley 1999, *Synthesis
    Imaging in Radio Astronomy II*, lecture 13). ``snr`` = peak / rms with the peak uncertain
    by one rms: ``snr * sqrt(1 / snr^2 + 1 / (2 (N - 1)))``. NaN when a count is missing.
    """
    out: dict[str, float] = {}
    for key, beams in (("rms_offsource", "offsource_beams"), ("rms_near", "near_beams")):
        v, n = float_or_nan(stats.get(key)), float_or_nan(stats.get(beams))
        out[key] = v / math.sqrt(2.0 * (n - 1.0)) if (math.isfinite(v) and n > 1) else math.nan
    snr, n = float_or_nan(stats.get("snr")), float_or_nan(stats.get("offsource_beams"))
    out["snr"] = (snr * math.sqrt(1.0 / snr**2 + 1.0 / (2.0 * (n - 1.0)))
                  if (math.isfinite(snr) and snr > 0 and n > 1) else math.nan)
    return out


#: Var(change of a mad_std scale estimate) = MAD_PAIRED * sigma * sigma_d / N for N independent
#: samples of noise sigma perturbed by an independent field of rms sigma_d << sigma: the sample
#: median of |x| moves only by the samples that cross it (Bahadur representation of a sample
#: quantile, Serfling 1980, *Approximation Theorems of Mathematical Statistics*, sec. 2.5):
#: crossings ~ N g E|d| with g = 2 phi(q) / sigma the density of |x| at q = 0.6745 sigma and
#: E|d| = sqrt(2 / pi) sigma_d, each moving the median by 1 / (N g); times 1.4826^2 (mad_std).
#: 1.4826^2 sqrt(2/pi) / (2 phi(0.6745)) = 2.76 (Monte Carlo check: tests/unit/test_paired_noise.py).
MAD_PAIRED = 1.4826**2 * math.sqrt(2.0 / math.pi) / (2.0 * math.exp(-0.6745**2 / 2) / math.sqrt(2 * math.pi))


def paired_metric_noise(pre: Mapping[str, float], post: Mapping[str, float],
                        difference: Mapping[str, float]) -> dict[str, float]:
    """1-sigma noise of the CHANGE of each gate metric between two images of the same
    visibilities (pure numbers), from the rms of their difference image.

    ``difference``: ``rms_offsource`` / ``rms_near`` = robust rms (Jy/beam) of (post - pre
    residual) in the off-source region / near-field ring (imaging.imstats.difference_statistics).
    Both images share the visibilities' thermal noise, which cancels in the difference: under
    "nothing changed but a noise-like field of rms sigma_d", the peak changes by sigma_d
    (the field at the peak pixel; the larger of the off-source and near-field sigma_d: the
    peak sits where the changes are largest), the off-source rms by the measured
    ``difference["rms_change_se"]`` (block standard error of the rms change on the two
    images themselves) or, without it and for the near-field rms, a mad_std rms R over N
    independent beams by ``sqrt(MAD_PAIRED R sigma_d / N)`` (:data:`MAD_PAIRED`: independent
    samples; smooth, beam-correlated images change less), and SNR = peak / R by
    ``snr sqrt((sigma_d / peak)^2 + (sigma_R / R)^2)`` (first-order propagation). Each value
    is capped at the independent-images value of :func:`improvement_z`'s fallback (the
    quadrature of :func:`metric_noise`): positively correlated images (shared noise) have
    Var(a - b) <= Var(a) + Var(b). NaN where a number is missing (the fallback then applies)."""
    sp, sq = metric_noise(pre), metric_noise(post)
    out: dict[str, float] = {}
    d_off = float_or_nan(difference.get("rms_offsource"))
    for key, beams in (("rms_offsource", "offsource_beams"), ("rms_near", "near_beams")):
        r, n = float_or_nan(pre.get(key)), float_or_nan(pre.get(beams))
        d = float_or_nan(difference.get(key))
        paired = math.sqrt(MAD_PAIRED * r * d / n) if (r > 0 and d >= 0 and n > 1) else math.nan
        se = float_or_nan(difference.get("rms_change_se")) if key == "rms_offsource" else math.nan
        out[key] = _capped(se if se > 0 else paired, math.hypot(sp[key], sq[key]))
    peak, snr = float_or_nan(pre.get("peak")), float_or_nan(pre.get("snr"))
    rel_r = out["rms_offsource"] / float_or_nan(pre.get("rms_offsource"))
    d_peak = max(d_off, float_or_nan(difference.get("rms_near")), key=lambda v: v if math.isfinite(v) else -1.0)
    paired = (snr * math.hypot(d_peak / peak, rel_r) if (peak > 0 and snr > 0 and d_peak >= 0) else math.nan)
    out["snr"] = _capped(paired, math.hypot(sp["snr"], sq["snr"]))
    return out


def _capped(paired: float, independent: float) -> float:
    if not math.isfinite(paired):
        return math.nan
    return min(paired, independent) if math.isfinite(independent) else paired


def improvement_z(pre: Mapping[str, float], post: Mapping[str, float],
                  difference: Mapping[str, float] | None = None) -> dict[str, float]:
    """Signed improvement of each gate metric in units of its noise (> 0 = better):
    ``snr`` (higher is better), ``rms_offsource`` and ``rms_near`` (lower is better).

    With ``difference`` (the rms of the post - pre difference image,
    :func:`paired_metric_noise`) the noise of the change is the paired one; without it, or
    where it is not measurable or zero, the two images' uncertainties are added in quadrature
    (conservative: they share the visibilities' noise)."""
    sp, sq = metric_noise(pre), metric_noise(post)
    pair = paired_metric_noise(pre, post, difference) if difference else {}
    out = {}
    for key, sign in (("snr", 1.0), ("rms_offsource", -1.0), ("rms_near", -1.0)):
        a, b = float_or_nan(pre.get(key)), float_or_nan(post.get(key))
        err = pair.get(key, math.nan)
        if not (math.isfinite(err) and err > 0):  # identical images: no change, z = 0
            err = math.hypot(sp[key], sq[key])
        out[key] = sign * (b - a) / err if (math.isfinite(a) and math.isfinite(b) and err > 0) else math.nan
    return out


@dataclass(frozen=True)
class GateDecision:
    """Accept or revert, with every reason and the numbers behind it."""

    accepted: bool
    reasons: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """All reasons joined ('' when accepted)."""
        return "; ".join(self.reasons)


def evaluate_step(
    pre: Mapping[str, float],
    post: Mapping[str, float],
    *,
    original_beam_area: float,
    solutions: SolutionStats | None,
    est_snr: float,
    cfg: GateConfig,
    amplitude: bool = False,
    exclude_antennas: set[str] | None = None,
    significance: Mapping[str, float] | None = None,
    normalised: bool = False,
    difference: Mapping[str, float] | None = None,
) -> GateDecision:
    """Compare the post-calibration image with the pre-calibration one (same settings).

    ``pre``/``post`` carry ``snr``, ``rms_offsource``, ``beam_area_pix`` and (for amplitude
    steps) ``total_flux_mask``. Keep the step only if SNR does not drop, rms does not rise by
    more than ``rms_tolerance`` (unless ``est_snr > high_snr``), the beam area stays within
    ``beam_tolerance`` of the original image's, the flagged-solution fraction is below
    ``max_flagged_solutions`` and no antenna loses more than ``max_antenna_loss`` of its
    solutions; amplitude steps must also keep the integrated flux within ``flux_tolerance``
    (with ``normalised`` gains -- gaincal solnorm -- only a drop counts: the amplitude scale
    cannot move, and a rise is coherence recovered by the solve's shorter-interval phases).
    With ``significance`` (from :func:`solution_significance`), the corrections must stand
    above their noise (``min_phase_significance`` / ``min_amp_significance``). With
    ``cfg.improve_sigma`` > 0 the image must also improve beyond the metrics' own noise
    (:func:`improvement_z`; for phase steps with ``difference``, the rms of the post - pre
    difference image, the paired noise of :func:`paired_metric_noise`: amplitude steps keep
    the independent-images noise, their corrections can raise a peak towards the model
    without improving the data, issue 18 G4): SNR up, or off-source or near-field rms down, by more than
    ``improve_sigma`` sigma; and the near-field rms must not rise beyond that and
    ``rms_tolerance`` (unless ``est_snr > high_snr``). Metrics without a beam count
    (``offsource_beams``/``near_beams``) are not tested.
    """
    reasons: list[str] = []
    m: dict[str, float] = {}
    z = improvement_z(pre, post, None if amplitude else difference)
    if difference and not amplitude:
        m["diff_rms_offsource"] = float_or_nan(difference.get("rms_offsource"))
    _check_snr_rms(pre, post, z, est_snr, cfg, reasons, m)
    if cfg.improve_sigma > 0:
        _check_improvement(pre, post, z, est_snr, cfg, reasons, m)
    beam_post = float_or_nan(post.get("beam_area_pix"))
    if original_beam_area > 0 and math.isfinite(beam_post):
        m["beam_change"] = beam_post / original_beam_area - 1
        if abs(m["beam_change"]) > cfg.beam_tolerance:
            reasons.append(f"beam area changed {100 * m['beam_change']:+.1f}% (> {100 * cfg.beam_tolerance:.0f}%)")
    if amplitude:
        _check_flux(pre, post, normalised, cfg, reasons, m)
    _check_solution_side(solutions, significance, cfg, amplitude, exclude_antennas, reasons, m)
    return GateDecision(accepted=not reasons, reasons=tuple(reasons), metrics=m)


def evaluate_solutions(solutions: SolutionStats | None, *, cfg: GateConfig, amplitude: bool = False,
                       exclude_antennas: set[str] | None = None,
                       significance: Mapping[str, float] | None = None) -> GateDecision:
    """The part of :func:`evaluate_step` that needs no image: significance of the corrections
    and the flagged solutions (same checks, same reasons, same order as there).

    When this rejects, :func:`evaluate_step` rejects too whatever the images show, and
    :func:`stops_ladder` gives the same answer (none of these reasons is "nothing gained"):
    the step's "after" image can be skipped without changing a decision (issue 16)."""
    reasons: list[str] = []
    m: dict[str, float] = {}
    _check_solution_side(solutions, significance, cfg, amplitude, exclude_antennas, reasons, m)
    return GateDecision(accepted=not reasons, reasons=tuple(reasons), metrics=m)


def _check_solution_side(solutions: SolutionStats | None, significance: Mapping[str, float] | None,
                         cfg: GateConfig, amplitude: bool, exclude: set[str] | None, reasons: list[str],
                         m: dict[str, float]) -> None:
    if significance is not None:
        key, limit = ("amp", cfg.min_amp_significance) if amplitude else ("phase", cfg.min_phase_significance)
        value = float_or_nan(significance.get(key))
        m[f"{key}_significance"] = value
        if limit > 0 and math.isfinite(value) and value < limit:
            reasons.append(f"{'amplitude' if amplitude else 'phase'} corrections consistent with noise "
                           f"(significance {value:.2f} < {limit:g})")
    if solutions is not None:
        _check_solutions(solutions.without(exclude or set()), cfg, reasons, m)


#: A fitted restoring beam narrower than this many pixels (FWHM) is a failed fit: a PSF
#: sampled at one pixel cannot show a narrower Gaussian (measured, issue 16: 1.0" cells at
#: X band, robust -0.5, PSF ~1.4 px: WSClean 3.1 fitted 0.17" and 0.12" to the two images of
#: one step, and the gate read a "-49% beam change").
MIN_BEAM_FWHM_PX = 1.0


def beam_measured(stats: Mapping[str, float]) -> bool:
    """Is the image's fitted restoring beam a measurement? ``stats``: ``bmaj_arcsec``,
    ``bmin_arcsec``, ``cell_arcsec`` (imaging.imstats). False when missing or when the minor
    axis FWHM is below :data:`MIN_BEAM_FWHM_PX` pixels."""
    bmaj = float(stats.get("bmaj_arcsec", math.nan) or math.nan)
    bmin = float(stats.get("bmin_arcsec", math.nan) or math.nan)
    cell = float(stats.get("cell_arcsec", math.nan) or math.nan)
    if not all(math.isfinite(v) for v in (bmaj, bmin, cell)) or cell <= 0:
        return False
    return min(bmaj, bmin) / cell >= MIN_BEAM_FWHM_PX


# Parts of evaluate_step: each appends its reasons and metrics (the order of the reasons is
# the order of the checks).

def _check_snr_rms(pre: Mapping[str, float], post: Mapping[str, float], z: Mapping[str, float], est_snr: float,
                   cfg: GateConfig, reasons: list[str], m: dict[str, float]) -> None:
    snr_pre, snr_post = float_or_nan(pre.get("snr")), float_or_nan(post.get("snr"))
    m["snr_ratio"] = snr_post / snr_pre if snr_pre > 0 else math.nan
    if not (math.isfinite(snr_post) and math.isfinite(snr_pre)):
        reasons.append("SNR not measurable")
    elif snr_post < snr_pre * cfg.snr_tolerance:
        # A decrease within the SNR's own noise is "nothing gained" (reported by
        # _check_improvement), not harm that stops the ladder (issue 14: decisions above noise).
        z_snr = z["snr"]
        if not math.isfinite(z_snr) or z_snr < -cfg.improve_sigma:
            reasons.append(f"SNR decreased {snr_pre:.1f} -> {snr_post:.1f}"
                           + (f" ({z_snr:+.1f} sigma)" if math.isfinite(z_snr) else ""))
    rms_pre, rms_post = float_or_nan(pre.get("rms_offsource")), float_or_nan(post.get("rms_offsource"))
    m["rms_ratio"] = rms_post / rms_pre if rms_pre > 0 else math.nan
    if math.isfinite(m["rms_ratio"]) and m["rms_ratio"] > 1 + cfg.rms_tolerance and est_snr <= cfg.high_snr:
        reasons.append(f"rms rose {100 * (m['rms_ratio'] - 1):.1f}% (> {100 * cfg.rms_tolerance:.0f}%)")


def _check_improvement(pre: Mapping[str, float], post: Mapping[str, float], z: Mapping[str, float],
                       est_snr: float, cfg: GateConfig, reasons: list[str], m: dict[str, float]) -> None:
    m.update({f"z_{k}": v for k, v in z.items()})
    finite = [v for v in z.values() if math.isfinite(v)]
    if finite and max(finite) <= cfg.improve_sigma:
        reasons.append(f"{NO_GAIN} {cfg.improve_sigma:g} sigma (SNR {z['snr']:+.1f}, rms "
                       f"{z['rms_offsource']:+.1f}, near-field rms {z['rms_near']:+.1f} sigma)")
    near_pre, near_post = float_or_nan(pre.get("rms_near")), float_or_nan(post.get("rms_near"))
    if (math.isfinite(z["rms_near"]) and z["rms_near"] < -cfg.improve_sigma and near_pre > 0
            and near_post / near_pre > 1 + cfg.rms_tolerance and est_snr <= cfg.high_snr):
        reasons.append(f"near-field rms rose {100 * (near_post / near_pre - 1):.1f}% "
                       f"({z['rms_near']:+.1f} sigma)")


def _check_flux(pre: Mapping[str, float], post: Mapping[str, float], normalised: bool, cfg: GateConfig,
                reasons: list[str], m: dict[str, float]) -> None:
    f_pre, f_post = float_or_nan(pre.get("total_flux_mask")), float_or_nan(post.get("total_flux_mask"))
    if f_pre > 0 and math.isfinite(f_post):
        m["flux_ratio"] = f_post / f_pre
        change = m["flux_ratio"] - 1
        if (-change if normalised else abs(change)) > cfg.flux_tolerance:
            reasons.append(f"integrated flux changed {100 * (m['flux_ratio'] - 1):+.1f}% "
                           f"(> {100 * cfg.flux_tolerance:.0f}%)")


def _check_solutions(sol: SolutionStats, cfg: GateConfig, reasons: list[str], m: dict[str, float]) -> None:
    m["flagged_solutions"] = sol.flagged_fraction
    if sol.flagged_fraction > cfg.max_flagged_solutions:
        reasons.append(f"{100 * sol.flagged_fraction:.0f}% of solutions flagged "
                       f"(> {100 * cfg.max_flagged_solutions:.0f}%)")
    losses = sol.antenna_loss()
    worst = max(losses.items(), key=lambda kv: kv[1], default=None)
    if worst is not None:
        m["worst_antenna_loss"] = worst[1]
        if worst[1] > cfg.max_antenna_loss:
            reasons.append(f"antenna {worst[0]} lost {100 * worst[1]:.0f}% of its solutions")


NO_GAIN = "no improvement beyond"


def stops_ladder(decision: GateDecision) -> bool:
    """Does a rejected phase step stop the phase ladder? Not when its only fault is gaining
    nothing beyond the noise (e.g. p1 re-solving p0's interval per spectral window): the next,
    shorter interval may still correct faster phases (measured: stopping there left 10 %
    amplitude-error data at p0 only, peak 13 % low). Any sign of harm (SNR drop, rms rise,
    noise-like solutions, flagged solutions) stops it."""
    return not decision.accepted and not all(r.startswith(NO_GAIN) for r in decision.reasons)


# -- solution intervals: selfcal.solint (re-exported for existing callers) ---------------

from selfcal_batch.selfcal.solint import (  # noqa: E402,F401
    SolintChoice,
    choose_solint,
    estimate_solution_snr,
    extension_solints,
    format_solint,
    solint_seconds,
    worth_extending,
)
