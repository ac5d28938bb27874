"""Carry the flags of a channel-averaged MS onto the same rows at full channel resolution
(joint EBs of different channel counts, DESIGN.md "Mixed channel counts"): a full-resolution
channel is flagged when the averaged channel it was averaged into is flagged.

Both MSs must hold the same rows in the same order (both are made by the same splits and
concat of the same inputs, only the channel averaging differs); :func:`carry_flags` checks
TIME, ANTENNA1, ANTENNA2 and OBSERVATION_ID row by row and refuses otherwise. Reads and
writes our own MSs only (never an input) with python-casacore.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def expanded(avg_flags: np.ndarray, nchan: int) -> np.ndarray:
    """``avg_flags`` (rows, averaged channels, correlations) repeated along the channel axis
    to ``nchan`` channels (a whole multiple). Pure. Raises ValueError otherwise."""
    n_avg = avg_flags.shape[1]
    if n_avg < 1 or nchan % n_avg:
        raise ValueError(f"{nchan} channels are not a whole multiple of {n_avg}")
    return np.repeat(avg_flags, nchan // n_avg, axis=1)


def _dd_spw(ms: Path) -> np.ndarray:
    """DATA_DESCRIPTION row -> spw id of ``ms``."""
    from casacore.tables import table  # lazy: only here (our own working MSs)

    with table(str(ms / "DATA_DESCRIPTION"), ack=False) as t:
        return np.asarray(t.getcol("SPECTRAL_WINDOW_ID"), dtype=int)


def carry_flags(avg_ms: Path, full_ms: Path, ids_ms: Path) -> dict[str, Any]:
    """OR the flags of ``avg_ms`` (expanded, :func:`expanded`) into ``full_ms``'s FLAG, and map
    ``full_ms``'s spws onto ``ids_ms``'s (the MS whose spw ids the gain tables use; same rows).

    Returns ``{"rows": n, "flagged_before": f0, "flagged_after": f1, "spw_map": {full spw:
    ids_ms spw}, "spws_per_observation": {observation id: [full spws with its rows]}}``
    (fractions of ``full_ms``'s samples). Raises ValueError (one line) when
    the rows do not correspond or a full-resolution spw holds rows of two spws of ``ids_ms``."""
    from casacore.tables import table  # lazy: only here (our own working MSs)

    spw_full, spw_ids = _dd_spw(full_ms), _dd_spw(ids_ms)
    with table(str(ids_ms), ack=False) as t:
        dd_ids = t.getcol("DATA_DESC_ID")
    with table(str(avg_ms), ack=False) as a, table(str(full_ms), readonly=False, ack=False) as f:
        if not a.nrows() == f.nrows() == len(dd_ids):
            raise ValueError(f"{a.nrows()} rows averaged vs {f.nrows()} at full resolution")
        for col in ("TIME", "ANTENNA1", "ANTENNA2", "OBSERVATION_ID"):
            if not np.array_equal(a.getcol(col), f.getcol(col)):
                raise ValueError(f"the rows differ in {col}")
        dd_full, dd_avg = f.getcol("DATA_DESC_ID"), a.getcol("DATA_DESC_ID")
        obs = f.getcol("OBSERVATION_ID")
        own = {int(o): sorted({int(x) for x in spw_full[np.unique(dd_full[obs == o])]}) for o in np.unique(obs)}
        before = after = total = 0
        spw_map: dict[int, int] = {}
        for d in np.unique(dd_full):
            rows = np.flatnonzero(dd_full == d)
            targets = np.unique(spw_ids[dd_ids[rows]])
            if len(targets) != 1 or spw_map.get(int(spw_full[d]), int(targets[0])) != int(targets[0]):
                raise ValueError(f"full-resolution spw {spw_full[d]} holds rows of spws {targets.tolist()}")
            spw_map[int(spw_full[d])] = int(targets[0])
            # one data description per run of rows: the averaged MS's rows of this one
            for d_avg in np.unique(dd_avg[rows]):
                sel = rows[dd_avg[rows] == d_avg]
                with f.selectrows(sel) as fs, a.selectrows(sel) as as_:
                    flags = fs.getcol("FLAG")
                    new = flags | expanded(as_.getcol("FLAG"), flags.shape[1])
                    fs.putcol("FLAG", new)
                before, after, total = before + int(flags.sum()), after + int(new.sum()), total + flags.size
    return {"rows": int(len(dd_full)), "flagged_before": before / max(1, total),
            "flagged_after": after / max(1, total), "spw_map": spw_map, "spws_per_observation": own}
