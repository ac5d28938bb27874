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
from typing import Any

from selfcal_batch.casa import calibration as cal
from selfcal_batch.selfcal import acceptance as gate
from selfcal_batch.selfcal.applied_flags import gate_applied_flags, newly_flagged_fraction
from selfcal_batch.selfcal.chaining import chain_after, chain_after_decision, pre_apply_chain
from selfcal_batch.pipeline.context import Context
from selfcal_batch.imaging.wsclean import WSCleanOptions
from selfcal_batch.imaging.masks import grow_iterations, make_clean_mask
from selfcal_batch.ms.polarisation import gaintype_for
from selfcal_batch.selfcal.spwmap import spwmap_for
from selfcal_batch.selfcal.templates import (
    StepParams,
    ladder_for,
    minblperant,
    post_p0_faint_reimage,
    select_template,
    template_params,
)

log = logging.getLogger("selfcal_batch.pipeline")


def is_phase(step: str) -> bool:
    return step.startswith("p")


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
        from selfcal_batch.imaging import economy

        radius = economy.radius_from_fits(test["image"])
        beam = float(test.get("stats", {}).get("bmaj_arcsec") or math.nan) / float(
            test.get("stats", {}).get("cell_arcsec") or math.nan)
        size = economy.ladder_size(radius, opts.size, beam_px=beam if math.isfinite(beam) else 0.0,
                                   min_size=economy.MIN_SIZE)
        chans = economy.ladder_channels_out(economy.fractional_bandwidth(ctx.info.get("spws", [])),
                                            opts.channels_out)
        eco = {"size": size, "channels_out": chans, "radius_px": None if math.isnan(radius) else round(radius, 1)}
        ctx.state.set("ladder_economy", eco)
        log.info("%s: ladder images %d px (emission within %s px), %d output channel(s)", ctx.name, size,
                 eco["radius_px"], chans)
    if not eco:
        return opts
    return opts.replace(size=min(opts.size, int(eco["size"])), channels_out=int(eco["channels_out"]),
                        fit_spectral_pol=min(opts.fit_spectral_pol, int(eco["channels_out"])))


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
    snr = float(stats.get("snr", math.nan))
    thermal = float(ctx.info.get("thermal_noise_jy") or math.nan)
    flux = max(float(stats.get("peak", 0.0) or 0.0), float(stats.get("total_flux_mask", 0.0) or 0.0))
    if math.isfinite(thermal) and thermal > 0 and flux > 0:
        snr_th = flux / (thermal * ROBUST_NOISE_FACTOR)
        snr = max(snr, snr_th) if math.isfinite(snr) else snr_th
    return snr if math.isfinite(snr) else 0.0


def _current_column(chain: list[dict[str, Any]]) -> str:
    return "CORRECTED_DATA" if chain else "DATA"


def _apply_calls(ctx: Context, chain: list[dict[str, Any]]) -> list[cal.Call]:
    """applycal of the chain into CORRECTED_DATA (none when empty: we then image DATA)."""
    if not chain:
        return []
    return [cal.applycal_call(str(ctx.work_ms), [c["table"] for c in chain], [c["spwmap"] for c in chain],
                              calwt=ctx.cfg.calwt)]


def _casa_rewriting_corrected(ctx: Context, calls: list[cal.Call], label: str,
                              chain: list[dict[str, Any]]) -> list[Any]:
    """Run a CASA batch that leaves ``chain`` applied in CORRECTED_DATA; while it runs the
    state says CORRECTED_DATA is unknown, so a kill half-way forces a re-apply on resume."""
    ctx.state.set("corrected_chain", None)
    ctx.state.save()
    results = ctx.casa(calls, label=label)
    ctx.state.set("corrected_chain", [c["table"] for c in chain])
    ctx.state.save()
    return results


def run_step(ctx: Context, step: str) -> tuple[str, dict[str, Any]]:
    """Run one ladder step; returns (status, record) with status done|skipped."""
    st = ctx.state
    from selfcal_batch.selfcal.outcome import stop_reason

    if stop_reason(ctx):
        return "skipped", {"reason": stop_reason(ctx)}
    template = st.get("template_initial") if step == "p0" else st.get("template_final")
    if not template:
        return "skipped", {"reason": "no template (test_image did not run)"}
    extension = step in st.get("extensions", {})
    if not extension and step not in ladder_for(template):
        return "skipped", {"reason": f"not in template {template}"}
    chain: list[dict[str, Any]] = st.get("chain", [])
    if is_phase(step) and st.get("ladder_stopped"):
        return "skipped", {"reason": f"phase ladder stopped after {st.get('ladder_stopped')} was reverted"}
    if not is_phase(step) and ctx.cfg.gate.enabled and not chain:
        return "skipped", {"reason": "no phase step was accepted"}
    params = params_for(ctx, template, step)
    assert params is not None
    info = ctx.info
    params = dataclasses.replace(params, gaintype=gaintype_for(params.gaintype, info.get("polarisation")))
    current = st.get("current") or st.get("test_image")
    n_ant = info["n_antennas_present"] - len(st.get("bad_antennas", []))
    scan_s = min(info["time_span_s"], info["time_on_source_s"]) / max(1, len(info["scans"]))
    choice = gate.choose_solint(params.solint, params.combine, params.gaintype,
                                image_snr=estimation_snr(ctx, current["stats"]), n_antennas=n_ant, n_spw=len(info["spws"]),
                                integration_s=info["integration_s"], scan_s=max(scan_s, info["integration_s"]),
                                time_on_source_s=info["time_on_source_s"], cfg=ctx.cfg.solint)
    if choice.skip:
        log.info("%s %s: skipped: %s", ctx.name, step, choice.reason)
        return "skipped", {"reason": choice.reason, "est_snr": choice.est_snr}
    params = dataclasses.replace(params, solint=choice.solint, combine=choice.combine)
    vis = str(ctx.work_ms)
    flagver = f"pre_{step}"
    rec: dict[str, Any] = {"template": template, "solint": choice.solint, "combine": choice.combine,
                           "est_snr": round(choice.est_snr, 2), "solint_reason": choice.reason}
    column = _current_column(chain)
    opts = imaging_options(ctx, template, step, params).replace(data_column=column, update_model=True)
    # Pre image: reuse the current image when it shows this data with these settings.
    if current.get("key") == list(opts.imaging_key()) and current.get("column") == column:
        pre = current
        if st.get("model_in_ms") != pre["prefix"]:
            ctx.predict(pre["prefix"])
    else:
        calls = []
        if st.get("resuming"):  # image the flags this step starts from
            calls.append(cal.job("flag_checkpoint", vis=vis, versionname=flagver, resume=True))
        if chain and st.get("corrected_chain") != [c["table"] for c in chain]:
            calls += _apply_calls(ctx, chain)
        if calls:
            _casa_rewriting_corrected(ctx, calls, f"{step}-prepare", chain)
        mask = _mask_from(ctx, current, step, template, params.sigma_mask, f"{step}_pre", size=opts.size)
        prods, stats = ctx.image(opts.replace(name=ctx.img(f"{step}_pre"), fits_mask=mask), step=step,
                                 role="pre", template=template, sigma=6.0)
        pre = {"prefix": prods.prefix, "image": prods.image, "residual": prods.residual, "stats": stats,
               "key": list(opts.imaging_key()), "column": column}
    orig = st.data.setdefault("original_beam", {})
    beam_key = repr(opts.imaging_key()[3:])
    orig.setdefault(beam_key, pre["stats"]["beam_area_pix"])
    # One CASA child: flag checkpoint (the state this step starts from), solve, apply.
    pre_apply = pre_apply_chain(step, chain)
    scan_spws = [s["spws"] for s in info["scans"]]
    spw_ids = [s["id"] for s in info["spws"]]
    new_map = spwmap_for(params.combine, scan_spws, spw_ids)
    table = ctx.caltable(step)
    ctx.remove(table)
    gc = cal.gaincal_call(vis, table, solint=params.solint, calmode=params.calmode, gaintype=params.gaintype,
                          combine=params.combine, refant=st.get("refant", ""), refantmode=ctx.cfg.refantmode,
                          minsnr=params.minsnr, minblperant=minblperant(step if not extension else "p2",
                                                                       ctx.instrument),
                          **gate.amplitude_normalisation(params.calmode, ctx.cfg.solnorm_amplitude,
                                                                       ctx.cfg.solnorm_type), gaintable=[c["table"] for c in pre_apply],
                          spwmap=[c["spwmap"] for c in pre_apply], field="")
    new_chain = chain_after(step, chain, {"step": step, "table": table, "spwmap": new_map})
    checkpoint = cal.job("flag_checkpoint", vis=vis, versionname=flagver, resume=bool(st.get("resuming")))
    frac = cal.job("flag_fraction", vis=vis)
    results = _casa_rewriting_corrected(ctx, [checkpoint, frac, gc, *_apply_calls(ctx, new_chain), frac],
                                        f"{step}-solve", new_chain)
    flags_before, flags_after = float(results[1]), float(results[-1])
    sols = gate.solution_stats_from_solvestats((results[2] or {}).get("solvestats", {}), info["antenna_names"])
    rec["flagged_solutions"] = round(sols.without(set(st.get("bad_antennas", []))).flagged_fraction, 4)
    significance = _significance(table, set(st.get("bad_antennas", [])), info["antenna_names"])
    # Post image with the same settings, masked from the pre image.
    mask = _mask_from(ctx, pre, step, template, params.sigma_mask, f"{step}_post", size=opts.size)
    post_opts = opts.replace(name=ctx.img(f"{step}_post"), data_column="CORRECTED_DATA", fits_mask=mask)
    prods, post_stats = ctx.image(post_opts, step=step, role="post", template=template)
    # Keyed by what it shows (CORRECTED_DATA): after p0 the next step reuses it as its model.
    post = {"prefix": prods.prefix, "image": prods.image, "residual": prods.residual, "stats": post_stats,
            "key": list(post_opts.imaging_key()), "column": "CORRECTED_DATA"}
    if ctx.cfg.gate.enabled:
        pre_g, post_g = pre["stats"], post_stats
        if "a" in params.calmode:  # the flux-scale check compares the same pixels
            from selfcal_batch.selfcal.outcome import common_mask_flux

            f_pre, f_post = common_mask_flux(pre["image"], post["image"])
            pre_g, post_g = dict(pre_g, total_flux_mask=f_pre), dict(post_g, total_flux_mask=f_post)
        decision = gate.evaluate_step(pre_g, post_g, original_beam_area=orig[beam_key],
                                      solutions=sols, est_snr=choice.est_snr, cfg=ctx.cfg.gate,
                                      amplitude="a" in params.calmode,
                                      exclude_antennas=set(st.get("bad_antennas", [])),
                                      significance=significance,
                                      normalised=ctx.cfg.solnorm_amplitude)
    else:
        decision = gate.GateDecision(True, (), {})
    decision = gate_applied_flags(decision, flags_before, flags_after, ctx.cfg.gate.max_flagged_solutions) \
        if ctx.cfg.gate.enabled else decision
    rec["data_flagged_by_apply"] = round(newly_flagged_fraction(flags_before, flags_after), 4)
    if not rec["data_flagged_by_apply"] <= ctx.cfg.gate.max_flagged_solutions:
        log.warning("%s %s: applying the solutions flagged %.0f%% of the unflagged data (solutions failed or "
                    "the reference antenna is missing)", ctx.name, step, 100 * rec["data_flagged_by_apply"])
    rec.update({"accepted": decision.accepted, "reason": decision.reason,
                "metrics": {k: round(v, 4) for k, v in decision.metrics.items() if math.isfinite(v)},
                "table": table, "spwmap": new_map, "pre_image": pre["image"], "post_image": post["image"],
                "snr_pre": pre["stats"]["snr"], "snr_post": post_stats["snr"]})
    st.set("chain", chain_after_decision(chain, new_chain, decision.accepted))
    if decision.accepted:
        st.set("current", post)
        applied = st.data.setdefault("applied", {})
        applied[step] = {"tables": [c["table"] for c in new_chain], "spwmaps": [c["spwmap"] for c in new_chain]}
        log.info("%s %s: ACCEPTED (solint %s, SNR %.1f -> %.1f)", ctx.name, step, params.solint,
                 pre["stats"]["snr"], post_stats["snr"])
    else:
        log.info("%s %s: REVERTED: %s", ctx.name, step, decision.reason)
        _casa_rewriting_corrected(ctx, [cal.flagmanager_call(vis, "restore", flagver), *_apply_calls(ctx, chain)],
                                  f"{step}-revert", chain)
        st.set("current", pre)
        if is_phase(step) and ctx.cfg.gate.stop_on_phase_reject and gate.stops_ladder(decision):
            st.set("ladder_stopped", step)
    ctx.write_gain_tables_json()
    if step == "p0":
        reselect(ctx)
    return "done", rec


def _significance(table: str, bad: set[str], names: list[str]) -> dict[str, float]:
    """Read a caltable (python-casacore) and measure how far its solutions stand above noise."""
    import numpy as np
    from casacore.tables import table as ctable

    with ctable(table, ack=False) as t:
        a1 = t.getcol("ANTENNA1")
        gains, snr, flags = t.getcol("CPARAM"), t.getcol("SNR"), t.getcol("FLAG")
    keep = np.array([names[a] not in bad if a < len(names) else True for a in a1], dtype=bool)
    return gate.solution_significance(gains[keep], snr[keep], flags[keep])


def reselect(ctx: Context) -> None:
    """Template re-selection after p0 from the newest image (seed §2.10)."""
    st = ctx.state
    current = st.get("current")
    flux = 1000 * current["stats"]["total_flux_mask"]
    robust = post_p0_faint_reimage(flux)
    if robust is not None:
        chain = st.get("chain", [])
        opts = ctx.base_options(name=ctx.img("p0_faint_check"), robust=robust, auto_mask=4.0,
                                auto_threshold=1.5, data_column=_current_column(chain))
        _, stats = ctx.image(opts, step="p0", role="reselect", template=st.get("template_initial"))
        flux = 1000 * stats["total_flux_mask"]
    new = ctx.cfg.force_template or select_template(flux, tuple(ctx.cfg.template_thresholds_mjy))
    if new != st.get("template_final"):
        log.info("%s: template re-selected after p0: %s -> %s (%.2f mJy)", ctx.name,
                 st.get("template_final"), new, flux)
    st.set("template_final", new)
    st.set("reselect_flux_mjy", flux)


def plan_extension(ctx: Context, after: str) -> str | None:
    """After the template's last phase step, the next shorter phase step (or None)."""
    st = ctx.state
    if st.get("ladder_stopped") or not ctx.cfg.solint.extend_ladder:
        return None
    template = st.get("template_final")
    exts = st.data.setdefault("extensions", {})
    rec = st.steps.get(after, {})
    if not rec.get("accepted"):
        return None
    if not gate.worth_extending(float(rec.get("snr_pre") or math.nan), float(rec.get("snr_post") or math.nan),
                                ctx.cfg.solint.extend_min_gain):
        log.info("%s: no shorter interval after %s: SNR gain %.2f%% < %.2g%%", ctx.name, after,
                 100 * (float(rec.get("snr_post") or 0) / float(rec.get("snr_pre") or 1) - 1),
                 100 * ctx.cfg.solint.extend_min_gain)
        return None
    solint_s = gate.solint_seconds(rec["solint"], ctx.info["integration_s"], ctx.info["time_span_s"])
    base = exts.get(after, {}).get("base") or after
    n = len([s for s in exts]) + 1
    if n > ctx.cfg.solint.max_extra_steps:
        return None
    params = params_for(ctx, template, base)
    options = gate.extension_solints(solint_s, ctx.info["integration_s"], image_snr=estimation_snr(ctx, st.get("current")["stats"]),
                                     n_antennas=ctx.info["n_antennas_present"] - len(st.get("bad_antennas", [])),
                                     time_on_source_s=ctx.info["time_on_source_s"],
                                     gaintype=gaintype_for(params.gaintype, ctx.info.get("polarisation")),
                                     cfg=dataclasses.replace(ctx.cfg.solint, max_extra_steps=1))
    if not options:
        return None
    name = f"p{2 + n}"
    exts[name] = {"base": base, "solint": options[0][0], "est_snr": options[0][1]}
    st.save()
    return name
