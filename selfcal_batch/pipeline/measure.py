"""Thin readers behind the gate's and the interval choice's numbers: a caltable's
significance and solution SNR, the difference of a step's two images, the last accepted
phase step's measured solution SNR. The decisions themselves are pure
(selfcal.acceptance, selfcal.solint)."""
from __future__ import annotations

from typing import Any

import numpy as np

from selfcal_batch.imaging import imstats
from selfcal_batch.pipeline import registry
from selfcal_batch.pipeline.context import Context
from selfcal_batch.pipeline.state_records import MSInfo
from selfcal_batch.selfcal import acceptance as gate
from selfcal_batch.selfcal import solint


def significance(table: str, bad: set[str], names: list[str]) -> dict[str, float]:
    """Read a caltable (python-casacore) and measure how far its solutions stand above noise
    (selfcal.acceptance.solution_significance, with ``snr_median``)."""
    from casacore.tables import table as ctable  # casacore is loaded only where a table is read

    with ctable(table, ack=False) as t:
        a1 = t.getcol("ANTENNA1")
        gains, snr, flags = t.getcol("CPARAM"), t.getcol("SNR"), t.getcol("FLAG")
    keep = np.array([names[a] not in bad if a < len(names) else True for a in a1], dtype=bool)
    return gate.solution_significance(gains[keep], snr[keep], flags[keep])


def solution_snr_record(ctx: Context, solint_text: str, combine: str, gaintype: str,
                        sig: dict[str, float]) -> dict[str, float] | None:
    """The step record's ``solution_snr``: the caltable's median SNR with the effective
    interval (s) and data fraction it was measured over (selfcal.solint.MeasuredSNR);
    None when the table gave no SNR."""
    snr = float(sig.get("snr_median", float("nan")))
    if not np.isfinite(snr):
        return None
    info = MSInfo.from_json(ctx.info)
    eff = solint.effective_solint_s(solint_text, combine, integration_s=info.integration_s, scan_s=info.scan_s(),
                                    span_s=info.time_span_s)
    return {"snr": round(snr, 3), "interval_s": round(eff, 3),
            "fraction": solint.data_fraction(combine, gaintype, len(info.spws))}


def measured_snr(ctx: Context) -> solint.MeasuredSNR | None:
    """The last accepted phase ladder step's own solution SNR (its ``solution_snr`` record),
    or None (no phase step accepted yet, or records from before issue 18)."""
    found = None
    for step, rec in ctx.state.steps.items():
        got = rec.get("solution_snr")
        if registry.is_phase(step) and rec.get("accepted") and isinstance(got, dict):
            found = solint.MeasuredSNR(float(got["snr"]), float(got["interval_s"]), float(got["fraction"]))
    return found


def accepted_intervals(ctx: Context) -> list[float]:
    """Effective intervals (s) of the phase ladder steps accepted so far."""
    info = MSInfo.from_json(ctx.info)
    out = []
    for step, rec in ctx.state.steps.items():
        if registry.is_phase(step) and rec.get("accepted") and rec.get("solint"):
            out.append(solint.effective_solint_s(rec["solint"], rec.get("combine", ""), integration_s=info.integration_s,
                                                 scan_s=info.scan_s(), span_s=info.time_span_s))
    return out


def difference(ctx: Context, step: str, solint_text: str, combine: str, pre: dict[str, Any],
               post: dict[str, Any]) -> dict[str, float]:
    """imaging.imstats.difference_statistics of a step's pre and post images, for a phase
    step on a new time scale (selfcal.solint.new_time_scale); {} otherwise, when a residual
    is missing or the grids differ (the gate then uses the independent-images noise)."""
    info = MSInfo.from_json(ctx.info)
    eff = solint.effective_solint_s(solint_text, combine, integration_s=info.integration_s, scan_s=info.scan_s(),
                                    span_s=info.time_span_s)
    if not (registry.is_phase(step) and solint.new_time_scale(eff, accepted_intervals(ctx))):
        return {}
    if not (pre.get("residual") and post.get("residual")):
        return {}
    sigma = float(pre.get("stats", {}).get("stat_sigma") or 6.0)
    return imstats.difference_statistics(pre["image"], pre["residual"], post["image"], post["residual"], sigma)
