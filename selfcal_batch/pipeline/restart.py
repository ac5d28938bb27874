"""What ``--restart-from STEP`` will redo on a dataset, and why (pure).

The pipeline deletes ``work.ms`` (the private working copy every calibration step reads)
after a successful run unless ``keep_work_ms`` is set. Redoing a step that reads it then
needs a new copy, and the copy only has the right flags, models and corrected data after
every earlier step ran on it again: the run redoes everything from ``startup``. The
campaign prints this before it submits anything, so a user never waits for a silent full
re-run; ``keep_work_ms = true`` keeps the copy and makes the partial restart possible.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfcal_batch.ms.checksum import fingerprint_change
from selfcal_batch.pipeline.registry import NO_WORK_MS, canonical, depends, rename_old_steps, run_order


@dataclass(frozen=True)
class RestartPlan:
    """``first``: the first step that will run; ``redo``: the recorded steps that are redone
    (in order); ``reason``: why (one line, without the dataset name)."""

    requested: str
    first: str
    redo: tuple[str, ...] = field(default_factory=tuple)
    reason: str = ""


def plan(requested: str, recorded: list[str], work_ms_exists: bool, keep_work_ms: bool) -> RestartPlan:
    """Decide what restarting from ``requested`` redoes.

    ``recorded``: the dataset's step records in run order (``state.json`` ``steps`` keys);
    ``work_ms_exists``: whether ``<dataset>/work.ms`` is on disk now; ``keep_work_ms``: the
    dataset's setting. Never raises.
    """
    if not recorded:
        return RestartPlan(requested, "", (), "no earlier run: every step runs")
    if requested not in recorded:
        return RestartPlan(requested, "", (), f"{requested} has not run on this dataset "
                                              "(no record): only unfinished steps run")
    redo = tuple(recorded[recorded.index(requested):])
    needs_copy = any(canonical(s) not in NO_WORK_MS for s in redo) and "startup" in recorded and not work_ms_exists
    if needs_copy:
        why = ("work.ms was removed after success" if not keep_work_ms
               else "work.ms is missing (deleted by hand?)")
        hint = (" (set keep_work_ms = true to keep the working copy for restarts from a later step)"
                if not keep_work_ms else "")
        return RestartPlan(requested, "startup", tuple(recorded),
                           f"{why}: redoing from startup, all {len(recorded)} steps, not only "
                           f"from {requested}{hint}")
    kept = " (work.ms kept)" if work_ms_exists and any(canonical(s) not in NO_WORK_MS for s in redo) else ""
    return RestartPlan(requested, requested, redo,
                       f"redoing from {requested}: {' '.join(redo)}{kept}")


def plan_from_state(state: dict[str, Any] | None, requested: str, work_ms_exists: bool,
                    keep_work_ms: bool) -> RestartPlan:
    """:func:`plan` from a dataset's ``state.json`` content (None: never ran)."""
    steps = list(rename_old_steps((state or {}).get("steps") or {})) if isinstance(state, dict) else []
    return plan(canonical(requested), steps, work_ms_exists, keep_work_ms)


def describe(p: RestartPlan) -> str:
    """The one-line reason (the console prefixes the dataset name)."""
    return p.reason


def input_change_message(state: dict[str, Any] | None, now: dict[str, Any], first_step: str) -> str:
    """``""``, or the one line (without the dataset name) saying that the input MS changed
    since the run recorded in ``state`` (a ``state.json`` content; None: never ran) and that
    the dataset is redone from ``first_step`` (pure). ``now``: the input's current
    :func:`selfcal_batch.ms.checksum.input_fingerprint`. Step hashes hold the MS path, not
    its data, so without this a replaced input would keep every finished step."""
    what = fingerprint_change(state.get("input_fingerprint") if isinstance(state, dict) else None, now)
    return f"input MS changed since the last run ({what}): redoing from {first_step}" if what else ""


def eb_change_message(state: dict[str, Any] | None, now: dict[str, Any], first_step: str) -> str:
    """``""``, or the one line (without the dataset name) saying that the execution blocks of
    a joint dataset changed since the run recorded in ``state`` (its ``eb_fingerprints``) and
    that the dataset is redone from ``first_step`` (pure). ``now``: ``{resolved EB path:
    input_fingerprint}`` in manifest order. Another list or order of EBs, or one EB's files
    changed (:func:`fingerprint_change`, which names them)."""
    before = state.get("eb_fingerprints") if isinstance(state, dict) else None
    if not isinstance(before, dict) or not now:
        return ""
    if list(before) != list(now):
        return f"{eb_list_change(list(before), list(now))}: redoing from {first_step}"
    for k, (path, fp) in enumerate(now.items()):
        if what := fingerprint_change(before[path], fp):
            return (f"execution block {k + 1} ({path}) changed since the last run ({what}): "
                    f"redoing from {first_step}")
    return ""


def eb_list_change(before: list[str], now: list[str]) -> str:
    """How the list of EBs differs from the recorded one (pure): reordered (the same EBs, the
    new order by name), or which EBs were added / are no longer listed."""
    if sorted(before) == sorted(now):
        return (f"the execution blocks were reordered since the last run (now {', '.join(Path(p).name for p in now)}; "
                f"before {', '.join(Path(p).name for p in before)})")
    added, gone = [p for p in now if p not in before], [p for p in before if p not in now]
    parts = ([f"added {', '.join(added)}"] if added else []) + ([f"no longer listed {', '.join(gone)}"] if gone else [])
    return f"the execution blocks listed changed since the last run ({'; '.join(parts)})"


def settings_change_message(state: dict[str, Any] | None, now_cfg: dict[str, Any],
                            requested: list[str] | tuple[str, ...], work_ms_exists: bool = True) -> str:
    """``""``, or the one line (without the dataset name) saying that settings changed since
    the run recorded in ``state`` (its ``config``) and from which step the run redoes (pure).

    ``now_cfg``: ``PipelineConfig.to_dict()`` of this run; ``requested``: its ``steps``. A
    step is redone when it was recorded done and the configuration in its resume hash
    (:func:`registry.depends`, the same values the runner hashes) differs; every later step
    follows. Listed: the changed keys of the steps from there on. When the step reads
    ``work.ms`` and that was removed after success, the run starts from ``startup``.
    """
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        return ""
    old_cfg, recorded = state["config"], rename_old_steps(state.get("steps") or {})
    order = run_order(requested)
    first = next((s for s in order if (recorded.get(s) or {}).get("status") in ("done", "skipped")
                  and depends(s, old_cfg) != depends(s, now_cfg)), "")
    if not first:
        return ""
    later = order[order.index(first):]
    keys = sorted({k for s in later for k, v in depends(s, now_cfg).items() if depends(s, old_cfg).get(k) != v})
    start = first if work_ms_exists or first in NO_WORK_MS else "startup"
    how = "" if start == first else f" (work.ms was removed after success; {first} needs it)"
    return f"settings changed since the last run ({', '.join(keys)}): redoing from {start}{how}"
