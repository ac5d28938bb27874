"""Clean masks for WSClean ``-fits-mask`` (the seed's ``create_mask``, bugs fixed).

Algorithm of :func:`make_clean_mask`:

1. σ = ``mad_std`` of the finite image pixels (or the given ``rms``). Start at
   ``sigma = sigma_mask``; while ``image >= sigma·σ`` is empty lower sigma by ``step``,
   never below ``min_sigma`` (the last level tried is exactly ``min_sigma``).
2. If nothing is found even at ``min_sigma`` the mask is empty: no file is written (a stale
   file at ``out_path`` is removed) and ``MaskResult.empty`` is True -- the caller images
   without a FITS mask.
3. Otherwise the final mask is ``image >= (found_sigma - 1)·σ`` dilated ``grow_iterations``
   times with the 3x3 cross, written as float32 1/0 with the image's full header (same
   N-D shape, e.g. (1, 1, ny, nx)), atomically (temporary file, then rename).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from scipy import ndimage

from selfcal_batch.imaging.imstats import binary_dilate, read_image
from selfcal_batch.pipeline.registry import mask_row
from selfcal_batch.fileio import atomic_write

log = logging.getLogger(__name__)

#: 3x3 cross (radius-1) structuring element used to grow clean masks.
CROSS = ndimage.generate_binary_structure(2, 1)

# (compact, extended) iterations per step; for p2-like steps and ap1 the value depends on
# whether the template is 'bright': ((compact_bright, compact_other),
#                                     (extended_bright, extended_other)).
_P0 = (4, 8)
_P1 = (6, 12)
_P2 = ((10, 2), (15, 3))
_AP1 = ((10, 6), (15, 12))


@dataclass(frozen=True)
class MaskResult:
    """Outcome of :func:`make_clean_mask`.

    ``path`` is None when the mask is empty; ``sigma_used`` is the level (in σ) at which
    emission was found (the written mask is thresholded at ``sigma_used - 1``, or it is the
    last level tried when empty); ``npix`` counts mask pixels after growth.
    """

    path: Path | None
    sigma_used: float
    npix: int
    empty: bool


def grow_iterations(step: str, inner_flux_f: float, template: str) -> int:
    """Number of cross dilations of the clean mask for a step (seed table).

    Compact source: ``inner_flux_f >= 0.5`` (the seed left 0.5 undefined; we call it
    compact). NaN counts as extended (the larger growth). Steps other than p0/p1/ap1 (p2
    and any extended-ladder step such as p3, p4) use the p2 row.
    """
    compact = bool(np.isfinite(inner_flux_f) and inner_flux_f >= 0.5)
    idx = 0 if compact else 1
    bright = str(template).strip().lower() == "bright"
    name = mask_row(str(step).strip().lower())
    if name == "p0":
        return _P0[idx]
    if name == "p1":
        return _P1[idx]
    table = _AP1 if name == "ap1" else _P2
    return table[idx][0 if bright else 1]


def _header_shape(header: fits.Header, plane: tuple[int, ...]) -> tuple[int, ...]:
    """Data shape (numpy order) described by ``header``; from its WCS axes if NAXISn absent."""
    naxis = int(header.get("NAXIS", 0))
    if naxis >= 2 and all(f"NAXIS{i}" in header for i in range(1, naxis + 1)):
        return tuple(int(header[f"NAXIS{i}"]) for i in range(naxis, 0, -1))
    nwcs = int(header.get("WCSAXES", 0)) or sum(
        1 for i in range(1, 10) if f"CTYPE{i}" in header)
    return (1,) * max(nwcs - 2, 0) + tuple(plane[-2:])


def mask_from_array(mask_bool: np.ndarray, header: fits.Header, out_path: str | Path) -> Path:
    """Write a boolean mask as float32 1/0 FITS with ``header`` (the image's, WCS included).

    A 2-D (ny, nx) mask is reshaped to the header's N-D shape, e.g. (1, 1, ny, nx), so
    WSClean's ``-fits-mask`` accepts it. Written atomically; returns the path.
    """
    out_path = Path(out_path)
    mask = np.asarray(mask_bool, dtype=bool)
    shape = _header_shape(header, mask.shape)
    if shape and math.prod(shape) == mask.size and shape[-2:] == mask.shape[-2:]:
        data = mask.reshape(shape)
    elif mask.ndim == 2 and len(shape) >= 2 and shape[-2:] == mask.shape:
        data = mask.reshape((1,) * (len(shape) - 2) + mask.shape)
    else:
        raise ValueError(f"mask shape {mask.shape} does not fit header shape {shape}")
    hdr = header.copy()
    for key in ("BSCALE", "BZERO", "BLANK", "DATAMIN", "DATAMAX", "BUNIT"):
        hdr.remove(key, ignore_missing=True, remove_all=True)
    hdr["BUNIT"] = ("", "clean mask (1 = clean)")
    hdu = fits.PrimaryHDU(data=data.astype(np.float32), header=hdr)
    atomic_write(out_path, lambda tmp: hdu.writeto(tmp, overwrite=True))
    return out_path


def make_clean_mask(image: str | Path, out_path: str | Path, sigma_mask: float,
                    grow_iterations: int, rms: float | None = None,
                    min_sigma: float = 6.0, step: float = 2.0, size: int = 0) -> MaskResult:
    """Threshold ``image`` at the highest non-empty level, grow it and write ``out_path``.

    ``size`` > 0 and smaller than the image: the mask is made for (and from) the central
    ``size`` x ``size`` pixels (a smaller ladder image with the same cell and centre).
    """
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    out_path = Path(out_path)
    img, header = read_image(image, nan_to_zero=False)
    if 0 < size < min(img.shape[-2:]):
        from selfcal_batch.imaging.economy import crop_centre  # lazy: loaded only on this path

        img, header = crop_centre(img, header, size)
    finite = np.isfinite(img)
    noise = float(rms) if rms is not None else (
        float(mad_std(img[finite])) if finite.any() else float("nan"))
    z = np.where(finite, img, -np.inf)

    sigma = float(sigma_mask)
    floor = min(float(min_sigma), sigma)
    found = False
    if np.isfinite(noise) and noise > 0:
        while True:
            if np.any(z >= sigma * noise):
                found = True
                break
            if sigma <= floor:
                break
            sigma = max(sigma - step, floor)
    else:
        log.warning("%s: noise %r is not positive; no clean mask", image, noise)

    if not found:
        log.warning("%s: nothing above %.1f sigma (sigma=%.3g); proceeding without a "
                    "FITS mask", image, sigma, noise)
        if out_path.exists():
            out_path.unlink()
        return MaskResult(path=None, sigma_used=sigma, npix=0, empty=True)

    mask = binary_dilate(z >= (sigma - 1.0) * noise, CROSS, int(grow_iterations))
    npix = int(mask.sum())
    mask_from_array(mask, header, out_path)
    log.info("%s: clean mask at %.1f sigma (found at %.1f), %d px, grown %d -> %s",
             image, sigma - 1.0, sigma, npix, grow_iterations, out_path)
    return MaskResult(path=out_path, sigma_used=sigma, npix=npix, empty=False)


def combine_masks(masks: Sequence[str | Path], out_path: str | Path) -> Path | None:
    """Union of FITS masks on the same grid, written with the first mask's header.

    Missing paths are skipped; returns None (nothing written) when no mask is left.
    """
    union: np.ndarray | None = None
    header: fits.Header | None = None
    for p in masks:
        if p is None or not Path(p).exists():
            continue
        data, hdr = read_image(p)
        if union is None:
            union, header = data > 0.5, hdr
        elif data.shape != union.shape:
            raise ValueError(f"mask {p} shape {data.shape} != {union.shape}")
        else:
            union |= data > 0.5
    if union is None or header is None:
        return None
    return mask_from_array(union, header, out_path)
