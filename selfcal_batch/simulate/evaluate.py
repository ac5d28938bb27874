"""Compare a self-calibration result with the simulator's truth (tests and benchmarks)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import truth_phase_deg


def chain_phases_deg(tables: Sequence[str], truth: dict[str, Any]) -> dict[str, np.ndarray]:
    """Per-antenna total phase (deg) of a gain chain at the truth times (spw 0, pol 0);
    NaN for an antenna without unflagged solutions in some table."""
    from casacore.tables import table

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
        xyz = np.array([a["position_m"] for a, k in zip(truth["antennas"], ok) if k], dtype=float)
        design = np.column_stack([np.ones(len(xyz)), (xyz - xyz.mean(axis=0)) / 1000.0])
        coef, *_ = np.linalg.lstsq(design, resid, rcond=None)
        resid = np.angle(np.exp(1j * (resid - design @ coef)))
    return float(np.sqrt(np.mean(np.degrees(resid) ** 2))), int(ok.sum())
