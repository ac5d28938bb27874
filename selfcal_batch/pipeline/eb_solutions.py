"""Joint EBs: each execution block's share of a step's failed solutions (tester s7-break #10).

A joint step's gate sees the solutions of every EB together: a faint EB grouped with a
bright one made align_ebs and p0 fail on "27% of solutions flagged" while the reason and the
per-EB rows named neither EB. Every ladder step and align_ebs of a joint dataset now records
``flagged_solutions_per_eb`` (fraction of each EB's solutions flagged in the step's gain
table: failed ``minsnr`` or no data), a rejection for failed solutions names the EBs, and
``result.json``'s per-EB rows carry them per step.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from selfcal_batch.pipeline import ladder
from selfcal_batch.pipeline.context import Context

log = logging.getLogger("selfcal_batch.pipeline")

#: Gate reason fragments of a rejection for failed solutions (selfcal.solint.FLAGGED_SOLUTION_REASONS)
#: and for the data their application flagged (selfcal.applied_flags).
FLAGGED_REASONS = ("of solutions flagged", "applying the solutions flagged")


def flagged_per_observation(flags: np.ndarray, observation_ids: np.ndarray, n_obs: int) -> list[float | None]:
    """Fraction of flagged solutions per observation id (= execution block of a joint copy).

    ``flags``: a gain table's FLAG column, shape (rows, channels, correlations) or (rows, ...);
    ``observation_ids``: its OBSERVATION_ID, shape (rows,). A row counts per flag value, so
    a solution flagged in one correlation counts half for two. None for an EB without rows.
    Pure."""
    f = np.asarray(flags, dtype=bool).reshape(len(observation_ids), -1)
    obs = np.asarray(observation_ids, dtype=int)
    return [round(float(f[obs == k].mean()), 4) if np.any(obs == k) else None for k in range(n_obs)]


def eb_reason(reason: str, per_eb: Sequence[float | None], names: Sequence[str]) -> str:
    """``reason`` with each EB's failed fraction appended when the step was rejected for failed
    solutions (``'... (per EB: ebA.ms 0%, ebF.ms 54%)'``); unchanged otherwise. Pure."""
    if not any(m in reason for m in FLAGGED_REASONS) or "(per EB:" in reason:
        return reason
    return f"{reason} (per EB: {fractions_text(names, per_eb)})"


def fractions_text(names: Sequence[str], per_eb: Sequence[float | None]) -> str:
    """``'ebA.ms 0%, ebF.ms 54%'`` ('no rows' for an EB without solutions). Pure."""
    return ", ".join(f"{n} {'no rows' if v is None else f'{100 * v:.0f}%'}"
                     for n, v in zip(names, per_eb, strict=True))


def read_flagged_per_eb(table: str, n_ebs: int) -> list[float | None]:
    """:func:`flagged_per_observation` of a gain table (the pipeline's own file; python-casacore)."""
    from casacore.tables import table as open_table  # local: casacore only when a joint step ran

    with open_table(table, ack=False) as t:
        return flagged_per_observation(t.getcol("FLAG"), t.getcol("OBSERVATION_ID"), n_ebs)


def with_eb_breakdown(ctx: Context, status: str, rec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The step's record with ``flagged_solutions_per_eb`` (joint datasets with a solved table;
    unchanged otherwise). An unreadable table leaves the record as it was (logged)."""
    if len(ctx.ebs) < 2 or not rec.get("table"):
        return status, rec
    try:
        per = read_flagged_per_eb(str(rec["table"]), len(ctx.ebs))
    except (OSError, RuntimeError) as exc:
        log.warning("%s: cannot read %s for the per-EB solutions: %s", ctx.name, rec["table"], exc)
        return status, rec
    names = [p.name for p in ctx.ebs]
    rec["flagged_solutions_per_eb"] = per
    if not rec.get("accepted"):
        rec["reason"] = eb_reason(str(rec.get("reason") or ""), per, names)
    log.info("%s: solutions flagged per execution block: %s", ctx.name, fractions_text(names, per))
    return status, rec


def ladder_step(ctx: Context, step: str) -> tuple[str, dict[str, Any]]:
    """:func:`selfcal_batch.pipeline.ladder.run_step` with the per-EB breakdown of joint datasets."""
    return with_eb_breakdown(ctx, *ladder.run_step(ctx, step))
