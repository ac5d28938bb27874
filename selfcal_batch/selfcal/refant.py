"""Reference-antenna ranking from a phase caltable (seed ``find_refant``, facts §6), fixed.

The seed solves ``gaincal(solint='inf', calmode='p', gaintype='G', refantmode='flex',
minblperant=3)`` and ranks antennas by the fraction of unflagged solutions.  Differences here:

* names are looked up **by antenna id** (the seed indexed ``ANTENNA/NAME`` with the position in
  the list of unique ids, which is wrong when ids have gaps);
* **all** correlations and channels are used (the seed looked only at ``FLAG[0, 0, :]``); each
  (row, channel, correlation) element counts as one solution;
* ties in the good fraction are broken by the mean SNR of the unflagged solutions (descending),
  then by antenna id (ascending); the seed did not use SNR;
* antennas that never appear in ``ANTENNA1`` are not returned (they have no data).

Array layout: the row axis is found by matching ``len(antenna1)``.  Accepted layouts are
``[nrow]``, ``[nrow, nchan, npol]`` (python-casacore ``table.getcol('FLAG')``) and
``[npol, nchan, nrow]`` (casatools ``tb.getcol('FLAG')``).  When both the first and the last axis
have length ``nrow`` the casacore layout (row first) is assumed; pass ``row_axis`` to override.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["RefantStat", "refant_stats", "rank_refants", "refant_warning", "REFANT_MIN_GOOD",
           "filter_refants", "good_fractions"]

log = logging.getLogger(__name__)

#: Best good-solution fraction below which the seed suggests refantmode='flex'.
REFANT_MIN_GOOD = 0.90


@dataclass(frozen=True)
class RefantStat:
    """Per-antenna solution statistics (fractions are 0..1)."""

    antenna_id: int
    name: str
    n_solutions: int
    good_fraction: float
    mean_snr: float  # NaN when no SNR given or no unflagged solution


def _rows_first(arr: np.ndarray, nrow: int, row_axis: int | None, label: str) -> np.ndarray:
    """Return ``arr`` reshaped to [nrow, -1] with the row axis first."""
    arr = np.asarray(arr)
    if arr.ndim == 0:
        raise ValueError(f"{label} must be an array with one axis of length nrow={nrow}")
    if row_axis is None:
        if arr.shape[0] == nrow:
            row_axis = 0
        elif arr.shape[-1] == nrow:
            row_axis = arr.ndim - 1
        else:
            raise ValueError(f"{label} shape {arr.shape} has no first or last axis of length "
                             f"nrow={nrow} (len(antenna1))")
    elif arr.shape[row_axis] != nrow:
        raise ValueError(f"{label} axis {row_axis} has length {arr.shape[row_axis]}, "
                         f"expected nrow={nrow}")
    return np.moveaxis(arr, row_axis, 0).reshape(nrow, -1)


def refant_stats(antenna1: Sequence[int], flags: np.ndarray, antenna_names: Sequence[str],
                 snr: np.ndarray | None = None, *, row_axis: int | None = None
                 ) -> list[RefantStat]:
    """Ranked per-antenna statistics, best first (see the module docstring for the rules)."""
    ant = np.asarray(antenna1, dtype=np.int64).reshape(-1)
    nrow = ant.size
    names = list(antenna_names)
    if nrow == 0:
        return []
    if ant.min() < 0 or ant.max() >= len(names):
        bad = sorted({int(a) for a in ant if a < 0 or a >= len(names)})
        raise ValueError(f"antenna ids {bad} are not valid indices into antenna_names "
                         f"(length {len(names)})")
    flag2 = _rows_first(flags, nrow, row_axis, "flags").astype(bool)
    snr2 = None
    if snr is not None:
        snr2 = _rows_first(snr, nrow, row_axis, "snr").astype(float)
        if snr2.shape != flag2.shape:
            raise ValueError(f"snr has {snr2.shape[1]} elements per row, flags "
                             f"{flag2.shape[1]}; they must have the same layout")
    stats: list[RefantStat] = []
    for aid in np.unique(ant):
        sel = ant == aid
        f = flag2[sel]
        n = int(f.size)
        good = int(np.count_nonzero(~f))
        frac = good / n if n else 0.0
        mean_snr = math.nan
        if snr2 is not None and good:
            vals = snr2[sel][~f]
            vals = vals[np.isfinite(vals)]
            if vals.size:
                mean_snr = float(vals.mean())
        stats.append(RefantStat(int(aid), str(names[int(aid)]), n, frac, mean_snr))

    def key(s: RefantStat) -> tuple[float, float, int]:
        snr_key = -s.mean_snr if math.isfinite(s.mean_snr) else math.inf
        return (-s.good_fraction, snr_key, s.antenna_id)

    stats.sort(key=key)
    return stats


def rank_refants(antenna1: Sequence[int], flags: np.ndarray, antenna_names: Sequence[str],
                 snr: np.ndarray | None = None, *, row_axis: int | None = None) -> list[str]:
    """Antenna names (looked up by id) ranked best first; join with ',' for gaincal ``refant``."""
    stats = refant_stats(antenna1, flags, antenna_names, snr, row_axis=row_axis)
    for s in stats:
        log.debug("refant %s (id %d): %.1f%% good of %d, mean SNR %.2f",
                  s.name, s.antenna_id, 100 * s.good_fraction, s.n_solutions, s.mean_snr)
    return [s.name for s in stats]


def refant_warning(ranking_fractions: Sequence[float] | Sequence[RefantStat],
                   threshold: float = REFANT_MIN_GOOD) -> str | None:
    """Warning text if the best good fraction (0..1) is below ``threshold`` (seed: 90 %)."""
    fr = [s.good_fraction if isinstance(s, RefantStat) else float(s) for s in ranking_fractions]
    if not fr:
        return "no antenna has any solution in the refant table; use refantmode='flex'"
    if any(not (0.0 <= f <= 1.0) for f in fr):
        raise ValueError(f"fractions must be in [0, 1] (not percent): {fr}")
    best = max(fr)
    if best < threshold:
        return (f"best reference antenna has only {100 * best:.1f}% good solutions "
                f"(< {100 * threshold:.0f}%); consider refantmode='flex'")
    return None


def filter_refants(configured: str, usable: Sequence[str], ranking: Sequence[str]
                   ) -> tuple[list[str], list[str], bool]:
    """Keep the configured reference antennas that can serve as one.

    ``configured``: the user's comma-separated list; ``usable``: names of antennas with
    unflagged cross-correlation data and at least one good solution; ``ranking``: the
    ranked list (best first). Returns ``(refants, dropped, fell_back)``: the configured
    antennas that are usable, in the configured order, then the rest of ``ranking`` as
    fall-backs (with ``refantmode='flex'`` gaincal moves to the next antenna of the list
    where one is missing); ``dropped`` the configured names that are not usable;
    ``fell_back`` True when none was usable and the list is ``ranking`` alone.
    """
    wanted = [a.strip() for a in configured.split(",") if a.strip()]
    ok = set(usable)
    kept = [a for a in wanted if a in ok]
    dropped = [a for a in wanted if a not in ok]
    rest = [a for a in ranking if a not in kept and a in ok]
    return kept + rest, dropped, not kept


def good_fractions(antenna1: Sequence[int], flags: np.ndarray, names: Sequence[str],
                   obs: Sequence[int] | None = None, present: Sequence[set[str]] | None = None) -> dict[str, float]:
    """Per antenna name (looked up by id): the fraction of unflagged solutions (0..1) of a
    casacore-layout table (``flags`` ``[nrow, ...]``), counted only over the observations in
    which the antenna has data.

    ``obs``: each row's OBSERVATION_ID; ``present[k]``: names of the antennas with data in
    observation ``k`` (joint execution blocks: one observation per EB). Without them every
    row counts (one-MS datasets). An antenna absent from one EB has flagged solutions there,
    which are not failures: counting them judged it bad and flagged it in *every* EB
    (issue 18: antennas dead in one EB). An antenna with no row counted gets 0.0.
    """
    a1 = np.asarray(antenna1, dtype=int)
    per_row = np.asarray(flags, dtype=bool).reshape(len(a1), -1).mean(axis=1) if len(a1) else np.zeros(0)
    ob = np.asarray(obs, dtype=int) if obs is not None and present is not None else None
    out: dict[str, float] = {}
    for aid in sorted(set(a1.tolist())):
        sel = a1 == aid
        if ob is not None:
            sel &= np.array([0 <= o < len(present) and names[aid] in present[o] for o in ob])
        out[names[aid]] = float(1.0 - per_row[sel].mean()) if sel.any() else 0.0
    return out
