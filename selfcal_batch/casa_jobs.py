"""Functions that run inside the CASA child process (they import casatools).

Called by name through :func:`selfcal_batch.calibration.job`; never import this module in
a Dask worker or any process that imports python-casacore.
"""
from __future__ import annotations

import os
from typing import Any


def inspect_ms(vis: str, field: str = "") -> dict[str, Any]:
    """Describe an MS: what the pipeline needs to validate and plan a dataset.

    Raises ``ValueError`` with a one-line reason for an MS we cannot self-calibrate.
    """
    import numpy as np
    from casatools import msmetadata, table

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
    if "DATA" not in cols:
        raise ValueError(f"{vis} has no DATA column")
    if nrows == 0:
        raise ValueError(f"{vis} has no rows")
    tb.open(os.path.join(vis, "FEED"))
    nfeed = tb.nrows()
    tb.close()
    if nfeed == 0:
        raise ValueError(f"{vis} has an empty FEED subtable (CASA cannot calibrate it)")

    msmd = msmetadata()
    msmd.open(vis)
    try:
        fields = list(msmd.fieldnames())
        if field:
            wanted = [f.strip() for f in field.split(",") if f.strip()]
            for f in wanted:
                if f not in fields and not (f.isdigit() and int(f) < len(fields)):
                    raise ValueError(f"field '{f}' not in the MS (fields: {', '.join(fields)})")
        ant_names = list(msmd.antennanames())
        nspw = int(msmd.nspw())
        spws = []
        for s in range(nspw):
            freqs = msmd.chanfreqs(s)
            spws.append(
                {
                    "id": s,
                    "nchan": int(len(freqs)),
                    "freq_min": float(np.min(freqs)),
                    "freq_max": float(np.max(freqs)),
                    "ref_freq": float(msmd.reffreq(s)["m0"]["value"]),
                    "chan_width": float(np.abs(np.median(msmd.chanwidths(s)))),
                }
            )
        scans = []
        for sc in msmd.scannumbers():
            sc = int(sc)
            scans.append({"scan": sc, "spws": sorted(int(x) for x in msmd.spwsforscan(sc))})
        ncorr = [int(n) for n in msmd.ncorrforpol()]
        exposure = float(msmd.exposuretime(scan=int(msmd.scannumbers()[0]))["value"])
    finally:
        msmd.close()

    tb.open(vis)
    try:
        a1 = tb.getcol("ANTENNA1")
        a2 = tb.getcol("ANTENNA2")
        t = tb.getcol("TIME")
        uvw = tb.getcol("UVW")
        flag_row = tb.getcol("FLAG_ROW") if "FLAG_ROW" in cols else np.zeros(nrows, bool)
        # Flag fraction on a sparse subset of rows: cheap on big MSs.
        step = max(1, nrows // 20000)
        nsamp = 0
        nflag = 0
        for start in range(0, nrows, max(1, nrows // 20)):
            fl = tb.getcol("FLAG", startrow=start, nrow=min(1000, nrows - start), rowincr=step)
            nsamp += fl.size
            nflag += int(fl.sum())
        data_zero = False
        sample = tb.getcol("DATA", startrow=0, nrow=min(2000, nrows))
        if np.all(sample == 0):
            data_zero = True
        vis_noise = _visibility_noise(tb, nrows)
        nflagged_total = 0
        nsamp_total = 0
        for start in range(0, nrows, 50000):
            fl = tb.getcol("FLAG", startrow=start, nrow=min(50000, nrows - start))
            a1c = tb.getcol("ANTENNA1", startrow=start, nrow=min(50000, nrows - start))
            a2c = tb.getcol("ANTENNA2", startrow=start, nrow=min(50000, nrows - start))
            fl = fl[..., a1c != a2c]
            fl = fl[[0, fl.shape[0] - 1]] if fl.shape[0] > 1 else fl
            nflagged_total += int(fl.sum())
            nsamp_total += int(fl.size)
    finally:
        tb.close()
    cross = a1 != a2
    if not np.any(cross):
        raise ValueError(f"{vis} has no cross-correlations")
    ants_present = sorted(set(int(x) for x in np.concatenate([a1[cross], a2[cross]])))
    flagged_fraction = nflag / nsamp if nsamp else 1.0
    if flagged_fraction >= 0.999 or bool(np.all(flag_row)):
        raise ValueError(f"{vis} has no unflagged data ({100 * flagged_fraction:.1f}% flagged)")
    if data_zero:
        raise ValueError(f"{vis}: DATA column is all zeros in the first rows")
    uvdist = np.sqrt(uvw[0, cross] ** 2 + uvw[1, cross] ** 2)
    # Thermal noise of a natural-weighted Stokes I image: sigma_vis / sqrt(unflagged samples).
    n_good = max(1, nsamp_total - nflagged_total)
    thermal = vis_noise / np.sqrt(n_good) if np.isfinite(vis_noise) else float("nan")
    utimes = np.unique(t)
    dt = np.diff(utimes)
    return {
        "vis": vis,
        "nrows": nrows,
        "columns": cols,
        "fields": fields,
        "antenna_names": ant_names,
        "antennas_present": ants_present,
        "n_antennas_present": len(ants_present),
        "spws": spws,
        "scans": scans,
        "ncorr": ncorr,
        "integration_s": float(np.median(dt[dt > 0])) if np.any(dt > 0) else exposure,
        "exposure_s": exposure,
        "time_on_source_s": float(len(utimes) * (np.median(dt[dt > 0]) if np.any(dt > 0) else exposure)),
        "time_span_s": float(utimes[-1] - utimes[0]) if len(utimes) > 1 else exposure,
        "max_baseline_m": float(np.max(uvdist)),
        "flagged_fraction": float(flagged_fraction),
        "vis_noise_jy": float(vis_noise),
        "thermal_noise_jy": float(thermal),
    }


def _visibility_noise(tb, nrows: int) -> float:
    """Per-visibility noise (Jy, one real part) from adjacent-channel differences.

    Sky and gains are nearly identical in neighbouring channels, so their difference is
    noise; with one channel per spw, differences of consecutive rows of a baseline are used.
    Robust (MAD) over a sample of rows.
    """
    import numpy as np

    step = max(1, nrows // 20000)
    data = tb.getcol("DATA", startrow=0, nrow=min(nrows, 20000 * step), rowincr=step)
    flag = tb.getcol("FLAG", startrow=0, nrow=min(nrows, 20000 * step), rowincr=step)
    a1 = tb.getcol("ANTENNA1", startrow=0, nrow=min(nrows, 20000 * step), rowincr=step)
    a2 = tb.getcol("ANTENNA2", startrow=0, nrow=min(nrows, 20000 * step), rowincr=step)
    keep = a1 != a2
    data, flag = data[..., keep], flag[..., keep]
    ncorr = data.shape[0]
    par = [0, ncorr - 1] if ncorr >= 2 else [0]
    data, flag = data[par], flag[par]
    if data.shape[1] >= 2:
        d = data[:, 1:, :] - data[:, :-1, :]
        ok = ~(flag[:, 1:, :] | flag[:, :-1, :])
    else:
        d = data[:, :, 1:] - data[:, :, :-1]
        ok = ~(flag[:, :, 1:] | flag[:, :, :-1])
    vals = np.concatenate([d.real[ok], d.imag[ok]])
    if vals.size < 20:
        return float("nan")
    mad = np.median(np.abs(vals - np.median(vals)))
    return float(1.4826 * mad / np.sqrt(2.0))


def flag_fraction(vis: str) -> float:
    """Fraction of flagged visibilities (all rows)."""
    from casatasks import flagdata

    s = flagdata(vis=vis, mode="summary", display="", flagbackup=False)
    return float(s["flagged"]) / float(s["total"]) if s and s.get("total") else 1.0


def rmtables(paths: list[str]) -> None:
    """Remove CASA tables (ignores ones that do not exist)."""
    from casatasks import rmtables as _rm

    for p in paths:
        if os.path.exists(p):
            _rm(p)


def flag_checkpoint(vis: str, versionname: str, resume: bool = False) -> str:
    """Save the flags as ``versionname``; when resuming a step whose first attempt already
    saved it, restore it instead (the interrupted attempt may have changed flags since).

    Deciding here, from the MS's own flag-version list, keeps the save and the calls after
    it in one child without losing the pre-step flags if the child is killed half-way.
    """
    from casatasks import flagmanager

    listing = os.path.join(vis.rstrip("/") + ".flagversions", "FLAG_VERSION_LIST")
    names: set[str] = set()
    if os.path.exists(listing):
        with open(listing) as fh:
            names = {ln.split(" : ")[0].strip() for ln in fh if ln.strip()}
    table = os.path.join(os.path.dirname(listing), f"flags.{versionname}")
    if resume and versionname in names and os.path.isdir(table):
        flagmanager(vis=vis, mode="restore", versionname=versionname)
        return "restored"
    flagmanager(vis=vis, mode="save", versionname=versionname, comment=versionname, merge="replace")
    return "saved"


def working_copy(view: str, work: str, field: str = "", spw: str = "", column: str = "data",
                 timebin: str = "", width: int = 1) -> dict[str, Any]:
    """Inspect the (mirrored) input, split the private working copy, inspect the copy.

    One child instead of three. ``ValueError`` (one line) for an MS we cannot use.
    """
    from casatasks import split

    src = inspect_ms(view, field)
    if not field and len(src["fields"]) > 1:
        raise ValueError(f"the MS has {len(src['fields'])} fields ({', '.join(src['fields'][:6])}); "
                         "set 'field' to the target")
    if column == "corrected" and "CORRECTED_DATA" not in src["columns"]:
        raise ValueError("input_column = 'corrected' but the MS has no CORRECTED_DATA column")
    kw: dict[str, Any] = dict(vis=view, outputvis=work, datacolumn=column, field=field, spw=spw, keepflags=True)
    if timebin:
        kw["timebin"] = timebin
    if width > 1:
        kw["width"] = width
    split(**kw)
    if not os.path.exists(os.path.join(work, "table.dat")):
        raise RuntimeError(f"split did not write the working copy {work} (see casa.log)")
    return {"src": src, "work": inspect_ms(work)}
