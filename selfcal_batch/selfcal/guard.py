"""The final guard: is the self-calibrated image better than the uncalibrated one, beyond noise?

Pure numbers only (numpy arrays in, decisions out); nothing here runs a program or reads a
file. :func:`image_metrics` measures artefact-resistant quantities of one image in FIXED
regions (the same pixels for the "before" and "after" images), each with its 1-sigma
uncertainty; :func:`judge` compares two such measurements.

Noise of each metric (sigma_n = residual rms of the region, A_b = beam area in pixels,
N = n_pix / A_b independent beams in the region):

* rms of a region: ``rms / sqrt(2 (N - 1))`` -- the standard error of a standard deviation
  estimated from N independent Gaussian samples (e.g. Kenney & Keeping 1951, *Mathematics
  of Statistics* II, sec. 7.8; Taylor, Carilli & Perley 1999, *Synthesis Imaging in Radio
  Astronomy II*, ASP Conf. Ser. 180, lecture 13: one independent sample per synthesised
  beam, the convention also used by Condon 1997, PASP 109, 166 for correlated image noise).
* peak: ``rms_near`` (one pixel of the restored image carries the local noise);
* integrated flux over a region of N_m beams: ``rms_near * sqrt(N_m)`` (the sum of
  correlated noise over the region divided by A_b);
* most negative pixel: ``rms_far`` (the extreme of the noise moves by about one sigma).

The "before" and "after" images are made from the same visibilities (same noise
realisation), so their noise is positively correlated and the difference is known better
than ``sqrt(s_a^2 + s_b^2)``: treating them as independent is conservative, i.e. a change
must be larger to count -- in either direction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

#: metric -> +1 when larger is better, -1 when smaller is better.
BETTER = {"rms_far": -1, "rms_near": -1, "peak": +1, "min_pixel": +1, "flux": +1}


@dataclass(frozen=True)
class GuardDecision:
    """Deliver the self-calibrated data, or the input unchanged, with the reasons."""

    deliver: bool
    reasons: tuple[str, ...] = ()
    #: metric -> (before, after, z) with z = signed improvement in sigma (> 0 = better).
    changes: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def _mad_std(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan
    return float(1.482602218505602 * np.median(np.abs(x - np.median(x))))


def _dilate(mask: np.ndarray, radius_px: float) -> np.ndarray:
    from scipy import ndimage  # lazy: heavy library, only on this path

    r = max(1, int(math.ceil(radius_px)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ndimage.binary_dilation(mask, structure=(xx * xx + yy * yy) <= r * r)


def regions(shape: tuple[int, int], source_mask: np.ndarray, beam_fwhm_px: float,
            near_beams: float = 3.0, flux_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Fixed comparison regions of an image of ``shape`` (ny, nx), boolean arrays:

    ``source``: the source mask (union of the before/after emission masks);
    ``near``: the ring within ``near_beams`` beam FWHMs of the source (auto_selfcal's
    near-field, where calibration artefacts are strongest); ``far``: the annulus 0.15-0.45 of
    the image size from its centre outside both (the image edge is avoided). With an empty
    source mask the near region is a disc of ``near_beams`` FWHMs around the centre.
    ``flux`` (when ``flux_mask`` is given): the pixels the integrated flux is summed over in
    both images -- the calibrated ("after") image's own emission mask. Emission the
    uncalibrated image shows only outside it is calibration artefacts (phase errors scatter
    flux into sidelobes that CLEAN then models: measured, 40-80 deg phase errors put 0.04-0.9 Jy
    of such "flux" in the union mask), not flux the calibration could have lost; a flux-scale
    change or a partly suppressed source still shows inside the calibrated image's mask.
    """
    ny, nx = shape
    src = np.asarray(source_mask, dtype=bool)
    yy, xx = np.mgrid[0:ny, 0:nx]
    r = np.hypot(yy - (ny - 1) / 2.0, xx - (nx - 1) / 2.0) / min(nx, ny)
    if src.any():
        near = _dilate(src, near_beams * beam_fwhm_px) & ~src
    else:
        near = r * min(nx, ny) <= near_beams * beam_fwhm_px
    far = (r >= 0.15) & (r <= 0.45) & ~near & ~src
    out = {"source": src, "near": near, "far": far}
    if flux_mask is not None:
        out["flux"] = np.asarray(flux_mask, dtype=bool)
    return out


def image_metrics(image: np.ndarray, residual: np.ndarray, beam_area_pix: float,
                  reg: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """metric -> (value, 1-sigma uncertainty) of one restored image and its residual (Jy/beam,
    2-D arrays of the same shape) in the regions of :func:`regions`. Metrics: ``rms_far``,
    ``rms_near`` (robust rms of the residual), ``peak`` (maximum in the source region, else
    the near region), ``flux`` (sum over the source region / beam area, Jy), ``min_pixel``
    (most negative pixel of the image within the far annulus and the near ring). NaN
    values when a region is empty."""
    img = np.asarray(image, dtype=float)
    res = np.asarray(residual, dtype=float)
    if img.shape != res.shape:
        raise ValueError(f"image {img.shape} and residual {res.shape} differ in shape")
    a_b = float(beam_area_pix) if beam_area_pix and beam_area_pix > 0 else 1.0
    out: dict[str, tuple[float, float]] = {}
    for name in ("far", "near"):
        sel = reg[name]
        n_beams = sel.sum() / a_b
        rms = _mad_std(res[sel]) if sel.any() else math.nan
        out[f"rms_{name}"] = (rms, rms / math.sqrt(2.0 * max(n_beams - 1.0, 1.0)) if math.isfinite(rms) else math.nan)
    noise_near = out["rms_near"][0] if math.isfinite(out["rms_near"][0]) else out["rms_far"][0]
    noise_far = out["rms_far"][0] if math.isfinite(out["rms_far"][0]) else noise_near
    src = reg["source"] if reg["source"].any() else reg["near"]
    peak = float(np.nanmax(img[src])) if src.any() else math.nan
    out["peak"] = (peak, noise_near)
    fsel = reg.get("flux", reg["source"])
    if fsel.any():
        flux = float(np.nansum(img[fsel])) / a_b
        out["flux"] = (flux, noise_near * math.sqrt(max(fsel.sum() / a_b, 1.0)))
    else:
        out["flux"] = (math.nan, math.nan)
    ring = reg["far"] | reg["near"]
    out["min_pixel"] = (float(np.nanmin(img[ring])) if ring.any() else math.nan, noise_far)
    return out


def judge(before: Mapping[str, tuple[float, float]], after: Mapping[str, tuple[float, float]], *,
          sigma: float = 3.0, tolerance: float = 0.03, amplitude: bool = True) -> GuardDecision:
    """Deliver the calibrated data only when it is better beyond the noise and nowhere worse.

    For each metric of :data:`BETTER`: ``z = sign * (after - before) / sqrt(s_b^2 + s_a^2)``.
    Better: some metric with ``z > sigma`` (the flux is not counted as an improvement:
    a larger CLEAN flux is not by itself a better image). Worse: some metric with
    ``z < -sigma``; for the peak and the flux a drop must also exceed ``tolerance`` (a
    fraction) to count, so a sub-per-cent flux-scale shift of a bright source is not called
    harm. Missing (NaN) metrics are ignored. No metric at all -> not delivered.

    ``amplitude``: the chain holds an amplitude step. Without one, a flux drop is recorded but
    does not count as worse: phase-only gains have unit amplitude (|g_i g_j*| = 1) and cannot
    change the flux scale, while the uncalibrated image's CLEAN flux is not a measurement of
    the source's (decorrelation lowers it, modelled artefacts raise it).
    """
    changes: dict[str, tuple[float, float, float]] = {}
    better, worse = [], []
    for name, sign in BETTER.items():
        b, sb = before.get(name, (math.nan, math.nan))
        a, sa = after.get(name, (math.nan, math.nan))
        if not all(math.isfinite(v) for v in (b, a, sb, sa)):
            continue
        err = math.hypot(sb, sa)
        if err <= 0:
            continue
        z = sign * (a - b) / err
        changes[name] = (b, a, z)
        frac = (a - b) / abs(b) if b else math.inf
        if z > sigma and name != "flux":
            better.append(f"{name} {b:.4g} -> {a:.4g} ({z:+.1f} sigma)")
        if name == "flux" and not amplitude:
            continue
        if z < -sigma and (name not in ("peak", "flux") or -frac > tolerance):
            worse.append(f"{name} {b:.4g} -> {a:.4g} ({z:+.1f} sigma)")
    if not changes:
        return GuardDecision(False, ("no metric measurable in both images",), changes)
    if worse:
        return GuardDecision(False, tuple(f"worse: {w}" for w in worse), changes)
    if not better:
        return GuardDecision(False, (f"no metric improved beyond {sigma:g} sigma",), changes)
    return GuardDecision(True, tuple(f"better: {b}" for b in better), changes)
