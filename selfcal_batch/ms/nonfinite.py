"""Non-finite visibilities and weights (NaN, +-inf) in the private working copy.

A correlator or an earlier tool may leave NaN/inf samples unflagged. WSClean and CASA then
spread NaN into images, noise estimates and gains (a NaN thermal noise made the outcome
check fail with a TypeError). The working copy (never the input) flags them once, at startup,
and sets the flagged values to 0 so that no reader that ignores FLAG meets a NaN.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from selfcal_batch.ms.inspection import CHUNK_ROWS, _per_data_description

__all__ = ["flag_nonfinite", "nonfinite_mask"]


def nonfinite_mask(data: np.ndarray, weight: np.ndarray | None = None,
                   weight_spectrum: np.ndarray | None = None) -> np.ndarray:
    """Samples to flag: non-finite DATA, WEIGHT or WEIGHT_SPECTRUM. Pure.

    ``data``: [ncorr, nchan, nrow] complex (casatools order); ``weight``: [ncorr, nrow];
    ``weight_spectrum``: [ncorr, nchan, nrow]. Returns a bool array of ``data``'s shape.
    """
    bad = ~np.isfinite(data)
    if weight is not None:
        bad = bad | ~np.isfinite(weight)[:, None, :]
    if weight_spectrum is not None:
        bad = bad | ~np.isfinite(weight_spectrum)
    return bad


def flag_nonfinite(vis: str) -> dict[str, Any]:
    """Flag the unflagged non-finite samples of ``vis`` (the private working copy: never run
    on the input) and zero their DATA, WEIGHT and WEIGHT_SPECTRUM values.

    Returns ``{"nonfinite_flagged": samples newly flagged, "nonfinite_samples": all non-finite
    samples (flagged before or now), "n_samples": samples read}``. CASA child only.
    """
    from casatools import table  # CASA child only: casatools and python-casacore never share a process

    tb = table()
    tb.open(vis, nomodify=False)
    out = {"nonfinite_flagged": 0, "nonfinite_samples": 0, "n_samples": 0}
    try:
        for _spw, sub, n, ws_ok in _per_data_description(tb, vis):
            for start in range(0, n, CHUNK_ROWS):
                m = min(CHUNK_ROWS, n - start)
                data = sub.getcol("DATA", startrow=start, nrow=m)
                wt = sub.getcol("WEIGHT", startrow=start, nrow=m)
                ws = sub.getcol("WEIGHT_SPECTRUM", startrow=start, nrow=m) if ws_ok else None
                bad = nonfinite_mask(data, wt, ws)
                out["n_samples"] += int(data.size)
                if not bad.any():
                    continue
                fl = sub.getcol("FLAG", startrow=start, nrow=m)
                out["nonfinite_samples"] += int(bad.sum())
                out["nonfinite_flagged"] += int((bad & ~fl).sum())
                sub.putcol("FLAG", fl | bad, startrow=start, nrow=m)
                sub.putcol("DATA", np.where(bad, 0, data), startrow=start, nrow=m)
                sub.putcol("WEIGHT", np.where(np.isfinite(wt), wt, 0.0), startrow=start, nrow=m)
                if ws is not None:
                    sub.putcol("WEIGHT_SPECTRUM", np.where(np.isfinite(ws), ws, 0.0), startrow=start, nrow=m)
        tb.flush()
    finally:
        tb.close()
    return out
