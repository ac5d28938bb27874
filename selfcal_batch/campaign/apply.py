"""``selfcal-batch apply OUTDIR``: the accepted gain chain applied to the original input MS.

For each finished dataset of a campaign output, a NEW measurement set
``OUTDIR/datasets/<name>/applied.ms``: the input at its full time and frequency resolution
(same field/spw selection as the pipeline's working copy), DATA = the input column as read,
CORRECTED_DATA = DATA with the delivered gain chain applied (CASA applycal, applymode
'calflag'). The input is only read through a private read-only view
(:func:`selfcal_batch.ms.view.read_only_view`), never opened. ``--in-place`` instead writes
CORRECTED_DATA into the input MS itself (only then is it modified).

Interpolation: the solutions are per spw (gaincal solves one complex gain per antenna, spw
and solution interval; ``chanbin`` only averaged channels inside a spw, so every original
channel of a spw takes its spw's solution: spw ids match because the copy uses the working
copy's spw selection). In time, ``linear`` between solution centres within one observation
id (``linearperobs``; nearest beyond the first/last), as the pipeline applied them: valid for any sampling finer than the solution
interval, also data that ``timebin`` averaged.

Only the gains are applied: flags the pipeline added (antenna flags, rflag) and statwt
weights stay in ``final.ms``. Datasets that did not end ``finished`` (failed, unchanged,
no_detection, needs_calibration, skipped) are reported and skipped.

``gain_tables.json`` gets ``apply_to_original``: the exact applycal call with paths relative
to OUTDIR (``vis``, ``gaintable``), so a moved output directory still applies.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: As the pipeline applied them (casa.calibration.INTERP): linear in time within one observation id.
INTERP = "linearperobs"


@dataclass
class ApplyPlan:
    """What to apply for one dataset: tables relative to OUTDIR, their spwmaps, selection."""

    name: str
    input_ms: str
    tables: list[str] = field(default_factory=list)
    spwmaps: list[list[int]] = field(default_factory=list)
    field: str = ""
    spw: str = ""
    column: str = "data"
    calwt: bool = False
    skip: str = ""


def plan_dataset(name: str, result: dict[str, Any], state: dict[str, Any]) -> ApplyPlan:
    """The apply plan from a dataset's result.json and state.json (pure).

    ``skip`` is set (one line) when there is nothing to apply: status other than
    'finished', or no delivered chain. Tables become ``datasets/<name>/caltables/<file>``."""
    plan = ApplyPlan(name=name, input_ms=str(result.get("ms", "")))
    status = result.get("status", "?")
    if status != "finished":
        why = result.get("reason") or result.get("error") or ""
        plan.skip = f"status {status}" + (f" ({why})" if why else "") + ": nothing to apply"
        return plan
    chain = state.get("chain") or []
    if not chain:
        plan.skip = "no gain table was delivered"
        return plan
    if result.get("ebs"):
        # Joint EBs: the tables hold the joint working copy's observation and spw ids, not
        # any one input's; the calibrated EBs are delivered as final/eb<k>.ms.
        plan.skip = "joint execution blocks: the calibrated EBs are final/eb<k>.ms (apply is per input MS)"
        return plan
    plan.tables = [f"datasets/{name}/caltables/{Path(c['table']).name}" for c in chain]
    plan.spwmaps = [list(c.get("spwmap") or []) for c in chain]
    cfg = state.get("config") or {}
    plan.field, plan.spw = str(cfg.get("field", "")), str(cfg.get("spw", ""))
    plan.column, plan.calwt = str(cfg.get("input_column", "data")).lower(), bool(cfg.get("calwt", False))
    return plan


def applycal_record(plan: ApplyPlan, vis_rel: str) -> dict[str, Any]:
    """The applycal call with paths relative to OUTDIR (what gain_tables.json records)."""
    return {"task": "applycal", "paths_relative_to": "the campaign output directory",
            "kwargs": {"vis": vis_rel, "field": plan.field, "gaintable": list(plan.tables),
                       "spwmap": plan.spwmaps, "interp": [INTERP] * len(plan.tables),
                       "calwt": [plan.calwt] * len(plan.tables), "applymode": "calflag"},
            "input_ms": plan.input_ms}


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def in_place_problem(plan: ApplyPlan, shared_ms: bool = False) -> str:
    """Why ``--in-place`` must be refused for ``plan`` ('' = allowed; pure).

    The caltables are indexed by the working copy's spw ids: with an ``spw`` selection the
    copy renumbers them from 0, so applying into the input would put one spw's gains on
    another (measured: a dataset of spw 1 wrote its gains into spw 0 of the input). Several
    datasets of one MS would overwrite each other's CORRECTED_DATA."""
    if plan.spw.strip() not in ("", "*"):
        return (f"--in-place refused: the dataset selects spw {plan.spw!r}, and its gain tables use the "
                "working copy's renumbered spw ids; apply without --in-place")
    if plan.column == "corrected":
        return ("--in-place refused: the dataset self-calibrated CORRECTED_DATA, and applycal in place "
                "would write over that column from DATA; apply without --in-place")
    if shared_ms:
        return ("--in-place refused: several datasets of this campaign use the same input MS and would "
                "overwrite each other's CORRECTED_DATA; apply without --in-place")
    return ""


def apply_dataset(outdir: Path, name: str, in_place: bool = False, shared_ms: bool = False) -> dict[str, Any]:
    """Apply one dataset's chain (thin wrapper; CASA in a child). Returns a report row:
    ``name, status ('applied'|'skipped'|'failed'), detail, output``."""
    from selfcal_batch.casa import calibration as cal  # lazy: loaded only when this path runs (keeps the module import-light)
    from selfcal_batch.errors import SelfcalBatchError  # lazy: loaded only when this path runs (keeps the module import-light)
    from selfcal_batch.ms.checksum import fingerprint_change, input_fingerprint  # lazy: loaded only when this path runs (keeps the module import-light)
    from selfcal_batch.ms.view import (check_self_contained, input_problem, read_only_view,  # lazy: loaded only when this path runs (keeps the module import-light)
                                       view_disturbed, view_identity)

    root = outdir / "datasets" / name
    plan = plan_dataset(name, _read(root / "result.json"), _read(root / "state.json"))
    if plan.skip:
        return {"name": name, "status": "skipped", "detail": plan.skip, "output": ""}
    missing = [t for t in plan.tables if not (outdir / t / "table.dat").exists()]
    src = Path(plan.input_ms)
    if missing or not (src / "table.dat").exists():
        what = f"gain table {missing[0]} is missing" if missing else f"input MS {src} not found"
        return {"name": name, "status": "failed", "detail": what, "output": ""}
    if changed := fingerprint_change((_read(root / "state.json") or {}).get("input_fingerprint"),
                                     input_fingerprint(src)):
        # Gains solved on other data: applying them would silently miscalibrate.
        return {"name": name, "status": "failed", "output": "",
                "detail": f"input MS {src} changed since the run that solved these gains ({changed}): "
                          "rerun the campaign first"}
    tables = [str(outdir / t) for t in plan.tables]
    interp = [INTERP] * len(tables)
    if in_place and (why := in_place_problem(plan, shared_ms)):
        return {"name": name, "status": "failed", "detail": why, "output": ""}
    try:
        if in_place:
            cal.run_casa([cal.job("apply_in_place", vis=str(src), gaintable=tables, spwmap=plan.spwmaps,
                                  interp=interp, field=plan.field, calwt=plan.calwt)], workdir=root, label="apply-in-place")
            record, out = applycal_record(plan, str(src)), src
            _record_own_write(root / "state.json", input_fingerprint(src))
        else:
            out, partial, view = root / "applied.ms", root / "applied.ms.partial", root / "apply_view.ms"
            for p in (partial, view):
                shutil.rmtree(p, ignore_errors=True)
            try:
                read_only_view(src, view)
                ident = view_identity(view)
                try:
                    cal.run_casa([cal.job("apply_to_copy", view=str(view), out=str(partial), gaintable=tables,
                                          spwmap=plan.spwmaps, interp=interp, field=plan.field, spw=plan.spw,
                                          column=plan.column, calwt=plan.calwt)], workdir=root, label="apply")
                except SelfcalBatchError as exc:
                    if why := view_disturbed(view, ident):  # our view broke, not the input MS
                        raise SelfcalBatchError(f"{why}; the input MS {src} is not at fault") from None
                    raise SelfcalBatchError(input_problem(str(exc), view, src)) from None
            finally:
                shutil.rmtree(view, ignore_errors=True)
            check_self_contained(partial, f"applied copy {partial}")
            shutil.rmtree(out, ignore_errors=True)
            partial.rename(out)
            record = applycal_record(plan, f"datasets/{name}/applied.ms")
    except (SelfcalBatchError, OSError) as exc:
        return {"name": name, "status": "failed", "detail": str(exc).splitlines()[0][:300], "output": ""}
    gt = _read(root / "gain_tables.json")
    gt["apply_to_original"] = record
    tmp = root / "gain_tables.json.tmp"
    tmp.write_text(json.dumps(gt, indent=1))
    tmp.replace(root / "gain_tables.json")
    return {"name": name, "status": "applied", "detail": f"{len(tables)} table(s)", "output": str(out)}


def _record_own_write(state_json: Path, fingerprint: dict[str, Any]) -> None:
    """After ``apply --in-place`` wrote CORRECTED_DATA into the input: record the input's new
    fingerprint in the dataset's state (and the one before, with the time), so this
    documented write is not taken for a foreign change (which would redo the dataset and
    refuse a later plain ``apply``). The gains stay valid: the dataset calibrated DATA, which
    applycal does not change (``in_place_problem`` refuses the other cases)."""
    from datetime import datetime, timezone  # lazy: only on the --in-place path

    from selfcal_batch.pipeline.state import atomic_write_json  # lazy: only on the --in-place path

    state = _read(state_json)
    if not state:
        return
    state.setdefault("input_writes", []).append({"by": "apply --in-place", "column": "CORRECTED_DATA",
                                                 "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                                 "fingerprint_before": state.get("input_fingerprint")})
    state["input_fingerprint"] = fingerprint
    atomic_write_json(state_json, state)


def apply_outputs(outdir: str | Path, datasets: list[str] | None = None, in_place: bool = False) -> list[dict[str, Any]]:
    """Apply every (or the named) dataset of a campaign output; one report row each.

    ValueError (one line) when OUTDIR has no ``datasets/`` or a named dataset is unknown."""
    outdir = Path(outdir).resolve()
    ds_dir = outdir / "datasets"
    if not ds_dir.is_dir():
        raise ValueError(f"{outdir} is not a campaign output (no datasets/ folder)")
    names = every = sorted(p.name for p in ds_dir.iterdir() if (p / "result.json").exists())
    if datasets:
        unknown = [d for d in datasets if d not in names]
        if unknown:
            raise ValueError(f"unknown dataset(s) in {outdir}: {', '.join(unknown)} (have: {', '.join(names)})")
        names = [n for n in names if n in datasets]
    # over the whole campaign, not only the --datasets chosen: applying one of two datasets
    # of an MS in place would still overwrite what the other one needs
    inputs = {n: str((_read(ds_dir / n / "result.json") or {}).get("ms", "")) for n in every}
    counts = {ms: list(inputs.values()).count(ms) for ms in inputs.values()}
    rows = []
    for name in names:
        row = apply_dataset(outdir, name, in_place, shared_ms=counts.get(inputs[name], 0) > 1)
        log.info("%s: %s: %s", name, row["status"], row["detail"])
        rows.append(row)
    return rows
