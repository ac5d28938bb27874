"""spwmap construction for ``combine='spw'`` solutions (seed ``get_spwmap``, facts §5.5), fixed.

What CASA does: with ``combine='spw'`` gaincal solves each interval over all spws present in
it and stores the solution under the **lowest spw id present in that interval** (scan).  Scans
with spw sets {0,1,2,3} and {1,2,3} therefore give solutions labelled spw 0 and spw 1.  For
applycal every data spw must be mapped (``spwmap[data_spw] = solution_spw``) onto a solution
spw; ``spwmap`` is a list indexed **by spw id**.

Rules used here:

* a *group* is a distinct spw set over scans; its *label* is its lowest spw id;
* a spw that appears in one group maps to that group's label (one group -> ``[first]*n``);
* a spw that appears in several groups with different labels maps to the label of the group
  in which it appears in the most scans (ties: the lower label).  **Limitation:** CASA's spwmap
  cannot depend on the scan, so for the scans of the other group(s) applycal takes this spw's
  solutions from the chosen label's spw by time interpolation from neighbouring scans.
  :func:`ambiguous_spws` reports such spws so the caller can log them;
* spws that appear in no scan, and unused ids below the maximum, map to themselves;
* the list has length ``max spw id + 1`` (ids need not start at 0 or be contiguous).

The seed instead concatenated ``[first]*len(group)`` per group and truncated to the number of
spws, which is only right for one contiguous group starting at 0.
"""
from __future__ import annotations

import logging
import operator
from collections import Counter
from typing import Iterable, Sequence

__all__ = ["build_spwmap", "spwmap_for", "chain_spwmaps", "ambiguous_spws", "spw_groups"]

log = logging.getLogger(__name__)


def _as_ids(values: Iterable[int], label: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool):
            raise ValueError(f"{label}: spw ids must be integers, got {v!r}")
        try:
            i = operator.index(v)
        except TypeError:
            raise ValueError(f"{label}: spw ids must be integers, got {v!r}") from None
        if i < 0:
            raise ValueError(f"{label}: spw ids must be >= 0, got {i}")
        out.append(i)
    return out


def _spw_ids(spw_ids: Sequence[int] | int) -> list[int]:
    if isinstance(spw_ids, bool):
        raise ValueError(f"spw_ids must be a count or a sequence of ids, got {spw_ids!r}")
    try:
        n = operator.index(spw_ids)  # type: ignore[arg-type]
    except TypeError:
        return sorted(set(_as_ids(spw_ids, "spw_ids")))  # type: ignore[arg-type]
    if n < 0:
        raise ValueError(f"spw_ids count must be >= 0, got {n}")
    return list(range(n))


def spw_groups(scan_spws: Sequence[Sequence[int]]) -> Counter[tuple[int, ...]]:
    """Distinct sorted spw sets over scans -> number of scans with that set (empty sets skipped)."""
    groups: Counter[tuple[int, ...]] = Counter()
    for k, spws in enumerate(scan_spws):
        ids = tuple(sorted(set(_as_ids(spws, f"scan_spws[{k}]"))))
        if ids:
            groups[ids] += 1
    return groups


def _candidates(groups: Counter[tuple[int, ...]]) -> dict[int, Counter[int]]:
    """spw -> Counter(label -> number of scans in which spw is solved under that label)."""
    cands: dict[int, Counter[int]] = {}
    for group, nscans in groups.items():
        for spw in group:
            cands.setdefault(spw, Counter())[group[0]] += nscans
    return cands


def ambiguous_spws(scan_spws: Sequence[Sequence[int]]) -> dict[int, dict[int, int]]:
    """Spws whose solutions land on different labels in different scans:
    spw -> {label: number of scans}.  Empty when one spwmap is exact for all scans."""
    return {spw: dict(sorted(c.items()))
            for spw, c in sorted(_candidates(spw_groups(scan_spws)).items()) if len(c) > 1}


def build_spwmap(scan_spws: Sequence[Sequence[int]], spw_ids: Sequence[int] | int) -> list[int]:
    """spwmap (indexed by spw id) for applying a ``combine='spw'`` table.

    ``scan_spws``: for each scan the spw ids it contains (of the data being calibrated).
    ``spw_ids``: all spw ids of the MS, or their count ``n`` (ids ``0..n-1``).
    Raises ValueError if a scan references a spw not in ``spw_ids``.
    """
    ids = _spw_ids(spw_ids)
    groups = spw_groups(scan_spws)
    seen = {s for g in groups for s in g}
    unknown = sorted(seen - set(ids))
    if unknown:
        raise ValueError(f"scans reference spw ids {unknown} that are not in spw_ids {ids}")
    if not ids:
        return []
    spwmap = list(range(max(ids) + 1))
    for spw, labels in _candidates(groups).items():
        # most scans first, then the lower label
        label = min(labels.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        spwmap[spw] = label
        if len(labels) > 1:
            log.warning("spw %d is solved under labels %s in different scans; mapping it to "
                        "%d (spwmap cannot depend on scan)", spw, dict(labels), label)
    return spwmap


def spwmap_for(combine: str, scan_spws: Sequence[Sequence[int]],
               spw_ids: Sequence[int] | int) -> list[int]:
    """``build_spwmap`` if ``combine`` contains 'spw' (e.g. 'scan,spw'), else ``[]``."""
    tokens = {t.strip() for t in (combine or "").split(",")}
    if "spw" not in tokens:
        return []
    return build_spwmap(scan_spws, spw_ids)


def chain_spwmaps(entries: Sequence[Sequence[int] | None],
                  tables: Sequence[str] | None = None) -> list[list[int]]:
    """One spwmap per gain table, in table order (``[]`` / None = identity), as fresh lists.

    Pass the result as gaincal/applycal ``spwmap`` together with the same ``gaintable`` list;
    if ``tables`` is given its length must equal the number of entries.  (The seed appended
    entries only for combine='spw' steps, so its lists could go out of step with the tables.)
    """
    out: list[list[int]] = []
    for k, e in enumerate(entries):
        if isinstance(e, (str, bytes)) or (e is not None and not hasattr(e, "__iter__")):
            raise ValueError(f"spwmap entry {k} must be a list of spw ids, got {e!r}")
        out.append(_as_ids(e, f"spwmap entry {k}") if e is not None else [])
    if tables is not None and len(tables) != len(out):
        raise ValueError(f"{len(out)} spwmap entries for {len(tables)} gain tables")
    return out


def spw_correspondence(src_spws: Sequence[dict], work_spws: Sequence[dict]) -> dict[int, int]:
    """Input spw id -> copy spw id, by frequency: CASA ``split`` and ``concat`` renumber spws
    (a copy's spw k is not the input's spw k; an EB whose spw 0 is the upper band ends as the
    joint copy's spw 1). Each entry: ``id``, ``freq_min``, ``freq_max`` (Hz); a copy spw
    belongs to the input spw whose band (+-1 Hz) contains it. Pure."""
    out = {}
    for w in work_spws:
        for s in src_spws:
            if s["freq_min"] - 1.0 <= w["freq_min"] and w["freq_max"] <= s["freq_max"] + 1.0:
                out[int(s["id"])] = int(w["id"])
                break
    return out
