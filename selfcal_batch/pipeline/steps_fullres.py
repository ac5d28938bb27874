"""Joint EBs of different channel counts (DESIGN.md "Mixed channel counts"): deliver an EB
that startup averaged to the joint copy's channel count at its own (input, after
``chanbin``) channel resolution.

The delivered gain chain is frequency-independent (one solution per spw and interval), so it
applies to a full-resolution copy as it applied to the averaged one, provided the ids
agree. They do when the full-resolution copy is made the way the joint working copy was
(the same ``working_copy`` job per EB, without the extra averaging, then the same
``concat_copies`` in the same order): observation, antenna and field ids are those of the
tables; only the spw ids differ (concat keeps the finer spws apart), and they are mapped
row by row onto the joint copy's (``ms.flagcarry.carry_flags``), then through each table's
spwmap. The flags the pipeline added on the averaged data (autoflag, bad antennas, calflag,
statwt) are carried onto the fine channels of the same rows (an averaged channel's flag
flags all of its channels). Then the chain is applied (applycal, ``linearperobs``), each
averaged EB split by observation id and its own spws into ``final/eb<k>.ms`` (+ statwt as final.ms got).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from selfcal_batch.casa import calibration as cal
from selfcal_batch.errors import CasaTaskError, DatasetError
from selfcal_batch.ms.view import check_self_contained
from selfcal_batch.pipeline.context import Context
from selfcal_batch.pipeline.eb_records import final_spw_ids
from selfcal_batch.pipeline.step_tools import working_copy
from selfcal_batch.pipeline.work_ms import tables

log = logging.getLogger("selfcal_batch.pipeline")


def composed_spwmaps(spw_to_work: dict[int, int], chain_maps: list[list[int]]) -> list[list[int]]:
    """Per table, the spwmap of the full-resolution copy: its spw ``s`` takes the solutions the
    joint copy's spw ``spw_to_work[s]`` took (that table's spwmap, or the same id when the
    map is empty or shorter). Spws without rows map to 0 (never read). Pure."""
    n = max(spw_to_work, default=-1) + 1
    out = []
    for m in chain_maps:
        row = []
        for s in range(n):
            t = spw_to_work.get(s)
            row.append(0 if t is None else (m[t] if t < len(m) else t))
        out.append(row)
    return out


def _full_copies(ctx: Context) -> tuple[list[Path], Path]:
    """Every EB's working copy without the extra averaging, concatenated (ids as work.ms's)."""
    parts = [ctx.root / "work_ebs" / f"full{k}.ms" for k in range(len(ctx.ebs))]
    joint = ctx.root / "work_ebs" / "full_joint.ms"
    ctx.remove(joint, *parts)
    for k, src in enumerate(ctx.ebs):
        working_copy(ctx, src, ctx.root / f"input_view_full{k}.ms", parts[k], f"full-copy-eb{k}",
                     f" (execution block {k + 1} of {len(ctx.ebs)})",
                     field=ctx.cfg.eb_fields[k] if ctx.cfg.eb_fields else None)
    _rephase_like_startup(ctx, parts)
    ctx.casa([cal.job("concat_copies", parts=[str(p) for p in parts], work=str(joint))], label="concat-full")
    check_self_contained(joint, f"full-resolution copy {joint}")
    return parts, joint


def _rephase_like_startup(ctx: Context, parts: list[Path]) -> None:
    """The full-resolution copies of EBs startup re-phased (``phase_shift_arcsec`` > 0,
    steps_joint._rephase) get the same CASA ``phaseshift`` to EB 1's centre, so that concat
    joins them into one field as it did work.ms's."""
    ebs = ctx.state.get("ebs") or []
    shifted = [k for k, eb in enumerate(ebs) if float(eb.get("phase_shift_arcsec") or 0.0) > 0 and k < len(parts)]
    if not shifted:
        return
    centre = str(ebs[0]["phase_centre"])
    tmp = {k: parts[k].with_name(parts[k].name + ".rephased") for k in shifted}
    ctx.remove(*tmp.values())
    ctx.casa([cal.task("phaseshift", vis=str(parts[k]), outputvis=str(tmp[k]), phasecenter=centre, datacolumn="all")
              for k in shifted], label="phaseshift-full")
    for k in shifted:
        ctx.remove(parts[k], Path(str(parts[k]) + ".flagversions"))
        tmp[k].rename(parts[k])


def full_resolution_finals(ctx: Context, statwt_timebin: str) -> list[str]:
    """Replace ``final/eb<k>.ms`` of every EB startup averaged by its full-resolution version
    (module docstring); record ``delivered_nchan`` and ``delivered_resolution`` per EB.
    Returns the replaced paths ([] when no EB was averaged). A failure (rows that do not
    correspond, a CASA error) leaves the averaged finals in place with a warning."""
    from selfcal_batch.ms.flagcarry import carry_flags  # lazy: python-casacore, only for averaged EBs

    ebs = ctx.state.get("ebs") or []
    todo = [k for k, eb in enumerate(ebs) if any(f > 1 for f in (eb.get("channel_averaging") or {}).get("factor", []))]
    if not todo:
        return []
    delivered = set(ctx.state.get("delivered_steps") or [])
    chain = [c for c in ctx.state.get("chain", []) if c.get("step") in delivered]
    parts: list[Path] = []
    joint = ctx.root / "work_ebs" / "full_joint.ms"
    try:
        parts, joint = _full_copies(ctx)
        carried = carry_flags(ctx.final_ms, joint, ctx.work_ms)
        calls = [cal.applycal_call(str(joint), tables(chain), composed_spwmaps(carried["spw_map"],
                                                                               [c["spwmap"] for c in chain]),
                                   calwt=ctx.cfg.calwt)] if chain else []
        outs = {k: ctx.root / "final" / f"eb{k}.ms.partial" for k in todo}  # the averaged finals stay until done
        for k, out in outs.items():
            ctx.remove(out, Path(str(out) + ".flagversions"))
            own = carried["spws_per_observation"].get(k, [])  # EBs may share a joint spw, not a fine one
            calls.append(cal.task("split", vis=str(joint), outputvis=str(out), observation=str(k),
                                  spw=",".join(map(str, own)), datacolumn="corrected" if chain else "data",
                                  keepflags=True))
            if ctx.cfg.statwt_final and chain:
                calls.append(cal.task("statwt", vis=str(out), statalg="chauvenet", timebin=statwt_timebin,
                                      datacolumn="data"))
            calls.append(cal.job("flag_fraction", vis=str(out)))
            calls.append(cal.job("inspect_ms", vis=str(out)))
        results = ctx.casa(calls, label="final-full-resolution")
    except (DatasetError, CasaTaskError, ValueError, RuntimeError, OSError) as exc:
        why = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        log.warning("%s: averaged EBs delivered averaged (full resolution failed: %s)", ctx.name, why)
        for k in todo:
            ebs[k]["channel_averaging"]["full_resolution_error"] = why
            ctx.remove(ctx.root / "final" / f"eb{k}.ms.partial")
        ctx.state.set("ebs", ebs)
        return []
    finally:
        ctx.remove(joint, Path(str(joint) + ".flagversions"), *parts)
    return _publish(ctx, ebs, outs, results[1:] if chain else results, 4 if ctx.cfg.statwt_final and chain else 3)


def _publish(ctx: Context, ebs: list[dict[str, Any]], outs: dict[int, Path], results: list[Any],
             per_eb: int) -> list[str]:
    """Rename each ``final/eb<k>.ms.partial`` over the averaged ``final/eb<k>.ms`` and record
    it (``results``: per EB ``per_eb`` results, the last two flag fraction and inspection)."""
    per = iter(results)
    for k, part in outs.items():
        check_self_contained(part, f"final split {part}")
        out = part.with_suffix("")  # final/eb<k>.ms
        ctx.remove(out, Path(str(out) + ".flagversions"), Path(str(part) + ".flagversions"))
        part.rename(out)
        vals = [next(per) for _ in range(per_eb)]
        ebs[k]["final_spws"] = final_spw_ids(ebs[k], (ctx.state.get("msinfo") or {}).get("spws") or [],
                                             vals[-1]["spws"])
        ebs[k].get("channel_averaging", {}).pop("full_resolution_error", None)
        ebs[k]["flagged_fraction"] = round(float(vals[-2]), 5)
        ebs[k]["channel_averaging"]["delivered_nchan"] = [int(w["nchan"]) for w in vals[-1]["spws"]]
        ebs[k]["channel_averaging"]["delivered_resolution"] = "input"
        log.info("%s: %s delivered at the input's channel resolution (%s channels per spw)", ctx.name,
                 out.name, ",".join(map(str, ebs[k]["channel_averaging"]["delivered_nchan"])))
    ctx.state.set("ebs", ebs)
    return [str(p.with_suffix("")) for p in outs.values()]
