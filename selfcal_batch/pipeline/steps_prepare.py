"""Preparation steps: startup (working copy), flags, FOV/test images, template, refant."""
from __future__ import annotations

import time
import logging
from pathlib import Path

import numpy as np
from typing import Any

from selfcal_batch.casa import calibration as cal
from selfcal_batch.imaging import imstats
from selfcal_batch.selfcal.acceptance import antennas_to_flag, bad_antennas
from selfcal_batch.selfcal.bands import band_mismatch
from selfcal_batch.selfcal.templates import normalise_band, normalise_instrument
from selfcal_batch.selfcal.outcome import check_after_test_image, judge_antenna_flag, stop_reason
from selfcal_batch.pipeline.context import Context
from selfcal_batch.pipeline.state_records import WorkMSState
from selfcal_batch.pipeline.step_tools import autoflag, final_options, working_copy
from selfcal_batch.pipeline.steps_joint import joint_startup
from selfcal_batch.errors import DatasetError
from selfcal_batch.ms.polarisation import gaintype_for
from selfcal_batch.schema import angle_arcsec
from selfcal_batch.selfcal.refant import filter_refants, good_fractions, rank_refants
from selfcal_batch.selfcal.templates import (
    measurement_sigma,
    select_template,
    test_image_faint_reimage,
)

log = logging.getLogger("selfcal_batch.pipeline")


#: Good-solution fraction (against the test image's model) below which an antenna carries
#: no usable signal (a dead antenna: 0).
SIGNAL_FREE = 0.1


def startup(ctx: Context) -> dict[str, Any]:
    """Validate the input MS and make the private working copy (the input is only read)."""
    if len(ctx.ebs) > 1:
        return joint_startup(ctx)  # several execution blocks joined into one working copy
    src = ctx.ms
    ctx.remove(ctx.work_ms, Path(str(ctx.work_ms) + ".flagversions"))
    WorkMSState.reset(ctx.state.data)  # describes the old copy
    try:
        out = working_copy(ctx, src, ctx.root / "input_view.ms", ctx.work_ms, "working-copy")
    except BaseException:
        # A partial copy is useless (startup redoes it) and may fill the disk.
        ctx.remove(ctx.work_ms, Path(str(ctx.work_ms) + ".flagversions"))
        raise
    src_info, info = out["src"], out["work"]
    if ctx.cfg.input_column.lower() == "data" and "CORRECTED_DATA" in src_info.get("columns", []):
        log.warning("%s: %s has a CORRECTED_DATA column; self-calibrating DATA as configured "
                    "(set input_column = 'corrected' to start from the observatory-calibrated data)",
                    ctx.name, src)
    info["input"] = {k: src_info[k] for k in ("nrows", "flagged_fraction", "n_antennas_present")}
    if info["n_antennas_present"] < 4:
        raise DatasetError(ctx.name, f"only {info['n_antennas_present']} antennas with data: "
                                     "self-calibration needs at least 4")
    spws = info.get("spws") or []
    if spws and (why := band_mismatch(normalise_instrument(ctx.cfg.instrument), normalise_band(
            ctx.cfg.band, ctx.cfg.instrument), min(s["freq_min"] for s in spws), max(s["freq_max"] for s in spws))):
        info.setdefault("warnings", []).append(why)
    ctx.state.set("msinfo", info)
    for warning in info.get("warnings", []):
        log.warning("%s: %s: %s", ctx.name, src, warning)
        if "NaN/inf" in warning or " band" in warning:  # the astronomer must see these in the console too
            ctx.state.data.setdefault("notices", []).append({"time": time.time(), "text": warning})
    log.info("%s: working copy %s: %d rows, %d antennas, %d spws, %.0f s on source, %.1f%% flagged",
             ctx.name, ctx.work_ms.name, info["nrows"], info["n_antennas_present"], len(info["spws"]),
             info["time_on_source_s"], 100 * info["flagged_fraction"])
    return {"work_ms": str(ctx.work_ms)}


def save_init_flags(ctx: Context) -> dict[str, Any]:
    """Save the 'Original' flag version (and run statwt if configured)."""
    calls = [cal.flagmanager_call(str(ctx.work_ms), "save", "Original", "Original flags")]
    if ctx.cfg.statwt_init:
        calls.append(cal.task("statwt", vis=str(ctx.work_ms), datacolumn="data"))
    ctx.casa(calls, label="init-flags")
    return {"statwt": ctx.cfg.statwt_init}


def fov_image(ctx: Context) -> dict[str, Any]:
    """A wide, shallow image of DATA to look for confusing sources (seed: 8192 px, niter 100)."""
    size = min(4096, 4 * ctx.cfg.imsize)
    cell_value = angle_arcsec(ctx.cell())  # any unit of the cell setting (schema.ANGLE_UNITS)
    opts = ctx.base_options(name=ctx.img("fov"), size=size, scale=f"{2 * cell_value:.4g}arcsec",
                            niter=100, robust=0.5, auto_mask=8.0, auto_threshold=3.0)
    products, stats = ctx.image(opts, step="fov_image", role="fov")
    return {"image": products.image}


def autoflag_init(ctx: Context) -> dict[str, Any]:
    """tfcrop + extend on work.ms's DATA (seed step ``run_rflag_init``): {"flagged_fraction": f}."""
    return autoflag(ctx, final=False)


def test_image(ctx: Context) -> dict[str, Any]:
    """Image DATA, measure the masked flux and select the template (seed rules)."""
    cfg = ctx.cfg
    if cfg.test_imaging == "final":
        opts = final_options(ctx, "test_image").replace(taper_gaussian=cfg.test_uvtaper)
    else:
        opts = ctx.base_options(name=ctx.img("test_image"), robust=cfg.test_robust, auto_mask=5.0,
                                auto_threshold=3.0, niter=10000, taper_gaussian=cfg.test_uvtaper)
    # The test image writes its model (MODEL_DATA): select_refant solves against it, no predict.
    products, stats = ctx.image(opts.replace(update_model=True), step="test_image", role="test", sigma=8.0)
    detect_stats, detect_model = stats, products.model
    if cfg.test_imaging == "final":
        # Same settings as the final image: the like-for-like "before" image.
        ctx.state.set("initial", {"image": products.image, "stats": stats, "prefix": products.prefix})
    else:
        ctx.state.set("initial", None)
    flux = 1000 * stats["total_flux_mask"]
    sigma = measurement_sigma("test_image", flux)
    if sigma != 8.0:
        stats = imstats.image_statistics(products.image, products.residual, sigma=sigma)
        flux = 1000 * stats["total_flux_mask"]
    modified_robust = None
    re = test_image_faint_reimage(flux, opts.robust, cfg.test_uvtaper)
    if re is not None:
        modified_robust = re["robust"] if not re.get("uvtaper") else None
        opts2 = ctx.base_options(name=ctx.img("test_image_faint"), robust=re["robust"],
                                 taper_gaussian=re.get("uvtaper", ""), auto_mask=4.0, auto_threshold=1.5)
        products, stats = ctx.image(opts2, step="test_image", role="test", sigma=8.0)
        flux = 1000 * stats["total_flux_mask"]
    template = cfg.force_template or select_template(flux, tuple(cfg.template_thresholds_mjy))
    ctx.state.set("template_initial", template)
    ctx.state.set("template_final", template)
    ctx.state.set("modified_robust", modified_robust)
    # No reuse key: made without a FITS mask and cleaned deeper than p0's images, it is not
    # a like-for-like "before" image for the gate (measured: it made p0 look 40% worse).
    ctx.state.set("ladder_economy", None)  # ladder image size etc.: decided afresh from this test image
    ctx.state.set("test_image", {"image": products.image, "residual": products.residual, "stats": stats,
                                 "prefix": products.prefix})
    log.info("%s: test image flux %.2f mJy -> template %s%s", ctx.name, flux, template,
             " (forced)" if cfg.force_template else "")
    check_after_test_image(ctx, detect_stats, detect_model)  # unchanged (outside) / needs_calibration / no_detection
    return {"template": template, "flux_mjy": flux, "image": products.image}


def _refant_list(ctx: Context, ranking: list[str], good: dict[str, float], flagged: set[str]) -> str:
    """The configured refants that have unflagged data and good solutions and were not just
    flagged as bad (one warning per dropped antenna; the ranked list when none is left),
    followed by the ranked list (without the flagged antennas)."""
    info = ctx.info
    names = info["antenna_names"]
    with_data = info.get("antennas_unflagged", info["antennas_present"])
    usable = [names[a] for a in with_data
              if good.get(names[a], 0.0) > 0 and names[a] in ranking and names[a] not in flagged]
    ranking = [a for a in ranking if a not in flagged] or ranking
    if not ctx.cfg.refant:
        return ",".join(ranking)
    kept, dropped, fell_back = filter_refants(ctx.cfg.refant, usable, ranking)
    for a in dropped:
        why = "not in the MS" if a not in names else (
            "has no unflagged data" if names.index(a) not in with_data else
            "was flagged as bad" if a in flagged else "has no good solutions")
        log.warning("%s: configured reference antenna %s %s: not used", ctx.name, a, why)
    if fell_back:
        log.warning("%s: none of the configured reference antennas (%s) is usable: using the ranked list %s",
                    ctx.name, ctx.cfg.refant, ",".join(ranking[:5]))
    return ",".join(kept)


def _refant_solutions(ctx: Context) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Solve phases per scan (solint inf, flex refant) and read ANTENNA1, FLAG, SNR and
    OBSERVATION_ID of the table (empty arrays when every solution failed: gaincal then
    writes no table)."""
    table = str(ctx.root / "caltables" / "find_refant.phase")
    ctx.remove(table)
    gaintype = gaintype_for("G", ctx.info.get("polarisation"))
    ctx.casa([cal.task("gaincal", vis=str(ctx.work_ms), caltable=table, field="", refantmode="flex",
                       solint="inf", minblperant=3, gaintype=gaintype, calmode="p")], label="find-refant")
    from casacore.tables import table as ctable  # casacore is loaded only where a table is read

    if not Path(table, "table.dat").exists():
        # Every solution failed (gaincal then writes no table): no ranking, no antenna judged bad.
        log.warning("%s: no reference-antenna solution succeeded (solint inf); the configured or "
                    "CASA's default reference antenna is used", ctx.name)
        return np.zeros(0, int), np.zeros((0, 1, 1), bool), np.zeros((0, 1, 1)), np.zeros(0, int)
    with ctable(table, ack=False) as t:
        return t.getcol("ANTENNA1"), t.getcol("FLAG"), t.getcol("SNR"), t.getcol("OBSERVATION_ID")


def select_refant(ctx: Context) -> dict[str, Any]:
    """Rank antennas by the fraction of good phase solutions (per antenna id), solved against
    the test image's model (MODEL_DATA), not CASA's default 1 Jy point source."""
    if stop_reason(ctx):
        return "skipped", {"reason": stop_reason(ctx)}
    model = (ctx.state.get("initial") or ctx.state.get("test_image") or {}).get("prefix")
    if model and ctx.state.get("model_in_ms") != model:
        ctx.predict(model)
    info = ctx.info
    names = info["antenna_names"]
    a1, flags, snr, obs = _refant_solutions(ctx)
    ranking = rank_refants(a1, flags, names, snr)
    # gaincal's refant is an antenna *name* expression (CASA matches '20' to the antenna
    # named '20' before id 20): antennas without data or without a unique, non-empty name
    # cannot be used, and an empty name makes the list unparsable (real VLA data: antennas
    # without data have empty names; "Antenna Expression: Parse error at or near ','").
    present_names = {names[a] for a in info["antennas_present"]}
    ranking = [n for n in ranking if n.strip() and n in present_names and names.count(n) == 1]
    # joint EBs: an antenna's solutions count only in the EBs where it has data
    per_eb = [set(eb["antennas_with_data"]) for eb in ctx.state.get("ebs") or [] if "antennas_with_data" in eb]
    good = good_fractions(a1, flags, names, obs, per_eb if per_eb and len(per_eb) == len(ctx.ebs) else None)
    for aid in info["antennas_present"] if len(a1) else []:  # no solutions: nothing to judge
        good.setdefault(names[aid], 0.0)
    # Only antennas with data: an antenna listed in ANTENNA but absent from the main table is
    # not "bad" (counting it made the solution-SNR estimate use 4 - 23 antennas: SNR 0).
    good = {a: f for a, f in good.items() if a.strip() and a in present_names}
    bad = bad_antennas(good)  # none when the whole array fails alike (low SNR)
    flagged: list[str] = []
    flag_undone: dict[str, Any] = {}
    if ctx.cfg.flag_bad_antennas:
        flagged = antennas_to_flag(good)
        if flagged:
            # A dead antenna's data are noise: flag them now, so the ladder's images and the
            # gate's beam comparison are not disturbed when applycal would flag them later;
            # judged like a step (like-for-like image), undone when it does not help.
            judged = judge_antenna_flag(ctx, flagged, signal_free=all(good[a] < SIGNAL_FREE for a in flagged))
            if not judged["kept"]:
                flag_undone = {"antennas": flagged, "reason": judged["reason"]}
                flagged = []
    refant = _refant_list(ctx, ranking, good, set(flagged))
    ctx.state.set("refant", refant)
    ctx.state.set("antenna_good_fraction", good)
    ctx.state.set("bad_antennas", bad)
    log.info("%s: refant ranking %s%s", ctx.name, ",".join(ranking[:5]),
             f"; bad antennas: {', '.join(bad)}" if bad else "")
    return {"refant": refant.split(",")[0], "bad_antennas": bad, "flagged_antennas": flagged,
            "antenna_flag_undone": flag_undone}
