"""Cheaper ladder images with the same decisions: pure rules and one thin FITS reader.

The ladder's images serve only as self-calibration models and as the gate's before/after
pair; the deliverable (final image, and the like-for-like "initial" image) keeps the
configured size and settings. Two economies, each measured with ``scripts/bench_speed.py``
and ``scripts/bench_quality.py`` before it was kept (issue 16):

* **size from the emission's extent**: the field beyond the emission is noise, and deconvolving
  it is most of a 1024^2 run's cost. The ladder images the centre, keeping the cell (so beam
  areas, masks and the gate's numbers stay comparable), large enough for everything above
  ``sigma`` in the test image plus a margin, never below ``min_size`` nor above the
  configured size;
* **spectral terms only when the fractional bandwidth needs them**: with a fractional
  bandwidth f and a spectral index |alpha| <= 1 the flux varies by at most about +-f/2 across
  the band; below ``max_frac_bw`` = 0.05 (+-2.5%, below a model's flux error after the first
  phase step) one output channel is enough for a phase-calibration model.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: Pixels above this many image sigma (astropy mad_std) count as emission (the seed's mask floor).
EXTENT_SIGMA = 6.0
#: Smallest ladder image (pixels): room for the gate's off-source rms and the masks.
MIN_SIZE = 256
#: Fractional bandwidth up to which ladder images use one output channel.
MAX_FRAC_BW_ONE_CHANNEL = 0.05


def good_fft_size(n: int) -> int:
    """The smallest even n' >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = max(2, math.ceil(n))
    while True:
        if m % 2 == 0:
            k = m
            for p in (2, 3, 5):
                while k % p == 0:
                    k //= p
            if k == 1:
                return m
        m += 1


def emission_radius_px(image: np.ndarray, sigma: float = EXTENT_SIGMA) -> float:
    """Largest distance (pixels) from the image centre (pixel N/2, WSClean's phase centre) of a
    pixel >= ``sigma`` x mad_std of the finite pixels; NaN when nothing is found.

    ``image``: 2-D array (ny, nx), any unit.
    """
    from astropy.stats import mad_std  # lazy: heavy library, only on this path

    img = np.asarray(image, dtype=float)
    finite = np.isfinite(img)
    if not finite.any():
        return math.nan
    noise = float(mad_std(img[finite]))
    if not (math.isfinite(noise) and noise > 0):
        return math.nan
    ys, xs = np.nonzero(np.where(finite, img, -np.inf) >= sigma * noise)
    if len(xs) == 0:
        return math.nan
    cy, cx = img.shape[0] // 2, img.shape[1] // 2
    return float(np.sqrt((ys - cy) ** 2 + (xs - cx) ** 2).max())


def ladder_size(radius_px: float, imsize: int, *, beam_px: float, min_size: int) -> int:
    """Ladder image size (pixels) for emission within ``radius_px`` of the centre.

    2 x (radius + margin), margin = max(16 px, 8 beams) for the masks' growth and the
    gate's off-source rms, rounded up to a fast FFT size; clipped to [min_size, imsize].
    No emission found (NaN radius) or economy off (min_size >= imsize): ``imsize``.
    """
    if not math.isfinite(radius_px) or min_size >= imsize:
        return imsize
    margin = max(16.0, 8.0 * max(beam_px, 0.0))
    want = good_fft_size(math.ceil(2 * (radius_px + margin)))
    return min(int(imsize), max(int(min_size), want))


def ladder_channels_out(frac_bw: float, configured: int) -> int:
    """-channels-out for ladder images: 1 when the fractional bandwidth is at most
    :data:`MAX_FRAC_BW_ONE_CHANNEL`, else ``configured``."""
    if math.isfinite(frac_bw) and 0 <= frac_bw <= MAX_FRAC_BW_ONE_CHANNEL:
        return 1
    return configured


def fractional_bandwidth(spws: list[dict]) -> float:
    """(f_max - f_min) / f_centre over spectral windows given as dicts with 'freq_min',
    'freq_max' (channel centres, Hz) and optionally 'chan_width' (Hz), as in the msinfo of
    :mod:`selfcal_batch.ms.inspection`; NaN without windows."""
    if not spws:
        return math.nan
    lo = min(float(s["freq_min"]) - abs(float(s.get("chan_width") or 0.0)) / 2 for s in spws)
    hi = max(float(s["freq_max"]) + abs(float(s.get("chan_width") or 0.0)) / 2 for s in spws)
    return (hi - lo) / (0.5 * (hi + lo)) if hi + lo > 0 else math.nan


def radius_from_fits(path: str | Path, sigma: float = EXTENT_SIGMA) -> float:
    """:func:`emission_radius_px` of a FITS image (the first two axes)."""
    from astropy.io import fits  # lazy: heavy library, only on this path

    with fits.open(path, memmap=False) as hdul:
        data = np.squeeze(hdul[0].data)
    while data.ndim > 2:
        data = data[0]
    return emission_radius_px(data, sigma)


def crop_centre(data: np.ndarray, header: dict, size: int) -> tuple[np.ndarray, dict]:
    """The central ``size`` x ``size`` pixels of a 2-D image and its header with CRPIX moved
    (WSClean's centre pixel N/2 maps to size/2). Raises ValueError if ``size`` is larger than
    the image or the sizes differ in parity."""
    ny, nx = data.shape[-2:]
    if size > min(ny, nx) or (nx - size) % 2 or (ny - size) % 2:
        raise ValueError(f"cannot crop a {nx}x{ny} image to {size}x{size}")
    ox, oy = (nx - size) // 2, (ny - size) // 2
    out = data[..., oy:oy + size, ox:ox + size]
    hdr = dict(header) if not hasattr(header, "copy") else header.copy()
    hdr["NAXIS1"], hdr["NAXIS2"] = size, size
    hdr["CRPIX1"] = float(hdr.get("CRPIX1", nx // 2 + 1)) - ox
    hdr["CRPIX2"] = float(hdr.get("CRPIX2", ny // 2 + 1)) - oy
    return out, hdr


#: A test-image beam narrower than this many pixels (minor-axis FWHM) is undersampled for the
#: ladder's lower robust: WSClean 3.1's beam fit then fails (measured, 1.0" cells at X band:
#: test image robust 0.5 fitted 1.85" x 1.63"; ladder images robust -0.5, PSF ~1.3 px, fitted
#: 0.17" and 0.12"; at 0.7" cells the same PSF fitted 1.50" x 1.29", 1.8 px).
MIN_SAMPLED_BEAM_PX = 2.5


def fixed_restoring_beam(bmaj_arcsec: float, bmin_arcsec: float, bpa_deg: float, cell_arcsec: float,
                         min_px: float = MIN_SAMPLED_BEAM_PX) -> tuple[float, float, float] | None:
    """The restoring beam (bmaj, bmin arcsec, bpa deg) every ladder image uses instead of its
    own fit, or None (each image fits its own). A beam of fewer than ``min_px`` pixels across
    (minor axis) is fixed to the test image's fitted beam: the ladder's images then share one
    beam, so their peaks, fluxes and SNRs stay comparable (a failed fit restores the
    components with a ~0.1 px beam and inflates flux = sum / beam area ~100x, which re-selected
    the 25 mJy X-band dataset as 'bright'). The test image's own fit must be a measurement
    (minor axis >= 1 pixel), else None."""
    vals = (bmaj_arcsec, bmin_arcsec, cell_arcsec)
    if not all(math.isfinite(v) and v > 0 for v in vals):
        return None
    minor_px = min(bmaj_arcsec, bmin_arcsec) / cell_arcsec
    if minor_px >= min_px or minor_px < 1.0:
        return None
    return (round(bmaj_arcsec, 4), round(bmin_arcsec, 4), round(bpa_deg if math.isfinite(bpa_deg) else 0.0, 2))
