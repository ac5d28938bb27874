"""Data flagged by applying a step's solutions: part of the acceptance gate (pure).

A gain table can look healthy in gaincal's own counts (``solvestats``: every solution
above ``minsnr``) and still flag most of the data when applied: solutions flagged after
the solve (a reference antenna absent in ``refantmode='strict'``), or intervals without
solutions. applycal (``applymode='calflag'``) then flags those visibilities, so the only
reliable count is the flagged fraction of the MS before and after the apply.
"""
from __future__ import annotations

import math

from selfcal_batch.selfcal.acceptance import GateDecision

__all__ = ["newly_flagged_fraction", "gate_applied_flags"]


def newly_flagged_fraction(before: float, after: float) -> float:
    """Fraction of the data unflagged before the step that the step flagged (0..1).

    ``before``/``after``: flagged fractions of the whole MS (0..1). NaN when either is not
    finite; 1.0 when nothing was unflagged before.
    """
    if not (math.isfinite(before) and math.isfinite(after)):
        return math.nan
    if before >= 1.0:
        return 1.0
    return min(1.0, max(0.0, (after - before) / (1.0 - before)))


def gate_applied_flags(decision: GateDecision, before: float, after: float, limit: float) -> GateDecision:
    """``decision`` with the metric ``data_flagged_by_apply`` added, and reverted (with a
    reason) when the step flagged more than ``limit`` (0..1, the gate's
    ``max_flagged_solutions``) of the unflagged data, or when that cannot be measured."""
    frac = newly_flagged_fraction(before, after)
    metrics = dict(decision.metrics)
    metrics["data_flagged_by_apply"] = frac
    reasons = list(decision.reasons)
    if not math.isfinite(frac):
        reasons.append("flagged fraction after applycal not measurable")
    elif frac > limit:
        reasons.append(f"applying the solutions flagged {100 * frac:.0f}% of the data (> {100 * limit:.0f}%)")
    return GateDecision(accepted=not reasons, reasons=tuple(reasons), metrics=metrics)
