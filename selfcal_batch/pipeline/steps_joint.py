"""Joint execution blocks (issue 18, item 2; DESIGN.md "Joint EBs"): several EBs of one target
self-calibrated together.

How: each EB gets its own private view and working copy (the same ``working_copy`` job as a
one-MS dataset, field selected by name in each), then CASA ``concat`` joins the copies into
``work.ms``, where every EB keeps its own OBSERVATION_ID. An EB whose target phase centre
lies more than 1 mas from EB 1's is re-phased there first, in its working copy (CASA
``phaseshift``, :func:`_rephase`; refused beyond ``ebjoint.shift_limit_arcsec``), so that
concat sees one field; every final MS is then at EB 1's phase centre. Everything downstream is the
ordinary pipeline on that one MS, which makes it joint with no second code path:

* WSClean images all EBs together (one joint image per step; ``-predict`` fills MODEL_DATA
  of every EB), and the gate judges the joint images;
* gaincal never combines observations unless told to (``combine`` without ``obs``), so every
  solve is per EB with the shared template interval; spw ids are the joint copy's, one
  spwmap per table built from the per-scan spw sets (``selfcal.spwmap``), which keeps EBs
  with different spw numbering or channelisation apart;
* EBs of different channel counts (WSClean 3.1 needs one count in one MS) are averaged to
  one count in their working copies before concat (:func:`equalise_channels`, decision
  ``selfcal.channels.common_channels``), or refused in one line (:func:`channel_count_problem`);
* :func:`align_ebs` (after ``select_refant``, only for joint datasets): one ``inf`` solution
  per EB against the joint model, amplitudes replaced by ``ebjoint.alignment_scales``
  (the joint flux scale is kept), judged by the gate like a ladder step and kept in front
  of every later chain (``selfcal.chaining``);
* ``split_calibrated`` splits the joint ``final.ms`` once per EB into ``final/eb<k>.ms``;
  an EB averaged at startup is then delivered at its input resolution (``steps_fullres``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from selfcal_batch.casa import calibration as cal
from selfcal_batch.errors import DatasetError
from selfcal_batch.ms.fields import copy_centre
from selfcal_batch.ms.view import check_self_contained
from selfcal_batch.ms.polarisation import gaintype_for
from selfcal_batch.pipeline import ladder
from selfcal_batch.pipeline.context import Context
from selfcal_batch.pipeline.eb_records import final_spw_ids, own_spws
from selfcal_batch.pipeline.eb_solutions import with_eb_breakdown
from selfcal_batch.pipeline.step_tools import working_copy
from selfcal_batch.pipeline.state_records import MSInfo, WorkMSState
from selfcal_batch.selfcal import solint
from selfcal_batch.selfcal.spwmap import spwmap_for
from selfcal_batch.selfcal.templates import minblperant
from selfcal_batch.selfcal.uvrange import cal_uvrange
from selfcal_batch.selfcal.channels import ChannelPlan, SpwChannels, common_channels
from selfcal_batch.selfcal.ebjoint import (SpwInfo, alignment_scales, alignment_significance, applied_alignment_scales,
                                           casa_direction, eb_scale_estimate, map_spws, noise_coherence,
                                           phase_shift_plan, shift_limit_arcsec, significant_alignment_scales)
from selfcal_batch.selfcal.spwmap import spw_correspondence

log = logging.getLogger("selfcal_batch.pipeline")

#: The alignment step's name (registry) and its chain entries' ``step``.
ALIGN_STEP = "align_ebs"


def part_path(ctx: Context, k: int) -> Path:
    """EB ``k``'s private working copy (removed once joined into work.ms)."""
    return ctx.root / "work_ebs" / f"eb{k}.ms"


def _rephased_path(ctx: Context, k: int) -> Path:
    """Where CASA ``phaseshift`` writes EB ``k``'s re-phased copy (then moved to :func:`part_path`)."""
    return ctx.root / "work_ebs" / f"eb{k}_rephased.ms"


def _rephase(ctx: Context, outs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Re-phase the EBs' working copies (never the inputs) to EB 1's phase centre when they
    lie more than 1 mas from it (CASA concat's ``dirtol``) and within the limit
    (``ebjoint.phase_shift_plan``, ``ebjoint.shift_limit_arcsec`` from the copies' highest
    frequency and largest dish): CASA ``phaseshift`` (datacolumn 'all'; it moves FIELD
    PHASE_DIR, so concat then joins the EBs' FIELD rows into one field). Returns per EB
    ``{"phase_shift_arcsec", "phase_centre"}``; a one-line DatasetError beyond the limit."""
    geo = [copy_centre(part_path(ctx, k)) for k in range(len(ctx.ebs))]
    freq = max(float(w["freq_max"]) for o in outs for w in o["work"]["spws"])
    limit = shift_limit_arcsec(freq, max(g["dish_m"] for g in geo))
    plan = phase_shift_plan([str(p) for p in ctx.ebs], [(g["ra_deg"], g["dec_deg"]) for g in geo], limit)
    if plan.problem:
        raise DatasetError(ctx.name, plan.problem)
    ra, dec = geo[0]["ra_deg"], geo[0]["dec_deg"]
    calls = []
    for k in plan.shifted:
        ctx.remove(_rephased_path(ctx, k))
        calls.append(cal.task("phaseshift", vis=str(part_path(ctx, k)), outputvis=str(_rephased_path(ctx, k)),
                              phasecenter=f"J2000 {ra:.12f}deg {dec:.12f}deg", datacolumn="all"))
    if calls:
        ctx.casa(calls, label="phaseshift-ebs")
    for k in plan.shifted:
        ctx.remove(part_path(ctx, k), Path(str(part_path(ctx, k)) + ".flagversions"))
        _rephased_path(ctx, k).rename(part_path(ctx, k))
        log.info("%s: EB %d (%s) re-phased to EB 1's centre %s (%.3g arcsec; limit %.3g arcsec)", ctx.name,
                 k + 1, ctx.ebs[k], casa_direction(ra, dec), plan.shifts_arcsec[k], limit)
    return [{"phase_shift_arcsec": round(s, 6), "phase_centre": casa_direction(ra, dec) if s > 0 else
             casa_direction(g["ra_deg"], g["dec_deg"])} for s, g in zip(plan.shifts_arcsec, geo, strict=True)]


def _copy_eb(ctx: Context, k: int, src: Path) -> dict[str, Any]:
    """View + working copy of EB ``k``; one-line DatasetError naming ``src`` when unusable."""
    view, part = ctx.root / f"input_view_eb{k}.ms", part_path(ctx, k)
    part.parent.mkdir(exist_ok=True)
    ctx.remove(part, Path(str(part) + ".flagversions"))
    return working_copy(ctx, src, view, part, f"working-copy-eb{k}",
                        f" (execution block {k + 1} of {len(ctx.ebs)})",
                        field=ctx.cfg.eb_fields[k] if ctx.cfg.eb_fields else None)


def channel_count_problem(ebs: tuple[Path, ...] | list[Path], nchan: Sequence[Sequence[int | SpwChannels]]) -> str:
    """One line when the EBs' spws have different channel counts that cannot be averaged to
    one count ('' when the counts are equal or :func:`~selfcal_batch.selfcal.channels.common_channels`
    can equalise them: then startup averages, :func:`equalise_channels`). The line names
    every EB's counts and each EB's reason (a count not a multiple of the smallest one, or
    averaged channel edges off another EB's).

    Why one count: WSClean 3.1 aborts ("free(): invalid next size", or a segfault) while
    writing MODEL_DATA into one MS whose spws have different channel counts (measured on a
    concat of a 4- and an 8-channel EB, also with MODEL_DATA made beforehand by clearcal),
    and the joint working copy is one MS. Measured again (WSClean 3.1.0, a 2 x 4- and a 2 x
    8-channel EB, concat): ``-predict -reorder`` aborts, also with ``-spws 0,1`` or ``-spws
    2,3`` (its write-back reads every row with the first spw's shape: "Table array conformance
    error (shape=[2, 4], expected [2, 8])", also into a correctly shaped MODEL_DATA made
    beforehand with python-casacore, TiledShapeStMan or StandardStMan); without ``-reorder`` a
    multi-spw MS is refused, also with ``-spws 0``. What works: the EBs as separate MSs on one
    command line (``wsclean ... eb0.ms eb1.ms``), not built (DESIGN.md "Mixed channel counts").
    ``nchan``: per EB, its working copy's spws: channel counts (spw id = position) or
    :class:`~selfcal_batch.selfcal.channels.SpwChannels` (then channel edges are checked too)."""
    plan = channel_plan(nchan)
    if not plan.reasons:
        return ""
    counts = [[s.n_chan for s in per] for per in _as_spws(nchan)]
    what = "; ".join(f"{p}: {','.join(map(str, per))}" for p, per in zip(ebs, counts, strict=True))
    why = "; ".join(f"{ebs[k]} {text}" for k, text in plan.reasons)
    return (f"the execution blocks' spws have different channel counts ({what}) that cannot be averaged to one "
            f"count ({why}): joint self-calibration needs one channel count (WSClean 3.1 cannot write a model "
            f"into spws of different widths); {_common_count_advice(ebs, counts)}")


def _common_count_advice(ebs: Sequence[Path], counts: list[list[int]]) -> str:
    """What the user can do: average every spw to the greatest common divisor of the counts
    beforehand (CASA split ``width`` per EB and spw; one ``chanbin`` for all EBs keeps their
    ratio, so it cannot make 64 and 96 match), or run the EBs separately. Pure."""
    g = math.gcd(*[n for per in counts for n in per])
    if g < 2:
        return "run the EBs separately (their channel counts have no common divisor above 1)"
    widths = "; ".join(f"{p}: {','.join(str(n // g) for n in per)}" for p, per in zip(ebs, counts, strict=True))
    return (f"average every spw to {g} channels first (CASA split width {widths}) or run the EBs separately")


def _as_spws(nchan: Sequence[Sequence[int | SpwChannels]]) -> list[list[SpwChannels]]:
    """Channel counts (spw id = position) or SpwChannels -> SpwChannels."""
    return [[x if isinstance(x, SpwChannels) else SpwChannels(i, int(x)) for i, x in enumerate(per)] for per in nchan]


def channel_plan(nchan: Sequence[Sequence[int | SpwChannels]]) -> ChannelPlan:
    """:func:`~selfcal_batch.selfcal.channels.common_channels` of counts or SpwChannels (pure)."""
    return common_channels(_as_spws(nchan))


def work_spw_channels(spws: Sequence[Mapping[str, Any]]) -> list[SpwChannels]:
    """An inspected MS's spws (``inspect_ms``: ``id, nchan, freq_min`` = lowest channel centre,
    ``chan_width``, Hz) as SpwChannels (lowest edge = lowest centre - width / 2). Pure."""
    return [SpwChannels(int(w["id"]), int(w["nchan"]), float(w["freq_min"]) - 0.5 * float(w["chan_width"]),
                        float(w["chan_width"])) for w in spws]


def equalise_channels(ctx: Context, outs: list[dict[str, Any]]) -> None:
    """Refuse (one-line DatasetError) EBs whose channel counts cannot be made equal; else
    average each EB's working copy that needs it in place (CASA job ``average_channels``)
    and record per EB ``out["channel_averaging"]`` (input / delivered channels, chanbin,
    factor per spw), with a warning per averaged EB. The refusal names the input's spw ids."""
    spws = [work_spw_channels(o["work"]["spws"]) for o in outs]
    plan = channel_plan(spws)
    if plan.reasons:  # named by the input's spw ids, as --dry-run names them
        ids = [{w: s for s, w in spw_correspondence(o["src"]["spws"], o["work"]["spws"]).items()} for o in outs]
        raise DatasetError(ctx.name, channel_count_problem(ctx.ebs, [
            [dataclasses.replace(x, spw_id=i.get(x.spw_id, x.spw_id)) for x in per] for per, i in zip(spws, ids, strict=True)]))
    for k, o in enumerate(outs):
        factors = [plan.factors[k][s.spw_id] for s in spws[k]]
        if any(f > 1 for f in factors):
            new = ctx.casa([cal.job("average_channels", vis=str(part_path(ctx, k)),
                                    widths={str(s.spw_id): f for s, f in zip(spws[k], factors, strict=True)})],
                           label=f"average-channels-eb{k}")[0]
            o["work"] = {**o["work"], **{key: v for key, v in new.items() if key != "warnings"}}
            o["work"]["warnings"] = list(o["work"].get("warnings", [])) + [
                f"spws averaged x{'/'.join(map(str, factors))} ({','.join(str(s.n_chan) for s in spws[k])} -> "
                f"{plan.common} channels) in the joint working copy (WSClean 3.1 needs one channel count): "
                "imaged and calibrated at that resolution; its final MS is delivered at the input's"]
        o["channel_averaging"] = {"input_nchan": [int(w["nchan"]) for w in o["src"]["spws"]],
                                  "chanbin": int(ctx.cfg.chanbin), "factor": factors,
                                  "delivered_nchan": [int(w["nchan"]) for w in o["work"]["spws"]]}


def correlation_problem(ebs: Sequence[Any], correlations: Sequence[Mapping[str, Sequence[str]]]) -> str:
    """One line when the EBs' working copies hold different correlation products ('' when one
    setup): concat keeps both setups and WSClean 3.1 then reads every row with one shape
    (measured, s6-break2 G5: RR LL joined with RR RL LR LL passed --dry-run and failed in the
    test image with "WEIGHT conformance error (shape=[2], expected [4])").
    ``correlations``: per EB, spw id -> correlation names (``inspect_ms``). Pure."""
    setups = [sorted({",".join(str(c).upper() for c in v) for v in per.values()}) for per in correlations]
    if len({tuple(x) for x in setups}) <= 1:
        return ""
    what = "; ".join(f"{p}: {' | '.join(x)}" for p, x in zip(ebs, setups, strict=True))
    return (f"the execution blocks have different correlation products ({what}): joint self-calibration "
            "needs one setup; split each EB's parallel hands first (CASA split correlation='RR,LL' or "
            "'XX,YY') or run the EBs separately")


def _eb_record(k: int, src: Path, out: dict[str, Any], joint: dict[str, Any],
               joint_spws: list[dict[str, Any]]) -> dict[str, Any]:
    """What the result reports of EB ``k``: ``input_spws`` and, in the same order, ``spws``
    (the joint copy's id of each, matched by frequency: concat renumbers them)."""
    s, w = out["src"], out["work"]
    ids = [int(x["id"]) for x in s["spws"]]
    mapped = spw_correspondence(s["spws"], [x for x in joint_spws if int(x["id"]) in set(joint["spws"])])
    return {"ms": str(src), "observation_id": k, "input_spws": ids,
            "spws": [mapped.get(i) for i in ids], "scans": joint["scans"],
            "nchan": [int(x["nchan"]) for x in w["spws"]], "nrows": int(w["nrows"]),
            "n_antennas": int(w["n_antennas_present"]), "integration_s": w["integration_s"],
            "antennas_with_data": [w["antenna_names"][a] for a in w.get("antennas_unflagged", w["antennas_present"])],
            "time_on_source_s": w["time_on_source_s"], "input_flagged_fraction": s["flagged_fraction"],
            "channel_averaging": out.get("channel_averaging"),
            "spw_info": [[int(x["id"]), 0.5 * (x["freq_min"] + x["freq_max"]), x["freq_max"] - x["freq_min"],
                          int(x["nchan"])] for x in w["spws"]]}


def joint_startup(ctx: Context) -> dict[str, Any]:
    """startup of a joint dataset: one view + working copy per EB, concatenated into work.ms."""
    ctx.remove(ctx.work_ms, Path(str(ctx.work_ms) + ".flagversions"))
    WorkMSState.reset(ctx.state.data)
    outs = []
    try:
        for k, src in enumerate(ctx.ebs):
            outs.append(_copy_eb(ctx, k, src))
        centres = _rephase(ctx, outs)
        if problem := correlation_problem(ctx.ebs, [o["work"]["correlations"] for o in outs]):
            raise DatasetError(ctx.name, problem)
        equalise_channels(ctx, outs)
        parts = [str(part_path(ctx, k)) for k in range(len(ctx.ebs))]
        info = ctx.casa([cal.job("concat_copies", parts=parts, work=str(ctx.work_ms))], label="concat-ebs")[0]
        # each EB's working-copy repairs (zero weights, FLAG_ROW, NaN, FIELD rows) are said too
        info["warnings"] = [f"EB {k + 1}: {w}" for k, o in enumerate(outs) for w in o["work"].get("warnings", [])] \
            + list(info.get("warnings", []))
        check_self_contained(ctx.work_ms, f"working copy {ctx.work_ms}")
    except BaseException:
        ctx.remove(ctx.work_ms, Path(str(ctx.work_ms) + ".flagversions"))
        raise
    finally:
        for k in range(len(ctx.ebs)):
            ctx.remove(part_path(ctx, k), Path(str(part_path(ctx, k)) + ".flagversions"), _rephased_path(ctx, k))
    ebs = [{**_eb_record(k, src, o, info["per_eb"][k], info["spws"]), **centres[k]}
           for k, (src, o) in enumerate(zip(ctx.ebs, outs, strict=True))]
    bands = map_spws([[SpwInfo(*r) for r in eb["spw_info"]] for eb in ebs])
    for eb, m in zip(ebs, bands, strict=True):
        eb["bands"] = [m[r[0]] for r in eb["spw_info"]]  # common band key of each working-copy spw
    info["input"] = {"nrows": sum(o["src"]["nrows"] for o in outs),
                     "flagged_fraction": float(np.average([o["src"]["flagged_fraction"] for o in outs],
                                                          weights=[max(1, o["src"]["nrows"]) for o in outs])),
                     "n_antennas_present": max(o["src"]["n_antennas_present"] for o in outs)}
    if info["n_antennas_present"] < 4:
        raise DatasetError(ctx.name, f"only {info['n_antennas_present']} antennas with data: "
                                     "self-calibration needs at least 4")
    ctx.state.set("msinfo", info)
    ctx.state.set("ebs", ebs)
    for warning in info.get("warnings", []):
        log.warning("%s: %s", ctx.name, warning)
    log.info("%s: joint working copy %s of %d EBs: %d rows, %d antennas, spws %s, %.0f s on source",
             ctx.name, ctx.work_ms.name, len(ebs), info["nrows"], info["n_antennas_present"],
             " | ".join(",".join(map(str, eb["spws"])) for eb in ebs), info["time_on_source_s"])
    return {"work_ms": str(ctx.work_ms), "ebs": len(ebs)}


def antenna_amplitudes(obs: np.ndarray, ant: np.ndarray, gains: np.ndarray, snr: np.ndarray,
                       flags: np.ndarray, k: int, phases: tuple[np.ndarray, ...] | None = None
                       ) -> tuple[list[float], list[float]]:
    """EB ``k``'s per-antenna amplitude of a caltable's solutions and its SNR (pure): per
    antenna the mean amplitude over its unflagged rows, channels and polarisations, divided
    by the coherence its pre-applied short phase solutions left (``phases``: ``(obs, ant,
    snr, flags)`` of that table; ``ebjoint.noise_coherence``), and the SNR of that mean (its
    error = rms(amp / SNR) / sqrt(m) of its m values). Arrays as read from the table:
    ``obs``, ``ant`` per row, ``gains``, ``snr``, ``flags`` (rows, chan, pol)."""
    amps, snrs = [], []
    for a in np.unique(ant[obs == k]):
        sel = ((obs == k) & (ant == a))[:, None, None] & ~flags
        if not sel.any():
            continue
        amp, s = np.abs(gains[sel]), np.asarray(snr[sel], dtype=float)
        err = float(np.sqrt(np.mean((amp / np.where(s > 0, s, np.nan)) ** 2)) / np.sqrt(amp.size))
        coh = 1.0
        if phases is not None:
            p_obs, p_ant, p_snr, p_flags = phases
            coh = noise_coherence(list(p_snr[((p_obs == k) & (p_ant == a))[:, None, None] & ~p_flags]))
        amps.append(float(amp.mean()) / coh)
        snrs.append(float(amp.mean()) / err if err > 0 else math.nan)
    return amps, snrs


def _read_gains(path: str) -> tuple[np.ndarray, ...]:
    """(OBSERVATION_ID, ANTENNA1, CPARAM, SNR, FLAG) of a caltable (python-casacore)."""
    from casacore.tables import table as ctable  # casacore is loaded only where a table is read

    with ctable(path, ack=False) as t:
        return tuple(t.getcol(c) for c in ("OBSERVATION_ID", "ANTENNA1", "CPARAM", "SNR", "FLAG"))


def alignment_from_table(table: str, n_ebs: int, weights: list[float], amp_table: str | None = None,
                         phase_table: str | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-EB alignment factors written into the ``inf`` alignment ``table`` (its solved
    phases kept) and what was measured.

    The amplitudes come from ``amp_table`` (the ``inf`` amplitude solve with short-interval
    phases pre-applied, :func:`_amplitude_solve`, their noise's decorrelation divided out
    with ``phase_table``; ``table`` itself when None): per EB
    ``ebjoint.eb_scale_estimate`` of its antennas' amplitudes -> ``ebjoint.alignment_scales``
    (joint flux scale kept), set to 1.0 when implausible (``applied_alignment_scales``) or
    within the noise (``alignment_significance``, ``significant_alignment_scales``).

    Returns ``(per EB {gain, amp_error, z, scale (applied), measured_scale,
    phase_rms_deg[, not_applied]}, {q, dof, p})`` (phase rms over unflagged solutions, deg).
    Raises ValueError when an EB has no unflagged solution."""
    from casacore.tables import table as ctable  # casacore is loaded only where a table is read

    obs_a, ant_a, g_a, snr_a, fl_a = _read_gains(amp_table or table)
    phases = None
    if amp_table and phase_table:
        p_obs, p_ant, _g, p_snr, p_fl = _read_gains(phase_table)
        phases = (p_obs, p_ant, p_snr, p_fl)
    est = []
    for k in range(n_ebs):
        try:
            est.append(eb_scale_estimate(*antenna_amplitudes(obs_a, ant_a, g_a, snr_a, fl_a, k, phases)))
        except ValueError:
            raise ValueError(f"execution block {k + 1}: no alignment solution succeeded") from None
    med, err = [e[0] for e in est], [e[1] for e in est]
    measured = alignment_scales(med, weights)
    scales, why = applied_alignment_scales(measured)
    sig = alignment_significance(med, err)
    if not why:
        scales, why = significant_alignment_scales(scales, sig)
    out = []
    with ctable(table, readonly=False, ack=False) as t:
        obs, gains, flags = t.getcol("OBSERVATION_ID"), t.getcol("CPARAM"), t.getcol("FLAG")
        for k in range(n_ebs):
            rows = obs == k
            if not (~flags[rows]).any():
                raise ValueError(f"execution block {k + 1}: no alignment solution succeeded")
            ph = np.angle(gains[rows])
            gains[rows] = scales[k] * np.exp(1j * ph)
            rms = float(np.degrees(np.sqrt(np.mean(ph[~flags[rows]] ** 2))))
            out.append({"gain": round(med[k], 5), "amp_error": round(err[k], 5), "z": round(sig["z"][k], 2),
                        "scale": round(scales[k], 5), "measured_scale": round(measured[k], 5),
                        "phase_rms_deg": round(rms, 2), **({"not_applied": why} if why else {})})
        t.putcol("CPARAM", gains)
    return out, {"q": round(sig["q"], 3), "dof": sig["dof"], "p": float(f"{sig['p']:.4g}")}


def align_ebs(ctx: Context) -> Any:
    """One ``inf`` amplitude+phase solution per EB against the joint model; amplitudes set to
    the alignment factors (joint flux scale kept), gated like a ladder step."""
    if len(ctx.ebs) < 2:
        return "skipped", {"reason": "one execution block"}
    plan = _align_plan(ctx)
    if not isinstance(plan, ladder.StepPlan):
        return "skipped", plan
    return with_eb_breakdown(ctx, *ladder.run_planned(ctx, plan, rewrite=lambda c, table: _rewrite_alignment(c, table, plan)))


def _align_plan(ctx: Context) -> ladder.StepPlan | dict[str, Any]:
    """The alignment's plan: p0's template, imaging and gaincal settings with ``solint='inf'``,
    ``combine='scan'`` (``'scan,spw'`` when one spw alone is below ``solint.min_snr``),
    ``calmode='ap'``; skipped (record) for p0's stop reasons or too low an estimated SNR of
    one solution per EB (``solint.estimate_solution_snr`` over the shortest EB)."""
    st = ctx.state
    template = st.get("template_initial")
    why = ladder._skip_reason(ctx, "p0", template, [])
    if why:
        return {"reason": why}
    info = MSInfo.from_json(ctx.info)
    base = ladder.params_for(ctx, template, "p0")
    assert base is not None
    params = dataclasses.replace(base, solint="inf", calmode="ap", gaintype=gaintype_for(base.gaintype, info.polarisation))
    current = st.get("current") or st.get("test_image")
    n_ant = info.n_antennas_present - len(st.get("bad_antennas", []))
    per_eb_s = min(float(eb["time_on_source_s"]) for eb in st.get("ebs") or [{"time_on_source_s": 0.0}])
    pol = 0.5 if params.gaintype == "G" else 1.0
    image_snr = ladder.estimation_snr(ctx, current["stats"])
    ests = [(c, solint.estimate_solution_snr(image_snr, n_ant, info.time_on_source_s, per_eb_s,
                                             spw_fraction=f, pol_fraction=pol))
            for c, f in (("scan", 1.0 / max(1, len(info.spws))), ("scan,spw", 1.0))]
    combine, est = next(((c, e) for c, e in ests if e >= ctx.cfg.solint.min_snr), ("", ests[-1][1]))
    if not combine:
        return {"reason": f"estimated SNR of one solution per EB {est:.2f} < {ctx.cfg.solint.min_snr:g}",
                "est_snr": round(est, 2)}
    params = dataclasses.replace(params, combine=combine)
    choice = solint.SolintChoice("inf", combine, est, reason="one solution per execution block")
    opts = ladder.imaging_options(ctx, template, "p0", params).replace(data_column="DATA", update_model=True)
    return ladder.StepPlan(ALIGN_STEP, template, params, choice, [], current, opts, False)


def _short_phase_choice(ctx: Context, plan: ladder.StepPlan) -> solint.SolintChoice:
    """The shortest phase interval the data support (``solint.choose_solint`` from one
    integration, lengthened up to the scan while the estimated SNR is below ``min_snr``).
    Shortest, not safest: drift inside the interval decorrelates by an amount that differs
    between EBs (their weather), while the noise of short solutions decorrelates by a factor
    known from their SNR (``ebjoint.noise_coherence``), divided out. Measured (G2 pair, EB2
    80 deg phase errors, equal flux scales): 60 s phases at est. SNR 7.1 left the EBs 5.1 %
    apart, 20 s at est. SNR 4.1 2.7 % apart before that correction."""
    info, st = MSInfo.from_json(ctx.info), ctx.state
    return solint.choose_solint("int", "", plan.params.gaintype,
                                image_snr=ladder.estimation_snr(ctx, plan.current["stats"]),
                                n_antennas=info.n_antennas_present - len(st.get("bad_antennas", [])),
                                n_spw=len(info.spws), integration_s=info.integration_s, scan_s=info.scan_s(),
                                time_on_source_s=info.time_on_source_s, cfg=ctx.cfg.solint)


def _amplitude_solve(ctx: Context, plan: ladder.StepPlan) -> tuple[str | None, str | None, dict[str, Any]]:
    """The ``inf`` amplitude solve per EB with phases solved on a short interval pre-applied
    (tester s6 G2): inside one long interval, phase errors decorrelate the vector average, and
    an EB with larger phase errors looked fainter (EBs of equal flux scale set 0.968 / 1.017).
    Returns the amplitude and phase tables (None when no short interval reaches the SNR: the
    alignment table's own amplitudes are used) and what was done."""
    choice = _short_phase_choice(ctx, plan)
    if choice.skip:
        return None, None, {"amplitude_phases": f"none ({choice.reason})"}
    st, info, params = ctx.state, ctx.info, plan.params
    vis = str(ctx.work_ms)
    phase_t, amp_t = ctx.caltable(f"{ALIGN_STEP}_phase"), ctx.caltable(f"{ALIGN_STEP}_amp")
    ctx.remove(Path(phase_t), Path(amp_t))
    phase_map = spwmap_for(choice.combine, [s["spws"] for s in info["scans"]], [s["id"] for s in info["spws"]])
    uvrange, _why = cal_uvrange(ctx, ALIGN_STEP, params.uvrange_cal)
    common = dict(gaintype=params.gaintype, refant=st.get("refant", ""), refantmode=ctx.cfg.refantmode,
                  minsnr=params.minsnr, minblperant=minblperant("p0", ctx.instrument), uvrange=uvrange)
    ctx.casa([cal.gaincal_call(vis, phase_t, solint=choice.solint, calmode="p", combine=choice.combine, **common),
              cal.gaincal_call(vis, amp_t, solint="inf", calmode="a", combine=params.combine, gaintable=[phase_t],
                               spwmap=[list(phase_map)], **common)], label=f"{ALIGN_STEP}-amplitude")
    return amp_t, phase_t, {"amplitude_phases": f"{choice.solint}{', combine=' + choice.combine if choice.combine else ''} "
                                       f"(est. SNR {choice.est_snr:.1f})"}


def _rewrite_alignment(ctx: Context, table: str, plan: ladder.StepPlan) -> dict[str, Any]:
    """Between solve and apply: the per-EB factors written into the table, logged."""
    ebs = ctx.state.get("ebs") or []
    # the EBs' shares of the joint image: their unflagged rows
    weights = [max(1.0, eb["nrows"] * (1.0 - float(eb.get("input_flagged_fraction") or 0.0))) for eb in ebs]
    amp_table, phase_table, how = _amplitude_solve(ctx, plan)
    try:
        per, sig = alignment_from_table(table, len(ebs), weights, amp_table, phase_table)
    except ValueError as exc:
        raise DatasetError(ctx.name, f"{ALIGN_STEP}: {exc}") from None
    if why := next((p["not_applied"] for p in per if p.get("not_applied")), ""):
        (log.info if "within their noise" in why else log.warning)("%s %s: %s", ctx.name, ALIGN_STEP, why)
    for k, p in enumerate(per):
        log.info("%s %s: EB %d (%s): gain %.4f +- %.4f (z %+.1f) -> scale %.4f (visibilities x %.4f), "
                 "phase rms %.1f deg", ctx.name, ALIGN_STEP, k, Path(ebs[k]["ms"]).name, p["gain"],
                 p["amp_error"], p["z"], p["scale"], 1 / p["scale"] ** 2, p["phase_rms_deg"])
    return {"per_eb": per, "flux_significance": sig, **how}


def split_ebs(ctx: Context) -> list[str]:
    """One ``final/eb<k>.ms`` per EB, split from the joint final.ms by observation id and the
    EB's own spws (``eb_records.own_spws``); records ``final_spws`` (``eb_records.final_spw_ids``)."""
    out_dir = ctx.root / "final"
    out_dir.mkdir(exist_ok=True)
    ebs = ctx.state.get("ebs") or []
    paths, calls = [], []
    for k, eb in enumerate(ebs):
        out = out_dir / f"eb{k}.ms"
        ctx.remove(out, Path(str(out) + ".flagversions"))
        calls += [cal.task("split", vis=str(ctx.final_ms), outputvis=str(out), observation=str(k),
                           spw=",".join(map(str, own_spws(eb))), datacolumn="data", keepflags=True),
                  cal.job("flag_fraction", vis=str(out)), cal.job("inspect_ms", vis=str(out))]
        paths.append(out)
    results = ctx.casa(calls, label="final-split-ebs")
    joint_spws = (ctx.state.get("msinfo") or {}).get("spws") or []
    for k, p in enumerate(paths):
        check_self_contained(p, f"final split {p}")
        ebs[k]["final_ms"] = str(p)
        ebs[k]["flagged_fraction"] = round(float(results[3 * k + 1]), 5)
        ebs[k]["final_spws"] = final_spw_ids(ebs[k], joint_spws, results[3 * k + 2]["spws"])
    ctx.state.set("ebs", ebs)
    return [str(p) for p in paths]
