"""Helpers shared by the step modules (kept here so that none imports another): the working
copy of an input MS, the final-image settings and the autoflag CASA batch."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from selfcal_batch.casa import calibration as cal
from selfcal_batch.errors import CasaTaskError, DatasetError
from selfcal_batch.ms.view import (archive_hint, check_self_contained, input_problem, read_only_view, view_disturbed,
                                   view_identity)
from selfcal_batch.imaging.wsclean import WSCleanOptions
from selfcal_batch.pipeline.context import Context


def working_copy(ctx: Context, src: Path, view: Path, work: Path, label: str, where: str = "",
                 field: str | None = None) -> dict[str, Any]:
    """The private working copy ``work`` of the input MS ``src`` (CASA job ``working_copy``
    on a read-only view of ``src`` with the dataset's field (or ``field``: one EB's own
    selection, ``eb_fields``), spw, column and averaging; the view is removed after).
    Returns the job's ``{"src": ..., "work": ...}`` summaries.
    Raises a one-line DatasetError naming ``src`` (never the view) when it is missing (``where``
    follows the path: which execution block), not an MS, unreadable or refused by CASA."""
    if not src.exists():
        raise DatasetError(ctx.name, f"MS not found: {src}{where}{archive_hint(src)}")
    if not src.is_dir() or not (src / "table.dat").exists():
        raise DatasetError(ctx.name, f"not a measurement set (no table.dat): {src}{archive_hint(src)}")
    try:
        try:
            read_only_view(src, view)
            ident = view_identity(view)
        except OSError as exc:
            raise DatasetError(ctx.name, f"{src}: cannot be read ({exc.strerror or exc})") from None
        try:
            out = ctx.casa([cal.job("working_copy", view=str(view), work=str(work), field=ctx.cfg.field if field is None else field,
                                    spw=ctx.cfg.spw, column=ctx.cfg.input_column.lower(),
                                    timebin=ctx.cfg.timebin, width=ctx.cfg.chanbin)], label=label)[0]
        except CasaTaskError as exc:
            if why := view_disturbed(view, ident):  # our view broke, not the input MS
                raise DatasetError(ctx.name, f"{why} (another run on the same output directory?); the input "
                                   f"MS {src} is not at fault: {input_problem(str(exc), view, view)}") from None
            # One line about the user's MS, never the view's path or a child traceback.
            raise DatasetError(ctx.name, f"{src}: {input_problem(str(exc), view, src)}") from None
        check_self_contained(work, f"working copy {work}")
    finally:
        ctx.remove(view)
    return out


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
    # A resumed attempt restores the flags its first attempt saved (the kill may have come
    # after flagdata wrote some): saving them anew would make the flagged state the "before".
    calls = [cal.job("flag_checkpoint", vis=vis, versionname=f"before_rflag_{name}",
                     resume=bool(ctx.state.get("resuming")))]
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
