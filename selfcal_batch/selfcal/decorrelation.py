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
#: Fraction of the per-channel phase steps explained by ONE direction (:func:`slope_direction`)
#: above which the slopes are geometric even when they wrap. The delay-length ratio fails once
#: a baseline's phase step per channel exceeds pi: s6-harm, 0.6 Jy 500" off-axis, VLA-B, 32 MHz
#: channels: 90 ns on the longest baselines = 18 rad per channel, ratio 0.79, a false
#: needs_calibration. Random antenna delays fit no direction: measured on generated VLA-B
#: coverage (tests/unit/test_outside.py, 351 baselines), 10 ns rms: 0.17-0.27; a source
#: 54"-900" off-axis: 0.99-1.0 (small delays, whose steps stay near zero, are told apart by
#: :func:`slopes_geometric`'s comparison with no slope at all).
GEOMETRIC_FRACTION = 0.5
#: Fewest measured (baseline, time block) points for the direction search (below it the best of
#: many directions fits noise).
MIN_DIRECTION_POINTS = 60


def band_decorrelation(data: np.ndarray, flags: np.ndarray, baseline: np.ndarray,
                       chan_width_hz: float, min_snr: float = 5.0,
                       length_m: np.ndarray | None = None, uv_m: np.ndarray | None = None,
                       time_s: np.ndarray | None = None, radius_rad: float = 0.0) -> dict[str, float]:
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
    that of the longest third (NaN with fewer than 6 measured baselines); with ``uv_m``
    ((nrow, 2) projected baseline, metres), ``time_s`` ((nrow,) seconds) and ``radius_rad``
    > 0 also ``geometric_fraction`` and ``geometric_offset_arcsec`` (:func:`slope_direction`
    over the (baseline, :data:`BLOCK_S`) sums of the lag products).
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
    if uv_m is not None and time_s is not None and radius_rad > 0:
        out.update(_direction(p_row, pow_row, baseline, np.asarray(uv_m, float), np.asarray(time_s, float),
                              chan_width_hz, radius_rad))
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


#: Seconds of lag products summed per baseline for the direction search: the projected
#: baseline turns by 2 pi x 120 / 86164 = 0.009 rad meanwhile, which moves the phase step of a
#: source 1200" away on an 11 km baseline with 32 MHz channels by 0.4 rad (tolerable).
BLOCK_S = 120.0


def _direction(p_row: np.ndarray, pow_row: np.ndarray, baseline: np.ndarray, uv_m: np.ndarray,
               time_s: np.ndarray, chan_width_hz: float, radius_rad: float, min_snr: float = 3.0) -> dict[str, float]:
    """:func:`slope_direction` of the (baseline, :data:`BLOCK_S`) sums of the per-row lag
    products ``p_row`` (their noise power ``pow_row``), those with ``|sum| > min_snr *
    sqrt(sum pow)``; (u, v) the mean of the rows summed."""
    block = np.floor((time_s - time_s.min()) / BLOCK_S).astype(np.int64)
    _, inv = np.unique(np.stack([np.asarray(baseline, np.int64), block]), axis=1, return_inverse=True)
    inv = np.ravel(inv)
    n = inv.max() + 1 if inv.size else 0
    p = np.bincount(inv, p_row.real, n) + 1j * np.bincount(inv, p_row.imag, n)
    pw = np.bincount(inv, pow_row, n)
    cnt = np.maximum(np.bincount(inv, minlength=n), 1)
    u, v = np.bincount(inv, uv_m[:, 0], n) / cnt, np.bincount(inv, uv_m[:, 1], n) / cnt
    sig = np.abs(p) > min_snr * np.sqrt(pw)
    frac, off = slope_direction(p[sig], u[sig], v[sig], chan_width_hz, radius_rad)
    z = p[sig] / np.maximum(np.abs(p[sig]), 1e-300)
    centre = float(np.abs(z.mean())) if math.isfinite(frac) else math.nan  # the fraction with no slope
    bmax = float(np.max(np.hypot(u[sig], v[sig]))) if sig.any() else math.nan
    step = 299_792_458.0 / (8 * abs(chan_width_hz) * bmax) if chan_width_hz and bmax > 0 else math.nan
    return {"geometric_fraction": frac, "geometric_offset_arcsec": off * 206264.806,
            "geometric_step_arcsec": step * 206264.806, "geometric_fraction_centre": centre}


def slopes_geometric(per_spw: list[Mapping[str, float]], geometric_ratio: float = GEOMETRIC_DELAY_RATIO,
                     min_measured: int = 3) -> tuple[bool, float, str]:
    """Do the band's phase slopes come from emission away from the phase centre? From the
    windows with ``min_measured`` measured baselines: yes when the median
    ``delay_length_ratio`` is below ``geometric_ratio`` (slopes grow with baseline length),
    or when the median ``geometric_fraction`` is at least :data:`GEOMETRIC_FRACTION` at a
    median offset beyond two grid steps (one direction explains the slopes, also when they
    wrap: see :data:`GEOMETRIC_FRACTION`) and explains at least half of what no slope at
    all leaves unexplained (``(fraction - fraction_centre) / (1 - fraction_centre)``: small
    antenna delays, 4 ns with 32 MHz channels, leave the phase steps near zero, 0.6 of them
    fit zero and 0.65 the best direction, 36" away; a source 54" away: 0.99). Returns (verdict, the median ratio (NaN when none),
    a description for the log/reason). Pure.

    Why the outside-emission check needs it: phase errors alone decorrelate the test image, so
    its model holds less flux than the visibilities without any emission outside (measured,
    bench_harm ``bright``, 60 deg rms phase errors: data/model 2.3 on the shortest bin, ratio
    0.78-0.96; ``delays``, 4 ns antenna delays: data/model 5.0, ratio 1.02). Emission outside
    the field: ratio 0.18 (conf, 54"), 0.19 (offaxis, 144"), s5-break; 0.79 at 500" (wrapped)."""
    use = [r for r in per_spw if r.get("n_measured", 0) >= min_measured]

    def med(key: str) -> float:
        vals = [float(r[key]) for r in use if math.isfinite(float(r.get(key, math.nan)))]
        return float(np.median(vals)) if vals else math.nan
    ratio, frac, off, step, f0 = (med(k) for k in ("delay_length_ratio", "geometric_fraction", "geometric_offset_arcsec",
                                                    "geometric_step_arcsec", "geometric_fraction_centre"))
    if ratio < geometric_ratio:
        return True, ratio, f"grow with baseline length (short/long {ratio:.2f})"
    gain = (frac - f0) / (1 - f0) if f0 < 1 else 0.0  # of what no slope leaves unexplained
    if frac >= GEOMETRIC_FRACTION and off > 2 * step and gain >= GEOMETRIC_FRACTION:
        return True, ratio, f"fit one direction {off:.0f}\" from the centre ({100 * frac:.0f}% of the slopes)"
    return False, ratio, (f"do not grow with baseline length (short/long {ratio:.2f}) nor fit a direction away "
                          f"from the centre (best {100 * frac:.0f}% at {off:.0f}\", no slope {100 * f0:.0f}%)")


def slope_direction(lag: np.ndarray, u_m: np.ndarray, v_m: np.ndarray, chan_width_hz: float,
                    radius_rad: float, max_grid: int = 161) -> tuple[float, float]:
    """Are the per-channel phase steps of one direction? A source at (l, m) makes the phase step
    per channel of a baseline (u, v) (metres) ``k (u l + v m)``, ``k = 2 pi chan_width / c``:
    linear in the baseline vector, whatever its size (a step beyond pi wraps, but the phasor
    ``exp(i step)`` is what is compared). Antenna delays give steps that no direction fits.

    ``lag``: (N,) complex sums of ``V[c+1] conj(V[c])``; returns (the largest ``|mean_j
    exp(i (arg lag_j - k (u_j l + v_j m)))|`` over a grid of directions within
    ``radius_rad`` of the centre, spacing ``c / (8 chan_width b_max)`` (the phase at the longest
    baseline ``b_max`` moves by pi / 4 between grid points; at most ``max_grid`` per axis),
    the offset ``hypot(l, m)`` (radians) where it is reached). (NaN, NaN) with fewer than
    :data:`MIN_DIRECTION_POINTS` points or no channel width. The sign of (l, m) depends on the
    MS's convention: only the offset is returned. Pure."""
    lag, u_m, v_m = (np.asarray(x) for x in (lag, u_m, v_m))
    bmax = float(np.max(np.hypot(u_m, v_m))) if lag.size else 0.0
    if lag.size < MIN_DIRECTION_POINTS or chan_width_hz <= 0 or bmax <= 0 or radius_rad <= 0:
        return math.nan, math.nan
    k = 2 * math.pi * abs(chan_width_hz) / 299_792_458.0
    step = math.pi / 4 / (k * bmax)
    n = min(max_grid, 2 * math.ceil(radius_rad / step) + 1)
    grid = np.linspace(-radius_rad, radius_rad, n)
    z = lag / np.where(np.abs(lag) > 0, np.abs(lag), 1.0)
    a = np.exp(-1j * k * u_m[:, None] * grid[None, :])
    b = np.exp(-1j * k * v_m[:, None] * grid[None, :])
    f = np.abs((a * z[:, None]).T @ b) / lag.size  # (l, m)
    il, im = np.unravel_index(int(np.argmax(f)), f.shape)
    return float(f[il, im]), float(math.hypot(grid[il], grid[im]))


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
    length and fit one direction: when :func:`slopes_geometric` says so the answer is False
    with that reason (s5-break ``offaxis``: "needs_calibration, median baseline delay 5.0 ns"
    on data without any delay; s6-harm: the same 500" off-axis, where the slopes wrap).
    """
    usable = [r for r in per_spw if r.get("n_measured", 0) >= min_measured and math.isfinite(r.get("median_loss", math.nan))]
    if not usable:
        return False, ""
    delay = float(np.nanmedian([r.get("median_delay_ns", math.nan) for r in usable]))
    loss = float(np.median([r["median_loss"] for r in usable]))
    if band_hz > 0 and math.isfinite(delay):
        loss = max(loss, 1.0 - abs(float(np.sinc(delay * 1e-9 * band_hz))))
    geometric, _ratio, how = slopes_geometric(usable, min_measured=min_measured)
    if loss > limit and geometric:
        return False, (f"phase slopes across the band (median baseline delay {delay:.1f} ns) {how}: a source "
                       "away from the phase centre, not instrumental delays")
    if loss > limit:
        return True, (f"data look uncalibrated: the channel average loses {100 * loss:.0f}% of the amplitude to "
                      f"phase slopes across the band (median baseline delay {delay:.1f} ns); "
                      "calibrate delays/bandpass first")
    return False, ""



#: Cross-correlation rows read once after the test image (evenly spaced), shared by the
#: outside-emission and the band-decorrelation checks.
SAMPLE_ROWS = 100_000


def ms_geometry(ms: str) -> dict:
    """Per DATA_DESC_ID of ``ms`` (python-casacore): ``spw_of`` (its spw), ``chan_freq``
    (channel frequencies, Hz), ``chan_width`` (median |width|, Hz); and ``dish_m`` (median dish
    diameter in metres, 25 when the ANTENNA table records none). Shared by :func:`read_sample`
    and the coherence check (selfcal/coherence.py)."""
    from casacore.tables import table  # casacore is loaded only where a table is read

    with table(f"{ms}/DATA_DESCRIPTION", ack=False) as dd, table(f"{ms}/SPECTRAL_WINDOW", ack=False) as sw:
        spw_of = dd.getcol("SPECTRAL_WINDOW_ID")
        freqs = [np.ravel(sw.getcell("CHAN_FREQ", i)).astype(float) for i in range(sw.nrows())]
        widths = [float(np.median(np.abs(sw.getcell("CHAN_WIDTH", i)))) for i in range(sw.nrows())]
    with table(f"{ms}/ANTENNA", ack=False) as t:
        dish = np.asarray(t.getcol("DISH_DIAMETER"), float) if "DISH_DIAMETER" in t.colnames() else np.array([])
    dish = dish[np.isfinite(dish) & (dish > 0)]
    return {"spw_of": [int(s) for s in spw_of], "chan_freq": [freqs[int(s)] for s in spw_of],
            "chan_width": [widths[int(s)] for s in spw_of], "dish_m": float(np.median(dish)) if dish.size else 25.0}


def read_sample(ms: str, max_rows: int = SAMPLE_ROWS) -> dict:
    """One read of ``ms`` (the private working copy, python-casacore) for the checks after the
    test image: at most ``max_rows`` evenly spaced cross-correlation rows with ``DATA, FLAG,
    WEIGHT, UVW, TIME, ANTENNA1, ANTENNA2, DATA_DESC_ID`` (casacore shapes), ``spw_of`` (the spw
    of each DATA_DESC_ID), ``chan_freq`` (per
    DATA_DESC_ID, Hz), ``chan_width`` (per DATA_DESC_ID, median |width|, Hz) and ``dish_m``
    (median dish diameter, 25 when none is recorded)."""
    from casacore.tables import table, taql  # casacore is loaded only where a table is read

    out: dict = ms_geometry(ms)
    with table(ms, ack=False) as t:  # noqa: F841 (read by taql as $t)
        sub = taql("select DATA, FLAG, WEIGHT, UVW, TIME, ANTENNA1, ANTENNA2, DATA_DESC_ID from $t "
                   "where ANTENNA1 != ANTENNA2")
        try:
            n = sub.nrows()
            rows = np.linspace(0, n - 1, min(n, max_rows)).astype(np.int64) if n else np.zeros(0, np.int64)
            sel = sub.selectrows(rows.tolist()) if 0 < len(rows) < n else sub
            for c in ("DATA", "FLAG", "WEIGHT", "UVW", "TIME", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID"):
                out[c] = sel.getcol(c) if n else np.zeros(0)
            if sel is not sub:
                sel.close()
        finally:
            sub.close()
    return out


def measure_decorrelation(ms: str, max_rows: int = SAMPLE_ROWS, sample: dict | None = None,
                          field_beams: float = 3.0) -> list[dict[str, float]]:
    """:func:`band_decorrelation` per DATA_DESC_ID of ``sample`` (:func:`read_sample` of ``ms``,
    the private working copy, read here when not given), with the direction search out to
    ``field_beams`` x lambda / D (the primary beam's FWHM is ~1 lambda / D: a source far
    down the beam is still searched)."""
    s = sample if sample is not None else read_sample(ms, max_rows)
    out = []
    if not len(s["DATA_DESC_ID"]):
        return out
    for ddid in np.unique(s["DATA_DESC_ID"]):
        sel = s["DATA_DESC_ID"] == ddid
        if not sel.any():
            continue
        freq = float(np.mean(s["chan_freq"][int(ddid)]))
        radius = field_beams * 299_792_458.0 / freq / s["dish_m"] if freq > 0 else 0.0
        bl = s["ANTENNA1"][sel].astype(np.int64) * 10000 + s["ANTENNA2"][sel]
        uvw = s["UVW"][sel]
        res = band_decorrelation(s["DATA"][sel], s["FLAG"][sel], bl, s["chan_width"][int(ddid)],
                                 length_m=np.linalg.norm(uvw, axis=1), uv_m=uvw[:, :2], time_s=s["TIME"][sel],
                                 radius_rad=radius)
        res["spw"] = float(s["spw_of"][int(ddid)])
        out.append(res)
    return out
