"""Thin wrappers around CASA tasks, always run in a child process (see casa_runner).

Build a list of calls with the ``*_call`` helpers and run them in one child with
:func:`run_casa` (one interpreter start-up of ~2-3 s per batch, not per task), or in a
dataset's long-lived child, :class:`selfcal_batch.casa.child.CasaChild` (one start-up per
dataset). Every call and its arguments are written to the dataset's CASA log.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from selfcal_batch import corepool
from selfcal_batch.casa.env import casa_child_env
from selfcal_batch.errors import CasaTaskError
from selfcal_batch.process import run_tool

log = logging.getLogger(__name__)
_counter = itertools.count()

Call = dict[str, Any]


def task(name: str, strict: bool = True, **kwargs: Any) -> Call:
    """A casatasks call, e.g. ``task("gaincal", vis=..., caltable=...)``."""
    return {"task": name, "kwargs": kwargs, "strict": strict}


def job(name: str, strict: bool = True, **kwargs: Any) -> Call:
    """A call of a :mod:`selfcal_batch.casa.jobs` function run in the CASA child."""
    return {"job": name, "kwargs": kwargs, "strict": strict}


def _prepare(calls: list[Call], workdir: Path, label: str, log_path: Path | None) -> tuple[Path, Path, Path]:
    """Write the request file; log every call. Returns (request, result, casa log) paths."""
    rundir = Path(workdir) / "casa_calls"
    rundir.mkdir(parents=True, exist_ok=True)
    stem = f"{os.getpid()}-{next(_counter):04d}-{label}"
    req = rundir / f"{stem}.json"
    res = rundir / f"{stem}.result.json"
    casa_log = (log_path or Path(workdir) / "logs" / "casa.log").resolve()
    casa_log.parent.mkdir(parents=True, exist_ok=True)
    req.write_text(json.dumps({"calls": calls, "logfile": str(casa_log), "result": str(res)}, default=str))
    for c in calls:
        log.info("[casa] %s(%s)", c.get("task") or c.get("job"),
                 ", ".join(f"{k}={v!r}" for k, v in c["kwargs"].items()))
    return req, res, casa_log


def _results(res: Path, label: str, returncode: int, tail: str) -> list[Any]:
    """The results of a finished request, or :class:`CasaTaskError` (failed call / dead child)."""
    if not res.exists():
        from selfcal_batch.process import describe_returncode  # lazy: loaded only on this path

        raise CasaTaskError(
            "casa",
            f"{label}: CASA child died ({describe_returncode(returncode)}); "
            f"last output: {tail.splitlines()[-1][:300] if tail else 'none'}",
            returncode=returncode,
            log_tail=tail,
        )
    out = json.loads(res.read_text())
    if "error" in out:
        raise CasaTaskError("casa", f"{label}: {out['error']}", returncode=returncode)
    return out["results"]


def run_casa(
    calls: list[Call],
    *,
    workdir: Path,
    label: str,
    log_path: Path | None = None,
    timeout: float | None = 3600.0,
) -> list[Any]:
    """Run ``calls`` in order in one new CASA child process; return their results.

    Raises :class:`CasaTaskError` naming the failing task when a call raises, reports a
    SEVERE error, or the child dies (segfault, abort, timeout).
    """
    req, res, casa_log = _prepare(calls, Path(workdir), label, log_path)
    argv = [sys.executable, "-m", "selfcal_batch.casa.runner", str(req)]
    with corepool.claim(1) as grant:  # CASA is single-threaded: one core of the worker's pool
        result = run_tool(
            argv,
            tool="casa",
            log_path=casa_log.with_name("casa-child.log"),
            env=casa_child_env(),
            cwd=req.parent,
            timeout=timeout,
            category="casa",
            check=False,
            error_cls=CasaTaskError,
            grant=grant,
        )
    return _results(res, label, result.returncode, result.tail)


# -- call builders for the tasks the pipeline uses ------------------------------------


#: Time interpolation of every applied gain table (applycal, and gaincal's pre-applied tables): linear within one observation id
#: (CASA 'perobs': a solution of another observation is never used, see :func:`applycal_call`).
INTERP = "linearperobs"


def gaincal_call(
    vis: str,
    caltable: str,
    *,
    solint: str,
    calmode: str,
    gaintype: str = "G",
    combine: str = "",
    refant: str = "",
    refantmode: str = "strict",
    minsnr: float = 3.0,
    minblperant: int = 3,
    solnorm: bool = False,
    normtype: str = "mean",
    gaintable: list[str] | None = None,
    spwmap: list[list[int]] | None = None,
    field: str = "",
    uvrange: str = "",
) -> Call:
    """gaincal against MODEL_DATA, with the seed's fixed arguments.

    ``solnorm``/``normtype`` ('mean' or 'median'): normalise the solution amplitudes to 1
    (CASA gaincal), so amplitude self-calibration corrects per-antenna errors without
    moving the flux scale of the (self-made) model. Pre-applied ``gaintable``s interpolate
    within one observation id (:data:`INTERP`), like applycal: with plain 'linear', a joint
    EB's rows after its one ``align_ebs`` solution were interpolated towards the next EB's,
    and that EB's dead antennas flagged them in the solve (measured, issue 18)."""
    return task(
        "gaincal",
        vis=vis,
        caltable=caltable,
        field=field,
        spw="",
        solint=solint,
        combine=combine,
        refant=refant,
        refantmode=refantmode,
        calmode=calmode,
        gaintype=gaintype,
        minsnr=float(minsnr),
        minblperant=int(minblperant),
        solnorm=bool(solnorm),
        normtype=str(normtype),
        gaintable=list(gaintable or []),
        spwmap=[list(m) for m in (spwmap or [])],
        interp=[INTERP] * len(gaintable or []),
        uvrange=uvrange,
        append=False,
    )


def applycal_call(
    vis: str,
    gaintable: list[str],
    spwmap: list[list[int]],
    *,
    calwt: bool = False,
    applymode: str = "calflag",
    field: str = "",
) -> Call:
    """applycal of a gain chain (linear interpolation, no flag backup: we manage flags).

    Time interpolation stops at observation boundaries (:data:`INTERP`): joint execution
    blocks are one MS with one observation id per EB, and plain ``'linear'`` interpolates a
    row between the last solution of its own EB and the first of the next EB (days later),
    so ``calflag`` flagged an EB's last integrations wherever the *other* EB's solution was
    flagged (measured, issue 18: 15 of 27 antennas dead in EB 2 flagged 13.5 % of the good
    EB 1). One-observation MSs interpolate as before."""
    return task(
        "applycal",
        vis=vis,
        field=field,
        gaintable=list(gaintable),
        spwmap=[list(m) for m in spwmap],
        interp=[INTERP] * len(gaintable),
        calwt=[bool(calwt)] * len(gaintable),
        applymode=applymode,
        flagbackup=False,
    )


def flagmanager_call(vis: str, mode: str, versionname: str, comment: str = "") -> Call:
    """Save, restore or delete a flag version."""
    kw: dict[str, Any] = {"vis": vis, "mode": mode, "versionname": versionname}
    if mode == "save":
        kw["comment"] = comment or versionname
        kw["merge"] = "replace"
    return task("flagmanager", **kw)
