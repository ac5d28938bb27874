"""The one writer of ``work.ms``'s CORRECTED_DATA, and what its columns hold.

Every CASA batch that (re)writes CORRECTED_DATA goes through :func:`rewrite_corrected`, which
keeps ``WorkMSState.corrected_chain`` honest: while the batch runs the state says the
column is unknown (None), so a kill half-way forces a re-apply on resume.
"""
from __future__ import annotations

from typing import Any

from selfcal_batch.casa import calibration as cal
from selfcal_batch.pipeline.context import Context


def tables(chain: list[dict[str, Any]]) -> list[str]:
    """The caltable paths of a chain of GainEntry JSON dicts."""
    return [c["table"] for c in chain]


def data_column(chain: list[dict[str, Any]]) -> str:
    """The column that shows the data with ``chain`` applied (DATA when nothing is applied)."""
    return "CORRECTED_DATA" if chain else "DATA"


def holds(ctx: Context, chain: list[dict[str, Any]]) -> bool:
    """True when CORRECTED_DATA is known to hold ``chain`` applied."""
    return ctx.state.get("corrected_chain") == tables(chain)


def apply_calls(ctx: Context, chain: list[dict[str, Any]]) -> list[cal.Call]:
    """applycal of the chain into CORRECTED_DATA (none when empty: DATA is then imaged)."""
    if not chain:
        return []
    return [cal.applycal_call(str(ctx.work_ms), tables(chain), [c["spwmap"] for c in chain],
                              calwt=ctx.cfg.calwt)]


def rewrite_corrected(ctx: Context, calls: list[cal.Call], label: str, chain: list[dict[str, Any]]) -> list[Any]:
    """Run a CASA batch that leaves ``chain`` applied in CORRECTED_DATA; returns the calls' results.

    Raises what :meth:`Context.casa` raises (the marker then stays None: unknown)."""
    ctx.state.set("corrected_chain", None)
    ctx.state.save()
    results = ctx.casa(calls, label=label)
    ctx.state.set("corrected_chain", tables(chain))
    ctx.state.save()
    return results


def ensure_applied(ctx: Context, chain: list[dict[str, Any]], label: str) -> None:
    """Apply ``chain`` into CORRECTED_DATA unless it is known to be there already."""
    if chain and not holds(ctx, chain):
        rewrite_corrected(ctx, apply_calls(ctx, chain), label, chain)
