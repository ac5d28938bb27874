"""Primary-beam images and primary-beam-corrected final images.

WSClean 3.1 (Debian) is built without EveryBeam, so the beam comes from elsewhere:

* **VLA**: CASA's own model, evaluated by CASA in the CASA child
  (:func:`selfcal_batch.casa.jobs.primary_beam_image`: ``tclean`` with ``niter=0`` on the
  final image's grid writes the ``.pb`` image from PBMath's model for the MS's telescope;
  for telescope ``VLA`` CASA 6.7 reports ``commonpb='VLA'``). The model CASA reports is
  written to the FITS header (``PBMODEL``).
* **e-MERLIN**: CASA has no e-MERLIN model. :func:`emerlin_beam` is a documented
  approximation: each dish's power pattern is a Gaussian of FWHM ``1.13 lambda / D`` (a
  ~10 dB edge taper), a baseline's beam is the geometric mean of its two dishes' patterns
  and the array's beam is the mean over baselines (the Lovell, 76 m, included: its
  baselines see a ~3x narrower beam). Error at the half-power point: the FWHM factor of a
  real dish lies between 1.02 (uniform illumination) and 1.22 (strong taper), which moves
  the response at the nominal half-power radius from 0.50 to 0.43-0.55 (-15 % / +10 %).

Pure functions here (numbers in, numbers out); the CASA part is a job in ``casa/jobs.py``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from selfcal_batch.selfcal.ebjoint import angular_separation_arcsec

from selfcal_batch.imaging.provenance import fits_text

C_LIGHT = 299_792_458.0

#: CASA PBMath ``VLA`` common beam (refit of Napier & Rots to a unit peak; CASA
#: ``PBMath::initByTelescope``): ``PB(x) = sum_i c_i x^(2i)``, ``x = r[arcmin] * nu[GHz]``,
#: valid to x = 43.
VLA_POLY = (1.0, -1.300633e-03, 6.480550e-07, -1.267928e-10)
VLA_POLY_MAX_X = 43.0
#: FWHM of a dish's power pattern in units of lambda / D (10 dB edge taper).
GAUSSIAN_FWHM_FACTOR = 1.13
#: e-MERLIN dish diameters (m) by antenna name (MS names vary: both spellings).
EMERLIN_DISH_M = {"lo": 76.0, "lovell": 76.0, "mk2": 25.0, "mark2": 25.0, "cm": 32.0, "cambridge": 32.0,
                  "pi": 25.0, "pickmere": 25.0, "da": 25.0, "darnhall": 25.0, "kn": 25.0, "knockin": 25.0,
                  "de": 25.0, "defford": 25.0}


def poly_beam(r_arcmin: Any, freq_ghz: float, coeffs: Sequence[float] = VLA_POLY,
              max_x: float = VLA_POLY_MAX_X) -> np.ndarray:
    """Power response of a polynomial beam model at radius ``r_arcmin`` (any shape) and
    frequency ``freq_ghz``: ``sum_i c_i x^(2i)`` with ``x = r * nu``, 0 beyond ``max_x``
    (CASA PBMath1DPoly convention, reference frequency 1 GHz)."""
    x2 = (np.asarray(r_arcmin, dtype=float) * float(freq_ghz)) ** 2
    out = np.zeros_like(x2)
    for i, c in enumerate(coeffs):
        out = out + c * x2**i
    return np.where(x2 <= max_x**2, np.clip(out, 0.0, 1.0), 0.0)


def half_power_radius_arcmin(freq_ghz: float, coeffs: Sequence[float] = VLA_POLY) -> float:
    """Radius (arcmin) where :func:`poly_beam` falls to 0.5 (bisection on the monotonic
    main lobe; 3.72' at 6 GHz for the VLA model)."""
    lo, hi = 0.0, VLA_POLY_MAX_X / float(freq_ghz)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(poly_beam(mid, freq_ghz, coeffs)) > 0.5:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def dish_diameter_m(name: str, ms_diameter_m: float) -> float:
    """True e-MERLIN dish diameter for an antenna name, else the MS's DISH_DIAMETER."""
    return EMERLIN_DISH_M.get(name.strip().lower(), float(ms_diameter_m))


def emerlin_beam(r_arcmin: Any, freq_hz: float, diameters_m: Iterable[float],
                 factor: float = GAUSSIAN_FWHM_FACTOR) -> np.ndarray:
    """Baseline-averaged Gaussian power beam of a heterogeneous array at radius ``r_arcmin``.

    ``P_ij(r) = exp(-4 ln2 r^2 (1/th_i^2 + 1/th_j^2) / 2)``, ``th = factor lambda / D``,
    averaged over all pairs i < j of ``diameters_m`` (>= 2 dishes; ValueError otherwise).
    See the module docstring for its error at the half-power point.
    """
    d = [float(x) for x in diameters_m]
    if len(d) < 2:
        raise ValueError("a baseline-averaged beam needs at least 2 dishes")
    lam = C_LIGHT / float(freq_hz)
    inv2 = [(x / (factor * lam) * (math.pi / 180 / 60)) ** 2 for x in d]  # 1/theta^2 in arcmin^-2
    r2 = np.asarray(r_arcmin, dtype=float) ** 2
    total = np.zeros_like(r2)
    n = 0
    for i in range(len(d)):
        for j in range(i + 1, len(d)):
            total = total + np.exp(-4 * math.log(2) * r2 * (inv2[i] + inv2[j]) / 2)
            n += 1
    return total / n


def radius_grid_arcmin(header: Any, centre_deg: tuple[float, float] | None = None) -> np.ndarray:
    """Angular distance (arcmin) of every pixel of a FITS image's celestial plane from
    ``centre_deg`` (RA, Dec in degrees; default the phase centre CRVAL1/2), shape
    (NAXIS2, NAXIS1), exact (astropy WCS + great circle)."""
    from astropy.coordinates import SkyCoord  # lazy: astropy only where FITS/WCS are used
    from astropy.wcs import WCS  # lazy: astropy only where FITS/WCS are used

    wcs = WCS(header).celestial
    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    yy, xx = np.mgrid[0:ny, 0:nx]
    sky = wcs.pixel_to_world(xx, yy)
    ra, dec = centre_deg if centre_deg is not None else (float(header["CRVAL1"]), float(header["CRVAL2"]))
    return sky.separation(SkyCoord(ra, dec, unit="deg", frame=sky.frame)).arcmin


#: A pointing closer than this to the phase centre (arcsec) is the phase centre: the beam is
#: evaluated on the image's own grid. Real MSs store identical PHASE_DIR and REFERENCE_DIR
#: unless the data were phase-shifted (CASA ``phaseshift``, ``chgcentre``).
SAME_CENTRE_ARCSEC = 0.1


def separation_arcmin(a_deg: tuple[float, float], b_deg: tuple[float, float]) -> float:
    """Great-circle distance (arcmin) between two (RA, Dec) directions in degrees
    (:func:`selfcal_batch.selfcal.ebjoint.angular_separation_arcsec`)."""
    return angular_separation_arcsec(*a_deg, *b_deg) / 60.0


def radial_profile(r_arcmin: np.ndarray, pb: np.ndarray, step_arcmin: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean of a circularly symmetric beam image ``pb`` in rings of width ``step_arcmin`` of
    its radius ``r_arcmin`` (same shape): ``(ring radii, ring means)``, radii increasing,
    non-finite pixels ignored. ValueError for a non-positive step."""
    if step_arcmin <= 0:
        raise ValueError(f"ring width must be > 0, got {step_arcmin}")
    r, v = np.ravel(r_arcmin), np.ravel(pb)
    ok = np.isfinite(r) & np.isfinite(v)
    ring = np.floor(r[ok] / step_arcmin).astype(int)
    counts = np.bincount(ring)
    sums = np.bincount(ring, weights=v[ok])
    rsum = np.bincount(ring, weights=r[ok])
    have = counts > 0
    return rsum[have] / counts[have], sums[have] / counts[have]


def beam_from_profile(r_arcmin: np.ndarray, radii: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The beam at radii ``r_arcmin`` (any shape) by linear interpolation of a radial profile
    (:func:`radial_profile`); NaN beyond its last radius (blanked, never extrapolated)."""
    return np.interp(np.asarray(r_arcmin, dtype=float), radii, values, left=float(values[0]), right=np.nan)


def pb_correct(image: np.ndarray, pb: np.ndarray, cutoff: float) -> np.ndarray:
    """``image / pb`` where ``pb >= cutoff``, NaN (blank) elsewhere; shapes must match.

    ValueError for a cutoff outside (0, 1] or mismatched shapes."""
    if not 0 < cutoff <= 1:
        raise ValueError(f"pb_cutoff must be within (0, 1], got {cutoff}")
    image, pb = np.asarray(image, dtype=float), np.asarray(pb, dtype=float)
    if image.shape != pb.shape:
        raise ValueError(f"image shape {image.shape} != primary-beam shape {pb.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(pb) & (pb >= cutoff), image / pb, np.nan)


def same_grid(h1: Any, h2: Any, tol_pix: float = 1e-3) -> str:
    """'' when two FITS headers share the celestial grid, else what differs (one line)."""
    for k in ("NAXIS1", "NAXIS2"):
        if int(h1[k]) != int(h2[k]):
            return f"{k} {h1[k]} != {h2[k]}"
    for ax in (1, 2):
        d1, d2 = float(h1[f"CDELT{ax}"]), float(h2[f"CDELT{ax}"])
        if abs(d1 - d2) > 1e-6 * abs(d1):
            return f"CDELT{ax} {d1} != {d2}"
        if abs(float(h1[f"CRPIX{ax}"]) - float(h2[f"CRPIX{ax}"])) > tol_pix:
            return f"CRPIX{ax} {h1[f'CRPIX{ax}']} != {h2[f'CRPIX{ax}']}"
        if abs(float(h1[f"CRVAL{ax}"]) - float(h2[f"CRVAL{ax}"])) > tol_pix * abs(d1):
            return f"CRVAL{ax} {h1[f'CRVAL{ax}']} != {h2[f'CRVAL{ax}']}"
    return ""


def write_products(image_fits: Path, pb_plane: np.ndarray, model: str, cutoff: float) -> tuple[Path, Path]:
    """Write ``<stem>.pb.fits`` (the beam, blanked below ``cutoff``) and ``<stem>.pbcor.fits``
    next to ``image_fits``; the header names the model (PBMODEL) and cutoff (PBCUTOFF).

    ``pb_plane`` has the image's celestial shape (NAXIS2, NAXIS1)."""
    from astropy.io import fits  # lazy: astropy only where FITS/WCS are used

    image_fits = Path(image_fits)
    stem = image_fits.name[:-5] if image_fits.name.endswith(".fits") else image_fits.name
    pb_path, cor_path = image_fits.with_name(f"{stem}.pb.fits"), image_fits.with_name(f"{stem}.pbcor.fits")
    with fits.open(image_fits) as hdul:
        data, header = hdul[0].data, hdul[0].header.copy()
    pb_full = np.broadcast_to(pb_plane, data.shape)
    # the primary-beam model (full text in the step record); printable ASCII (it may name the MS's telescope)
    header["PBMODEL"] = fits_text(model)[:68]
    header["PBCUTOFF"] = (float(cutoff), "blanked where the primary beam is below")
    pb_out = np.where(pb_full >= cutoff, pb_full, np.nan).astype(np.float32)
    for path, arr, unit in ((pb_path, pb_out, ""), (cor_path, pb_correct(data, pb_full, cutoff), None)):
        h = header.copy()
        if unit is not None:
            h["BUNIT"] = unit
        tmp = path.with_name(path.name + ".tmp")
        fits.PrimaryHDU(np.asarray(arr, dtype=np.float32), h).writeto(tmp, overwrite=True)
        tmp.replace(path)
    return pb_path, cor_path


def pointing_deg(ms: Path) -> tuple[float, float] | None:
    """The pointing (RA, Dec in degrees) of our own MS ``ms``: FIELD ``REFERENCE_DIR`` of its
    first field (the MS v2 "reference centre", which CASA ``phaseshift`` leaves at the
    pointing while it moves ``PHASE_DIR``); None without the column (thin wrapper)."""
    from casacore.tables import table  # lazy: python-casacore only where a table is read

    with table(str(Path(ms) / "FIELD"), readonly=True, ack=False) as ft:
        if "REFERENCE_DIR" not in ft.colnames() or not ft.nrows():
            return None
        ra, dec = np.asarray(ft.getcell("REFERENCE_DIR", 0), dtype=float).reshape(-1, 2)[0]
    return math.degrees(ra) % 360.0, math.degrees(dec)


def make_pb_products(ctx: Any, ms: Path, image_fits: Path,
                     pointing: tuple[float, float] | None = None) -> dict[str, Any]:
    """Write ``final-image.pb.fits``/``.pbcor.fits`` beside ``image_fits`` (thin wrapper).

    The beam is centred on the pointing (``pointing`` (RA, Dec) deg, default
    :func:`pointing_deg` of ``ms``), which differs from the image's
    phase centre in phase-shifted data. VLA (any telescope CASA knows): CASA's beam from the
    CASA child, checked to lie on the image's grid (RuntimeError naming the difference
    otherwise); off the phase centre, CASA's circular beam is read as a radial profile on a grid
    that reaches every pixel and evaluated at each pixel's distance from the pointing. e-MERLIN:
    :func:`emerlin_beam` with the dishes of the antennas that have data."""
    from astropy.io import fits  # lazy: astropy only where FITS/WCS are used

    cutoff = float(ctx.cfg.pb_cutoff)
    header = fits.getheader(image_fits)
    phase = (float(header["CRVAL1"]), float(header["CRVAL2"]))
    pointing = pointing or pointing_deg(ms) or phase
    offset = separation_arcmin(phase, pointing)
    shifted = offset * 60.0 > SAME_CENTRE_ARCSEC
    if ctx.instrument == "eMERLIN":
        info = ctx.info
        names = [info["antenna_names"][a] for a in info["antennas_present"]]
        freq = next(float(header[f"CRVAL{ax}"]) for ax in range(1, int(header["NAXIS"]) + 1)
                    if str(header.get(f"CTYPE{ax}", "")).startswith("FREQ"))
        dishes = [dish_diameter_m(n, 25.0) for n in names]
        pb = emerlin_beam(radius_grid_arcmin(header, pointing), freq, dishes)
        model = (f"Gaussian baseline-mean e-MERLIN {GAUSSIAN_FWHM_FACTOR}lambda/D, dishes "
                 + ",".join(f"{d:g}" for d in dishes))
    else:
        pb, model = _casa_beam(ctx, ms, Path(image_fits), header, pointing if shifted else None, offset)
    pb_path, cor_path = write_products(Path(image_fits), pb, model, cutoff)
    out = {"pb": str(pb_path), "pbcor": str(cor_path), "pb_model": model, "pb_cutoff": cutoff}
    if shifted:
        out["pb_centre"] = (f"pointing (FIELD REFERENCE_DIR) {offset * 60.0:.1f} arcsec from the phase centre "
                            f"(RA {pointing[0]:.6f} deg, Dec {pointing[1]:.6f} deg)")
    return out


def _casa_beam(ctx: Any, ms: Path, image_fits: Path, header: Any, pointing: tuple[float, float] | None,
               offset_arcmin: float) -> tuple[np.ndarray, str]:
    """CASA's beam on the image's grid (``pointing`` None: centred on the phase centre) or
    centred on ``pointing`` via its radial profile; ``(plane, model text)``."""
    from astropy.io import fits  # lazy: astropy only where FITS/WCS are used

    from selfcal_batch.casa import calibration as cal  # lazy: loaded only when this path runs (keeps the module import-light)

    tmp = ctx.root / "tmp" / "casa_pb.fits"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    half_diag = math.hypot(int(header["NAXIS1"]), int(header["NAXIS2"])) / 2 * abs(float(header["CDELT2"])) * 60
    extent = 0.0 if pointing is None else offset_arcmin + half_diag
    out = ctx.casa([cal.job("primary_beam_image", vis=str(ms), template_fits=str(image_fits),
                            out_fits=str(tmp), workdir=str(tmp.parent), extent_arcmin=extent)],
                   label="primary-beam")[0]
    with fits.open(tmp) as hdul:
        pb_header, pb = hdul[0].header, np.squeeze(hdul[0].data).astype(float)
    tmp.unlink()
    if pointing is None:
        problem = same_grid(header, pb_header)
        if problem:
            raise RuntimeError(f"CASA's primary-beam image is not on the final image's grid: {problem}")
        return pb, out["model"]
    radii, values = radial_profile(radius_grid_arcmin(pb_header), pb, abs(float(pb_header["CDELT2"])) * 60)
    return beam_from_profile(radius_grid_arcmin(header, pointing), radii, values), out["model"]
