"""Which field(s) a dataset selects: the one pure rule shared by the up-front check and startup.

:func:`field_selection_problem` is called by ``campaign.preflight.table_problems`` (--dry-run,
run-one, a campaign's check before it starts) and, in the CASA child, by
``casa.jobs.working_copy`` and ``ms.inspection.inspect_ms``: dry-run and run give the same
line. No imports of the package (``ms.inspection`` imports this module).
"""
from __future__ import annotations

from typing import Sequence

#: Intent (prefix) of a science-target scan (ALMA/VLA OBS_MODE: OBSERVE_TARGET#ON_SOURCE, ...).
SCIENCE_INTENT = "OBSERVE_TARGET"


def has_science_intents(obs_modes: Sequence[str]) -> bool:
    """True when a STATE ``OBS_MODE`` lists a science-target intent (then ``targets =
    "science"`` finds the targets). Pure."""
    return any(part.split("#", 1)[0].strip().upper().startswith(SCIENCE_INTENT)
               for m in obs_modes for part in str(m).split(","))


def field_selection_problem(field: str, names: Sequence[str], science_intents: bool = False) -> str:
    """Why the ``field`` setting cannot select the target of an MS whose FIELD rows are named
    ``names``, or ``""``. Pure; the one rule of the up-front check (--dry-run, run-one,
    campaign.preflight) and of startup (casa/jobs.working_copy, ms.inspection.inspect_ms).

    - ``field`` set: each comma-separated entry must be a field name or a row number;
      CASA patterns (``*``, ``~``, ``<``, ``>``) are left to CASA.
    - ``field`` empty and several differently named FIELD rows: refused (self-calibrating a calibrator and a
      target together makes a wrong model of both); the line points at ``targets =
      "science"`` when the MS carries science intents (``science_intents``), else at
      ``targets`` patterns.
    """
    names = [str(n) for n in names]
    entries = [f.strip() for f in (field or "").split(",") if f.strip()]
    for f in entries:
        if any(ch in f for ch in "*~<>"):
            continue
        if f not in names and not (f.isdigit() and int(f) < len(names)):
            return f"field '{f}' not in the MS (fields: {', '.join(names)})"
    distinct = list(dict.fromkeys(names))  # FIELD rows of one name are one target (concat writes them)
    if not entries and len(distinct) > 1:
        more = f", ... {len(distinct) - 6} more" if len(distinct) > 6 else ""
        hint = ('or use targets = "science" (the MS has scan intents: one dataset per science field)'
                if science_intents else 'or use targets = ["pattern", ...] (one dataset per matching field)')
        return (f"the MS has {len(distinct)} fields ({', '.join(distinct[:6])}{more}); "
                f"set 'field' to the target {hint}")
    return ""
