"""Bright emission outside the imaged field: the visibilities hold much more flux than the model.

Self-calibration solves gains that make the data look like the model. When a bright source
lies outside the image (or beyond ``imsize`` x cell), the test image's model lacks the
dominant flux, and self-calibration drags that flux into the field: measured on a generated
VLA-C dataset (30 mJy at the centre, 0.5 Jy at (45", 30"), 128 px x 0.18"): "finished, SNR
5.6 -> 296", yet a wide image of final.ms showed a fabricated 0.3 Jy source at (1.6", 7.0")
and the real target gone. Every image-based check (gate, final guard) compares pixels inside
the image only, so none of them can see it: only the visibilities can.

The check (after the test image, before any calibration): per uv-distance bin, the
noise-debiased rms amplitude of the data, ``sqrt(<|V|^2> - <noise^2>)``, against the rms
amplitude of the test image's clean model predicted at the same uv points (a direct Fourier
sum of the model's components). The rms of ``|V|`` is unchanged by any phase error (antenna
phases, delays, a source's position), so phase-corrupted data are not mistaken for missing
flux; only amplitude errors and real unmodelled flux change it. Pure decision
(:func:`outside_emission`) unit tested; :func:`measure_outside` is the thin wrapper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from selfcal_batch.selfcal.decorrelation import read_sample
from selfcal_batch.selfcal.uvrange import C_LIGHT, binned_amplitudes

#: The model must account for at least 1/RATIO of the rms amplitude on the shortest baselines.
#: Measured on the shortest bin: s5-break conf (0.5 Jy outside) data/model 7.2 (5.9 in the 300 s
#: integration test), offaxis 7.8; bench_harm: resolved 1.03, calibrated 1.00, amp10 1.07,
#: standard_1 1.51, faint 1.75, bright 2.33 (60 deg phase errors decorrelate the test image), delays
#: 5.03 (antenna delays do too): the ratio alone does not decide, see :func:`decorrelation.slopes_geometric`.
DEFAULT_RATIO = 3.0
#: Significance of the excess (data - model) on the shortest bin, in units of its noise.
DEFAULT_NSIGMA = 5.0


@dataclass(frozen=True)
class OutsideVerdict:
    """Result of :func:`outside_emission`: ``fires`` and the one-line ``reason`` ('' when not);
    ``data_jy`` / ``model_jy``: rms amplitudes (Jy) on the shortest populated bin, ``ratio``
    their quotient (inf for an empty model), ``uv_lambda`` that bin's outer edge."""

    fires: bool
    reason: str
    data_jy: float = math.nan
    model_jy: float = math.nan
    ratio: float = math.nan
    uv_lambda: float = math.nan
    per_bin: dict = field(default_factory=dict)


def outside_emission(edges_lambda: Sequence[float], data_amp: Sequence[float], model_amp: Sequence[float],
                     err: Sequence[float], counts: Sequence[float], *, ratio: float = DEFAULT_RATIO,
                     nsigma: float = DEFAULT_NSIGMA) -> OutsideVerdict:
    """Do the visibilities hold much more flux than the model on the shortest baselines?

    ``edges_lambda``: n+1 increasing bin edges (wavelengths); per bin (n values): ``data_amp``
    (noise-debiased rms data amplitude, Jy), ``model_amp`` (rms model amplitude, Jy), ``err``
    (the noise of ``data_amp``, Jy) and ``counts`` (visibilities). On the shortest populated
    bin: fires when ``data > ratio * model`` and ``data^2 - model^2 > nsigma *``
    :func:`power_noise` (the excess power is significant).

    Why the shortest bin: a source outside the field adds its whole flux on every baseline,
    and the shortest baselines are where the image's own emission (however extended) is
    largest in the model too, so the quotient there is the least sensitive to structure
    inside the field that clean did not fully recover. ``ratio`` 3 (the model holds less than
    a third): see :data:`DEFAULT_RATIO` for the measured values; the caller also requires
    :func:`decorrelation.slopes_geometric`. ``nsigma`` 5 keeps undetected / noise-only data
    from firing. Pure; ValueError for inconsistent lengths.
    """
    edges = np.asarray(edges_lambda, float)
    d, m, e, c = (np.asarray(x, float) for x in (data_amp, model_amp, err, counts))
    n = len(d)
    if len(edges) != n + 1 or not (len(m) == len(e) == len(c) == n):
        raise ValueError("outside_emission: need n+1 edges and n values per array")
    pop = np.nonzero((c > 0) & np.isfinite(d) & np.isfinite(m) & np.isfinite(e))[0]
    if not len(pop):
        return OutsideVerdict(False, "")
    i = int(pop[0])
    q = d[i] / m[i] if m[i] > 0 else math.inf
    per_bin = {"bin_edges_lambda": [float(f"{x:.6g}") for x in edges], "bin_data_jy": [float(f"{x:.4g}") for x in d],
               "bin_model_jy": [float(f"{x:.4g}") for x in m]}
    fires = bool(d[i] > ratio * m[i] and d[i] ** 2 - m[i] ** 2 > nsigma * power_noise(e[i], c[i]))
    reason = ""
    if fires:
        reason = (f"bright emission outside the image: the visibilities hold {d[i]:.3g} Jy on the shortest "
                  f"baselines (< {edges[i + 1]:.4g} lambda), the test image's model {m[i]:.3g} Jy; "
                  "self-calibration would pull that flux into the field: enlarge imsize (or image the "
                  "outlier); input delivered unchanged")
    return OutsideVerdict(fires, reason, float(d[i]), float(m[i]), float(q), float(edges[i + 1]), per_bin)


#: The test image's model holding less than this fraction of the shortest baselines' flux
#: while the band's slopes show no source away from the centre: the phases are too scrambled
#: for self-calibration from that image. Measured (s6-break2, 1 Jy at the centre, 120 deg phase
#: random walk, 3 seeds): 14-28x the model, 22-27x the peak, test image SNR 4-6; self-calibration locked onto an artefact
#: and delivered the source 8-9" from its position, "finished". Data that calibrate well:
#: 1.0-2.3x (bench_harm resolved, amp10, standard_1, bright at 60 deg); antenna delays 5.0x.
SCRAMBLED_RATIO = 10.0


def scrambled_reason(data_jy: float, model_jy: float, peak_jy: float = 0.0, limit: float = SCRAMBLED_RATIO) -> str:
    """Why the phases are too scrambled to self-calibrate from the test image ('' when not):
    the shortest baselines hold more than ``limit`` x both the flux of its clean model and its
    peak (Jy/beam). The model alone is not enough: a sparse array's sidelobe-limited test image
    may clean nothing while its peak shows the source (measured: 4 antennas, model 0 Jy, peak
    0.071 Jy for 0.107 Jy on the shortest baselines); the peak alone is not either: extended
    emission has a low peak and a model that holds its flux. Call only when the slopes show no
    emission away from the centre. Pure."""
    ref = max([x for x in (model_jy, peak_jy) if math.isfinite(x)] or [0.0])
    q = data_jy / ref if ref > 0 else math.inf
    if not (math.isfinite(data_jy) and q > limit):
        return ""
    return (f"phases too scrambled to self-calibrate: the shortest baselines hold {data_jy:.3g} Jy, the test "
            f"image's model {model_jy:.3g} Jy and peak {peak_jy:.3g} Jy/beam ({q:.0f}x; its brightest emission "
            "would be an artefact and become the model); calibrate the phases first (e.g. against the phase "
            "calibrator)")


def power_noise(err: float, count: float) -> float:
    """The noise (Jy^2) of a bin's mean power ``<|V|^2>`` from :func:`uvrange.binned_amplitudes`'s
    ``err`` (= sqrt(<noise^2> / n) + sqrt(<|V|^2>) / sqrt(n)) and count n: with s = err sqrt(n)
    <= 2 sqrt(<|V|^2>), the mean of n powers scatters by ~<|V|^2> / sqrt(n) >= s^2 / (4 sqrt(n)).
    The debiased amplitude sqrt(<|V|^2> - <noise^2>) of noise-only data is NOT small against
    ``err`` (measured: bench_harm ``undetected``, 0.1 mJy source, 0.0047 Jy on the shortest
    bin), so significance is judged on the power."""
    return (err * math.sqrt(count)) ** 2 / (4 * math.sqrt(count)) if count > 0 else math.inf


def model_visibilities(u_lambda: np.ndarray, v_lambda: np.ndarray, l_rad: np.ndarray, m_rad: np.ndarray,
                       flux_jy: np.ndarray, chunk: int = 20000) -> np.ndarray:
    """Direct Fourier sum ``sum_k S_k exp(-2 pi i (u l_k + v m_k))`` (complex, Jy) at the
    flat arrays ``u_lambda``/``v_lambda`` (same shape, wavelengths) of point components at
    direction cosines ``l_rad``/``m_rad`` with fluxes ``flux_jy`` (the small-field
    approximation, w term ignored: the test image is a few arcmin at most)."""
    out = np.zeros(u_lambda.shape, complex)
    lm = np.stack([l_rad, m_rad])
    for s in range(0, u_lambda.size, chunk):
        uv = np.stack([u_lambda[s:s + chunk], v_lambda[s:s + chunk]], axis=1)
        out[s:s + chunk] = np.exp(-2j * math.pi * (uv @ lm)) @ flux_jy
    return out


def model_components(model_fits: str, max_components: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(l, m, flux) of the non-zero pixels of a WSClean model image (radians, Jy), the
    ``max_components`` brightest (by |flux|) when there are more. Sign convention of the
    FITS header: l = (x - CRPIX1) * CDELT1 (CDELT1 < 0: l grows to the east)."""
    from selfcal_batch.imaging import imstats  # lazy: astropy only where a model image is read

    img, hdr = imstats.read_image(model_fits)
    y, x = np.nonzero(img)
    f = img[y, x]
    if f.size > max_components:
        keep = np.argsort(-np.abs(f))[:max_components]
        y, x, f = y[keep], x[keep], f[keep]
    deg = math.pi / 180
    l_rad = (x + 1 - float(hdr["CRPIX1"])) * float(hdr["CDELT1"]) * deg
    m_rad = (y + 1 - float(hdr["CRPIX2"])) * float(hdr["CDELT2"]) * deg
    return l_rad, m_rad, f.astype(float)


#: Visibilities (one channel, one hand) the direct Fourier sum is evaluated at: the cost is
#: points x components (<= 1000), so this bounds the check to ~1 s. 40 000 points give
#: 5 000 per uv bin, enough for a per-bin rms amplitude to a few per cent. (Measured: without
#: the bound, 20 000 rows x 2 hands x all channels took over 10 min in one test dataset.)
MAX_POINTS = 40_000


def measure_outside(ms: str, model_fits: str, *, nbins: int = 8, max_rows: int = 20000,
                    ratio: float = DEFAULT_RATIO, nsigma: float = DEFAULT_NSIGMA,
                    max_points: int = MAX_POINTS, sample: dict | None = None) -> OutsideVerdict:
    """:func:`outside_emission` on ``ms`` (the private working copy, DATA, read with
    python-casacore; never the user's input) against ``model_fits`` (the test image's clean
    model): ``sample`` (:func:`decorrelation.read_sample`, shared with the band-decorrelation
    check) or, without it, at most ``max_rows`` evenly spaced cross-correlation rows read here;
    unflagged parallel hands, ``nbins`` bins of equal counts in uv distance (wavelengths, per
    channel)."""
    s = sample if sample is not None else read_sample(ms, max_rows)
    uvw, ddid, data, flag, weight = (s[c] for c in ("UVW", "DATA_DESC_ID", "DATA", "FLAG", "WEIGHT"))
    if not len(ddid):
        return OutsideVerdict(False, "")
    freqs = s["chan_freq"]
    par = [0, data.shape[2] - 1] if data.shape[2] > 1 else [0]
    uu, vv, dv, ws = [], [], [], []
    for dd in np.unique(ddid):
        sel = ddid == dd
        f = freqs[int(dd)][: data.shape[1]] / C_LIGHT
        for p in par:
            ok = ~flag[sel][:, :, p]
            uu.append((uvw[sel, 0][:, None] * f[None, :])[ok])
            vv.append((uvw[sel, 1][:, None] * f[None, :])[ok])
            dv.append(data[sel][:, :, p][ok])
            ws.append(np.broadcast_to(weight[sel][:, p][:, None], ok.shape)[ok])
    u, v, dvis, wts = np.concatenate(uu), np.concatenate(vv), np.concatenate(dv), np.concatenate(ws)
    if u.size < nbins * 10:
        return OutsideVerdict(False, "")
    if u.size > max_points:  # evenly spaced: every time range, baseline and channel stays represented
        keep = np.linspace(0, u.size - 1, max_points).astype(np.int64)
        u, v, dvis, wts = u[keep], v[keep], dvis[keep], wts[keep]
    lr, mr, fl = model_components(model_fits)
    model = model_visibilities(u, v, lr, mr, fl) if fl.size else np.zeros(u.shape, complex)
    uvd = np.hypot(u, v)
    edges = np.quantile(uvd, np.linspace(0, 1, nbins + 1))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    d, m, e, c = binned_amplitudes(uvd, dvis, model, wts, edges)
    return outside_emission(edges, d, m, e, c, ratio=ratio, nsigma=nsigma)
