"""Joint execution blocks in the manifest: ``ms = ["eb1.ms", "eb2.ms"]`` (issue 18, item 2).

One dataset self-calibrates several execution blocks (EBs) of one target jointly
(DESIGN.md, "Joint EBs"). :func:`resolve_eb_list` checks such a list (pure path checks, no
table is opened); the manifest turns the result into ``DatasetSpec.ebs``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from selfcal_batch.ms.view import archive_hint
from selfcal_batch.selfcal.ebjoint import SAME_POINTING_ARCSEC, phase_shift_plan, shift_limit_arcsec

#: Dataset keys that cannot be combined with a list of EBs (each names one MS).
EXCLUSIVE_KEYS = ("simulate", "targets", "target_name", "min_target_time_s")


def resolve_eb_list(ms_raw: list[Any], entry: dict[str, Any], base_dir: Path,
                    exclusive: tuple[str, ...] = EXCLUSIVE_KEYS) -> tuple[tuple[Path, ...], tuple[str, str] | None]:
    """The EBs' absolute paths, or ``(key, one-line problem)`` naming the EB at fault.

    Problems: not a list of >= 2 path strings, a glob, a key of ``exclusive`` (default
    :data:`EXCLUSIVE_KEYS`; a grouped list, ``group``, allows the target keys), an EB listed
    twice, an EB that does not exist or is not a directory."""
    if len(ms_raw) < 2 or not all(isinstance(m, str) and m for m in ms_raw):
        return (), ("ms", f"ms: expected a path or a list of paths, got {ms_raw!r}")
    if any(c in m for m in ms_raw for c in "*?["):
        return (), ("ms", "ms: a list of execution blocks takes plain paths, not globs")
    for key in exclusive:
        if key in entry:
            return (), (key, f"{key}: cannot be combined with a list of execution blocks in ms"
                             + (' (to group the targets of several MSs, add group = "name")' if key == "targets" else ""))
    ebs = tuple(q if (q := Path(m).expanduser()).is_absolute() else base_dir / q for m in ms_raw)
    if len({p.resolve() for p in ebs}) != len(ebs):  # also through '..', a trailing '/' or a link
        return (), ("ms", "ms: the same execution block is listed twice")
    for k, ms in enumerate(ebs):
        where = f"(execution block {k + 1} of {len(ebs)})"
        if not ms.exists():
            return (), ("ms", f"ms not found: {ms} {where}{archive_hint(ms)}")
        if not ms.is_dir():
            return (), ("ms", f"ms is not a measurement set directory: {ms} {where}{archive_hint(ms)}")
    return ebs, None


def selected_fields(fields: list[dict[str, Any]], selection: str) -> list[dict[str, Any]] | None:
    """The FIELD records a CASA ``field`` selection names (pure): comma-separated names or
    ids; '' = every field with data. None when the selection holds a CASA pattern (``*``,
    ``~``, ``<``, ``>``: left to CASA) or names no field (the table check reports that)."""
    items = [x.strip() for x in (selection or "").split(",") if x.strip()]
    if not items:
        return [f for f in fields if f["rows"]] or None
    out = []
    for it in items:
        if any(c in it for c in "*~<>"):
            return None
        hit = [f for f in fields if f["name"] == it] or [f for f in fields if it.isdigit() and f["id"] == int(it)]
        if not hit:
            return None
        out.extend(hit)
    return out


def working_nchan(nchan: int, chanbin: int) -> int:
    """Channels of one spw in the working copy after ``chanbin`` (CASA split ``width``):
    a last, partial bin is dropped (measured, CASA 6.7: 4 channels, width 3 -> 1)."""
    return max(1, nchan // max(1, chanbin))


def layout_check(ebs: tuple[Path, ...], selections: list[str], found: dict[str, Any], chanbin: int,
                 spw: str = "") -> tuple[str, tuple[float, ...]]:
    """The EBs of one joint dataset as the startup will see them: ``(problem, shifts)``.

    ``problem``: one line when their phase centres lie farther apart than a joint run
    re-phases (:func:`~selfcal_batch.selfcal.ebjoint.phase_shift_plan`, limit
    :func:`~selfcal_batch.selfcal.ebjoint.shift_limit_arcsec` from the highest frequency and
    the largest dish of the EBs) or their target's spws have different channel counts after
    ``chanbin`` or different correlation products (the startup's own messages, same words:
    ``steps_joint.channel_count_problem``, ``steps_joint.correlation_problem``); '' otherwise,
    also when an EB's fields were not read (the table check reports that EB).
    ``shifts``: per EB, the offset (arcsec) its working copy is re-phased by (0.0: not), () when
    the fields were not read. Channel counts are not predicted when the dataset selects spws
    (``spw``: left to startup).

    ``found``: ``{ms: field records or problem}`` (:func:`selfcal_batch.ms.fields.list_fields`)."""
    # lazy: the step module, only here
    from selfcal_batch.pipeline.steps_joint import channel_count_problem, correlation_problem

    centres, nchan, corrs, freq, dish = [], [], [], [], []
    for ms, sel in zip(ebs, selections, strict=True):
        info = found.get(str(ms))
        chosen = selected_fields(info, sel) if isinstance(info, list) else None
        if not chosen:
            return "", ()
        centres.append((chosen[0]["ra_deg"], chosen[0]["dec_deg"]))
        freq.append(float(chosen[0].get("freq_max_hz") or 0.0))
        dish.append(float(chosen[0].get("dish_m") or 0.0))
        spws = sorted({tuple(w) for f in chosen for w in f.get("spws", [])})
        nchan.append([] if spw else [working_nchan(n, chanbin) for _w, n in spws])
        corrs.append({w: c for f in chosen for w, c in (f.get("correlations") or {}).items()})
    limit = shift_limit_arcsec(max(freq), max(dish)) if min(freq) > 0 and min(dish) > 0 else SAME_POINTING_ARCSEC
    plan = phase_shift_plan([str(p) for p in ebs], centres, limit)
    return (plan.problem or channel_count_problem(ebs, nchan) or correlation_problem(ebs, corrs)), plan.shifts_arcsec


def layout_problem(ebs: tuple[Path, ...], selections: list[str], found: dict[str, Any], chanbin: int,
                   spw: str = "") -> str:
    """The ``problem`` of :func:`layout_check` ('' when the EBs can be one joint dataset)."""
    return layout_check(ebs, selections, found, chanbin, spw)[0]


def eb_layout(datasets: list[Any], reader: Callable[[list[str]], dict[str, Any]] | None = None
              ) -> tuple[dict[str, str], dict[str, tuple[float, ...]]]:
    """:func:`layout_check` of every valid joint dataset (``DatasetSpec.ebs``): ``({dataset
    name: one line}, {dataset name: per-EB re-phasing offsets (arcsec), only when one is
    > 0})``; the EBs' fields are read in a child process (``reader``, default
    :func:`selfcal_batch.ms.fields.list_fields`, on private read-only views)."""
    joint = [d for d in datasets if d.ok and d.config is not None and len(d.ebs) > 1]
    if not joint:
        return {}, {}
    if reader is None:
        from selfcal_batch.ms.fields import list_fields as reader  # lazy: starts a child, only when asked
    found = reader(sorted({str(p) for d in joint for p in d.ebs}))
    problems, shifts = {}, {}
    for d in joint:
        sels = list(d.config.eb_fields) if d.config.eb_fields else [d.config.field] * len(d.ebs)
        line, per = layout_check(d.ebs, sels, found, d.config.chanbin, d.config.spw)
        if line:
            problems[d.name] = line
        elif any(x > 0 for x in per):
            shifts[d.name] = per
    return problems, shifts


def eb_layout_problems(datasets: list[Any], reader: Callable[[list[str]], dict[str, Any]] | None = None
                       ) -> dict[str, str]:
    """``{dataset name: one line}`` of :func:`eb_layout` (the refusals only)."""
    return eb_layout(datasets, reader)[0]
