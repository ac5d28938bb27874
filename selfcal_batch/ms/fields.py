"""What fields an MS holds: name, centre, scan intents, time on source (for target expansion).

:func:`list_fields` runs in a child process (``python -m selfcal_batch.ms.fields``) that
opens a private read-only view (:func:`selfcal_batch.ms.view.read_only_view`) of each MS
with python-casacore: the user's MS itself is never opened (casacore writes ``table.lock``
even read-only), and a damaged table that crashes casacore takes down only the child.

Intents are read as the VLA and ALMA archives store them: the main table's ``STATE_ID``
points at a STATE row whose ``OBS_MODE`` lists ``INTENT#SUBINTENT`` entries separated by
commas (``"CALIBRATE_PHASE#UNSPECIFIED,CALIBRATE_AMPLI#UNSPECIFIED"``). An empty STATE table
or ``STATE_ID`` -1 means no intents (the real VLA test MS is such a case).
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: Main-table columns read (one value per row; ``FLAG_ROW`` and ``STATE_ID`` optional).
_COLUMNS = ("FIELD_ID", "TIME", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "INTERVAL", "EXPOSURE")
#: Seconds allowed per MS for the child.
TIMEOUT_S = 300.0
_MARK = "FIELDS "


def parse_obs_mode(obs_mode: str) -> list[str]:
    """``"CALIBRATE_PHASE#UNSPECIFIED,OBSERVE_TARGET#ON_SOURCE"`` -> ``["CALIBRATE_PHASE",
    "OBSERVE_TARGET"]`` (upper case, sub-intents dropped, order kept, no duplicates)."""
    out: list[str] = []
    for part in str(obs_mode).split(","):
        name = part.split("#", 1)[0].strip().upper()
        if name and name not in out:
            out.append(name)
    return out


def summarise(names: list[str], phase_dirs_rad: np.ndarray, obs_modes: list[str],
              cols: dict[str, np.ndarray], dd_spw: list[int] | None = None,
              spw_nchan: list[int] | None = None, dd_corr: list[list[str]] | None = None,
              spw_edges: list[tuple[float, float]] | None = None) -> list[dict[str, Any]]:
    """Per-field summary from the FIELD names/directions, the STATE OBS_MODEs and the main
    table's row columns (``_COLUMNS`` plus optional ``STATE_ID``, ``FLAG_ROW``);
    ``dd_spw``: DATA_DESCRIPTION row -> spw id, ``spw_nchan``: SPECTRAL_WINDOW row -> channels,
    ``dd_corr``: DATA_DESCRIPTION row -> correlation names of its POLARIZATION row,
    ``spw_edges``: SPECTRAL_WINDOW row -> (lowest channel edge, channel width), Hz.

    Returns one dict per FIELD row: ``id, name, ra_deg, dec_deg, intents`` (sorted, from the
    states of ALL its rows, flagged ones too: a fully flagged target is still a target, tester
    s7 #4), ``rows`` (unflagged), ``rows_total`` (all rows), ``scans`` and ``time_on_source_s`` (largest number of
    time stamps of one baseline and data description x the integration of the whole MS, see
    :func:`selfcal_batch.ms.inspection.time_sampling`; 0 without rows), ``start_s`` / ``end_s`` (first /
    last unflagged TIME of the field, MJD seconds; None without rows) and ``spws`` (``[[spw id,
    channels], ...]`` of the spws holding the field's unflagged rows, ``[spw id, channels,
    lowest edge Hz, channel width Hz]`` with ``spw_edges``; empty when ``dd_spw`` or
    ``spw_nchan`` is not given) and ``correlations`` (``{spw id (str): [names]}`` of the
    data descriptions holding the field's unflagged rows, the shape of ``inspect_ms``'s
    ``correlations``; empty when ``dd_spw`` or ``dd_corr`` is not given).
    """
    from selfcal_batch.ms.inspection import time_sampling  # lazy: casacore-free import of this module

    keep = ~np.asarray(cols["FLAG_ROW"], dtype=bool) if "FLAG_ROW" in cols else np.ones(len(cols["TIME"]), bool)
    fid = np.asarray(cols["FIELD_ID"], dtype=int)
    sid = np.asarray(cols.get("STATE_ID", np.full(len(fid), -1)), dtype=int)
    scan = np.asarray(cols.get("SCAN_NUMBER", np.zeros(len(fid))), dtype=int)
    names6 = ("TIME", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "INTERVAL", "EXPOSURE")
    # The integration from every row: a field whose scans hold one integration each has no
    # within-scan spacing, and its own spacing would be the time between its scans.
    integration = float(time_sampling(*(np.asarray(cols[c])[keep] for c in names6))["integration_s"]) \
        if keep.any() else 0.0
    out = []
    for k, name in enumerate(names):
        sel = keep & (fid == k)
        intents: set[str] = set()
        for s in np.unique(sid[fid == k]):
            if 0 <= s < len(obs_modes):
                intents.update(parse_obs_mode(obs_modes[s]))
        if sel.any():
            ts = time_sampling(*(np.asarray(cols[c])[sel] for c in names6))
            stamps = round(float(ts["time_on_source_s"]) / float(ts["integration_s"]))
            tos = stamps * integration
        else:
            tos = 0.0
        ra, dec = (float(x) for x in np.asarray(phase_dirs_rad[k]).reshape(-1, 2)[0])
        dds = [int(d) for d in np.unique(np.asarray(cols["DATA_DESC_ID"])[sel]) if 0 <= d < len(dd_spw or [])]
        spws = sorted({int(dd_spw[d]) for d in dds}) if dd_spw is not None and spw_nchan is not None else []
        corrs = {str(dd_spw[d]): list(dd_corr[d]) for d in dds if d < len(dd_corr)} \
            if dd_spw is not None and dd_corr is not None else {}
        out.append({"id": k, "name": str(name), "ra_deg": math.degrees(ra) % 360.0, "dec_deg": math.degrees(dec),
                    "intents": sorted(intents), "rows": int(sel.sum()), "rows_total": int((fid == k).sum()), "scans": int(np.unique(scan[sel]).size),
                    "time_on_source_s": round(tos, 3),
                    "start_s": float(np.min(np.asarray(cols["TIME"])[sel])) if sel.any() else None,
                    "end_s": float(np.max(np.asarray(cols["TIME"])[sel])) if sel.any() else None,
                    "spws": [[w, int(spw_nchan[w]), *(spw_edges[w] if spw_edges and w < len(spw_edges) else ())]
                             for w in spws if 0 <= w < len(spw_nchan or [])],
                    "correlations": corrs})
    return out


def read_fields(ms: str | Path) -> list[dict[str, Any]]:
    """:func:`summarise` of the MS ``ms`` with ``observations`` (:func:`read_observations`, the
    same list in every record), read through a private view (call in a child); every record
    also carries the MS's highest channel frequency ``freq_max_hz`` (Hz) and largest ``dish_m``
    (m, ANTENNA DISH_DIAMETER), 0.0 when absent."""
    from casacore.tables import table  # lazy: only the child process reads tables

    from selfcal_batch.ms.inspection import corr_names  # lazy: as above
    from selfcal_batch.ms.view import read_only_view  # lazy: as above

    with tempfile.TemporaryDirectory(prefix="selfcal-batch-fields-") as tmp:
        view = str(read_only_view(Path(ms), Path(tmp) / "view.ms"))
        with table(os.path.join(view, "FIELD"), readonly=True, ack=False) as ft:
            names = list(ft.getcol("NAME"))
            dirs = ft.getcol("PHASE_DIR")
        modes: list[str] = []
        if os.path.isdir(os.path.join(view, "STATE")):
            with table(os.path.join(view, "STATE"), readonly=True, ack=False) as st:
                modes = list(st.getcol("OBS_MODE")) if st.nrows() and "OBS_MODE" in st.colnames() else []
        with table(os.path.join(view, "DATA_DESCRIPTION"), readonly=True, ack=False) as dt:
            dd_spw = [int(x) for x in dt.getcol("SPECTRAL_WINDOW_ID")] if dt.nrows() else []
            dd_pol = [int(x) for x in dt.getcol("POLARIZATION_ID")] if dt.nrows() else []
        with table(os.path.join(view, "POLARIZATION"), readonly=True, ack=False) as pt:
            # CORR_TYPE per row, read row by row: rows of different NUM_CORR make getcol fail
            pols = [corr_names(pt.getcell("CORR_TYPE", r)) for r in range(pt.nrows())]
        dd_corr = [pols[p] if 0 <= p < len(pols) else [] for p in dd_pol]
        with table(os.path.join(view, "SPECTRAL_WINDOW"), readonly=True, ack=False) as sw:
            nchan = [int(x) for x in sw.getcol("NUM_CHAN")] if sw.nrows() else []
            edges = [spw_edge(sw.getcell("CHAN_FREQ", r), sw.getcell("CHAN_WIDTH", r)) for r in range(sw.nrows())]
            # per row: spws of different channel counts make getcol fail
            freq = max((float(np.max(sw.getcell("CHAN_FREQ", r))) for r in range(sw.nrows())), default=0.0)
        with table(os.path.join(view, "ANTENNA"), readonly=True, ack=False) as at:
            dish = float(np.max(at.getcol("DISH_DIAMETER"))) if at.nrows() else 0.0
        with table(view, readonly=True, ack=False) as t:
            present = set(t.colnames())
            cols = {c: t.getcol(c) for c in (*_COLUMNS, "STATE_ID", "FLAG_ROW", "SCAN_NUMBER") if c in present}
        observations = read_observations(view)
    # the MS's highest frequency and largest dish: the narrowest primary beam (ebjoint.shift_limit_arcsec)
    return [{**f, "observations": observations, "freq_max_hz": freq, "dish_m": dish}
            for f in summarise(names, dirs, modes, cols, dd_spw, nchan, dd_corr, spw_edges=edges)]


def read_observations(view: str) -> list[list[Any]]:
    """``[[TELESCOPE_NAME, start, end], ...]`` of the OBSERVATION rows of the MS (view) ``view``
    (TIME_RANGE, MJD seconds); empty without the table. Part of an execution block's identity
    (``campaign.ebs.eb_identity``). Call in a child (python-casacore)."""
    from casacore.tables import table  # lazy: only the child process reads tables

    path = os.path.join(view, "OBSERVATION")
    if not os.path.isdir(path):
        return []
    with table(path, readonly=True, ack=False) as ot:
        if not ot.nrows():
            return []
        names = list(ot.getcol("TELESCOPE_NAME")) if "TELESCOPE_NAME" in ot.colnames() else [""] * ot.nrows()
        ranges = ot.getcol("TIME_RANGE") if "TIME_RANGE" in ot.colnames() else np.zeros((ot.nrows(), 2))
    return [[str(n), float(r[0]), float(r[1])] for n, r in zip(names, ranges, strict=True)]


def spw_edge(chan_freq: Any, chan_width: Any) -> tuple[float, float]:
    """(lowest channel edge, channel width) in Hz of one SPECTRAL_WINDOW row: the lowest
    channel centre minus half the median absolute width (as ``inspect_ms`` reads them). Pure."""
    f = np.atleast_1d(np.asarray(chan_freq, dtype=float))
    w = float(np.abs(np.median(np.atleast_1d(np.asarray(chan_width, dtype=float)))))
    return float(f.min()) - 0.5 * w, w


def copy_centre(ms: str | Path) -> dict[str, float]:
    """Our own working copy's phase centre and largest dish: ``{"ra_deg", "dec_deg"}`` of FIELD
    row 0's PHASE_DIR (a working copy holds its target's row only) and ``dish_m`` (m, 0.0
    without antennas). Never call it on an input MS (it opens the tables directly)."""
    from casacore.tables import table  # lazy: python-casacore only where a table is read

    with table(os.path.join(str(ms), "FIELD"), readonly=True, ack=False) as ft:
        ra, dec = (float(x) for x in np.asarray(ft.getcell("PHASE_DIR", 0)).reshape(-1, 2)[0])
    with table(os.path.join(str(ms), "ANTENNA"), readonly=True, ack=False) as at:
        dish = float(np.max(at.getcol("DISH_DIAMETER"))) if at.nrows() else 0.0
    return {"ra_deg": math.degrees(ra) % 360.0, "dec_deg": math.degrees(dec), "dish_m": dish}


def list_fields(paths: list[str]) -> dict[str, list[dict[str, Any]] | str]:
    """``{ms: [field summaries] or 'one-line problem'}`` for every MS, read in child
    processes; a child that dies on an MS reports that MS and a new child goes on."""
    out: dict[str, list[dict[str, Any]] | str] = {}
    todo = list(dict.fromkeys(str(p) for p in paths))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    while todo:
        try:
            proc = subprocess.run([sys.executable, "-m", "selfcal_batch.ms.fields", json.dumps(todo)],
                                  capture_output=True, text=True, env=env, timeout=TIMEOUT_S * len(todo) + 30)
            stdout, rc, err = proc.stdout, proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            rc, err = None, "timed out"
        for line in stdout.splitlines():
            if line.startswith(_MARK):
                rec = json.loads(line[len(_MARK):])
                out[rec["ms"]] = rec["fields"] if rec["problem"] == "" else rec["problem"]
        todo = [p for p in todo if p not in out]
        if todo:
            ms = todo.pop(0)
            how = f"signal {-rc}" if rc is not None and rc < 0 else f"exit {rc}" if rc is not None else "timed out"
            last = next((ln for ln in reversed(err.strip().splitlines()) if ln.strip()), "")
            out[ms] = f"reading its fields crashed ({how}{': ' + last[:150] if last else ''}): the MS is probably damaged"
    return out


def _main(argv: list[str]) -> int:
    for ms in json.loads(argv[0]):
        try:
            rec = {"ms": ms, "fields": read_fields(ms), "problem": ""}
        except Exception as exc:  # noqa: BLE001  (reported as one line naming the MS)
            text = re.sub(r"\S*selfcal-batch-fields-[^/\s]+/view\.ms", ms, " ".join(str(exc).split()))
            text = text[:200] or type(exc).__name__
            rec = {"ms": ms, "fields": [], "problem": f"cannot read its fields: {text}"}
        print(_MARK + json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
