"""Compare a self-calibration result with the simulator's truth (tests and benchmarks)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import truth_phase_deg


def chain_phases_deg(tables: Sequence[str], truth: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-antenna total phase (deg) of a gain chain at the truth times (spw 0, pol 0);
    NaN for an antenna without unflagged solutions in some table."""
    from casacore.tables import table  # lazy: casacore only where a table is read

    times = np.asarray(truth["gains"]["times"])
    names = [a["name"] for a in truth["antennas"]]
    total = {n: np.zeros(len(times)) for n in names}
    for path in tables:
        with table(str(path), ack=False) as t:
            tt, a1, spw = t.getcol("TIME"), t.getcol("ANTENNA1"), t.getcol("SPECTRAL_WINDOW_ID")
            g, fl = t.getcol("CPARAM")[:, 0, 0], t.getcol("FLAG")[:, 0, 0]
        for aid, name in enumerate(names):
            sel = (a1 == aid) & (spw == spw.min()) & ~fl
            if sel.sum() == 0:
                total[name][:] = np.nan
                continue
            order = np.argsort(tt[sel])
            total[name] += np.degrees(np.interp(times, tt[sel][order], np.unwrap(np.angle(g[sel][order]))))
    return total


def residual_phase_rms_deg(tables: Sequence[str], truth: dict[str, Any], plane: bool = False) -> tuple[float, int]:
    """(rms residual antenna phase in deg, antennas compared) of a chain against the truth.

    The common phase per time (reference antenna) is removed. ``plane`` also removes, per
    time, a phase plane across the antenna positions: a shift of the whole image, which
    self-calibration cannot determine (it keeps the position of its first model).
    """
    sol = chain_phases_deg(tables, truth)
    names = [a["name"] for a in truth["antennas"]]
    diff = np.array([np.radians(sol[n] - truth_phase_deg(truth, n, spw=0)) for n in names])
    ok = np.all(np.isfinite(diff), axis=1)
    diff = diff[ok]
    if diff.size == 0:
        return float("nan"), 0
    common = np.angle(np.exp(1j * diff).mean(axis=0))
    resid = np.angle(np.exp(1j * (diff - common)))
    if plane:
        xyz = np.array([a["position_m"] for a, k in zip(truth["antennas"], ok, strict=True) if k], dtype=float)
        design = np.column_stack([np.ones(len(xyz)), (xyz - xyz.mean(axis=0)) / 1000.0])
        coef, *_ = np.linalg.lstsq(design, resid, rcond=None)
        resid = np.angle(np.exp(1j * (resid - design @ coef)))
    return float(np.sqrt(np.mean(np.degrees(resid) ** 2))), int(ok.sum())


#: An image shows a field of a multi-field truth when its centre (CRVAL) lies within this
#: many arcsec (or one pixel, if larger) of the field's phase centre: WSClean centres the
#: image on the MS's phase centre.
FIELD_MATCH_ARCSEC = 1.0


def image_truth(truth: dict[str, Any], header: Any, field: str | None = None) -> dict[str, Any]:
    """The truth of the sky an image shows (pure).

    A multi-field truth (``fields``, simulate.fields) keeps the spec's reference sky in its
    top-level ``components``, which is no field's: the MS holds only the fields' skies
    (tester s6 G7: a target's image compared with it gave an error floor of 0.0063). Then
    the field named ``field``, else the field whose phase centre is the image's centre
    (within :data:`FIELD_MATCH_ARCSEC` or one pixel), is returned shaped like a single-field
    truth (:func:`~selfcal_batch.simulate.fields.field_truth`). A single-field truth, or one
    already narrowed to a field (``field`` key), is returned as it is.

    Raises:
        SimulationError: ``field`` is not in the truth, or no field (or several) is centred
            on the image (the line lists the fields and their distances).
    """
    from selfcal_batch.errors import SimulationError  # lazy: only multi-field truths need it
    from selfcal_batch.simulate.fields import field_truth  # lazy: as above

    fields = truth.get("fields") or []
    if not fields or truth.get("field"):
        return truth
    if field is not None:
        return field_truth(truth, field)
    from selfcal_batch.selfcal.ebjoint import angular_separation_arcsec  # lazy: as above

    ra0, dec0 = float(header["CRVAL1"]), float(header["CRVAL2"])
    tol = max(FIELD_MATCH_ARCSEC, abs(float(header.get("CDELT2", 0.0))) * 3600.0)
    seps = [(angular_separation_arcsec(ra0, dec0, f["phase_centre"]["ra_deg"], f["phase_centre"]["dec_deg"]),
             f["name"]) for f in fields]
    hits = [n for d, n in seps if d <= tol]
    if len(hits) != 1:
        listed = ", ".join(f"{n} {d:.3g} arcsec" for d, n in seps)
        raise SimulationError(f"the image centre ({ra0:.6f}, {dec0:.6f} deg) is the phase centre of "
                              f"{'no' if not hits else 'several'} field(s) of the multi-field truth "
                              f"({listed}); name the field")
    return field_truth(truth, hits[0])


def truth_image(truth: dict[str, Any], header: Any) -> np.ndarray:
    """The true sky convolved with the header's restoring beam (Jy/beam) on its grid; for a
    multi-field truth, the sky of the field the image shows (:func:`image_truth`)."""
    from astropy.wcs import WCS  # lazy: heavy library, only on this path

    truth = image_truth(truth, header)
    wcs = WCS(header).celestial
    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    yy, xx = np.mgrid[0:ny, 0:nx]
    cell = abs(float(header["CDELT2"])) * 3600.0
    bmaj, bmin = float(header["BMAJ"]) * 3600.0, float(header["BMIN"]) * 3600.0
    bpa = math.radians(float(header["BPA"]))
    k = 1.0 / (8.0 * math.log(2.0))  # FWHM^2 -> sigma^2

    def cov(maj: float, mnr: float, pa: float) -> np.ndarray:
        # PA east of north; image x grows to the east on the sky (RA decreases with x, so
        # -x is east), y to the north.
        rot = np.array([[-math.sin(pa), -math.cos(pa)], [math.cos(pa), -math.sin(pa)]])
        return rot @ np.diag([k * maj**2, k * mnr**2]) @ rot.T

    beam = cov(bmaj, bmin, bpa)
    beam_area = 2.0 * math.pi * math.sqrt(np.linalg.det(beam))
    out = np.zeros((ny, nx))
    for c in truth["components"]:
        px, py = wcs.world_to_pixel_values(c["ra_deg"], c["dec_deg"])
        c_cov = beam + (cov(c["major_arcsec"], c["minor_arcsec"], math.radians(c["pa_deg"]))
                        if c["kind"] == "gaussian" else 0.0)
        area = 2.0 * math.pi * math.sqrt(np.linalg.det(c_cov))
        d = np.stack([(xx - px) * cell, (yy - py) * cell], axis=-1)  # arcsec offsets (x, y)
        inv = np.linalg.inv(c_cov)
        q = np.einsum("...i,ij,...j->...", d, inv, d)
        out += c["flux_jy"] * beam_area / area * np.exp(-0.5 * q)
    return out


def error_vs_truth(image: Path, truth: dict[str, Any]) -> dict[str, float]:
    """rms(image - truth) / truth peak, and the flux ratio over the bright truth region."""
    from astropy.io import fits  # lazy: heavy library, only on this path

    with fits.open(image) as hdul:
        data = np.squeeze(hdul[0].data).astype(float)
        header = hdul[0].header
    t = truth_image(truth, header)
    peak = float(t.max())
    region = t > 0.05 * peak
    return {"err": float(np.sqrt(np.mean((data - t) ** 2)) / peak),
            "flux_ratio": float(data[region].sum() / t[region].sum())}


def fitted_flux_vs_truth(image: Path, truth: dict[str, Any], half_box_beams: float = 3.0) -> dict[str, float]:
    """The image's flux scale against the truth with the position left free, as a source fit
    (CASA ``imfit``, PyBDSF) measures it: least squares of ``image = a * T(x - dx, y - dy)``
    over a box of +-``half_box_beams`` restoring-beam FWHMs around the brightest truth pixel,
    ``T`` = :func:`truth_image` (the sky convolved with the image's restoring beam), shifted
    by a Fourier phase ramp.

    Self-calibration cannot determine an overall shift of the image (it keeps the position
    of its first model, made from phase-corrupted data); a fixed truth region
    (:func:`error_vs_truth`) then counts a fraction of a beam's shift as missing flux and as
    error. Returns ``flux_ratio_fit`` (a), ``shift_arcsec`` (|(dx, dy)|) and ``err_fit`` =
    rms(box residual after the fit) / truth peak. Raises ValueError when the box has fewer
    than 3 x 3 pixels inside the image.
    """
    from astropy.io import fits  # lazy: heavy library, only on this path
    from scipy.optimize import least_squares  # lazy: (same reason)

    with fits.open(image) as hdul:
        data = np.squeeze(hdul[0].data).astype(float)
        header = hdul[0].header
    t = truth_image(truth, header)
    cell = abs(float(header["CDELT2"])) * 3600.0
    half = max(1, int(math.ceil(half_box_beams * float(header["BMAJ"]) * 3600.0 / cell)))
    iy, ix = np.unravel_index(int(t.argmax()), t.shape)
    sl = (slice(max(0, iy - half), iy + half + 1), slice(max(0, ix - half), ix + half + 1))
    d, tb = data[sl], t[sl]
    if min(d.shape) < 3:
        raise ValueError(f"{image}: fit box of {d.shape} pixels is too small")
    ky, kx = np.fft.fftfreq(tb.shape[0])[:, None], np.fft.fftfreq(tb.shape[1])[None, :]
    ft = np.fft.fft2(tb)

    def model(p: np.ndarray) -> np.ndarray:
        return p[0] * np.real(np.fft.ifft2(ft * np.exp(-2j * np.pi * (ky * p[1] + kx * p[2]))))

    fit = least_squares(lambda p: (model(p) - d).ravel(), np.array([1.0, 0.0, 0.0]))
    a, dy, dx = (float(v) for v in fit.x)
    return {"flux_ratio_fit": a, "shift_arcsec": float(math.hypot(dy, dx) * cell),
            "err_fit": float(np.sqrt(np.mean((model(fit.x) - d) ** 2)) / float(t.max()))}
