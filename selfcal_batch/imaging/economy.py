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
* **multiscale only when the model needs extended scales** (:func:`needs_multiscale`): an
  island of emission whose integrated flux exceeds its peak by more than
  :data:`RESOLVED_RATIO` is resolved; a field of unresolved islands is modelled by point
  components (measured, 540 px ladder image of the 25 mJy X-band dataset: 2.7 -> 2.5 CPU s;
  1024^2 x 4 channels: 12.5 -> 9.3 CPU s);
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


#: Integrated flux / peak (Jy / (Jy/beam)) above which an island is resolved. A point source
#: gives <= 1 (its mask holds the part of the beam above the threshold); a Gaussian source of
#: FWHM theta_s under a beam theta_b gives 1 + theta_s^2 / theta_b^2 (1.5 at 0.7 beams, where
#: multiscale's smallest extended scale starts to describe it better than points).
RESOLVED_RATIO = 1.5
#: Islands holding less than this fraction of the total flux do not decide.
MIN_ISLAND_SHARE = 0.05


def island_ratios(image: np.ndarray, beam_area_pix: float, sigma: float = EXTENT_SIGMA) -> list[tuple[float, float]]:
    """(integrated flux / peak, share of the total flux) of each island of pixels >= ``sigma``
    x mad_std (8-connected), brightest first. ``image``: 2-D restored image in Jy/beam;
    ``beam_area_pix``: restoring beam area in pixels. [] when nothing is found or the beam
    area is not positive."""
    from astropy.stats import mad_std  # lazy: heavy library, only on this path
    from scipy import ndimage  # lazy: heavy library, only on this path

    img = np.asarray(image, dtype=float)
    finite = np.isfinite(img)
    if not finite.any() or not (math.isfinite(beam_area_pix) and beam_area_pix > 0):
        return []
    noise = float(mad_std(img[finite]))
    if not (math.isfinite(noise) and noise > 0):
        return []
    mask = np.where(finite, img, -np.inf) >= sigma * noise
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    flux = np.asarray(ndimage.sum(np.where(finite, img, 0.0), labels, idx)) / beam_area_pix
    peak = np.asarray(ndimage.maximum(np.where(finite, img, 0.0), labels, idx))
    total = float(flux.sum())
    out = [(float(f / p), float(f / total) if total > 0 else 0.0) for f, p in zip(flux, peak, strict=True) if p > 0]
    return sorted(out, key=lambda r: -r[1])


def needs_multiscale(ratios: list[tuple[float, float]], *, limit: float = RESOLVED_RATIO,
                     min_share: float = MIN_ISLAND_SHARE) -> bool:
    """Multiscale for the ladder images? True when an island holding at least ``min_share``
    of the flux has integrated/peak above ``limit`` (:func:`island_ratios`), and when nothing
    decides: no island, or none holding ``min_share`` of the flux (emission scattered into
    many pieces, e.g. by large phase errors, says nothing about the source's scales)."""
    deciding = [r for r, share in ratios if share >= min_share]
    if not deciding:
        return True
    return any(r > limit for r in deciding)


def multiscale_from_fits(path: str | Path, beam_area_pix: float) -> tuple[bool, float]:
    """(:func:`needs_multiscale`, largest ratio of a deciding island) of a FITS image."""
    from astropy.io import fits  # lazy: heavy library, only on this path

    with fits.open(path, memmap=False) as hdul:
        data = np.squeeze(hdul[0].data)
    while data.ndim > 2:
        data = data[0]
    ratios = island_ratios(data, beam_area_pix)
    deciding = [r for r, share in ratios if share >= MIN_ISLAND_SHARE]
    return needs_multiscale(ratios), round(max(deciding), 3) if deciding else math.nan
