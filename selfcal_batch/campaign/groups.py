"""Targets grouped across execution blocks (issue 18, item 2): one joint dataset per target.

An entry that expands the targets of several MSs (``ms`` a glob or a list, ``targets``) and
sets ``group`` makes ONE dataset per target holding that target's fields from every MS:

```toml
[[datasets]]
ms = "ebs/*.ms"                 # or ["eb1.ms", "eb2.ms"]
targets = "science"
group = "name"                  # or "position" (centres within group_tolerance_arcsec)
group_tolerance_arcsec = 1.0
```

The grouping decision is :func:`selfcal_batch.selfcal.ebjoint.group_ebs` (pure): EBs in
order of the target's first time stamp in each MS (then path), so the order never depends on
the glob or the list. A target found in one MS only stays an ordinary dataset; a name group
whose positions differ beyond the tolerance is one failed dataset whose line names both MSs
and the separation (every other dataset runs). Each EB keeps its own field selection
(``eb_fields``: the field ids differ between MSs). Names: ``target_name`` (default
``"{name}__{field}"`` with ``name`` set, else ``"{field}"``; ``{stem}`` = the first EB's stem).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from selfcal_batch.campaign.targets import TargetError, target_dataset_name
from selfcal_batch.selfcal.ebjoint import group_ebs

#: The ``[[datasets]]`` keys of grouping (documented in README and campaign_config).
GROUP_KEYS = ("group", "group_tolerance_arcsec")
GROUP_BY = ("name", "position")
#: Default position tolerance (arcsec): catalogue positions of one target agree to far better
#: than 1 arcsec, while two targets of a survey are arcminutes apart.
DEFAULT_TOLERANCE_ARCSEC = 1.0


def parse_group_keys(entry: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """DatasetSpec keywords of ``group`` / ``group_tolerance_arcsec``, or ``(key, one-line
    problem)``: ``group`` must be "name" or "position", needs ``targets`` and several MSs (a
    glob or a list in ``ms``); the tolerance a number of arcsec > 0."""
    if not any(k in entry for k in GROUP_KEYS):
        return {}, None
    if "group" not in entry:
        return {}, ("group_tolerance_arcsec", 'group_tolerance_arcsec: only with group = "name" or "position"')
    by = entry["group"]
    if not isinstance(by, str) or by not in GROUP_BY:
        return {}, ("group", f'group: expected "name" or "position", got {by!r}')
    if "targets" not in entry:
        return {}, ("group", "group: only with targets (it groups the targets expanded from several MSs)")
    ms = entry.get("ms")
    if isinstance(ms, str) and not any(c in ms for c in "*?["):
        return {}, ("group", "group: needs several MSs in ms (a glob or a list of paths)")
    tol = entry.get("group_tolerance_arcsec", DEFAULT_TOLERANCE_ARCSEC)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol <= 0:
        return {}, ("group_tolerance_arcsec", f"group_tolerance_arcsec: expected a number of arcsec > 0, got {tol!r}")
    return {"group": by, "group_tolerance_arcsec": float(tol)}, None


def group_datasets(datasets: list[Any]) -> list[Any]:
    """Replace the expanded targets of every grouped entry by one dataset per group (see the
    module docstring); datasets of other entries and failed ones pass through in place."""
    members: dict[int, list[Any]] = {}
    for d in datasets:
        if getattr(d, "group", "") and d.target is not None and d.ok:
            members.setdefault(d.index, []).append(d)
    out: list[Any] = []
    done: set[int] = set()
    for d in datasets:
        if not (d.index in members and any(d is m for m in members[d.index])):
            out.append(d)
        elif d.index not in done:
            done.add(d.index)
            out.extend(_one_per_group(members[d.index]))
    return out


def _group_name(lead: Any, field: str) -> str:
    pattern = lead.target_name or ("{name}__{field}" if lead.entry_name else "{field}")
    stem = lead.ms.name.rsplit(".", 1)[0]
    return target_dataset_name(pattern, lead.entry_name or stem, stem, field)


def _one_per_group(targets: list[Any]) -> list[Any]:
    first = targets[0]
    groups = group_ebs([t.target for t in targets], first.group, first.group_tolerance_arcsec)
    out = []
    for g in groups:
        ds = [targets[i] for i in g.members]
        lead = ds[0]
        try:
            name = _group_name(lead, lead.target["field"])
        except TargetError as exc:
            out.append(dataclasses.replace(lead, error=f"datasets[{lead.index}] (name={lead.name!r}): {exc}"))
            continue
        notes = left_out_notes(lead.eb_skips, {d.target["field"] for d in ds}, {str(d.ms) for d in ds})
        if g.problem:
            out.append(dataclasses.replace(lead, name=name, notes=notes,
                                           error=f"datasets[{lead.index}] (name={name!r}): {g.problem}"))
        elif len(ds) == 1:
            out.append(dataclasses.replace(lead, name=name, notes=notes))
        else:
            out.append(dataclasses.replace(_joint(lead, ds, name), notes=notes))
    return out


def left_out_notes(skips: tuple[tuple[str, str, str], ...], fields: set[str], included: set[str]
                   ) -> tuple[str, ...]:
    """The notes of one group (pure; tester s7 #4/#8: a target ran from 1 of 2 EBs under the
    group's name and nothing said so): every MS of the entry not among the group's EBs
    (``included``) that target expansion left out as a whole (field '') or whose field of a
    group member's name (``fields``) it skipped, with the reason. ``skips``: ``(ms, field,
    reason)`` (``targets.group_skips``)."""
    out = [f"execution block {ms} not included: " + (f"field {field}: {why}" if field else why)
           for ms, field, why in skips if ms not in included and (not field or field in fields)]
    return tuple(dict.fromkeys(out))


def _joint(lead: Any, ds: list[Any], name: str) -> Any:
    """One joint dataset of the EBs ``ds`` (in EB order): each EB its own field selection."""
    eb_fields = tuple(d.config.field for d in ds)
    cfg = lead.config.with_updates(field="", eb_fields=eb_fields)
    overrides = {**{k: v for k, v in lead.overrides.items() if k != "field"}, "eb_fields": list(eb_fields)}
    target = {**lead.target, "ebs": [d.target for d in ds]}
    return dataclasses.replace(lead, name=name, ms=ds[0].ms, ebs=tuple(d.ms for d in ds), config=cfg,
                               target=target, overrides=overrides)
