"""Repairs of the private working copy (never run on the input): make it say what the input meant.

Every writer here opens tables with ``casatools.table`` and must only be called in the CASA
child (through :mod:`selfcal_batch.casa.jobs`); the pure helpers (:func:`channel_map`,
:func:`project_mask`, :func:`field_merge_plan`, :func:`merge_tolerance_rad`) are unit-tested
anywhere. The kinds repaired:

* rows flagged only by FLAG_ROW (FLAG false, as older converters and FITS-IDI imports write):
  WSClean reads FLAG only and CASA's applycal/split dropped the row flag (measured, CASA 6.7
  / WSClean 3.1), so FLAG_ROW is ORed into FLAG (:func:`honour_flag_row`);
* unflagged samples with weight 0 (WEIGHT per correlation, WEIGHT_SPECTRUM per channel and
  correlation) are flagged sample by sample, never the whole row (:func:`repair_working_copy`);
* one target split over several FIELD rows of one name and direction (what concat of EBs
  writes): WSClean without ``-field`` images field 0 only, so the rows are merged into one
  FIELD_ID (:func:`merge_same_name_fields`); different directions are refused (one line).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from selfcal_batch.ms.inspection import CHUNK_ROWS, _per_data_description, _subtable_rows, row_keys
from selfcal_batch.selfcal.ebjoint import angular_separation_arcsec

__all__ = ["channel_map", "project_mask", "repair_working_copy", "honour_flag_row", "field_merge_plan",
           "merge_tolerance_rad", "merge_same_name_fields"]

#: FIELD rows of one name are one pointing when their PHASE_DIRs differ by less than this
#: fraction of the synthesized beam (lambda_min / B_max): the position error the merge makes
#: for the rows of the other row's direction (2 % of a beam: far below any astrometric or
#: self-calibration effect; the seed's cell is 1/5 of a beam).
MERGE_BEAM_FRACTION = 0.02


def channel_map(src_freq: Sequence[float], dst_freq: Sequence[float], dst_width: Sequence[float]) -> np.ndarray:
    """Index of the working-copy channel that contains each input channel (-1: none). Pure.

    ``src_freq``: the input spw's CHAN_FREQ (Hz); ``dst_freq``/``dst_width``: the copy spw's
    CHAN_FREQ/CHAN_WIDTH (Hz; a negative width = decreasing frequency). Matches by frequency, so
    channel selections (``spw = '0:2~5'``) and channel averaging (``chanbin``) map correctly."""
    src = np.atleast_1d(np.asarray(src_freq, dtype=float))
    dst = np.atleast_1d(np.asarray(dst_freq, dtype=float))
    half = 0.5 * np.abs(np.atleast_1d(np.asarray(dst_width, dtype=float)))
    tol = 1e-6 * np.maximum(half, 1.0)  # rounding of the centre frequencies (Hz)
    inside = np.abs(src[:, None] - dst[None, :]) <= (half + tol)[None, :]
    return np.where(inside.any(axis=1), inside.argmax(axis=1), -1)


def project_mask(mask: np.ndarray, cmap: np.ndarray, nchan: int) -> np.ndarray:
    """An input sample mask [ncorr, nchan_in or 1, nrow] on the copy's ``nchan`` channels. Pure.

    A mask with one channel (a zero WEIGHT: every channel) is broadcast; otherwise a copy
    channel is set when any input channel it contains (``cmap``, :func:`channel_map`) is set
    (after channel averaging a zero-weight sample entered the average: split weights from
    SIGMA). Input channels outside the copy (-1) are dropped."""
    if mask.shape[1] == 1:
        return np.broadcast_to(mask, (mask.shape[0], nchan, mask.shape[2])).copy()
    out = np.zeros((mask.shape[0], nchan, mask.shape[2]), dtype=bool)
    for i, j in enumerate(np.asarray(cmap)):
        if j >= 0:
            out[:, j, :] |= mask[:, i, :]
    return out


def honour_flag_row(vis: str) -> dict[str, int]:
    """OR FLAG_ROW into FLAG in ``vis`` (the working copy: never the input).

    Returns ``{"flag_row_rows": rows with FLAG_ROW set, "flag_row_flagged": samples newly
    flagged}``. CASA child only."""
    from casatools import table  # CASA child only: casatools and python-casacore never share a process

    out = {"flag_row_rows": 0, "flag_row_flagged": 0}
    tb = table()
    tb.open(vis, nomodify=False)
    try:
        if "FLAG_ROW" not in tb.colnames():
            return out
        for _spw, sub, n, _ws in _per_data_description(tb, vis):
            for start in range(0, n, CHUNK_ROWS):
                m = min(CHUNK_ROWS, n - start)
                row = sub.getcol("FLAG_ROW", startrow=start, nrow=m).astype(bool)
                if not row.any():
                    continue
                fl = sub.getcol("FLAG", startrow=start, nrow=m)
                new = row[None, None, :] & ~fl
                out["flag_row_rows"] += int(row.sum())
                out["flag_row_flagged"] += int(new.sum())
                if new.any():
                    sub.putcol("FLAG", fl | row[None, None, :], startrow=start, nrow=m)
        tb.flush()
    finally:
        tb.close()
    return out


def repair_working_copy(vis: str, integration_s: float, fix_time: bool,
                        zero_weights: list[dict[str, Any]] | None = None,
                        spw_ids: dict[int, int] | None = None) -> dict[str, Any]:
    """Flag the zero-weight samples of the working copy ``vis``; fix its time columns.

    * samples whose WEIGHT (per correlation: all its channels) or WEIGHT_SPECTRUM (per channel
      and correlation) is 0 but that are not flagged are flagged -- only those samples, never
      the rest of the row -- so that no later statwt/calibration gives them a weight again (the
      user's zero weights stay excluded in final.ms): those of the copy itself, and
      ``zero_weights`` (:func:`~selfcal_batch.ms.inspection.zero_weight_rows` of the input;
      ``spw_ids`` maps input spw ids to the copy's), matched by TIME/ANTENNA1/ANTENNA2 and,
      per channel, by frequency (:func:`channel_map`);
    * with ``fix_time``, INTERVAL and EXPOSURE are set to the TIME spacing
      ``integration_s`` (CASA tasks such as statwt bin by INTERVAL: 0.01 s placeholders
      give one-sample bins and NaN weights).

    Returns ``{"zero_weight_flagged": samples newly flagged, "unflagged_before": unflagged
    samples before (the base of the warning's percentage), "time_columns_fixed": bool}``.
    """
    from casatools import table  # (same reason)

    spw_rows = _subtable_rows(vis, "SPECTRAL_WINDOW", ["CHAN_FREQ", "CHAN_WIDTH"])
    tb = table()
    tb.open(vis, nomodify=False)
    flagged = unflagged = 0
    try:
        for spw, sub, n, ws_ok in _per_data_description(tb, vis):
            src = _source_zero_mask(sub, zero_weights or [], (spw_ids or {}), spw, spw_rows[spw])
            for start in range(0, n, CHUNK_ROWS):
                m = min(CHUNK_ROWS, n - start)
                fl = sub.getcol("FLAG", startrow=start, nrow=m)
                zero = np.broadcast_to((sub.getcol("WEIGHT", startrow=start, nrow=m) == 0)[:, None, :], fl.shape)
                if src is not None:
                    zero = zero | src[:, :, start:start + m]
                if ws_ok:
                    zero = zero | (sub.getcol("WEIGHT_SPECTRUM", startrow=start, nrow=m) == 0)
                new = zero & ~fl
                unflagged += int(fl.size - np.count_nonzero(fl))
                if new.any():
                    flagged += int(new.sum())
                    sub.putcol("FLAG", fl | zero, startrow=start, nrow=m)
        if fix_time and integration_s > 0:
            n = int(tb.nrows())
            tb.putcol("INTERVAL", np.full(n, float(integration_s)))
            if "EXPOSURE" in tb.colnames():
                tb.putcol("EXPOSURE", np.full(n, float(integration_s)))
        tb.flush()
    finally:
        tb.close()
    return {"zero_weight_flagged": flagged, "unflagged_before": unflagged,
            "time_columns_fixed": bool(fix_time and integration_s > 0)}


def _source_zero_mask(sub: Any, zero_weights: list[dict[str, Any]], spw_ids: dict[int, int],
                      spw: int, spw_row: dict[str, Any]) -> np.ndarray | None:
    """[ncorr, nchan, nrow] mask of the samples of ``sub`` (one spw of the copy, its
    SPECTRAL_WINDOW row ``spw_row``) that had zero weight in the input; None when none."""
    entries = [e for e in zero_weights if spw_ids.get(int(e["spw"]), int(e["spw"])) == spw]
    if not entries or sub.nrows() == 0:
        return None
    shape = sub.getcell("FLAG", 0).shape  # (ncorr, nchan) in casatools order
    ncorr, nchan = int(shape[0]), int(shape[1])
    freq, width = spw_row["CHAN_FREQ"], spw_row["CHAN_WIDTH"]
    keys = np.concatenate([e["key"] for e in entries])
    masks = np.concatenate([project_mask(e["mask"], channel_map(e["chan_freq"], freq, width), nchan)
                            for e in entries], axis=-1)
    order = np.argsort(keys)
    keys, masks = keys[order], masks[..., order]
    mine = row_keys(sub.getcol("TIME"), sub.getcol("ANTENNA1"), sub.getcol("ANTENNA2"))
    pos = np.clip(np.searchsorted(keys, mine), 0, len(keys) - 1)
    found = keys[pos] == mine
    if masks.shape[0] != ncorr:  # correlations selected differently: any hand counts for all
        masks = np.broadcast_to(masks.any(axis=0, keepdims=True), (ncorr, *masks.shape[1:]))
    out = np.zeros((ncorr, nchan, len(mine)), dtype=bool)
    out[..., found] = masks[..., pos[found]]
    return out


def merge_tolerance_rad(freq_max_hz: float, max_baseline_m: float) -> float:
    """:data:`MERGE_BEAM_FRACTION` of the synthesized beam lambda_min / B_max (radians). Pure."""
    return MERGE_BEAM_FRACTION * (299_792_458.0 / max(freq_max_hz, 1.0)) / max(max_baseline_m, 1e-3)


def field_merge_plan(names: Sequence[str], dirs_deg: Sequence[tuple[float, float]],
                     tol_rad: float) -> tuple[list[int], str]:
    """New FIELD_ID of each FIELD row (rows of one name -> the first such row), and a problem
    (one line, ``""`` if none) when rows of one name point further apart than ``tol_rad``.
    ``dirs_deg``: (RA, Dec) of each row's PHASE_DIR in degrees. Pure.

    The new ids are renumbered 0..k-1 in the order of the kept rows."""
    first: dict[str, int] = {}
    target = []
    for i, name in enumerate(names):
        j = first.setdefault(str(name).strip(), i)
        sep = angular_separation_arcsec(*dirs_deg[j], *dirs_deg[i])
        if sep > math.degrees(tol_rad) * 3600.0:
            return list(range(len(names))), (
                f"field '{name}' has FIELD rows {j} and {i} whose directions differ by {sep:.3g} arcsec "
                f"(more than {math.degrees(tol_rad) * 3600.0:.2g} arcsec, {MERGE_BEAM_FRACTION:g} of a beam): "
                "WSClean images one FIELD row only: select one by its id (field = 'ID') or phaseshift "
                "the data (or the EBs) to one direction")
        target.append(j)
    keep = sorted(set(target))
    return [keep.index(t) for t in target], ""


def remap_id_column(vis: str, column: str, new_id: Sequence[int]) -> int:
    """Rewrite the id ``column`` of ``vis``'s main table as ``new_id[old]``; returns the rows
    changed. CASA child only (casatools)."""
    from casatools import table  # (same reason)

    new = np.asarray(new_id)
    tb = table()
    tb.open(vis, nomodify=False)
    try:
        old = tb.getcol(column)
        changed = int(np.sum(new[old] != old))
        tb.putcol(column, new[old].astype(old.dtype))
    finally:
        tb.close()
    return changed


def merge_same_name_fields(vis: str, tol_rad: float) -> dict[str, int]:
    """Point the rows of FIELD rows that share a name (and direction, :func:`field_merge_plan`)
    at one FIELD row of ``vis`` (the working copy) and remove the others.

    Returns ``{"field_rows_merged": FIELD rows removed, "rows_refielded": main rows changed}``;
    ``ValueError`` (one line) when rows of one name point apart. CASA child only."""
    from casatools import table  # (same reason)

    rows = _subtable_rows(vis, "FIELD", ["NAME", "PHASE_DIR"])
    dirs = [tuple(math.degrees(float(np.asarray(r["PHASE_DIR"]).reshape(2, -1)[k, 0])) for k in (0, 1))
            for r in rows]
    new_id, problem = field_merge_plan([str(r["NAME"] or "") for r in rows], dirs, tol_rad)
    if problem:
        raise ValueError(problem)
    if new_id == list(range(len(rows))):
        return {"field_rows_merged": 0, "rows_refielded": 0}
    changed = remap_id_column(vis, "FIELD_ID", new_id)
    tb = table()
    drop = [i for i in range(len(rows)) if new_id.index(new_id[i]) != i]  # all but each name's first row
    tb.open(f"{vis}/FIELD", nomodify=False)
    try:
        tb.removerows(drop)
    finally:
        tb.close()
    return {"field_rows_merged": len(drop), "rows_refielded": changed}
