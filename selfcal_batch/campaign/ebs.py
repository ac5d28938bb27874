"""Joint execution blocks in the manifest: ``ms = ["eb1.ms", "eb2.ms"]`` (issue 18, item 2).

One dataset self-calibrates several execution blocks (EBs) of one target jointly
(DESIGN.md, "Joint EBs"). :func:`resolve_eb_list` checks such a list (pure path checks, no
table is opened); the manifest turns the result into ``DatasetSpec.ebs``.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from selfcal_batch.ms.view import archive_hint
from selfcal_batch.selfcal.channels import SpwChannels
from selfcal_batch.selfcal.ebjoint import SAME_POINTING_ARCSEC, phase_shift_plan, shift_limit_arcsec

#: MJD seconds of 1970-01-01 (MS TIME -> Unix time).
_UNIX_EPOCH_MJD_S = 3506716800.0
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
    real = [p.resolve() for p in ebs]  # also through '..', a trailing '/' or a link
    if dup := next((k for k in range(len(real)) if real[k] in real[:k]), None):
        first = ebs[real.index(real[dup])]
        return (), ("ms", f"ms: the same execution block is listed twice: {ebs[dup]} is {first}"
                          + (f" (both {real[dup]})" if real[dup] not in (ebs[dup], first) else ""))
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


def _mjd_text(mjd_s: float) -> str:
    """MJD seconds -> ``YYYY-MM-DD HH:MM:SS`` UTC."""
    return datetime.fromtimestamp(float(mjd_s) - _UNIX_EPOCH_MJD_S, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def eb_identity(chosen: list[dict[str, Any]]) -> tuple[Any, ...] | None:
    """What makes an execution block the same one (pure): the MS's OBSERVATION rows
    (telescope, TIME_RANGE, to 1 ms) and the first/last unflagged TIME of its selected target
    rows (to 1 ms), from :func:`selfcal_batch.ms.fields.read_fields` records ``chosen``.
    Two MSs with one identity are one EB delivered twice (a copy, a link under a glob, a
    re-split): CASA ``concat`` would give them one observation id. None when nothing is known."""
    if not chosen:
        return None
    starts = [f["start_s"] for f in chosen if f.get("start_s") is not None]
    ends = [f["end_s"] for f in chosen if f.get("end_s") is not None]
    obs = tuple((str(o[0]), round(float(o[1]), 3), round(float(o[2]), 3)) for o in chosen[0].get("observations") or [])
    if not starts or not ends or not obs:
        return None
    return obs, round(min(starts), 3), round(max(ends), 3)


def same_eb_problem(ebs: tuple[Path, ...] | list[Path], identities: list[tuple[Any, ...] | None]) -> str:
    """One line naming both MSs when two EBs have one :func:`eb_identity` ('' otherwise; pure)."""
    for k, ident in enumerate(identities):
        first = next((j for j in range(k) if identities[j] == ident), None) if ident is not None else None
        if first is None or ident is None:
            continue
        (tel, t0, t1), start, end = ident[0][0], ident[1], ident[2]
        return (f"{ebs[k]} is the same execution block as {ebs[first]}: same observation time range "
                f"{_mjd_text(t0)} - {_mjd_text(t1)} UTC ({tel or 'telescope unnamed'}) and the same target "
                f"time stamps ({_mjd_text(start)} - {_mjd_text(end)}); list it once")
    return ""


def flagged_eb_problem(ebs: tuple[Path, ...] | list[Path], selections: list[str], found: dict[str, Any]) -> str:
    """One line naming the first EB whose selected field(s) hold no unflagged row (``FLAG_ROW``
    of every row; '' otherwise; pure): the startup would refuse it ("has no unflagged data"),
    so the dry-run says it first (tester s7 #5). Fields not read or a CASA pattern: ''."""
    for k, (ms, sel) in enumerate(zip(ebs, selections, strict=True)):
        info = found.get(str(ms))
        if not isinstance(info, list):
            continue
        chosen = selected_fields(info, sel) if sel.strip() else [f for f in info if f.get("rows_total", f["rows"])]
        if not chosen or any(f["rows"] for f in chosen):
            continue
        total = sum(int(f.get("rows_total", 0) or 0) for f in chosen)
        names = ", ".join(dict.fromkeys(f["name"] for f in chosen))
        return (f"{ms} (execution block {k + 1} of {len(ebs)}): no unflagged data in field {names} "
                f"(100% of its {total} rows flagged): remove it from ms to self-calibrate the other EBs")
    return ""


def layout_check(ebs: tuple[Path, ...], selections: list[str], found: dict[str, Any], chanbin: int,
                 spw: str = "") -> tuple[str, tuple[float, ...]]:
    """The EBs of one joint dataset as the startup will see them: ``(problem, shifts)``.

    ``problem``: one line when an EB's selected field is fully flagged
    (:func:`flagged_eb_problem`), two EBs are one (:func:`same_eb_problem`), their phase
    centres lie farther apart than a joint run
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

    if flagged := flagged_eb_problem(ebs, selections, found):
        return flagged, ()
    centres, nchan, corrs, freq, dish, idents = [], [], [], [], [], []
    for ms, sel in zip(ebs, selections, strict=True):
        info = found.get(str(ms))
        chosen = selected_fields(info, sel) if isinstance(info, list) else None
        if not chosen:
            return "", ()
        idents.append(eb_identity(chosen))
        centres.append((chosen[0]["ra_deg"], chosen[0]["dec_deg"]))
        freq.append(float(chosen[0].get("freq_max_hz") or 0.0))
        dish.append(float(chosen[0].get("dish_m") or 0.0))
        spws = sorted({tuple(w) for f in chosen for w in f.get("spws", [])})
        nchan.append([] if spw else [working_spw(w, chanbin) for w in spws])
        corrs.append({w: c for f in chosen for w, c in (f.get("correlations") or {}).items()})
    limit = shift_limit_arcsec(max(freq), max(dish)) if min(freq) > 0 and min(dish) > 0 else SAME_POINTING_ARCSEC
    plan = phase_shift_plan([str(p) for p in ebs], centres, limit)
    return (same_eb_problem(ebs, idents) or plan.problem or channel_count_problem(ebs, nchan)
            or correlation_problem(ebs, corrs)), plan.shifts_arcsec


def layout_problem(ebs: tuple[Path, ...], selections: list[str], found: dict[str, Any], chanbin: int,
                   spw: str = "") -> str:
    """The ``problem`` of :func:`layout_check` ('' when the EBs can be one joint dataset)."""
    return layout_check(ebs, selections, found, chanbin, spw)[0]


def working_spw(spw: tuple[Any, ...], chanbin: int) -> SpwChannels:
    """A field record's spw (``[id, channels]`` or ``[id, channels, lowest edge Hz, width Hz]``,
    :func:`selfcal_batch.ms.fields.summarise`) as the working copy holds it after ``chanbin``."""
    n = working_nchan(int(spw[1]), chanbin)
    if len(spw) < 4:
        return SpwChannels(int(spw[0]), n)
    return SpwChannels(int(spw[0]), n, float(spw[2]), float(spw[3]) * max(1, chanbin))


def channel_note(ebs: tuple[Path, ...], selections: list[str], found: dict[str, Any], chanbin: int,
                 spw: str = "") -> str:
    """What startup will average for a joint dataset of different channel counts (one line;
    '' when nothing, or when :func:`layout_problem` refuses or cannot tell)."""
    from selfcal_batch.pipeline.steps_joint import channel_plan  # lazy: the step module, only here

    if spw:
        return ""
    per = []
    for ms, sel in zip(ebs, selections, strict=True):
        info = found.get(str(ms))
        chosen = selected_fields(info, sel) if isinstance(info, list) else None
        if not chosen:
            return ""
        per.append([working_spw(w, chanbin) for w in sorted({tuple(w) for f in chosen for w in f.get("spws", [])})])
    plan = channel_plan(per)
    if not plan.averaged:
        return ""
    what = "; ".join(f"eb{k} x{'/'.join(str(plan.factors[k][s.spw_id]) for s in p)}"
                     for k, p in enumerate(per) if any(plan.factors[k][s.spw_id] > 1 for s in p))
    return (f"averaged to {plan.common} channels per spw in the working copies ({what}; WSClean 3.1 needs one "
            "count); the per-EB final MSs at the input's resolution")


def eb_layout(datasets: list[Any], reader: Callable[[list[str]], dict[str, Any]] | None = None,
              notes: dict[str, str] | None = None) -> tuple[dict[str, str], dict[str, tuple[float, ...]]]:
    """:func:`layout_check` of every valid joint dataset (``DatasetSpec.ebs``): ``({dataset
    name: one line}, {dataset name: per-EB re-phasing offsets (arcsec), only when one is
    > 0})``; the EBs' fields are read in a child process (``reader``, default
    :func:`selfcal_batch.ms.fields.list_fields`, on private read-only views). ``notes``, when
    given, receives ``{dataset name: line}`` of :func:`channel_note` (datasets startup will
    average to one channel count)."""
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
            continue
        if any(x > 0 for x in per):
            shifts[d.name] = per
        if notes is not None and (note := channel_note(d.ebs, sels, found, d.config.chanbin, d.config.spw)):
            notes[d.name] = note
    return problems, shifts


def eb_layout_problems(datasets: list[Any], reader: Callable[[list[str]], dict[str, Any]] | None = None,
                       notes: dict[str, str] | None = None) -> dict[str, str]:
    """``{dataset name: one line}`` of :func:`eb_layout` (the refusals only)."""
    return eb_layout(datasets, reader, notes)[0]
