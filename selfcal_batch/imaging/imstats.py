"""Image statistics of WSClean FITS products, computed once per image.

``image_statistics(image, residual=None, sigma=6.0)`` reads each FITS file exactly once and
returns a flat dict whose keys are :data:`STAT_COLUMNS` (in that order). Everything is
NaN-safe: an all-zero or all-NaN image returns NaNs (and ``n_finite``), never raises.

Definitions (σ_img = astropy ``mad_std`` of the finite image pixels; A_b = beam area in
pixels = π·bmaj·bmin / (4 ln 2) / cell²):

* flux mask: ``image >= sigma·σ_img`` dilated 2 iterations with a disk of radius
  ``int(sqrt(bmaj·bmin) / (2·cell))`` px (half the beam FWHM; 5 px when there is no beam).
  If σ_img is not positive and finite there is no mask and every mask-based value is NaN.
* ``total_flux_mask`` = Σ(image·mask)/A_b (Jy) -- used for template selection.
* ``inner/mid/low/uncertain_flux`` = Σ(pixels of the band inside the mask)/A_b with the
  disjoint bands inner ≥ 0.1·peak; mid 10σ..0.1·peak; low 6σ..min(10σ, 0.1·peak);
  uncertain 3σ..min(6σ, 0.1·peak). ``total_flux`` is their sum (= masked pixels ≥ 3σ or
  ≥ 0.1·peak) and ``*_f`` are fractions of it (NaN when total_flux is not > 0).
* ``peak`` = maximum inside the mask (image maximum when the mask is empty), at
  ``peak_x``/``peak_y`` (0-based numpy column/row), ``peak_ra_deg``/``peak_dec_deg``.
* ``rms_box`` = sqrt(mean(x²)) in the corner box x 2-12 % of the width, y 88-98 % of the
  height (as the seed's imstat 'rms'); ``rms_im`` = sqrt(mean(x²)) of the whole image.
* ``rms_offsource`` = ``mad_std`` of the residual (of the image when no residual is given)
  outside the flux mask. This robust noise is what the acceptance gate uses.
* ``offsource_beams`` = independent beams in that off-source region (pixels / A_b): the
  gate's noise of ``rms_offsource`` is rms / sqrt(2 offsource_beams).
* ``rms_near`` = ``mad_std`` of the residual in the near field: the ring within
  :data:`NEAR_FIELD_BEAMS` beam FWHMs of the flux mask (auto_selfcal's near-field noise,
  where calibration artefacts are strongest), ``near_beams`` its independent beams; NaN
  without a mask.
* ``snr`` = peak / rms_offsource: the peak over the robust off-source noise (what the gate
  and the detection test use).
* ``dynamic_range`` = peak / ``rms_residual``: the peak over the rms of the whole residual
  image, artefacts near the source included (so DR <= SNR; it rises when calibration
  removes artefacts that the robust off-source noise ignores). NaN without a residual.
  (Before issue 20 both names held peak / rms_offsource.) ``snr_seed`` = flux_im/rms_box
  with flux_im = Σ image / A_b, the seed's (poorly defined) value, kept for comparison.
* ``DR_pk_rmsbox`` = max_im/rms_box, ``DR_pk_rmsim`` = max_im/rms_im.
* ``rms_residual`` = std of the residual (about its mean) over the whole image, ``mad_std_residual``;
  ``flux_residual`` = Σ(residual·mask)/A_b; ``flux_error`` is the seed's
  ``flux_error_res_3`` implemented literally:
  sqrt((0.05·total_flux_mask)² + (mad_std_residual/A_b)² + flux_residual²).
  Without a residual these four are NaN.
* ``number_of_beams`` = (#pixels ≥ 3σ_img)/A_b; ``C50radii``/``C95radii`` = radius (px)
  around the peak enclosing 50 %/95 % of the masked flux (cumulative growth curve).
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy import ndimage

log = logging.getLogger(__name__)

#: Ordered keys of the dict returned by :func:`image_statistics`.
STAT_COLUMNS: list[str] = [
    "n_pix", "n_finite", "stat_sigma", "bunit",
    "mad_std_im", "max_im", "min_im", "rms_im", "rms_box",
    "peak", "peak_x", "peak_y", "peak_ra_deg", "peak_dec_deg",
    "rms_offsource", "snr", "dynamic_range", "snr_seed", "DR_pk_rmsbox", "DR_pk_rmsim",
    "flux_im", "total_flux_mask", "total_flux",
    "inner_flux", "mid_flux", "low_flux", "uncertain_flux",
    "inner_flux_f", "mid_flux_f", "low_flux_f", "uncertain_flux_f",
    "rms_residual", "mad_std_residual", "flux_residual", "flux_error",
    "number_of_beams", "mask_npix", "C50radii", "C95radii",
    "bmaj_arcsec", "bmin_arcsec", "bpa_deg", "beam_area_pix", "cell_arcsec", "freq_hz",
    "offsource_beams", "rms_near", "near_beams",
]

_NAN = float("nan")
_FWHM_AREA = math.pi / (4.0 * math.log(2.0))
_FALLBACK_DILATION_PX = 5
#: Width of the near-field ring (``rms_near``) around the flux mask, in beam FWHMs.
NEAR_FIELD_BEAMS = 3.0


# --------------------------------------------------------------------------- reading
def read_image(path: str | Path, nan_to_zero: bool = True) -> tuple[np.ndarray, fits.Header]:
    """Read the first image HDU of a FITS file as a 2-D float64 array plus its header.

    Degenerate leading axes (Stokes, frequency) are dropped; for a real cube the first plane
    is taken (with a warning). With ``nan_to_zero`` (default) non-finite pixels become 0.0 so
    sums and plots are well defined; pass ``False`` to keep NaNs (``image_statistics`` does,
    and restricts every statistic to the finite pixels). The header is returned unchanged
    (still N-D, e.g. NAXIS=4), so it can be copied into masks that WSClean accepts.
    """
    with fits.open(path, memmap=False) as hdul:
        hdu = next((h for h in hdul if h.data is not None and h.is_image), None)
        if hdu is None:
            raise ValueError(f"{path}: no image data in FITS file")
        data = np.asarray(hdu.data)
        header = hdu.header.copy()
    if data.ndim < 2:
        raise ValueError(f"{path}: image has {data.ndim} dimension(s), need 2")
    if data.ndim > 2:
        if any(n > 1 for n in data.shape[:-2]):
            log.warning("%s: shape %s is a cube; using the first plane", path, data.shape)
        data = data[(0,) * (data.ndim - 2)]
    img = np.array(data, dtype=np.float64)
    if nan_to_zero:
        img[~np.isfinite(img)] = 0.0
    return img, header


# --------------------------------------------------------------------------- header helpers
def _celestial_wcs(header: fits.Header) -> WCS | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header).celestial
    except Exception as exc:  # malformed WCS: report NaN coordinates, never fail
        log.debug("no usable celestial WCS: %s", exc)
        return None
    return wcs if wcs.naxis == 2 else None


def cell_size_deg(header: fits.Header) -> float:
    """Pixel size in degrees (geometric mean of the two celestial axes); NaN if unknown."""
    wcs = _celestial_wcs(header)
    if wcs is not None:
        try:
            scales = np.abs(proj_plane_pixel_scales(wcs))
            cell = float(np.sqrt(scales[0] * scales[1]))
            if np.isfinite(cell) and cell > 0:
                return cell
        except Exception as exc:  # degenerate matrix
            log.debug("pixel scale from WCS failed: %s", exc)
    for key in ("CDELT2", "CDELT1"):
        if key in header and float(header[key]) != 0:
            return abs(float(header[key]))
    return _NAN


def beam_info(header: fits.Header) -> dict[str, float]:
    """Restoring beam and cell from the header: bmaj/bmin/cell in arcsec, bpa in degrees."""
    def _get(key: str) -> float:
        try:
            v = float(header[key])
        except (KeyError, TypeError, ValueError):
            return _NAN
        return v if np.isfinite(v) else _NAN

    bmaj, bmin = _get("BMAJ"), _get("BMIN")
    return {
        "bmaj_arcsec": bmaj * 3600.0 if bmaj > 0 else _NAN,
        "bmin_arcsec": bmin * 3600.0 if bmin > 0 else _NAN,
        "bpa_deg": _get("BPA"),
        "cell_arcsec": cell_size_deg(header) * 3600.0,
    }


def beam_area_pixels(header: fits.Header) -> float:
    """Beam area in pixels, π·bmaj·bmin/(4 ln 2)/cell²; NaN when BMAJ/BMIN/cell are missing."""
    b = beam_info(header)
    area = _FWHM_AREA * b["bmaj_arcsec"] * b["bmin_arcsec"] / b["cell_arcsec"] ** 2
    return float(area) if np.isfinite(area) and area > 0 else _NAN


def frequency_hz(header: fits.Header) -> float:
    """CRVAL of the FREQ axis, NaN when the image has none."""
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        if str(header.get(f"CTYPE{i}", "")).upper().startswith("FREQ"):
            try:
                return float(header[f"CRVAL{i}"])
            except (KeyError, TypeError, ValueError):
                return _NAN
    return _NAN


def dilation_radius_px(header: fits.Header) -> int:
    """Half the beam FWHM in pixels, int(sqrt(bmaj·bmin)/(2·cell)), at least 1; 5 if unknown."""
    b = beam_info(header)
    r = math.sqrt(b["bmaj_arcsec"] * b["bmin_arcsec"]) / (2.0 * b["cell_arcsec"])
    if not np.isfinite(r):
        return _FALLBACK_DILATION_PX
    return max(int(r), 1)


# --------------------------------------------------------------------------- morphology
def disk_structure(radius: int) -> np.ndarray:
    """Boolean disk of the given pixel radius (shape (2r+1, 2r+1))."""
    r = max(int(radius), 0)
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y) <= r * r


def binary_dilate(mask: np.ndarray, structure: np.ndarray, iterations: int) -> np.ndarray:
    """``scipy.ndimage.binary_dilation`` restricted to the mask's padded bounding box.

    Identical result to dilating the whole image (pixels beyond the padding cannot be
    reached), much faster for compact masks. ``iterations <= 0`` returns a copy (scipy
    would instead iterate until nothing changes).
    """
    mask = np.asarray(mask, dtype=bool)
    if iterations <= 0 or not mask.any():
        return mask.copy()
    reach = max(structure.shape) // 2 * int(iterations) + 1
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    r0, r1 = max(rows[0] - reach, 0), min(rows[-1] + reach + 1, mask.shape[0])
    c0, c1 = max(cols[0] - reach, 0), min(cols[-1] + reach + 1, mask.shape[1])
    out = np.zeros_like(mask)
    out[r0:r1, c0:c1] = ndimage.binary_dilation(
        mask[r0:r1, c0:c1], structure=structure, iterations=int(iterations))
    return out


def flux_mask(img: np.ndarray, header: fits.Header, sigma: float,
              noise: float) -> np.ndarray | None:
    """``img >= sigma·noise`` dilated twice with the half-beam disk; None if noise invalid."""
    if not (np.isfinite(noise) and noise > 0):
        return None
    with np.errstate(invalid="ignore"):
        seed = img >= sigma * noise
    return binary_dilate(seed, disk_structure(dilation_radius_px(header)), 2)


# --------------------------------------------------------------------------- statistics
def _div(a: float, b: float) -> float:
    """a/b, NaN when either is non-finite or b == 0."""
    if not (np.isfinite(a) and np.isfinite(b)) or b == 0:
        return _NAN
    return float(a) / float(b)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else _NAN


def _rms_box(img: np.ndarray) -> float:
    ny, nx = img.shape
    x0, y0 = int(0.02 * nx), int(0.88 * ny)
    x1, y1 = max(int(0.12 * nx), x0 + 1), max(int(0.98 * ny), y0 + 1)
    box = img[y0:y1, x0:x1]
    return _rms(box[np.isfinite(box)])


def growth_radii(weights: np.ndarray, mask: np.ndarray, x0: float, y0: float,
                 fractions: tuple[float, ...] = (0.5, 0.95)) -> list[float]:
    """Radii (px) around (x0, y0) enclosing each fraction of Σ weights[mask] (NaN if ≤ 0)."""
    yy, xx = np.nonzero(mask)
    if yy.size == 0:
        return [_NAN] * len(fractions)
    w = weights[yy, xx]
    d = np.hypot(xx - x0, yy - y0)
    order = np.argsort(d, kind="stable")
    cum = np.cumsum(w[order])
    total = cum[-1]
    if not (np.isfinite(total) and total > 0):
        return [_NAN] * len(fractions)
    return [float(d[order][int(np.argmax(cum >= f * total))]) for f in fractions]


def array_statistics(data: np.ndarray, header: fits.Header,
                     residual: np.ndarray | None = None, sigma: float = 6.0) -> dict[str, Any]:
    """The statistics of :func:`image_statistics` for arrays already in memory (NaNs allowed)."""
    img = np.asarray(data, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {img.shape}")
    if residual is not None:
        residual = np.asarray(residual, dtype=np.float64)
        if residual.shape != img.shape:
            raise ValueError(f"residual shape {residual.shape} != image shape {img.shape}")

    out: dict[str, Any] = dict.fromkeys(STAT_COLUMNS, _NAN)
    finite = np.isfinite(img)
    n_finite = int(finite.sum())
    area = beam_area_pixels(header)
    out.update(beam_info(header))
    out.update(n_pix=int(img.size), n_finite=n_finite, stat_sigma=float(sigma),
               bunit=str(header.get("BUNIT", "")).strip(), beam_area_pix=area,
               freq_hz=frequency_hz(header))
    if n_finite == 0:
        log.warning("image has no finite pixels; statistics are NaN")
        return out

    z = np.where(finite, img, 0.0)
    vals = img[finite]
    sig = float(mad_std(vals))
    max_im = float(vals.max())
    rms_im, rms_box = _rms(vals), _rms_box(img)
    flux_im = float(z.sum()) / area
    out.update(mad_std_im=sig, max_im=max_im, min_im=float(vals.min()), rms_im=rms_im,
               rms_box=rms_box, flux_im=flux_im, snr_seed=_div(flux_im, rms_box),
               DR_pk_rmsbox=_div(max_im, rms_box), DR_pk_rmsim=_div(max_im, rms_im))

    mask = flux_mask(z, header, sigma, sig)
    if mask is not None:
        mask &= finite
    if mask is not None and mask.any():
        ipk = int(np.argmax(np.where(mask, z, -np.inf)))
    else:
        ipk = int(np.argmax(np.where(finite, img, -np.inf)))
    py, px = np.unravel_index(ipk, img.shape)
    peak = float(img[py, px])
    out.update(peak=peak, peak_x=int(px), peak_y=int(py))
    wcs = _celestial_wcs(header)
    if wcs is not None:
        try:
            ra, dec = wcs.pixel_to_world_values(float(px), float(py))
            out.update(peak_ra_deg=float(ra), peak_dec_deg=float(dec))
        except Exception as exc:  # projection failure: leave NaN
            log.debug("pixel_to_world failed: %s", exc)

    # Off-source robust noise (gate input).
    src = residual if residual is not None else img
    off_sel = np.isfinite(src) if mask is None else np.isfinite(src) & ~mask
    off = src[off_sel]
    rms_off = float(mad_std(off)) if off.size else _NAN
    out.update(rms_offsource=rms_off, snr=_div(peak, rms_off),
               offsource_beams=float(off.size) / area if area > 0 else _NAN)
    if mask is not None and mask.any():
        fwhm_px = 2.0 * dilation_radius_px(header)  # the beam FWHM in pixels (radius = half)
        r = max(1, int(round(NEAR_FIELD_BEAMS * fwhm_px)))
        ring = binary_dilate(mask, disk_structure(r), 1) & ~mask & np.isfinite(src)
        if ring.any():
            out.update(rms_near=float(mad_std(src[ring])), near_beams=float(ring.sum()) / area)

    if mask is not None:
        tfm = float(np.sum(z, where=mask)) / area
        ip, t3, t6, t10 = 0.1 * peak, 3 * sig, 6 * sig, 10 * sig
        bands = {
            "inner_flux": z >= ip,
            "mid_flux": (z >= t10) & (z < ip),
            "low_flux": (z >= t6) & (z < min(t10, ip)),
            "uncertain_flux": (z >= t3) & (z < min(t6, ip)),
        }
        fluxes = {k: float(np.sum(z, where=mask & sel)) / area for k, sel in bands.items()}
        total = float(sum(fluxes.values()))
        out.update(fluxes)
        for k, v in fluxes.items():
            out[f"{k}_f"] = v / total if np.isfinite(total) and total > 0 else _NAN
        r50, r95 = growth_radii(z, mask, px, py)
        out.update(total_flux_mask=tfm, total_flux=total, mask_npix=int(mask.sum()),
                   number_of_beams=int(np.count_nonzero(z >= t3)) / area,
                   C50radii=r50, C95radii=r95)

    if residual is not None:
        rfin = np.isfinite(residual)
        rvals = residual[rfin]
        if rvals.size:
            rz = np.where(rfin, residual, 0.0)
            mad_res = float(mad_std(rvals))
            rms_res = float(np.std(rvals))
            out.update(rms_residual=rms_res, mad_std_residual=mad_res,
                       dynamic_range=_div(peak, rms_res))
            if mask is not None:
                fres = float(np.sum(rz, where=mask)) / area
                ferr = math.sqrt((0.05 * out["total_flux_mask"]) ** 2
                                 + (mad_res / area) ** 2 + fres ** 2)
                out.update(flux_residual=fres, flux_error=ferr)
    return out


def image_statistics(image: str | Path, residual: str | Path | None = None,
                     sigma: float = 6.0) -> dict[str, Any]:
    """Statistics of a restored image (and optional residual); keys are :data:`STAT_COLUMNS`.

    Each FITS file is read once. See the module docstring for every definition.
    """
    img, header = read_image(image, nan_to_zero=False)
    res = read_image(residual, nan_to_zero=False)[0] if residual is not None else None
    stats = array_statistics(img, header, res, sigma=sigma)
    log.debug("stats %s: peak=%.4g rms_off=%.3g snr=%.1f", image, stats["peak"],
              stats["rms_offsource"], stats["snr"])
    return stats


#: Header keys that must agree for two images to be on the same grid (pixel by pixel).
_GRID_KEYS = ("NAXIS1", "NAXIS2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CDELT1", "CDELT2")


def difference_statistics(pre_image: str | Path, pre_residual: str | Path, post_image: str | Path,
                          post_residual: str | Path, sigma: float = 6.0) -> dict[str, float]:
    """Robust rms (Jy/beam) of the difference of two residual images of the same field and
    grid (post - pre): ``rms_offsource`` outside both images' flux masks (the mask of
    :func:`array_statistics` at ``sigma``), ``rms_near`` in the near-field ring around them
    (:data:`NEAR_FIELD_BEAMS`), with ``offsource_beams`` / ``near_beams``; ``rms_change_se``:
    standard error of the change of the off-source rms (:func:`_change_blocks`). The acceptance
    gate's paired noise (selfcal.acceptance.paired_metric_noise) comes from these. Empty dict
    when the grids differ (shape or WCS keys) or a file cannot be read."""
    try:
        (a, ha), (b, hb) = read_image(pre_image, nan_to_zero=False), read_image(post_image, nan_to_zero=False)
        ra, rb = read_image(pre_residual, nan_to_zero=False)[0], read_image(post_residual, nan_to_zero=False)[0]
    except (OSError, ValueError) as exc:
        log.debug("no difference image: %s", exc)
        return {}
    if not (a.shape == b.shape == ra.shape == rb.shape) or any(ha.get(k) != hb.get(k) for k in _GRID_KEYS):
        return {}
    area = beam_area_pixels(ha)
    masks = []
    for img in (a, b):
        fin = np.isfinite(img)
        m = flux_mask(np.where(fin, img, 0.0), ha, sigma, float(mad_std(img[fin])) if fin.any() else _NAN)
        masks.append(np.zeros(a.shape, dtype=bool) if m is None else m)
    src = masks[0] | masks[1]
    d = rb - ra
    fin = np.isfinite(d)
    off = fin & ~src
    out: dict[str, float] = {}
    if off.any():
        out.update(rms_offsource=float(mad_std(d[off])), offsource_beams=float(off.sum()) / area)
        out.update(_change_blocks(ra, rb, off))
    if src.any():
        r = max(1, int(round(NEAR_FIELD_BEAMS * 2.0 * dilation_radius_px(ha))))
        ring = binary_dilate(src, disk_structure(r), 1) & off
        if ring.any():
            out.update(rms_near=float(mad_std(d[ring])), near_beams=float(ring.sum()) / area)
    return out


#: Blocks per image side for the standard error of an rms change (:func:`_change_blocks`).
CHANGE_BLOCKS = 4


def _change_blocks(pre: np.ndarray, post: np.ndarray, region: np.ndarray) -> dict[str, float]:
    """Standard error (Jy/beam) of mad_std(post) - mad_std(pre) over ``region`` from
    non-overlapping blocks (:data:`CHANGE_BLOCKS` per side): std of the per-block changes /
    sqrt(blocks), the subseries estimate of a statistic's variance for correlated data
    (Carlstein 1986, Annals of Statistics 14, 1171). It measures what the noise shared by the
    two images leaves of the change (measured, issue 18: 1.2-1.4 % of the rms for a 30 s
    re-solve, where independent images would give 4.2 %), beam correlation and the estimator's
    own behaviour included. Blocks less than a quarter inside ``region`` are left out; {} with
    fewer than 4 blocks."""
    ny, nx = region.shape
    ys = np.linspace(0, ny, CHANGE_BLOCKS + 1).astype(int)
    xs = np.linspace(0, nx, CHANGE_BLOCKS + 1).astype(int)
    changes = []
    for y0, y1 in zip(ys[:-1], ys[1:], strict=True):
        for x0, x1 in zip(xs[:-1], xs[1:], strict=True):
            sel = region[y0:y1, x0:x1] & np.isfinite(pre[y0:y1, x0:x1]) & np.isfinite(post[y0:y1, x0:x1])
            if sel.sum() >= 0.25 * sel.size and sel.sum() > 1:
                changes.append(float(mad_std(post[y0:y1, x0:x1][sel]) - mad_std(pre[y0:y1, x0:x1][sel])))
    if len(changes) < 4:
        return {}
    return {"rms_change_se": float(np.std(changes, ddof=1) / math.sqrt(len(changes))),
            "change_blocks": float(len(changes))}
