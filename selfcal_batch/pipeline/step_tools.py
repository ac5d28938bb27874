"""Helpers shared by the preparation and the final steps (kept here so that neither step
module imports the other): the final-image settings and the autoflag CASA batch."""
from __future__ import annotations

from typing import Any

from selfcal_batch.casa import calibration as cal
from selfcal_batch.imaging.wsclean import WSCleanOptions
from selfcal_batch.pipeline.context import Context


def final_options(ctx: Context, name: str, column: str = "DATA") -> WSCleanOptions:
    """The seed's final-image settings (robust 0.5, multiscale, auto-mask 4 / threshold 1.5)."""
    cfg = ctx.cfg
    return ctx.base_options(name=ctx.img(name), robust=cfg.final_robust, multiscale=cfg.final_multiscale,
                            niter=cfg.final_niter, auto_mask=4.0, auto_threshold=1.5, data_column=column,
                            negative=True)


def autoflag(ctx: Context, final: bool = False) -> dict[str, Any]:
    """tfcrop (init: work.ms DATA) or rflag+tfcrop (final: final.ms) flagging, then extend.

    Returns ``{"flagged_fraction": f}`` (0..1, after flagging). The flag version saved first is
    ``before_rflag_init`` / ``before_rflag_final`` (the seed's names, kept for old outputs).
    """
    vis = str(ctx.final_ms if final else ctx.work_ms)
    name = "final" if final else "init"
    calls = [cal.flagmanager_call(vis, "save", f"before_rflag_{name}")]
    if final:
        calls.append(cal.task("flagdata", vis=vis, mode="rflag", datacolumn="data", ntime="6min",
                              combinescans=False, winsize=5, timedevscale=2.5, freqdevscale=2.5,
                              action="apply", flagbackup=False))
    calls.append(cal.task("flagdata", vis=vis, mode="tfcrop", datacolumn="data", ntime="scan",
                          combinescans=False, winsize=5, timecutoff=2.5, freqcutoff=2.5, maxnpieces=5,
                          flagnearfreq=False, flagneartime=False, action="apply", flagbackup=False))
    calls.append(cal.task("flagdata", vis=vis, mode="extend", growtime=80.0, growfreq=80.0,
                          growaround=True, extendpols=False, action="apply", flagbackup=False))
    calls.append(cal.job("flag_fraction", vis=vis))
    frac = ctx.casa(calls, label=f"rflag-{name}")[-1]
    return {"flagged_fraction": frac}
