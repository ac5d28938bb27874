"""The self-calibration ladder: p0, p1, p2 (+ shorter extension steps), ap1.

Each step: pre image (model in MODEL_DATA; reused from the previous step when the imaging
settings match), gaincal + applycal of the new chain, post image with the same settings,
then the acceptance gate decides keep or revert (flags restored, last accepted chain
re-applied). Chaining follows the seed: p0 and p1 solve from scratch (p1 discards p0),
later phase steps and ap1 solve incrementally on the accepted chain.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

from selfcal_batch.numeric import float_or_nan
from selfcal_batch.casa import calibration as cal
from selfcal_batch.selfcal import acceptance as gate
from selfcal_batch.selfcal import solint
from selfcal_batch.selfcal.applied_flags import gate_applied_flags, newly_flagged_fraction
from selfcal_batch.selfcal.chaining import chain_after, chain_after_decision, pre_apply_chain
from selfcal_batch.pipeline import measure, model_keep, registry, work_ms
from selfcal_batch.pipeline.reselect import reselect
from selfcal_batch.pipeline.state_records import GainEntry, ImageProduct, MSInfo
from selfcal_batch.errors import CasaTaskError, DatasetError
from selfcal_batch.pipeline.context import Context
from selfcal_batch.selfcal.uvrange import cal_uvrange, image_limits
from selfcal_batch.imaging.wsclean import WSCleanOptions
from selfcal_batch.imaging.masks import grow_iterations, make_clean_mask
from selfcal_batch.ms.polarisation import gaintype_for
from selfcal_batch.selfcal.outcome import common_mask_flux, stop_reason
from selfcal_batch.selfcal.spwmap import spwmap_for
from selfcal_batch.selfcal.templates import (
    StepParams,
    ladder_for,
    minblperant,
    template_params,
)

log = logging.getLogger("selfcal_batch.pipeline")


is_phase = registry.is_phase


def params_for(ctx: Context, template: str, step: str) -> StepParams | None:
    """The template's parameters for ``step`` (extension steps copy the last phase step)."""
    table = template_params(template, ctx.instrument, ctx.cfg.band, ctx.cfg.templates.get(template))
    if step in table:
        return table[step]
    ext = ctx.state.get("extensions", {}).get(step)
    if ext:
        base = table[ext["base"]]
        return dataclasses.replace(base, solint=ext["solint"], combine=ext.get("combine", base.combine))
    return None


def imaging_options(ctx: Context, template: str, step: str, params: StepParams) -> WSCleanOptions:
    """Imaging settings for a ladder step (``cfg.ladder_imaging``).

    'initial' (default): the initially selected template's p1 (else p0) robust and taper,
    multiscale if that template or the final image uses it, for every step, so that a
    template re-selection after p0 does not force a new pre-calibration image; 'shared':
    the current template's p1/p0 settings; 'template': each step's own settings (the seed).
    """
    mode = ctx.cfg.ladder_imaging
    src = params
    if mode in ("shared", "initial"):
        tmpl = (ctx.state.get("template_initial") or template) if mode == "initial" else template
        table = template_params(tmpl, ctx.instrument, ctx.cfg.band, ctx.cfg.templates.get(tmpl))
        src = table.get("p1") or table["p0"]
    robust = src.robust
    if step == "p0" and ctx.state.get("modified_robust") is not None:
        robust = ctx.state.get("modified_robust")
    multiscale = src.with_multiscale or (mode == "initial" and ctx.cfg.final_multiscale)
    opts = ctx.base_options(robust=robust, auto_mask=params.nsigma_automask,
                            auto_threshold=params.nsigma_autothreshold, multiscale=multiscale,
                            multiscale_scales=src.scales, taper_gaussian=src.uvtaper)
    if params.uvrange_image:  # this template step's own uv range
        opts = opts.replace(**dict(zip(("minuv_l", "maxuv_l"), image_limits(ctx, params.uvrange_image), strict=True)))
    return economy_options(ctx, opts)


def economy_options(ctx: Context, opts: WSCleanOptions) -> WSCleanOptions:
    """Ladder image size and output channels from the data (``cfg.ladder_economy``, see
    :mod:`selfcal_batch.imaging.economy`); decided once from the test image and kept in the
    state, so every ladder step images with the same key."""
    if not ctx.cfg.ladder_economy:
        return opts
    eco = ctx.state.get("ladder_economy")
    test = ctx.state.get("test_image") or {}
    if not eco and test.get("image"):
        from selfcal_batch.imaging import economy  # lazy: loaded only on this path

        radius = economy.radius_from_fits(test["image"])
        beam = float(test.get("stats", {}).get("bmaj_arcsec") or math.nan) / float(
            test.get("stats", {}).get("cell_arcsec") or math.nan)
        size = economy.ladder_size(radius, opts.size, beam_px=beam if math.isfinite(beam) else 0.0,
                                   min_size=economy.MIN_SIZE)
        chans = economy.ladder_channels_out(economy.fractional_bandwidth(ctx.info.get("spws", [])),
                                            opts.channels_out)
        st_t = test.get("stats", {})
        beam = economy.fixed_restoring_beam(*(float(st_t.get(k) or math.nan) for k in
                                              ("bmaj_arcsec", "bmin_arcsec", "bpa_deg", "cell_arcsec")))
        eco = {"size": size, "channels_out": chans, "radius_px": None if math.isnan(radius) else round(radius, 1),
               "beam_shape": list(beam) if beam else None}
        ctx.state.set("ladder_economy", eco)
        log.info("%s: ladder images %d px (emission within %s px), %d output channel(s)%s", ctx.name, size,
                 eco["radius_px"], chans, f", restoring beam fixed to the test image's {beam}" if beam else "")
    if not eco:
        return opts
    beam_args = ("-beam-shape", *(f"{v:g}" for v in eco["beam_shape"])) if eco.get("beam_shape") else ()
    return opts.replace(size=min(opts.size, int(eco["size"])), channels_out=min(opts.channels_out, int(eco["channels_out"])),
                        fit_spectral_pol=min(opts.fit_spectral_pol, int(eco["channels_out"])),
                        extra_args=tuple(opts.extra_args) + beam_args)


def _mask_from(ctx: Context, image: dict[str, Any], step: str, template: str, sigma: float, name: str,
               size: int = 0) -> str:
    """A clean mask from an earlier image (seed rules), for the central ``size`` pixels when
    the image is larger; '' when no emission is found."""
    grow = grow_iterations(step, image["stats"].get("inner_flux_f", math.nan), template)
    res = make_clean_mask(image["image"], ctx.root / "masks" / f"{name}.mask.fits", sigma, grow, size=size)
    return str(res.path) if res.path and not res.empty else ""


#: Briggs ~0.5 weighting raises the noise above the natural-weighting thermal estimate.
ROBUST_NOISE_FACTOR = 1.5


def estimation_snr(ctx: Context, stats: dict[str, Any]) -> float:
    """Image SNR for solution-SNR estimates: the larger of the measured peak/rms and the
    source flux over the *thermal* image noise (from the visibilities). A bright source with
    large phase errors has an image rms dominated by artefacts, which would otherwise make
    the estimate skip exactly the datasets that need self-calibration most."""
    snr = float_or_nan(stats.get("snr"))
    thermal = float(ctx.info.get("thermal_noise_jy") or math.nan)
    flux = max(float(stats.get("peak", 0.0) or 0.0), float(stats.get("total_flux_mask", 0.0) or 0.0))
    if math.isfinite(thermal) and thermal > 0 and flux > 0:
        snr_th = flux / (thermal * ROBUST_NOISE_FACTOR)
        snr = max(snr, snr_th) if math.isfinite(snr) else snr_th
    return snr if math.isfinite(snr) else 0.0


@dataclass(frozen=True)
class StepPlan:
    """What a ladder step will do, decided before anything runs: the template, its (solint-
    adjusted) parameters, the chain it starts from, the image it starts from and the imaging
    options of its pre/post images (``column``: the column showing ``chain`` applied)."""

    step: str
    template: str
    params: StepParams
    choice: Any  # selfcal.solint.SolintChoice
    chain: list[dict[str, Any]]
    current: dict[str, Any]
    opts: WSCleanOptions
    extension: bool

    @property
    def column(self) -> str:
        return work_ms.data_column(self.chain)

    @property
    def flagver(self) -> str:
        return f"pre_{self.step}"


@dataclass(frozen=True)
class Solved:
    """A solve's results: the candidate chain, its table and spwmap, the flagged fractions of
    the data before/after applying (0..1), solution statistics and significance."""

    table: str
    spwmap: list[int]
    new_chain: list[dict[str, Any]]
    flags_before: float
    flags_after: float
    sols: Any  # selfcal.acceptance.SolutionStats
    significance: dict[str, float]
    #: gaincal uvrange used ('' = all baselines) and, for 'auto', why (selfcal.uvrange).
    uvrange: str = ""
    uvrange_reason: str = ""
    #: What a ``rewrite`` of the table reported (run_planned).
    extra: Any = None


def run_step(ctx: Context, step: str) -> tuple[str, dict[str, Any]]:
    """Run one ladder step; returns (status, record) with status done|skipped.

    Phases: plan (skip reasons, interval), pre image, solve + apply, post image, decide,
    keep or revert. Raises what CASA/WSClean runs raise (the runner reports them)."""
    plan = _plan(ctx, step)
    if not isinstance(plan, StepPlan):
        return "skipped", plan
    status, rec = run_planned(ctx, plan)
    if step == "p0":
        status, rec = _retry_longer(ctx, plan, rec) or (status, rec)
        reselect(ctx)
    return status, rec


def _retry_longer(ctx: Context, plan: StepPlan, rec: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """p0 once more at one solution per scan when only its failed solutions rejected it
    (selfcal.solint.longer_after_flagged); None when no retry runs. Record: ``first_try``."""
    info, st = MSInfo.from_json(ctx.info), ctx.state
    longer = None if rec.get("accepted") else solint.longer_after_flagged(
        str(rec.get("reason") or "").split("; "), plan.params.solint, integration_s=info.integration_s,
        scan_s=info.scan_s(), max_solint_s=ctx.cfg.solint.max_solint_s)
    stopped = st.get("ladder_stopped")
    st.set("ladder_stopped", None)
    retry = _plan(ctx, plan.step, interval=longer) if longer else None
    if not isinstance(retry, StepPlan) or retry.params.solint == plan.params.solint:
        st.set("ladder_stopped", stopped)
        return None
    log.info("%s %s: solutions failed at %s: once more at %s", ctx.name, plan.step, plan.params.solint, longer)
    status, again = run_planned(ctx, retry)
    again["first_try"] = {k: rec.get(k) for k in ("solint", "reason", "flagged_solutions", "est_snr")}
    return status, again


def run_planned(ctx: Context, plan: StepPlan, rewrite: Any = None) -> tuple[str, dict[str, Any]]:
    """Run a planned step (pre image, solve + apply, post image, decide, keep or revert).

    ``rewrite(ctx, table) -> dict``: called between solve and apply to rewrite the new
    table (joint EBs' alignment, pipeline/steps_joint.py; the solve is then not normalised);
    its dict is kept in the record."""
    step = plan.step
    rec: dict[str, Any] = {"template": plan.template, "solint": plan.choice.solint, "combine": plan.choice.combine,
                           "est_snr": round(plan.choice.est_snr, 2), "solint_reason": plan.choice.reason}
    pre = _pre_image(ctx, plan)
    beam_key = repr(plan.opts.imaging_key()[3:])
    orig = ctx.state.data.setdefault("original_beam", {})
    orig.setdefault(beam_key, pre["stats"]["beam_area_pix"])
    solved = _solve(ctx, plan, rewrite)
    rec.update(solved.extra or {})
    rec["flagged_solutions"] = round(solved.sols.without(_bad(ctx)).flagged_fraction, 4)
    rec["uvrange"] = solved.uvrange
    if solved.uvrange_reason:
        rec["uvrange_reason"] = solved.uvrange_reason
    rec["solution_snr"] = measure.solution_snr_record(ctx, plan.choice.solint, plan.choice.combine,
                                                      plan.params.gaintype, solved.significance)
    decision = _reject_by_solutions(ctx, plan, solved)
    post = None
    if decision is None:  # the solutions alone do not reject: the image decides
        post = _post_image(ctx, plan, pre)
        decision = _decide(ctx, plan, pre, post, solved, orig[beam_key])
    else:
        rec["post_image_skipped"] = "rejected by its solutions before imaging"
    rec["data_flagged_by_apply"] = round(newly_flagged_fraction(solved.flags_before, solved.flags_after), 4)
    if not rec["data_flagged_by_apply"] <= ctx.cfg.gate.max_flagged_solutions:
        log.warning("%s %s: applying the solutions flagged %.0f%% of the unflagged data (solutions failed or "
                    "the reference antenna is missing)", ctx.name, step, 100 * rec["data_flagged_by_apply"])
    rec.update({"accepted": decision.accepted, "reason": decision.reason,
                "metrics": {k: round(v, 4) for k, v in decision.metrics.items() if math.isfinite(v)},
                "table": solved.table, "spwmap": solved.spwmap, "pre_image": pre["image"],
                "post_image": post["image"] if post else None, "snr_pre": pre["stats"]["snr"],
                "snr_post": post["stats"]["snr"] if post else None, "minsnr": plan.params.minsnr})
    _keep_or_revert(ctx, plan, decision, pre, post, solved)
    ctx.write_gain_tables_json()
    return "done", rec


def _bad(ctx: Context) -> set[str]:
    return set(ctx.state.get("bad_antennas", []))


def _skip_reason(ctx: Context, step: str, template: str | None, chain: list[dict[str, Any]]) -> str:
    """Why ``step`` does not run at all ('' when it runs)."""
    st = ctx.state
    if stop_reason(ctx):
        return stop_reason(ctx)
    if not template:
        return "no template (test_image did not run)"
    if step not in st.get("extensions", {}) and step not in ladder_for(template):
        return f"not in template {template}"
    if is_phase(step) and st.get("ladder_stopped"):
        return f"phase ladder stopped after {st.get('ladder_stopped')} was reverted"
    if not is_phase(step) and ctx.cfg.gate.enabled and not chain:
        return "no phase step was accepted"
    return ""


def _plan(ctx: Context, step: str, interval: str | None = None) -> StepPlan | dict[str, Any]:
    """The step's plan, or the record of a skipped step (``reason``, maybe ``est_snr``);
    ``interval``: a retry's interval instead of the template's (:func:`_retry_longer`)."""
    st = ctx.state
    template = st.get("template_initial") if step == "p0" else st.get("template_final")
    chain: list[dict[str, Any]] = st.get("chain", [])
    why = _skip_reason(ctx, step, template, chain)
    if why:
        return {"reason": why}
    params = params_for(ctx, template, step)
    assert params is not None
    info = MSInfo.from_json(ctx.info)
    params = dataclasses.replace(params, gaintype=gaintype_for(params.gaintype, info.polarisation))
    current = st.get("current") or st.get("test_image")

    def choose(interval: str) -> solint.SolintChoice:
        return solint.choose_solint(interval, params.combine, params.gaintype,
                                    image_snr=estimation_snr(ctx, current["stats"]),
                                    n_antennas=info.n_antennas_present - len(st.get("bad_antennas", [])),
                                    n_spw=len(info.spws), integration_s=info.integration_s, scan_s=info.scan_s(),
                                    time_on_source_s=info.time_on_source_s, cfg=ctx.cfg.solint,
                                    measured=measure.measured_snr(ctx), span_s=info.time_span_s)
    short, why = ((interval, f"{step} retried at one solution per scan: its solutions failed")
                  if interval else _scan_limited(ctx, step, params, info))
    choice = choose(short)
    if why and (choice.skip or choice.solint != short):  # the data do not support it: the template's
        why, choice = "", choose(params.solint)
    if why:
        choice = dataclasses.replace(choice, reason=why + f" (est. SNR {choice.est_snr:.1f})")
    if choice.skip:
        log.info("%s %s: skipped: %s", ctx.name, step, choice.reason)
        return {"reason": choice.reason, "est_snr": choice.est_snr}
    params = dataclasses.replace(params, solint=choice.solint, combine=choice.combine)
    opts = imaging_options(ctx, template, step, params).replace(data_column=work_ms.data_column(chain),
                                                                 update_model=True)
    return StepPlan(step, template, params, choice, chain, current, opts, step in st.get("extensions", {}))


def _scan_limited(ctx: Context, step: str, params: StepParams, info: MSInfo) -> tuple[str, str]:
    """``selfcal.solint.scan_limited_solint`` for p1 and p2 against the phase steps run before."""
    if step not in ("p1", "p2"):
        return params.solint, ""
    kw = dict(integration_s=info.integration_s, scan_s=info.scan_s(), span_s=info.time_span_s)
    earlier = []  # (template interval, effective interval as run) of p0 (and p1)
    for s in ("p0", "p1")[: 1 + (step == "p2")]:
        r = ctx.state.steps.get(s, {})
        base = params_for(ctx, r.get("template") or "", s) if r.get("solint") else None
        if base is not None:
            earlier.append((solint.interval_s(base.solint, base.combine, **kw),
                            solint.effective_solint_s(r["solint"], r.get("combine", ""), **kw)))
    return solint.scan_limited_solint(params.solint, params.combine, earlier, **kw)


def _pre_image(ctx: Context, plan: StepPlan) -> dict[str, Any]:
    """The image the step starts from (its model in MODEL_DATA): the current image when it
    shows this data with these settings, else a new one (flags/chain of the step's start)."""
    st, step = ctx.state, plan.step
    current = ImageProduct.from_json(plan.current)
    if current.shows(plan.opts.imaging_key(), plan.column):
        if st.get("model_in_ms") != current.prefix:
            ctx.predict(current.prefix)
        return plan.current
    calls = []
    if st.get("resuming"):  # image the flags this step starts from
        calls.append(cal.job("flag_checkpoint", vis=str(ctx.work_ms), versionname=plan.flagver, resume=True))
    if plan.chain and not work_ms.holds(ctx, plan.chain):
        calls += work_ms.apply_calls(ctx, plan.chain)
    if calls:
        work_ms.rewrite_corrected(ctx, calls, f"{step}-prepare", plan.chain)
    mask = _mask_from(ctx, plan.current, step, plan.template, plan.params.sigma_mask, f"{step}_pre",
                      size=plan.opts.size)
    prods, stats = ctx.image(plan.opts.replace(name=ctx.img(f"{step}_pre"), fits_mask=mask), step=step,
                             role="pre", template=plan.template, sigma=6.0)
    return ImageProduct(prods.prefix, prods.image, prods.residual, stats, plan.opts.imaging_key(),
                        plan.column).to_json()


def _solve(ctx: Context, plan: StepPlan, rewrite: Any = None) -> Solved:
    """One CASA child: flag checkpoint (the state this step starts from), solve, apply."""
    st, step, params, info = ctx.state, plan.step, plan.params, ctx.info
    vis = str(ctx.work_ms)
    pre_apply = pre_apply_chain(step, plan.chain)
    new_map = spwmap_for(params.combine, [s["spws"] for s in info["scans"]], [s["id"] for s in info["spws"]])
    table = ctx.caltable(step)
    ctx.remove(table)
    uvrange, uv_reason = cal_uvrange(ctx, step, params.uvrange_cal)
    if uv_reason:
        log.info("%s %s: uvrange_cal auto: %s", ctx.name, step, uv_reason)
    gc = cal.gaincal_call(vis, table, solint=params.solint, calmode=params.calmode, gaintype=params.gaintype,
                          combine=params.combine, refant=st.get("refant", ""), refantmode=ctx.cfg.refantmode,
                          minsnr=params.minsnr,
                          minblperant=minblperant(_template_step(plan), ctx.instrument),
                          **gate.amplitude_normalisation(params.calmode, ctx.cfg.solnorm_amplitude and not rewrite,
                                                         ctx.cfg.solnorm_type),
                          gaintable=[c["table"] for c in pre_apply], spwmap=[c["spwmap"] for c in pre_apply],
                          field="", uvrange=uvrange)
    new_chain = chain_after(step, plan.chain, GainEntry(step, table, tuple(new_map)).to_json())
    checkpoint = cal.job("flag_checkpoint", vis=vis, versionname=plan.flagver, resume=bool(st.get("resuming")))
    frac = cal.job("flag_fraction", vis=vis)
    extra: dict[str, Any] | None = None
    try:
        if rewrite is None:
            results = work_ms.rewrite_corrected(ctx, [checkpoint, frac, gc, *work_ms.apply_calls(ctx, new_chain),
                                                      frac], f"{step}-solve", new_chain)
        else:
            results = ctx.casa([checkpoint, frac, gc], label=f"{step}-solve")
            extra = rewrite(ctx, table)
            results += work_ms.rewrite_corrected(ctx, [*work_ms.apply_calls(ctx, new_chain), frac],
                                                 f"{step}-apply", new_chain)
    except CasaTaskError as exc:
        if uvrange and "NullSelection" in str(exc):  # CASA's words for "no data selected"
            raise DatasetError(ctx.name, f"{step}: uvrange_cal {params.uvrange_cal or ctx.cfg.uvrange_cal!r} "
                                         f"(gaincal uvrange {uvrange!r}) selects no baselines") from None
        raise
    sols = gate.solution_stats_from_solvestats((results[2] or {}).get("solvestats", {}), info["antenna_names"])
    return Solved(table, new_map, new_chain, float(results[1]), float(results[-1]), sols,
                  measure.significance(table, _bad(ctx), info["antenna_names"]), uvrange, uv_reason, extra)


def _template_step(plan: StepPlan) -> str:
    """The template column whose gaincal rules apply: extension steps use p2's, steps outside
    the ladder (joint EBs' align_ebs) p0's."""
    return "p2" if plan.extension else plan.step if registry.is_ladder(plan.step) else "p0"


def _post_image(ctx: Context, plan: StepPlan, pre: dict[str, Any]) -> dict[str, Any]:
    """Image CORRECTED_DATA with the pre image's settings, masked from the pre image; keyed by
    what it shows (after p0 the next step reuses it as its model)."""
    mask = _mask_from(ctx, pre, plan.step, plan.template, plan.params.sigma_mask, f"{plan.step}_post",
                      size=plan.opts.size)
    post_opts = plan.opts.replace(name=ctx.img(f"{plan.step}_post"), data_column="CORRECTED_DATA", fits_mask=mask)
    model_keep.stash(ctx)  # the pre model stays at hand for a revert (no predict)
    prods, stats = ctx.image(post_opts, step=plan.step, role="post", template=plan.template)
    return ImageProduct(prods.prefix, prods.image, prods.residual, stats, post_opts.imaging_key(),
                        "CORRECTED_DATA").to_json()


def _reject_by_solutions(ctx: Context, plan: StepPlan, solved: Solved) -> Any:
    """The gate's rejection from what needs no image (selfcal.acceptance.evaluate_solutions,
    then the applied-flags check), or None when the image must decide: a step its solutions
    already reject is reverted without its "after" image (the decision is the same)."""
    gcfg = ctx.cfg.gate
    if not gcfg.enabled:
        return None
    early = gate.evaluate_solutions(solved.sols, cfg=gcfg, amplitude=_judged_on_amplitude(plan, solved),
                                    exclude_antennas=_bad(ctx), significance=solved.significance)
    early = gate_applied_flags(early, solved.flags_before, solved.flags_after, gcfg.max_flagged_solutions)
    if early.accepted:
        return None
    log.info("%s %s: rejected by its solutions (%s): no after image", ctx.name, plan.step, early.reason)
    return early


def _judged_on_amplitude(plan: StepPlan, solved: Solved) -> bool:
    """Is the step judged on its amplitudes? A rewritten table (joint EBs' alignment) is judged
    on its phases: its amplitudes are one factor per EB chosen to keep the joint flux scale
    (selfcal.ebjoint.alignment_scales), not solutions whose significance can be measured."""
    return "a" in plan.params.calmode and solved.extra is None


def _decide(ctx: Context, plan: StepPlan, pre: dict[str, Any], post: dict[str, Any], solved: Solved,
            original_beam: float) -> Any:
    """The gate's decision (selfcal.acceptance.evaluate_step), then the applied-flags check.
    A fitted beam that is not a measurement (acceptance.beam_measured) is not compared."""
    gcfg = ctx.cfg.gate
    if not gcfg.enabled:
        return gate.GateDecision(True, (), {})
    amplitude = _judged_on_amplitude(plan, solved)
    pre_g, post_g = pre["stats"], post["stats"]
    if not (gate.beam_measured(pre_g) and gate.beam_measured(post_g)):
        log.info("%s %s: restoring beam not measured (fitted %.3g\" / %.3g\" with %.3g\" cells): no beam check",
                 ctx.name, plan.step, float(pre_g.get("bmin_arcsec") or math.nan),
                 float(post_g.get("bmin_arcsec") or math.nan), float(pre_g.get("cell_arcsec") or math.nan))
        original_beam = math.nan
    if amplitude:  # the flux-scale check compares the same pixels
        f_pre, f_post = common_mask_flux(pre["image"], post["image"])
        pre_g, post_g = dict(pre_g, total_flux_mask=f_pre), dict(post_g, total_flux_mask=f_post)
    decision = gate.evaluate_step(pre_g, post_g, original_beam_area=original_beam, solutions=solved.sols,
                                  est_snr=plan.choice.est_snr, cfg=gcfg, amplitude=amplitude,
                                  exclude_antennas=_bad(ctx), significance=solved.significance,
                                  normalised=ctx.cfg.solnorm_amplitude,
                                  difference=None if amplitude else measure.difference(
                                      ctx, plan.step, plan.choice.solint, plan.choice.combine, pre, post))
    return gate_applied_flags(decision, solved.flags_before, solved.flags_after, gcfg.max_flagged_solutions)


def _keep_or_revert(ctx: Context, plan: StepPlan, decision: Any, pre: dict[str, Any], post: dict[str, Any],
                    solved: Solved) -> None:
    """Accepted: the candidate chain and the post image become current. Reverted: flags
    restored to the step's start, the accepted chain re-applied, the pre image current."""
    st, step = ctx.state, plan.step
    st.set("chain", chain_after_decision(plan.chain, solved.new_chain, decision.accepted))
    if decision.accepted:
        st.set("current", post)
        applied = st.data.setdefault("applied", {})
        applied[step] = {"tables": [c["table"] for c in solved.new_chain],
                         "spwmaps": [c["spwmap"] for c in solved.new_chain]}
        log.info("%s %s: ACCEPTED (solint %s, SNR %.1f -> %.1f)", ctx.name, step, plan.params.solint,
                 pre["stats"]["snr"], post["stats"]["snr"])
        return
    log.info("%s %s: REVERTED: %s", ctx.name, step, decision.reason)
    work_ms.rewrite_corrected(ctx, [cal.flagmanager_call(str(ctx.work_ms), "restore", plan.flagver),
                                    *work_ms.apply_calls(ctx, plan.chain)], f"{step}-revert", plan.chain)
    if st.get("model_in_ms") != pre.get("prefix"):
        model_keep.restore(ctx, str(pre.get("prefix") or ""))  # else the next step predicts it
    st.set("current", pre)
    if is_phase(step) and ctx.cfg.gate.stop_on_phase_reject and gate.stops_ladder(decision):
        st.set("ladder_stopped", step)

