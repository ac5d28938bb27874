"""Target expansion: one ``[[datasets]]`` entry with ``targets`` -> one dataset per science field.

Survey data arrive as one MS per execution block holding calibrators and several targets.
An entry ``ms = "eb1.ms"`` (or a glob) with ``targets = "science"`` becomes one dataset per
field whose scan intents include ``OBSERVE_TARGET*`` (fields with only calibrator or other
intents are skipped, with the reason); when the MS has no intents, ``targets`` names
field-name patterns instead (``targets = ["J1*", "3C*"]``, shell wildcards, case-sensitive;
``"science"`` plus patterns: science fields matching a pattern). A field with less than
``min_target_time_s`` on source (unflagged rows; see :func:`selfcal_batch.ms.fields.summarise`)
or without data is skipped with the reason.

Dataset names: ``target_name`` (default :data:`DEFAULT_NAME_PATTERN` = ``"{name}__{field}"``,
``{name}`` = the entry's ``name`` or the MS stem, ``{stem}`` = the MS stem, ``{field}`` = the
field name with every character outside ``[A-Za-z0-9._+-]`` replaced by ``_``). A name is a
directory under ``<out>/datasets/`` and a Dask key, so ``/`` is not allowed: ``__`` separates
MS and field. Each dataset keeps the entry's overrides with ``field`` set to the field name.

The pure choices (:func:`select_targets`, :func:`target_dataset_name`) are unit tested; the
MS is read only by :func:`selfcal_batch.ms.fields.list_fields` (a child process on a private
read-only view).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import logging
import math
import re
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

from selfcal_batch.selfcal.ebjoint import angular_separation_arcsec

log = logging.getLogger("selfcal_batch.campaign")

#: The ``targets`` keyword meaning "every field observed with an OBSERVE_TARGET* intent".
SCIENCE = "science"
#: Intents (prefix) of a science target (ALMA/VLA: OBSERVE_TARGET#ON_SOURCE, #UNSPECIFIED).
SCIENCE_INTENT = "OBSERVE_TARGET"
DEFAULT_NAME_PATTERN = "{name}__{field}"
#: Start of the skip reason of a repeated FIELD row that joins its target's dataset (not left out).
JOINED = "same name and position as field id"
#: The ``[[datasets]]`` keys of target expansion (documented in README's manifest section).
TARGET_KEYS = ("targets", "target_name", "min_target_time_s")
#: Default minimum time on source of a target (s): below one minute a VLA/e-MERLIN target
#: has too few solution intervals for any self-calibration step (4 phase solutions of 15 s).
DEFAULT_MIN_TIME_S = 60.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")


class TargetError(ValueError):
    """The targets of one MS cannot be chosen (one line, without the MS path)."""


class UnreadError(TargetError):
    """The fields of one MS could not be read (damaged, unreadable): never skipped, a failure."""


@dataclass(frozen=True)
class Choice:
    """Outcome of :func:`select_targets`: the fields kept and ``(name, reason)`` of the rest."""

    selected: tuple[dict[str, Any], ...]
    skipped: tuple[tuple[str, str], ...]


def check_targets_value(value: Any) -> tuple[str, ...]:
    """Validate a manifest ``targets`` value: a non-empty string or list of strings.

    Raises:
        TargetError: wrong type or an empty pattern.
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x.strip() for x in items):
        raise TargetError(f'targets: expected "science", a field-name pattern or a list of them, got {value!r}')
    return tuple(x.strip() for x in items)


#: Fields of one name closer than this are one target (repeated FIELD rows of a pointing).
SAME_POSITION_ARCSEC = 1.0


def _separation_arcsec(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Angular distance of two FIELD records (``ra_deg``, ``dec_deg``); inf when unknown."""
    try:
        coords = [float(x) for x in (a["ra_deg"], a["dec_deg"], b["ra_deg"], b["dec_deg"])]
    except (KeyError, TypeError, ValueError):
        return math.inf
    return angular_separation_arcsec(*coords)


def select_targets(fields: list[dict[str, Any]], targets: tuple[str, ...], min_time_s: float) -> Choice:
    """Choose the target fields of one MS.

    Args:
        fields: :func:`selfcal_batch.ms.fields.summarise` records (``name, intents, rows,
            time_on_source_s``).
        targets: ``("science",)``, field-name patterns, or both (see the module docstring).
        min_time_s: minimum time on source (s).

    Returns:
        :class:`Choice`, fields in FIELD-table order.

    Raises:
        TargetError: ``"science"`` asked for but the MS carries no intents at all (then
            only a name pattern can tell targets from calibrators).
    """
    science = any(t.lower() == SCIENCE for t in targets)
    patterns = [t for t in targets if t.lower() != SCIENCE]
    if science and not any(f["intents"] for f in fields):
        names = ", ".join(f["name"] for f in fields[:8])
        raise TargetError(f"targets = \"science\" needs scan intents, but the MS has none (STATE table "
                          f"empty); name the targets by pattern instead, e.g. targets = [\"J1*\"] "
                          f"(fields: {names})")
    kept: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for f in fields:
        why = ""
        if science and not any(i.startswith(SCIENCE_INTENT) for i in f["intents"]):
            why = f"not a science target (intents {', '.join(f['intents']) or 'none'})"
        elif patterns and not any(fnmatch.fnmatchcase(f["name"], p) for p in patterns):
            why = f"name matches none of {', '.join(repr(p) for p in patterns)}"
        elif f["rows"] == 0:
            why = no_data_reason(f)
        elif f["time_on_source_s"] < min_time_s:
            why = f"{f['time_on_source_s']:g} s on source < min_target_time_s = {min_time_s:g} s"
        first = next((k for k in kept if k["name"] == f["name"]), None)
        if not why and first is not None:
            # One dataset per name (a name is a dataset name). A repeated entry at the same
            # position joins the first one's dataset (selected by id); another position is a
            # different pointing and is not silently merged into it.
            sep = _separation_arcsec(first, f)
            if sep <= SAME_POSITION_ARCSEC:
                first["ids"].append(f["id"])
                why = f"{JOINED} {first['id']}: part of that target's dataset"
            else:
                why = (f"same name as field id {first['id']} but {sep / 60:.1f} arcmin away: not selected "
                       f"(a second pointing under one name)")
        if why:
            skipped.append((f["name"], why))
        else:
            kept.append({**f, "ids": [f["id"]]})
    return Choice(tuple(kept), tuple(skipped))


def no_data_reason(field: dict[str, Any]) -> str:
    """Why a field without unflagged rows is not a target (pure): ``"no unflagged data (100%
    flagged)"`` when it has rows, all flagged (``rows_total``, ``FLAG_ROW``), else ``"no
    unflagged data (no rows)"`` (tester s7 #4: a flagged target was called "not a science
    target")."""
    total = int(field.get("rows_total", 0) or 0)
    return f"no unflagged data (100% of its {total} rows flagged)" if total else "no unflagged data (no rows)"


def safe_field(name: str) -> str:
    """A field name usable in a dataset name: characters outside ``[A-Za-z0-9._+-]`` -> ``_``."""
    out = _UNSAFE.sub("_", name.strip()) or "field"
    return out if out[0].isalnum() else "f" + out


def stem_name(ms: Path) -> str:
    """A dataset name made from an MS's stem (no ``name`` given): ``eb B.ms`` -> ``eb_B``, as
    :func:`safe_field` makes field names usable (a name the user writes is checked, not
    changed). Tester s7-break #7: a stem with a space made every dataset of it invalid."""
    stem = ms.name.rsplit(".", 1)[0]
    return _UNSAFE.sub("_", stem) if stem else ""


def target_dataset_name(pattern: str, name: str, stem: str, field: str) -> str:
    """The dataset name of one target (see the module docstring for the placeholders).

    Raises:
        TargetError: an unknown placeholder in ``pattern``.
    """
    try:
        # {stem} as {field}: a name with a space would break the attempts log and task keys
        # (space-separated lines, campaign/worker.py), like a manifest name with one.
        return pattern.format(name=name, stem=_UNSAFE.sub("_", stem), field=safe_field(field))
    except (KeyError, IndexError, ValueError) as exc:
        raise TargetError(f"target_name: {pattern!r} is not a pattern of {{name}}, {{stem}}, {{field}} "
                          f"({type(exc).__name__}: {exc})") from None


def expand_datasets(datasets: list[Any], reader: Callable[[list[str]], dict[str, Any]] | None = None
                    ) -> tuple[list[Any], list[tuple[str, str]]]:
    """Replace every valid DatasetSpec with ``targets`` by one DatasetSpec per chosen field.

    Args:
        datasets: ``manifest.DatasetSpec`` list (those without ``targets`` pass through).
        reader: ``{ms: fields or problem}`` for MS paths (default:
            :func:`selfcal_batch.ms.fields.list_fields`, a child process).

    Returns:
        ``(datasets, skipped)``; ``skipped`` = ``[(f"{ms}: {field}", reason)]``, and
        ``(ms, reason)`` for an MS of a glob or list without any target field while another
        MS of that entry has one (a calibrator-only EB). An MS whose fields cannot be read,
        or whose targets cannot be chosen otherwise, stays one dataset carrying a one-line
        ``error`` naming the MS.
    """
    wanted = [d for d in datasets if getattr(d, "targets", ()) and d.ok and d.ms is not None]
    if not wanted:
        return list(datasets), []
    if reader is None:
        from selfcal_batch.ms.fields import list_fields as reader  # lazy: starts a child, only when asked
    found = reader(sorted({str(d.ms) for d in wanted}))
    choices: dict[int, Choice | TargetError] = {}
    for d in wanted:
        info = found.get(str(d.ms), "was not read")
        try:
            if isinstance(info, str):
                raise UnreadError(info)
            choices[id(d)] = select_targets(info, d.targets, d.min_target_time_s)
        except TargetError as exc:
            choices[id(d)] = exc
    out: list[Any] = []
    skipped: list[tuple[str, str]] = []
    for d in datasets:
        if d not in wanted:
            out.append(d)
            continue
        ms, choice = str(d.ms), choices[id(d)]
        if isinstance(choice, Choice) and choice.selected:
            skipped.extend((f"{ms}: {n}", r) for n, r in choice.skipped)
            out.extend(_one_per_field(d, choice.selected))
            continue
        why = str(choice) if isinstance(choice, TargetError) else \
            "no target field left: " + "; ".join(f"{n}: {r}" for n, r in choice.skipped)
        skippable = isinstance(choice, Choice) or (d.group and not isinstance(choice, UnreadError))
        if skippable and _other_ms_has_targets(d, wanted, choices):
            # a calibrator-only EB picked up by a glob or list next to the EBs holding the targets;
            # in a group also an MS whose targets cannot be chosen (no intents): said on the groups
            skipped.append((ms, why))
        else:
            out.append(dataclasses.replace(d, error=f"datasets[{d.index}] (name={d.name!r}): {ms}: {why}"))
    return _with_group_skips(out, wanted, choices), skipped


def group_skips(ms: str, choice: Choice | TargetError) -> list[tuple[str, str, str]]:
    """What target expansion left out of one MS of a grouped entry, ``(ms, field, reason)``
    (pure; field '' = the whole MS, when its targets could not be chosen). A repeated FIELD
    row that joined its target (:data:`JOINED`) is not left out."""
    if isinstance(choice, TargetError):
        return [(ms, "", str(choice))]
    return [(ms, n, r) for n, r in choice.skipped if not r.startswith(JOINED)]


def _with_group_skips(out: list[Any], wanted: list[Any], choices: dict[int, Any]) -> list[Any]:
    """The expanded targets of grouped entries carry every MS's skips of their entry
    (``eb_skips``), which campaign/groups.py turns into the groups' notes (tester s7 #4/#8)."""
    skips: dict[int, list[tuple[str, str, str]]] = {}
    for d in wanted:
        if d.group:
            skips.setdefault(d.index, []).extend(group_skips(str(d.ms), choices[id(d)]))
    return [dataclasses.replace(x, eb_skips=tuple(skips[x.index])) if x.target is not None and x.index in skips
            else x for x in out]


def _other_ms_has_targets(d: Any, wanted: list[Any], choices: dict[int, Any]) -> bool:
    """Whether another MS of ``d``'s entry (a glob or a list in ``ms``) has a target field:
    then an MS of that entry without one (only calibrators, targets too short) is skipped
    with its reasons instead of failing (tester s6 M3); one MS alone, or an entry none of
    whose MSs has a target, stays a failed dataset."""
    return any(o is not d and o.index == d.index and isinstance(c := choices[id(o)], Choice) and c.selected
               for o in wanted)


def field_dataset_names(pattern: str, name: str, stem: str, fields: tuple[dict[str, Any], ...]) -> list[str]:
    """The dataset name of every chosen field of one MS, distinct (pure).

    Fields whose names give the same dataset name (``"3C 286"`` and ``"3C_286"`` both
    sanitise to ``3C_286``, :func:`safe_field`) each get ``-id<FIELD id>`` appended: stable
    across runs (the FIELD table's ids), and every other field keeps its plain name.

    Raises:
        TargetError: an unknown placeholder in ``pattern``.
    """
    names = [target_dataset_name(pattern, name, stem, f["name"]) for f in fields]
    return [f"{n}-id{f['id']}" if names.count(n) > 1 else n for n, f in zip(names, fields, strict=True)]


def _one_per_field(d: Any, fields: tuple[dict[str, Any], ...]) -> list[Any]:
    stem = d.ms.name.rsplit(".", 1)[0]
    pattern = d.target_name or DEFAULT_NAME_PATTERN
    names = field_dataset_names(pattern, d.name, stem, fields)
    plain = [target_dataset_name(pattern, d.name, stem, f["name"]) for f in fields]
    for same in sorted({p for p, n in zip(plain, names, strict=True) if p != n}):
        log.warning("%s: fields %s give the same dataset name %r: named %s", d.ms,
                    ", ".join(f"{f['name']!r} (id {f['id']})" for f, p in zip(fields, plain, strict=True) if p == same), same,
                    ", ".join(n for p, n in zip(plain, names, strict=True) if p == same))
    out = []
    for f, name in zip(fields, names, strict=True):
        # CASA selects by field id: a name made of digits ("4") would be read as an id.
        selection = ",".join(str(i) for i in f.get("ids", [f["id"]]))
        cfg = d.config.with_updates(field=selection)
        target = {"ms": str(d.ms), "field": f["name"], "field_id": f["id"], "intents": f["intents"],
                  "time_on_source_s": f["time_on_source_s"], "ra_deg": f["ra_deg"], "dec_deg": f["dec_deg"],
                  "start_s": f.get("start_s"), "spws": f.get("spws", [])}
        out.append(dataclasses.replace(d, name=name, config=cfg, targets=(), target=target,
                                       overrides={**d.overrides, "field": selection}))
    return out


def separate_generated_names(datasets: list[Any]) -> list[Any]:
    """Datasets whose *generated* names collide (pure): a later one is kept as a dataset
    carrying a one-line ``error`` that names both MSs (and fields), under a free name
    ``<name>-dup<k>`` (its own output directory), so every other dataset still runs.

    A name is generated when its entry expanded to several datasets (an ``ms`` glob) or the
    dataset is an expanded target (e.g. ``target_name = "{field}"`` over several MSs of one
    field). Two names written by hand in two entries are left for the manifest's own
    duplicate-name error (a typo in the file, reported with its line).
    """
    per_entry: dict[int, int] = {}
    for d in datasets:
        per_entry[d.index] = per_entry.get(d.index, 0) + 1

    def generated(d: Any) -> bool:
        return d.target is not None or per_entry[d.index] > 1

    def what(d: Any) -> str:
        return f"field {d.target['field']!r} of {d.ms}" if d.target else str(d.ms)

    taken = {d.name for d in datasets}
    seen: dict[str, Any] = {}
    out = []
    for d in datasets:
        other = seen.get(d.name)
        if other is None or not (generated(d) or generated(other)):
            seen.setdefault(d.name, d)
            out.append(d)
            continue
        k = 2
        while f"{d.name}-dup{k}" in taken:
            k += 1
        new = f"{d.name}-dup{k}"
        taken.add(new)
        out.append(dataclasses.replace(d, name=new, error=(
            f"datasets[{d.index}]: {what(d)} gives the dataset name {d.name!r} of {what(other)} "
            f"(datasets[{other.index}]): not run; "
            + ("set target_name with {stem} to tell them apart" if d.target
               else "give it its own [[datasets]] entry with a distinct name"))))
    return out


def parse_target_keys(entry: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """DatasetSpec keywords of the target-expansion keys, or ``(key, one-line problem)``."""
    if not any(k in entry for k in TARGET_KEYS):
        return {}, None
    if "targets" not in entry:
        key = next(k for k in TARGET_KEYS if k in entry)
        return {}, (key, f"{key}: only with targets = \"science\" or field-name pattern(s)")
    for key, bad in (("field", "field"), ("simulate", "simulate")):
        if key in entry:
            return {}, (key, f"{bad}: cannot be combined with targets (each target sets its own field)")
    try:
        targets = check_targets_value(entry["targets"])
    except TargetError as exc:
        return {}, ("targets", str(exc))
    pattern = entry.get("target_name", "")
    if not isinstance(pattern, str) or (pattern and "{field}" not in pattern):
        return {}, ("target_name", f"target_name: expected a pattern containing {{field}}, got {pattern!r}")
    if "/" in pattern or "\\" in pattern:
        return {}, ("target_name", f"target_name: no '/' (a dataset name is one directory under datasets/), "
                                   f"got {pattern!r}")
    try:
        if pattern:
            target_dataset_name(pattern, "n", "s", "f")
    except TargetError as exc:
        return {}, ("target_name", str(exc))
    mint = entry.get("min_target_time_s", DEFAULT_MIN_TIME_S)
    if isinstance(mint, bool) or not isinstance(mint, (int, float)) or mint < 0:
        return {}, ("min_target_time_s", f"min_target_time_s: expected a number of seconds >= 0, got {mint!r}")
    return {"targets": targets, "target_name": pattern, "min_target_time_s": float(mint)}, None

