"""Final steps: split of the calibrated data, final image, per-dataset report."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from selfcal_batch.casa import calibration as cal
from selfcal_batch.imaging import imstats
from selfcal_batch.pipeline import work_ms
from selfcal_batch.pipeline.context import Context
from selfcal_batch.pipeline.steps_fullres import full_resolution_finals
from selfcal_batch.pipeline.steps_joint import split_ebs
from selfcal_batch.pipeline.step_tools import autoflag, final_options  # noqa: F401  (final_options: re-export)
from selfcal_batch.ms.view import check_self_contained
from selfcal_batch.selfcal.outcome import coherence_kept, compare_images, guard_precheck, judge_delivery

log = logging.getLogger("selfcal_batch.pipeline")


def statwt_timebin(info: dict[str, Any], min_samples: int = 64, floor_s: float = 12.0) -> str:
    """statwt bin long enough for a stable variance: >= ``min_samples`` per baseline/spw.

    The seed's fixed 12 s bin holds one integration of 10 s data; with few channels the
    weights then scatter by tens of per cent and the re-weighted image gets worse.
    """
    nchan = min(s["nchan"] for s in info["spws"]) or 1
    n_int = -(-min_samples // nchan)
    seconds = max(floor_s, n_int * float(info.get("integration_s") or floor_s))
    return f"{seconds:.0f}s"


def split_before_ap1(ctx: Context) -> str:
    """Keep the phase-only calibrated data (seed: ``<ms>_p_trial_1.ms``)."""
    out = ctx.root / "phase_only.ms"
    chain = [c["table"] for c in ctx.state.get("chain") or []]
    if chain and ctx.state.get("phase_only_chain") != chain:
        partial = ctx.root / "phase_only.ms.partial"
        ctx.remove(out, partial, Path(str(partial) + ".flagversions"))
        ctx.casa([cal.task("split", vis=str(ctx.work_ms), outputvis=str(partial), datacolumn="corrected",
                           keepflags=True)], label="split-phase-only")
        partial.rename(out)
        ctx.remove(Path(str(partial) + ".flagversions"))
        ctx.state.set("phase_only_chain", chain)
    return str(out)


def _initial_flux_like_final(ctx: Context, final_stats: dict[str, Any]) -> None:
    """The initial image's masked flux at the final image's mask threshold (state
    ``initial.total_flux_like_final``, Jy). The test image's statistics use 8 (or 25) sigma
    for template selection, the final image 6: a source between 6 and 8 sigma read as
    total_flux_initial 0.0 against a final 0.00093 Jy for the same data (delivered unchanged)."""
    init = ctx.state.get("initial") or {}
    sigma, image = final_stats.get("stat_sigma"), init.get("image")
    if not image or not Path(image).exists() or (init.get("stats") or {}).get("stat_sigma") == sigma:
        return
    residual = str(image).replace("-image.fits", "-residual.fits")
    stats = imstats.image_statistics(image, residual if Path(residual).exists() else None, sigma=float(sigma))
    ctx.state.set("initial", {**init, "total_flux_like_final": stats.get("total_flux_mask")})


def split_calibrated(ctx: Context) -> dict[str, Any]:
    """final.ms = calibrated visibilities in DATA (+ statwt); final-image.fits from it (seed step
    ``split_trial_1``).

    The final guard judges the final image itself (issue 16: one image fewer than a separate
    guard "after" image of CORRECTED_DATA): it compares what is delivered -- final.ms, the
    calibrated data after statwt -- with the other deliverable, the input's DATA (the test
    image when nothing was flagged since). When it refuses, final.ms is split again from
    DATA and its image is the input's (again the test image when the flags are the same).
    Before any image, :func:`coherence_kept` compares final.ms with the input on the short
    baselines, where emission outside the image lives and the image-based guard is blind."""
    st = ctx.state
    chain = st.get("chain", [])
    work_ms.ensure_applied(ctx, chain, "final-apply")
    decided = guard_precheck(ctx, chain)  # None: the guard judges the final image below
    _write_final_ms(ctx, chain if decided is None else decided)
    if (chain if decided is None else decided) and not coherence_kept(ctx):  # flux lost outside the image
        decided = []
        _write_final_ms(ctx, [])
    products, stats = _final_image(ctx, chain if decided is None else decided)
    if decided is None:
        decided = chain if judge_delivery(ctx, chain, (products.image, stats)) else []
        if not decided:  # the input delivered unchanged: final.ms and its image are the input's
            _write_final_ms(ctx, [])
            products, stats = _final_image(ctx, [])
    if not st.get("initial"):
        # Seed-style test image: make the before image with the final settings.
        ref, ref_stats = ctx.image(final_options(ctx, "initial"), step="initial", role="initial",
                                   template=st.get("template_initial", ""))
        st.set("initial", {"image": ref.image, "stats": ref_stats})
    st.set("delivered_steps", [c["step"] for c in decided if c.get("step")])
    publish_final(ctx, products, stats)
    st.set("final", {"image": products.image, "stats": stats})
    _initial_flux_like_final(ctx, stats)
    log.info("%s: final image SNR %.1f, DR %.1f, peak %.4g Jy", ctx.name, stats["snr"],
             stats["dynamic_range"], stats["peak"])
    joint = {"final_ebs": split_ebs(ctx)} if len(ctx.ebs) > 1 else {}  # one final MS per EB
    if joint:  # EBs averaged to the joint copy's channel count: delivered at their own resolution
        joint["full_resolution"] = full_resolution_finals(ctx, statwt_timebin(ctx.info))
    return {"final_ms": str(ctx.final_ms), "final_image": str(ctx.root / "final-image.fits"), **joint, **_pb(ctx)}


def _final_image(ctx: Context, chain: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """The final image of final.ms. Without a chain final.ms holds work.ms's DATA with the same
    flags and weights, so work.ms's DATA is imaged instead: the test image (imaging/reuse.py)
    when nothing was flagged since, not imaged again."""
    tmpl = ctx.state.get("template_final", "")
    if chain:
        return ctx.image(final_options(ctx, "final"), step="final", role="final", template=tmpl, ms=ctx.final_ms)
    return ctx.image(final_options(ctx, "final_input"), step="final", role="final", template=tmpl)


def _write_final_ms(ctx: Context, chain: list[dict[str, Any]]) -> None:
    """final.ms: work.ms's CORRECTED_DATA (``chain`` applied; + statwt) or, with an empty
    chain, its DATA, as the DATA column, flags kept; written as final.ms.partial, then renamed."""
    tmp = ctx.root / "final.ms.partial"
    ctx.remove(tmp, ctx.final_ms, Path(str(tmp) + ".flagversions"), Path(str(ctx.final_ms) + ".flagversions"))
    calls = [cal.task("split", vis=str(ctx.work_ms), outputvis=str(tmp),
                      datacolumn="corrected" if chain else "data", keepflags=True)]
    if ctx.cfg.statwt_final and chain:
        calls.append(cal.task("statwt", vis=str(tmp), statalg="chauvenet", timebin=statwt_timebin(ctx.info),
                              datacolumn="data"))
    ctx.casa(calls, label="final-split")
    check_self_contained(tmp, f"final split {tmp}")
    tmp.rename(ctx.final_ms)
    flagv = Path(str(tmp) + ".flagversions")
    if flagv.exists():
        ctx.remove(Path(str(ctx.final_ms) + ".flagversions"))
        flagv.rename(str(ctx.final_ms) + ".flagversions")


def _pb(ctx: Context) -> dict[str, Any]:
    """final-image.pb.fits / .pbcor.fits (imaging/primary_beam.py); a failure is a warning."""
    if not ctx.cfg.primary_beam:
        return {}
    from selfcal_batch.imaging.primary_beam import make_pb_products  # lazy: loaded only when this path runs (keeps the module import-light)

    try:
        return make_pb_products(ctx, ctx.final_ms, ctx.root / "final-image.fits")
    except Exception as exc:  # noqa: BLE001  (the calibrated data are delivered regardless)
        log.warning("%s: no primary-beam correction: %s", ctx.name, str(exc).splitlines()[0][:300])
        return {"pb_error": str(exc).splitlines()[0][:300]}


def dataset_plots(ctx: Context) -> dict[str, Any]:
    """Per-dataset plots: solution SNR histograms, gains, and the summary figure (seed step
    ``report_results``)."""
    if not ctx.cfg.plots:
        return {"plots": []}
    from selfcal_batch.imaging import plots  # matplotlib is loaded only when plots are made

    made: list[str] = []
    names = ctx.info.get("antenna_names")
    for step, rec in ctx.state.steps.items():
        table = rec.get("table") if isinstance(rec, dict) else None
        if not table or rec.get("status") != "done":
            continue
        try:
            out = ctx.root / "plots" / f"{step}_snr.png"
            reverted = rec.get("accepted") is False
            plots.plot_solution_snr_hist(table, out, minsnr=float(rec.get("minsnr", 1.0)), reverted=reverted)
            made.append(str(out))
            out = ctx.root / "plots" / f"{step}_gains.png"
            plots.plot_gains(table, out, antenna_names=names, amplitude=step.startswith("a"), reverted=reverted)
            made.append(str(out))
        except Exception as exc:  # noqa: BLE001  (a plot must never fail the dataset)
            log.warning("%s: plot of %s failed: %s", ctx.name, step, exc)
    images = {}
    test = ctx.state.get("initial") or ctx.state.get("test_image") or {}
    if test.get("image"):
        images["initial"] = test["image"]
    final = ctx.state.get("final") or {}
    if final.get("image"):
        images["final"] = final["image"]
    try:
        out = ctx.root / "plots" / "summary.png"
        plots.plot_summary(out, ctx.rows(), images)
        made.append(str(out))
        for label, img in images.items():
            thumb = ctx.root / "plots" / f"thumb_{label}.png"
            plots.thumbnail(img, thumb)
            made.append(str(thumb))
    except Exception as exc:  # noqa: BLE001
        log.warning("%s: summary plot failed: %s", ctx.name, exc)
    return {"plots": made}


def autoflag_final(ctx: Context) -> dict[str, Any]:
    """Flag outliers in final.ms (rflag + tfcrop + extend), re-make the final image and keep
    the flags only when that image is better beyond its noise than the one the final guard
    accepted (seed step ``run_rflag_final``, which kept them unconditionally: on data without
    interference it flagged 29 % and raised the rms by 15 %). Reverted: final.ms's flags are
    restored from ``before_rflag_final`` and the accepted final image stays delivered.
    Record: ``flagged_fraction``, ``accepted``, ``reason``, ``snr_pre``/``snr_post``."""
    if not ctx.final_ms.exists():
        return "skipped", {"reason": "no final.ms (split_calibrated did not run)"}
    delivered_as_input = (ctx.state.get("outcome") or {}).get("status")
    if delivered_as_input:  # unchanged / no_detection / needs_calibration: the input's flags stay
        return "skipped", {"reason": f"final.ms is the input delivered {delivered_as_input}: not flagged"}
    accepted = ctx.state.get("final") or {}
    out = autoflag(ctx, final=True)
    products, stats = ctx.image(final_options(ctx, "final_flagged"), step="autoflag_final", role="final",
                                template=ctx.state.get("template_final", ""), ms=ctx.final_ms)
    snrs = {"snr_pre": (accepted.get("stats") or {}).get("snr"), "snr_post": stats.get("snr")}
    if accepted.get("image"):
        dec = compare_images(ctx, (str(accepted["image"]), accepted["stats"]),
                                     (products.image, stats), amplitude=True)
        if not dec.deliver:
            ctx.casa([cal.flagmanager_call(str(ctx.final_ms), "restore", "before_rflag_final")],
                     label="rflag-final-revert")
            reason = f"flags not kept: image not better beyond its noise ({dec.reason})"
            log.warning("%s: autoflag_final: %s", ctx.name, reason)
            return {**out, **snrs, "accepted": False, "reason": reason}
    publish_final(ctx, products, stats)
    ctx.state.set("final", {"image": products.image, "stats": stats})
    return {**out, **snrs, "accepted": True, **_pb(ctx)}


def publish_final(ctx: Context, products: Any, stats: dict[str, Any]) -> None:
    """final-image.fits and final-residual.fits with provenance cards (imaging/provenance.py)."""
    from selfcal_batch import __version__  # lazy: avoids importing the package root at module load
    from selfcal_batch.imaging.provenance import provenance_cards, publish_final_images  # lazy: loaded only on this path

    st = ctx.state
    steps = [(s, str((st.steps.get(s) or {}).get("solint") or "")) for s in st.get("delivered_steps") or []]
    a, b = st.get("template_initial") or "", st.get("template_final") or ""
    cards = provenance_cards(__version__, a if a == b or not b else f"{a}->{b}", steps, stats, str(ctx.ms))
    publish_final_images(products.image, getattr(products, "residual", None), ctx.root, cards, str(ctx.ms))
