"""One MS inspection that is correct for any valid MS (runs inside the CASA child).

Every reader here opens tables with ``casatools.table`` and must only be called in the
CASA child process (through :mod:`selfcal_batch.casa.jobs`); casatools is imported inside
the functions, so the pure helpers (:func:`time_sampling`, :func:`corr_names`,
:func:`time_columns_disagree`) can be unit-tested anywhere.

What "any valid MS" means here (the layouts found in practice):

* ids come from the tables: a DATA_DESCRIPTION row names its spw and polarisation setup;
  spw and DATA_DESC ids may have gaps or be defined without any main-table rows (those are
  listed as unused, never read);
* spws may differ in channel count and polarisation setups in correlation count, so
  DATA/FLAG/WEIGHT are only ever read per DATA_DESC_ID (a TaQL selection), never across rows
  of different shapes;
* the integration time comes from the TIME sampling (per baseline and data description),
  not from INTERVAL/EXPOSURE, which some exporters fill with placeholders (0.01 s).
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Sequence

import numpy as np

from selfcal_batch.ms.selection import field_selection_problem

#: casacore Stokes enumeration (``casacore/measures/Measures/Stokes.h``) -> name.
STOKES_NAMES = {1: "I", 2: "Q", 3: "U", 4: "V", 5: "RR", 6: "RL", 7: "LR", 8: "LL",
                9: "XX", 10: "XY", 11: "YX", 12: "YY"}

#: INTERVAL (or EXPOSURE) outside [LOW, HIGH] x the TIME spacing is "disagreeing": integrations
#: cannot overlap (> 1.5x), and less than half the spacing is not dead time but a placeholder.
INTERVAL_RATIO_LOW = 0.5
INTERVAL_RATIO_HIGH = 1.5

#: Rows read per chunk when a whole column is scanned (bounded memory for any MS size).
CHUNK_ROWS = 50_000


def corr_names(corr_types: Sequence[int]) -> list[str]:
    """Correlation names ('RR', 'XY', 'I', ...) of a POLARIZATION CORR_TYPE row."""
    return [STOKES_NAMES.get(int(c), f"corr{int(c)}") for c in corr_types]


def time_sampling(time: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray, ddid: np.ndarray,
                  interval: np.ndarray, exposure: np.ndarray) -> dict[str, Any]:
    """Integration time and on-source time from the TIME stamps (all arrays: one value per row).

    The integration is the median spacing of consecutive TIME stamps of the same baseline
    and data description (s); with one time stamp only, the median INTERVAL. On-source time
    = the largest number of TIME stamps of one baseline and data description x integration
    (s): baselines need not share time stamps (real VLA data: 15 distinct stamps in 80 s of
    10-s integrations), so counting distinct stamps of the whole MS over-counts. Returns ``integration_s,
    interval_s, exposure_s`` (medians of the columns), ``time_on_source_s``,
    ``time_span_s`` and ``time_warning`` ('' when INTERVAL and EXPOSURE agree with the
    spacing within [INTERVAL_RATIO_LOW, INTERVAL_RATIO_HIGH]).
    """
    time = np.asarray(time, dtype=float)
    interval_med = float(np.median(interval)) if len(interval) else float("nan")
    exposure_med = float(np.median(exposure)) if len(exposure) else float("nan")
    order = np.lexsort((time, antenna2, antenna1, ddid))
    t = time[order]
    same = ((np.asarray(antenna1)[order][1:] == np.asarray(antenna1)[order][:-1])
            & (np.asarray(antenna2)[order][1:] == np.asarray(antenna2)[order][:-1])
            & (np.asarray(ddid)[order][1:] == np.asarray(ddid)[order][:-1]))
    step = np.diff(t)
    dt = step[same]
    dt = dt[dt > 0]
    group = np.concatenate([[0], np.cumsum(~same)])
    new_stamp = np.concatenate([[True], ~same | (step > 0)])
    stamps = int(np.bincount(group, weights=new_stamp).max()) if len(t) else 0
    if dt.size:
        integration = float(np.median(dt))
    else:
        integration = interval_med if np.isfinite(interval_med) and interval_med > 0 else 1.0
    utimes = np.unique(time)
    span = float(utimes[-1] - utimes[0]) if len(utimes) > 1 else integration
    warning = time_columns_disagree(integration, interval_med, exposure_med) if dt.size else ""
    return {"integration_s": integration, "interval_s": interval_med, "exposure_s": exposure_med,
            "time_on_source_s": float(stamps * integration), "time_span_s": span,
            "time_warning": warning}


def time_columns_disagree(integration_s: float, interval_s: float, exposure_s: float) -> str:
    """'' when INTERVAL and EXPOSURE (medians, s) fit the TIME spacing, else a description."""
    bad = [f"{name} {val:.4g} s" for name, val in (("INTERVAL", interval_s), ("EXPOSURE", exposure_s))
           if not (np.isfinite(val) and INTERVAL_RATIO_LOW * integration_s <= val
                   <= INTERVAL_RATIO_HIGH * integration_s)]
    if not bad:
        return ""
    return f"{' and '.join(bad)} do not match the TIME spacing {integration_s:.4g} s"


def _subtable_rows(vis: str, name: str, cols: Sequence[str]) -> list[dict[str, Any]]:
    """All rows of a subtable, read cell by cell (columns may vary in shape per row)."""
    from casatools import table  # casatools: CASA child only (casa/jobs.py)

    tb = table()
    tb.open(os.path.join(vis, name))
    try:
        have = set(tb.colnames())
        rows = []
        for r in range(int(tb.nrows())):
            row = {}
            for c in cols:
                if c in have and tb.iscelldefined(c, r):
                    v = tb.getcell(c, r)
                    row[c] = v.tolist() if hasattr(v, "tolist") else v
                else:
                    row[c] = None
            rows.append(row)
        return rows
    finally:
        tb.close()


def _check_is_ms(vis: str, data_column: str = "DATA") -> tuple[list[str], int]:
    """(main-table columns, rows); ValueError (one line) if ``vis`` is not a usable MS (or lacks
    ``data_column``, the column that will be read)."""
    from casatools import table  # (same reason)

    if not os.path.isdir(vis):
        raise ValueError(f"{vis} does not exist or is not a directory")
    if not os.path.exists(os.path.join(vis, "table.dat")):
        raise ValueError(f"{vis} is not a measurement set (no table.dat)")
    tb = table()
    try:
        tb.open(vis)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{vis} cannot be opened as a table: {str(exc).strip()[:200]}") from None
    try:
        cols = list(tb.colnames())
        nrows = int(tb.nrows())
        keywords = tb.keywordnames()
    finally:
        tb.close()
    for sub in ("ANTENNA", "SPECTRAL_WINDOW", "FIELD", "POLARIZATION", "DATA_DESCRIPTION"):
        if sub not in keywords:
            raise ValueError(f"{vis} is not a measurement set (no {sub} subtable)")
    if data_column not in cols:
        raise ValueError(f"{vis} has no {data_column} column")
    if nrows == 0:
        raise ValueError(f"{vis} has no rows")
    tb.open(os.path.join(vis, "FEED"))
    nfeed = tb.nrows()
    tb.close()
    if nfeed == 0:
        raise ValueError(f"{vis} has an empty FEED subtable (CASA cannot calibrate it)")
    return cols, nrows


def inspect_ms(vis: str, field: str = "", data_column: str = "DATA") -> dict[str, Any]:
    """Describe an MS: what the pipeline needs to validate and plan a dataset.

    Keys: ``nrows, columns, fields, antenna_names, antennas_present`` (ids with
    cross-correlation rows), ``antennas_unflagged`` (ids with unflagged cross-correlation
    data), ``n_antennas_present``, ``data_descriptions`` (``id, spw, pol, nrows, corr``),
    ``spws`` (spws *with data*: ``id, nchan, freq_min, freq_max, ref_freq, chan_width``
    in Hz, ``corr``), ``spws_unused`` (ids defined without rows), ``scans`` (``scan,
    spws``), ``ncorr`` (per used polarisation setup), ``correlations`` (spw id -> names),
    time keys of :func:`time_sampling`, ``max_baseline_m``, ``flagged_fraction``,
    ``zero_weight_fraction`` (of unflagged samples), ``vis_noise_jy``, ``thermal_noise_jy``
    (Stokes I / parallel hands, natural weighting), ``warnings``.

    ``data_column``: the visibility column read (``CORRECTED_DATA`` for ``input_column =
    "corrected"``: an MS need not have DATA then). Raises ``ValueError`` with a one-line reason
    for an MS we cannot self-calibrate.
    """
    from casatools import table  # (same reason)

    cols, nrows = _check_is_ms(vis, data_column)
    fields = [r["NAME"] for r in _subtable_rows(vis, "FIELD", ["NAME"])]
    if field and (why := field_selection_problem(field, fields)):  # the up-front check's rule
        raise ValueError(why)
    ant_names = [str(r["NAME"] or "") for r in _subtable_rows(vis, "ANTENNA", ["NAME"])]
    spw_rows = _subtable_rows(vis, "SPECTRAL_WINDOW", ["NUM_CHAN", "CHAN_FREQ", "CHAN_WIDTH", "REF_FREQUENCY"])
    pol_rows = _subtable_rows(vis, "POLARIZATION", ["NUM_CORR", "CORR_TYPE"])
    dd_rows = _subtable_rows(vis, "DATA_DESCRIPTION", ["SPECTRAL_WINDOW_ID", "POLARIZATION_ID"])

    tb = table()
    tb.open(vis)
    try:
        a1 = tb.getcol("ANTENNA1")
        a2 = tb.getcol("ANTENNA2")
        t = tb.getcol("TIME")
        ddid = tb.getcol("DATA_DESC_ID")
        scan_no = tb.getcol("SCAN_NUMBER")
        uvw = tb.getcol("UVW")
        interval = tb.getcol("INTERVAL")
        exposure = tb.getcol("EXPOSURE") if "EXPOSURE" in cols else interval
        flag_row = tb.getcol("FLAG_ROW") if "FLAG_ROW" in cols else np.zeros(nrows, bool)
    finally:
        tb.close()
    used_dd = sorted(int(d) for d in np.unique(ddid))
    for d in used_dd:
        if d >= len(dd_rows):
            raise ValueError(f"{vis}: main-table rows use DATA_DESC_ID {d}, which DATA_DESCRIPTION does not define")
    dds: list[dict[str, Any]] = []
    for d in used_dd:
        spw, pol = int(dd_rows[d]["SPECTRAL_WINDOW_ID"]), int(dd_rows[d]["POLARIZATION_ID"])
        if spw >= len(spw_rows) or pol >= len(pol_rows):
            raise ValueError(f"{vis}: DATA_DESCRIPTION row {d} names spw {spw} / polarisation {pol}, "
                             "which are not defined")
        dds.append({"id": d, "spw": spw, "pol": pol, "nrows": int(np.count_nonzero(ddid == d)),
                    "corr": corr_names(pol_rows[pol]["CORR_TYPE"] or [])})
    dd_spw = {dd["id"]: dd["spw"] for dd in dds}

    cross = a1 != a2
    if not np.any(cross):
        raise ValueError(f"{vis} has no cross-correlations")
    ants_present = sorted(set(int(x) for x in np.concatenate([a1[cross], a2[cross]])))
    nant = max(len(ant_names), int(max(a1.max(), a2.max())) + 1)
    per = _scan_data(vis, dds, ddid, a1, a2, flag_row, nant, data_column)
    if per["n_samples"] == 0 or per["n_flagged"] >= 0.999 * per["n_samples"]:
        pct = 100 * per["n_flagged"] / per["n_samples"] if per["n_samples"] else 100.0
        raise ValueError(f"{vis} has no unflagged data ({pct:.1f}% flagged)")
    if per["data_zero"]:
        raise ValueError(f"{vis}: DATA column is all zeros in the first rows")

    spws = []
    for sid in sorted(set(dd_spw.values())):
        r = spw_rows[sid]
        freqs = np.atleast_1d(np.asarray(r["CHAN_FREQ"], dtype=float))
        widths = np.atleast_1d(np.asarray(r["CHAN_WIDTH"], dtype=float))
        spws.append({"id": sid, "nchan": int(r["NUM_CHAN"] or len(freqs)), "freq_min": float(freqs.min()),
                     "freq_max": float(freqs.max()), "ref_freq": float(r["REF_FREQUENCY"] or freqs.mean()),
                     "chan_width": float(np.abs(np.median(widths))),
                     "corr": sorted({c for dd in dds if dd["spw"] == sid for c in dd["corr"]})})
    scans = []
    for sc in np.unique(scan_no):
        sel_dd = np.unique(ddid[scan_no == sc])
        scans.append({"scan": int(sc), "spws": sorted({dd_spw[int(d)] for d in sel_dd})})
    timing = time_sampling(t, a1, a2, ddid, interval, exposure)
    uvdist = np.sqrt(uvw[0, cross] ** 2 + uvw[1, cross] ** 2)
    n_good = max(1, per["n_par"] - per["n_par_flagged"])
    vis_noise = per["vis_noise"]
    thermal = vis_noise / np.sqrt(n_good) if np.isfinite(vis_noise) else float("nan")
    unflagged = per["n_samples"] - per["n_flagged"]
    warnings = []
    if timing["time_warning"]:
        warnings.append(timing["time_warning"] + ": the TIME spacing is used as the integration time")
    unused = [i for i in range(len(spw_rows)) if i not in {s["id"] for s in spws}]
    used_pols = sorted({dd["pol"] for dd in dds})
    return {
        "vis": vis,
        "nrows": nrows,
        "columns": cols,
        "fields": fields,
        "antenna_names": ant_names,
        "antennas_present": ants_present,
        "antennas_unflagged": [a for a in ants_present if per["ant_good"][a] > 0],
        "n_antennas_present": len(ants_present),
        "data_descriptions": dds,
        "spws": spws,
        "spws_unused": unused,
        "scans": scans,
        "ncorr": [int(pol_rows[p]["NUM_CORR"]) for p in used_pols],
        "correlations": {str(s["id"]): s["corr"] for s in spws},
        **timing,
        "max_baseline_m": float(np.max(uvdist)),
        "flagged_fraction": float(per["n_flagged"] / per["n_samples"]),
        "zero_weight_fraction": float(per["n_zero_weight"] / unflagged) if unflagged else 0.0,
        "vis_noise_jy": float(vis_noise),
        "thermal_noise_jy": float(thermal),
        "warnings": warnings,
    }


def parallel_indices(corr: Sequence[str]) -> list[int]:
    """Indices of the parallel hands (RR/LL, XX/YY, or a Stokes I) in a correlation list;
    all correlations when there is none."""
    idx = [i for i, c in enumerate(corr) if c in ("RR", "LL", "XX", "YY", "I")]
    return idx or list(range(len(corr)))


def _scan_data(vis: str, dds: list[dict[str, Any]], ddid: np.ndarray, a1: np.ndarray, a2: np.ndarray,
               flag_row: np.ndarray, nant: int, data_column: str = "DATA") -> dict[str, Any]:
    """Flag, weight and noise statistics, read per data description (one shape each)."""
    from casatools import table  # (same reason)

    out = {"n_samples": 0, "n_flagged": 0, "n_par": 0, "n_par_flagged": 0, "n_zero_weight": 0,
           "ant_good": np.zeros(nant, dtype=np.int64), "data_zero": True}
    diffs: list[np.ndarray] = []
    tb = table()
    tb.open(vis)
    try:
        has_ws = "WEIGHT_SPECTRUM" in tb.colnames()
        for dd in dds:
            rows = np.flatnonzero(ddid == dd["id"])
            sub = tb.selectrows(rows.tolist())
            try:
                par = parallel_indices(dd["corr"])
                n = int(sub.nrows())
                ws_ok = has_ws and n > 0 and sub.iscelldefined("WEIGHT_SPECTRUM", 0)
                for start in range(0, n, CHUNK_ROWS):
                    m = min(CHUNK_ROWS, n - start)
                    fl = sub.getcol("FLAG", startrow=start, nrow=m) | flag_row[rows[start:start + m]][None, None, :]
                    c1, c2 = a1[rows[start:start + m]], a2[rows[start:start + m]]
                    x = c1 != c2
                    fl = fl[..., x]
                    out["n_samples"] += int(fl.size)
                    out["n_flagged"] += int(fl.sum())
                    out["n_par"] += int(fl[par].size)
                    out["n_par_flagged"] += int(fl[par].sum())
                    good_row = (~fl).sum(axis=(0, 1))
                    out["ant_good"] += np.bincount(c1[x], weights=good_row, minlength=nant).astype(np.int64)[:nant]
                    out["ant_good"] += np.bincount(c2[x], weights=good_row, minlength=nant).astype(np.int64)[:nant]
                    wt = sub.getcol("WEIGHT", startrow=start, nrow=m)[:, x]
                    zero = np.broadcast_to(no_weight(wt)[:, None, :], fl.shape)
                    if ws_ok:
                        zero = zero | no_weight(sub.getcol("WEIGHT_SPECTRUM", startrow=start, nrow=m)[..., x])
                    out["n_zero_weight"] += int((zero & ~fl).sum())
                if n:
                    sample = sub.getcol(data_column, startrow=0, nrow=min(2000, n))
                    if not np.all(sample == 0):
                        out["data_zero"] = False
                    diffs.append(_noise_diffs(sub, n, par, data_column))
            finally:
                sub.close()
    finally:
        tb.close()
    vals = np.concatenate(diffs) if diffs else np.zeros(0)
    if vals.size < 20:
        out["vis_noise"] = float("nan")
    else:
        mad = np.median(np.abs(vals - np.median(vals)))
        out["vis_noise"] = float(1.4826 * mad / np.sqrt(2.0))
    return out


def _noise_diffs(sub: Any, nrows: int, par: list[int], data_column: str = "DATA") -> np.ndarray:
    """Real and imaginary parts of differences of neighbouring samples (one data description).

    Sky and gains are nearly identical in neighbouring channels, so their difference is
    noise; with one channel, differences of consecutive rows are used. The per-visibility
    noise is then 1.4826 MAD / sqrt(2) of these values (robust)."""
    step = max(1, nrows // 20000)
    n = min(nrows, 20000 * step)
    data = sub.getcol(data_column, startrow=0, nrow=n, rowincr=step)
    flag = sub.getcol("FLAG", startrow=0, nrow=n, rowincr=step)
    b1 = sub.getcol("ANTENNA1", startrow=0, nrow=n, rowincr=step)
    b2 = sub.getcol("ANTENNA2", startrow=0, nrow=n, rowincr=step)
    keep = b1 != b2
    data, flag = data[par][..., keep], flag[par][..., keep]
    if data.shape[1] >= 2:
        d = data[:, 1:, :] - data[:, :-1, :]
        ok = ~(flag[:, 1:, :] | flag[:, :-1, :])
    else:
        d = data[:, :, 1:] - data[:, :, :-1]
        ok = ~(flag[:, :, 1:] | flag[:, :, :-1])
    return np.concatenate([d.real[ok], d.imag[ok]])


def no_weight(w: np.ndarray) -> np.ndarray:
    """Weights that exclude a sample: 0 or not finite (NaN/inf). Pure."""
    return (w == 0) | ~np.isfinite(w)


def zero_weight_rows(vis: str) -> list[dict[str, Any]]:
    """Unflagged samples with WEIGHT (or WEIGHT_SPECTRUM) 0 or NaN/inf (:func:`no_weight`), per spw: ``spw`` (id),
    ``key`` (int64 row keys of :func:`row_keys`), ``mask`` (bool [ncorr, nchan or 1, nrow]: 1 when
    the spw has no WEIGHT_SPECTRUM, the zero WEIGHT then holds for every channel), ``chan_freq``
    (the spw's channel frequencies, Hz: to match channels after split, see
    :func:`selfcal_batch.ms.repair.channel_map`).

    Read from the input (view) because CASA split rewrites WEIGHT from SIGMA: the copy has
    lost the zero weights (measured, CASA 6.7)."""
    from casatools import table  # (same reason)

    out = []
    chan_freq = [r["CHAN_FREQ"] for r in _subtable_rows(vis, "SPECTRAL_WINDOW", ["CHAN_FREQ"])]
    tb = table()
    tb.open(vis)
    try:
        for spw, sub, n, ws_ok in _per_data_description(tb, vis):
            for start in range(0, n, CHUNK_ROWS):
                m = min(CHUNK_ROWS, n - start)
                zero = no_weight(sub.getcol("WEIGHT", startrow=start, nrow=m))[:, None, :]
                if ws_ok:
                    zero = zero | no_weight(sub.getcol("WEIGHT_SPECTRUM", startrow=start, nrow=m))
                zero = zero & ~sub.getcol("FLAG", startrow=start, nrow=m)
                hit = np.flatnonzero(zero.any(axis=(0, 1)))
                if hit.size:
                    key = row_keys(sub.getcol("TIME", startrow=start, nrow=m)[hit],
                                   sub.getcol("ANTENNA1", startrow=start, nrow=m)[hit],
                                   sub.getcol("ANTENNA2", startrow=start, nrow=m)[hit])
                    out.append({"spw": spw, "key": key, "mask": zero[..., hit],
                                "chan_freq": np.atleast_1d(np.asarray(chan_freq[spw], dtype=float))})
    finally:
        tb.close()
    return out


def _per_data_description(tb: Any, vis: str) -> Iterator[tuple[int, Any, int, bool]]:
    """For each data description of the open main table ``tb`` of ``vis``: (spw id, the
    row selection as a table, its row count, whether WEIGHT_SPECTRUM holds values); rows
    of one data description share their array shapes, so columns can be read in blocks."""
    has_ws = "WEIGHT_SPECTRUM" in tb.colnames()
    ddid = tb.getcol("DATA_DESC_ID")
    dd_spw = [int(r["SPECTRAL_WINDOW_ID"]) for r in _subtable_rows(vis, "DATA_DESCRIPTION", ["SPECTRAL_WINDOW_ID"])]
    for d in np.unique(ddid):
        sub = tb.selectrows(np.flatnonzero(ddid == d).tolist())
        try:
            n = int(sub.nrows())
            yield dd_spw[int(d)], sub, n, bool(has_ws and n > 0 and sub.iscelldefined("WEIGHT_SPECTRUM", 0))
        finally:
            sub.close()


def row_keys(time: np.ndarray, antenna1: np.ndarray, antenna2: np.ndarray) -> np.ndarray:
    """One int64 per row identifying (TIME to 1 ms, ANTENNA1, ANTENNA2) within a spw.

    Antenna ids < 1024; TIME (MJD seconds, ~5e9 today) x 1000 x 2^20 stays below 2^63
    until MJD seconds 8.7e9 (year 2137)."""
    t_ms = np.round(np.asarray(time, dtype=float) * 1000.0).astype(np.int64)
    return (t_ms << 20) + (np.asarray(antenna1, dtype=np.int64) << 10) + np.asarray(antenna2, dtype=np.int64)
