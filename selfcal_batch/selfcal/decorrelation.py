"""Phase slopes across the band (issue 14's ``needs_calibration``): do the visibilities look
uncalibrated (instrumental delays decorrelate a spectral window's channel average), or are
the slopes geometric (a source away from the phase centre)?

:func:`band_decorrelation` and :func:`looks_uncalibrated` are pure (unit tested);
:func:`measure_decorrelation` is the thin wrapper that reads the private working copy.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np


#: Median delay of the shortest third of the measured baselines over that of the longest third
#: below which the phase slopes are geometric (a source away from the phase centre: delay =
#: baseline . direction / c grows with the projected length), not instrumental (antenna-based
#: delays do not depend on baseline length: the quotient scatters around 1). Measured on the
#: generated s5-break ``offaxis`` dataset (0.5 Jy 144" off-axis, no delays): 0.19 (conf, 54"
#: off-axis: 0.18); raw data with 4 ns rms antenna delays (bench_harm ``delays``): see the report.
GEOMETRIC_DELAY_RATIO = 0.5


def band_decorrelation(data: np.ndarray, flags: np.ndarray, baseline: np.ndarray,
                       chan_width_hz: float, min_snr: float = 5.0,
                       length_m: np.ndarray | None = None) -> dict[str, float]:
    """Phase slopes across one spectral window, measured without noise bias.

    ``data``/``flags``: (nrow, nchan, ncorr) as casacore reads DATA/FLAG; ``baseline``:
    (nrow,) an integer id per baseline (ANTENNA1 * 10000 + ANTENNA2). For each baseline
    ``P = sum over rows, channels and parallel hands of V[c+1] conj(V[c])``: the common
    (atmospheric) phase of each row cancels and noise averages to zero, so ``arg P`` is the
    phase step per channel. Baselines with ``|P| > min_snr * sqrt(sum |V[c+1] conj(V[c])|^2)``
    are measured. The decorrelation of the channel average by a linear phase of slope ``s``
    over N channels is ``1 - |sin(N s / 2) / (N sin(s / 2))|``.

    Returns ``n_baselines``, ``n_measured``, ``median_loss`` (median decorrelation of the
    measured baselines, NaN when none) and ``median_delay_ns`` (median |slope| / (2 pi
    chan_width), NaN when none); with ``length_m`` ((nrow,) baseline lengths, metres) also
    ``delay_length_ratio``: median delay of the shortest third of the measured baselines /
    that of the longest third (NaN with fewer than 6 measured baselines).
    """
    d = np.asarray(data)
    f = np.asarray(flags, dtype=bool)
    nrow, nchan, ncorr = d.shape
    out = {"n_baselines": float(len(np.unique(baseline))), "n_measured": 0.0,
           "median_loss": math.nan, "median_delay_ns": math.nan}
    if nchan < 2 or nrow == 0:
        return out
    par = [0, ncorr - 1] if ncorr >= 2 else [0]
    v = np.where(f, 0.0, d)[:, :, par]
    ok = ~(f[:, 1:, :][:, :, par] | f[:, :-1, :][:, :, par])
    x = (v[:, 1:, :] * np.conj(v[:, :-1, :])) * ok
    p_row = x.sum(axis=(1, 2))
    pow_row = (np.abs(x) ** 2).sum(axis=(1, 2))
    ids, inv = np.unique(baseline, return_inverse=True)
    p = np.zeros(len(ids), dtype=complex)
    pw = np.zeros(len(ids))
    np.add.at(p, inv, p_row)
    np.add.at(pw, inv, pow_row)
    sig = np.abs(p) > min_snr * np.sqrt(pw)
    if not sig.any():
        return out
    s = np.angle(p[sig])
    with np.errstate(invalid="ignore", divide="ignore"):
        coh = np.where(np.abs(s) > 1e-9, np.abs(np.sin(nchan * s / 2) / (nchan * np.sin(s / 2))), 1.0)
    if length_m is not None:
        out["delay_length_ratio"] = _delay_length_ratio(np.abs(s), length_m, inv, len(ids), sig)
    out.update(n_measured=float(sig.sum()), median_loss=float(np.median(1.0 - coh)),
               median_delay_ns=float(np.median(np.abs(s)) / (2 * math.pi * chan_width_hz) * 1e9)
               if chan_width_hz > 0 else math.nan)
    return out


def _delay_length_ratio(slope: np.ndarray, length_m: np.ndarray, inv: np.ndarray, nbl: int,
                        sig: np.ndarray) -> float:
    """Median |slope| of the shortest third of the measured baselines / the longest third's."""
    lsum = np.zeros(nbl)
    np.add.at(lsum, inv, np.asarray(length_m, float))
    length = (lsum / np.maximum(np.bincount(inv, minlength=nbl), 1))[sig]
    if len(length) < 6:
        return math.nan
    order = np.argsort(length)
    k = len(order) // 3
    long_ = float(np.median(slope[order[-k:]]))
    return float(np.median(slope[order[:k]])) / long_ if long_ > 0 else math.nan


def looks_uncalibrated(per_spw: list[Mapping[str, float]], limit: float, band_hz: float = 0.0,
                       min_measured: int = 3) -> tuple[bool, str]:
    """Strong decorrelation across the band.

    From the spectral windows with at least ``min_measured`` measured baselines: the median
    baseline delay ``tau`` (median of the windows' ``median_delay_ns``) and the loss of the
    channel average over the whole band ``band_hz`` (first to last channel), ``1 -
    |sinc(tau * band_hz)|`` (a linear phase over the band); the larger of that and the
    windows' median within-window loss is compared with ``limit``.

    The default ``limit`` 0.3 (channel average 30 % below the per-channel amplitude) needs
    ``tau * band`` > 0.43: 1.7 ns over 256 MHz, 0.43 ns over 1 GHz; delay-calibrated data
    keep residual delays near 0.1 ns (loss < 1 % over 1 GHz), raw EVLA data have tens of
    ns (the issue's raw scan: channel average a third of the per-channel amplitude).
    A bright source far from the phase centre also makes phase slopes (8 beams off-centre:
    ~2 pi x 8 x bandwidth / frequency on the longest baselines), but they grow with baseline
    length: when the windows' median ``delay_length_ratio`` is below
    :data:`GEOMETRIC_DELAY_RATIO` the answer is False with that reason (s5-break ``offaxis``:
    "needs_calibration, median baseline delay 5.0 ns" on data without any delay).
    """
    usable = [r for r in per_spw if r.get("n_measured", 0) >= min_measured and math.isfinite(r.get("median_loss", math.nan))]
    if not usable:
        return False, ""
    delay = float(np.nanmedian([r.get("median_delay_ns", math.nan) for r in usable]))
    loss = float(np.median([r["median_loss"] for r in usable]))
    if band_hz > 0 and math.isfinite(delay):
        loss = max(loss, 1.0 - abs(float(np.sinc(delay * 1e-9 * band_hz))))
    ratios = [r["delay_length_ratio"] for r in usable if math.isfinite(r.get("delay_length_ratio", math.nan))]
    if loss > limit and ratios and float(np.median(ratios)) < GEOMETRIC_DELAY_RATIO:
        return False, (f"phase slopes across the band (median baseline delay {delay:.1f} ns) grow with baseline "
                       f"length (short/long {float(np.median(ratios)):.2f}): a source away from the phase "
                       "centre, not instrumental delays")
    if loss > limit:
        return True, (f"data look uncalibrated: the channel average loses {100 * loss:.0f}% of the amplitude to "
                      f"phase slopes across the band (median baseline delay {delay:.1f} ns); "
                      "calibrate delays/bandpass first")
    return False, ""



def measure_decorrelation(ms: str, max_rows: int = 60000) -> list[dict[str, float]]:
    """:func:`band_decorrelation` per DATA_DESC_ID of ``ms`` (the private working copy, read
    with python-casacore) on at most ``max_rows`` evenly spaced rows of each."""
    from casacore.tables import table, taql  # casacore is loaded only where a table is read

    out = []
    with table(f"{ms}/DATA_DESCRIPTION", ack=False) as dd, table(f"{ms}/SPECTRAL_WINDOW", ack=False) as sw:
        spw_of = dd.getcol("SPECTRAL_WINDOW_ID")
        widths = [float(np.median(np.abs(w))) for w in (sw.getcell("CHAN_WIDTH", i) for i in range(sw.nrows()))]
    with table(ms, ack=False) as t:  # noqa: F841 (read by taql as $t)
        for ddid, spw in enumerate(spw_of):  # noqa: B007 (read by taql as $ddid)
            sub = taql("select DATA, FLAG, ANTENNA1, ANTENNA2, UVW from $t where DATA_DESC_ID == $ddid "
                       "and ANTENNA1 != ANTENNA2")
            try:
                n = sub.nrows()
                if n == 0:
                    continue
                step = max(1, n // max_rows)
                kw = {"startrow": 0, "nrow": min(n, max_rows * step), "rowincr": step}
                data, flags = sub.getcol("DATA", **kw), sub.getcol("FLAG", **kw)
                bl = sub.getcol("ANTENNA1", **kw).astype(np.int64) * 10000 + sub.getcol("ANTENNA2", **kw)
                length = np.linalg.norm(sub.getcol("UVW", **kw), axis=1)
            finally:
                sub.close()
            res = band_decorrelation(data, flags, bl, widths[spw] if spw < len(widths) else 0.0, length_m=length)
            res["spw"] = float(spw)
            out.append(res)
    return out
