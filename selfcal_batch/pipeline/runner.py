"""The per-dataset pipeline: a step machine with its state on disk.

``run_dataset`` never raises for a problem with the data or a tool: it returns a
``DatasetResult`` with status ``failed`` and a one-line reason (full traceback in
``logs/pipeline.log``). Finished steps whose inputs are unchanged are skipped, so a
crashed or killed run resumes where it stopped.
"""
from __future__ import annotations

import copy
import errno
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from selfcal_batch.numeric import float_or_nan
from selfcal_batch.contract import DECISION_KEYS, FINAL_IMAGE, RESULT_JSON, DatasetResult
from selfcal_batch.pipeline import extension, ladder
from selfcal_batch.selfcal import outcome
from selfcal_batch import process
from selfcal_batch.pipeline import records
from selfcal_batch.pipeline import registry
from selfcal_batch.pipeline.eb_records import eb_rows
from selfcal_batch.pipeline import steps_finish as steps_final
from selfcal_batch.pipeline import restart as restart_plan
from selfcal_batch.config import PipelineConfig
from selfcal_batch.pipeline.context import Context
from selfcal_batch.ms.checksum import input_fingerprint
from selfcal_batch.pipeline.dataset_log import dataset_handler, in_dataset
from selfcal_batch.pipeline.products import compress_finished, prune_finished
from selfcal_batch.errors import DatasetError, SelfcalBatchError, ToolError
from selfcal_batch.pipeline.state_records import LadderState
from selfcal_batch.pipeline.state import DatasetState, StateVersionError, atomic_write_json, chain_hash
from selfcal_batch.selfcal.templates import TEMPLATE_TABLE_VERSION

log = logging.getLogger("selfcal_batch.pipeline")

#: State entries a step may change and that are rolled back before re-running it (the
#: fields of the LadderState record).
SNAPSHOT_KEYS = LadderState.names()


class _WorkMSMissing(Exception):
    """A step must run but work.ms was deleted after an earlier successful run."""


def _config_part(cfg: PipelineConfig, step: str) -> dict[str, Any]:
    return registry.depends(step, cfg.to_dict())


class _Runner:
    """Runs the requested steps in order, skipping finished ones."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        # Joint EBs: every EB's path is part of the dataset's identity (one MS: as before).
        ident = str(ctx.ms) if len(ctx.ebs) < 2 else "|".join(map(str, ctx.ebs))
        self.prev_hash = chain_hash("", "dataset", ident, TEMPLATE_TABLE_VERSION)
        self.upstream_ran = False

    def run(self, step: str, func: Callable[[Context], Any]) -> None:
        ctx, st = self.ctx, self.ctx.state
        h = chain_hash(self.prev_hash, registry.hash_name(step), _config_part(ctx.cfg, step))
        self.prev_hash = h
        if st.is_done(step, h) and not self.upstream_ran:
            return
        if step not in registry.NO_WORK_MS and "startup" in st.steps and not ctx.work_ms.exists():
            raise _WorkMSMissing(step)
        snaps = st.data.setdefault("snapshots", {})
        resumed = step in snaps and not self.upstream_ran
        # A resumed attempt restores the flags its first attempt saved; a fresh one saves anew.
        st.data["resuming"] = resumed
        if resumed:
            # Roll back to the state before this step's first attempt. Keys that did not
            # exist then are removed (restoring them as None breaks `st.get(k, default)`).
            LadderState.from_json(snaps[step]).restore(st.data)
        else:
            snaps[step] = LadderState.capture(st.data).to_json()
        # Images made by an earlier attempt of this (or a later) step may show other data
        # (changed inputs) or no longer match MODEL_DATA (killed while WSClean or a later
        # call rewrote it): a step that runs makes its images afresh.
        st.data["images_done"] = {}
        self.upstream_ran = True
        if st.get("attempts"):
            records.note_step(st.data["attempts"][-1], step)
        st.start(step, h)
        log.info("%s: step %s", ctx.name, step)
        t0 = time.monotonic()
        out = func(ctx)
        status, info = out if isinstance(out, tuple) else ("done", out or {})
        info["seconds"] = round(time.monotonic() - t0, 2)
        st.finish(step, status, **info)


def run_steps(ctx: Context) -> None:
    """Execute the configured steps (with the ladder extension before ap1)."""
    cfg, st = ctx.cfg, ctx.state
    order = registry.steps_for(cfg.steps, joint=len(ctx.ebs) > 1)
    try:
        _run_order(ctx, order)
    except _WorkMSMissing as exc:
        # work.ms is deleted after success; a finished dataset whose steps are all still
        # valid must not redo anything, but a step that has to run needs a new copy.
        why = f"step {exc} must run but work.ms was removed after success: redoing from startup"
        log.warning("%s: %s", ctx.name, why)
        # The campaign console prints it (campaign.progress.new_notices): not only pipeline.log.
        st.data.setdefault("notices", []).append({"time": time.time(), "text": why})
        st.invalidate_from(list(st.steps), next(iter(st.steps)))
        _run_order(ctx, order)


def _run_order(ctx: Context, order: list[str]) -> None:
    runner = _Runner(ctx)
    phase = [s for s in order if registry.is_phase(s)]
    amplitude = [s for s in order if registry.is_ladder(s) and not registry.is_phase(s)]
    for step in order:
        if amplitude and step == amplitude[0]:
            _run_extensions(ctx, runner)  # shorter phase steps before the first amplitude step
        if registry.is_ladder(step):
            runner.run(step, lambda c, s=step: _calibration_step(c, s))
        else:
            runner.run(step, registry.function(step))
        if phase and step == phase[-1] and not amplitude:
            _run_extensions(ctx, runner)


def _calibration_step(ctx: Context, step: str) -> Any:
    if not registry.is_phase(step) and ctx.state.get("chain") and ctx.cfg.keep_work_ms:
        # The phase-only calibrated copy (seed: <ms>_p_trial_1.ms) is only kept with the
        # working files; otherwise it would be deleted unread at the end of the run.
        steps_final.split_before_ap1(ctx)
    return registry.function(step)(ctx, step)


def _run_extensions(ctx: Context, runner: _Runner) -> None:
    """Shorter phase steps after the template's ladder, while each passes the gate."""
    st = ctx.state
    template = st.get("template_final")
    if not template:
        return
    phase = [s for s in ladder.ladder_for(template) if registry.is_phase(s)]
    last = phase[-1] if phase else None
    if last is None or st.steps.get(last, {}).get("status") != "done":
        return
    done_ext = list(st.get("extensions", {}))
    i = 0
    while True:
        if i < len(done_ext):
            name = done_ext[i]
        else:
            name = extension.plan_extension(ctx, last)
            if name is None:
                break
        runner.run(name, lambda c, s=name: registry.function(s)(c, s))
        rec = st.steps.get(name, {})
        if not rec.get("accepted"):
            break
        last = name
        i += 1


def build_result(ctx: Context, status: str, error: str, wall: float, timing: dict[str, float]) -> DatasetResult:
    """Collect the DatasetResult from the state."""
    st = ctx.state
    res = DatasetResult(name=ctx.name, ms=str(ctx.ms), status=status, error=error, wall_s=round(wall, 2))
    res.reason = (st.get("outcome") or {}).get("reason", "") if status in outcome.SUCCESS_STATUSES else ""
    res.guard = dict(st.get("guard") or {})
    res.template_initial = st.get("template_initial") or ""
    res.template_final = st.get("template_final") or ""
    for step, rec in st.steps.items():
        if not registry.is_ladder(step):
            continue
        if rec.get("status") == "done":
            res.steps_run.append(step)
            (res.steps_accepted if rec.get("accepted") else res.steps_reverted).append(step)
        elif rec.get("status") == "skipped":
            res.steps_skipped.append(step)
        res.decisions[step] = {k: rec.get(k) for k in DECISION_KEYS if rec.get(k) not in (None, "")}
    init = (st.get("initial") or st.get("test_image") or {}).get("stats") or {}
    fin = (st.get("final") or {}).get("stats") or {}
    for suffix, s in (("initial", init), ("final", fin)):
        setattr(res, f"snr_{suffix}", float_or_nan(s.get("snr")))
        setattr(res, f"dr_{suffix}", float_or_nan(s.get("dynamic_range")))
        setattr(res, f"rms_{suffix}", float_or_nan(s.get("rms_offsource")))
        setattr(res, f"peak_{suffix}", float_or_nan(s.get("peak")))
        setattr(res, f"total_flux_{suffix}", float_or_nan(s.get("total_flux_mask")))
    if "total_flux_like_final" in (st.get("initial") or {}):  # same mask threshold as the final
        res.total_flux_initial = float_or_nan(st.get("initial")["total_flux_like_final"])
    if ctx.final_ms.exists():
        res.final_ms = str(ctx.final_ms)
    res.reason = res.reason or outcome.undelivered_reason(
        status, [registry.canonical(s) for s in ctx.cfg.steps], bool(res.final_ms))
    if (ctx.root / FINAL_IMAGE).exists():
        res.final_image = str(ctx.root / FINAL_IMAGE)
    res.ebs = eb_rows(st.data)
    res.wsclean_runs = int(st.get("wsclean_runs", 0))
    res.thermal_noise_jy = float(ctx.info.get("thermal_noise_jy") or math.nan)
    res.wsclean_predicts = int(st.get("wsclean_predicts", 0))
    res.time_wsclean_s = round(timing.get("wsclean", 0.0), 2)
    res.time_casa_s = round(timing.get("casa", 0.0), 2)
    res.time_core_wait_s = round(timing.get(process.CORE_WAIT, 0.0), 2)
    res.time_python_s = round(records.python_seconds(wall, res.time_wsclean_s, res.time_casa_s,
                                                     res.time_core_wait_s), 2)
    attempts = st.get("attempts")
    if isinstance(attempts, list) and attempts:
        # Summed over attempts: a resume or a no-op rerun never loses earlier costs.
        for k, v in records.summed(attempts).items():
            setattr(res, k, v)
        res.attempts = copy.deepcopy(attempts)
    return res


def _worker_id() -> str:
    """The Dask worker's address when running in one, else this process id."""
    if "distributed" in sys.modules:
        try:
            return str(sys.modules["distributed"].get_worker().address)
        except Exception:  # noqa: BLE001  (not inside a worker)
            pass
    return f"pid {os.getpid()}"


def _prior_attempts(path: Path) -> list[dict[str, Any]]:
    """The attempt records of an existing state.json ([] when unreadable or of another version)."""
    try:
        return DatasetState.load(path).data.get("attempts") or []
    except StateVersionError:
        return []


def _open_attempt(st: DatasetState, prior: list[dict[str, Any]], t0: float,
                  rec: process.ToolRecorder, alive: str | None = None) -> dict[str, Any]:
    """Append this attempt to the state's records; its costs are refreshed at every save.
    ``alive``: the last log write before this attempt (:func:`records.last_write`)."""
    attempts = records.start_attempt(prior or st.get("attempts") or [], records.utc_now(),
                                     socket.gethostname(), _worker_id(), _stopped_runs(st.path.parent), alive)
    st.set("attempts", attempts)
    att = attempts[-1]
    runs0 = int(st.get("wsclean_runs", 0) or 0)

    def costs(data: dict[str, Any]) -> None:
        records.set_costs(att, wall=time.monotonic() - t0,
                          wsclean=rec.seconds.get("wsclean", 0.0), casa=rec.seconds.get("casa", 0.0),
                          core_wait=rec.seconds.get(process.CORE_WAIT, 0.0),
                          wsclean_runs=int(data.get("wsclean_runs", 0) or 0) - runs0, seen=records.utc_now())

    st.on_save = costs
    return att


def _stopped_runs(root: Path) -> list[tuple[str, str | None]]:
    """Runs of the campaign owning the dataset directory ``root`` (``<out>/datasets/<name>``)
    that the user stopped (:func:`records.stopped_runs`); [] without a campaign.json."""
    try:
        return records.stopped_runs(json.loads((Path(root).parent.parent / "campaign.json").read_text()))
    except (OSError, ValueError):
        return []


def _disk_full(where: Path | None) -> bool:
    """True when the file system of ``where`` has (almost) no space left."""
    if where is None:
        return False
    try:
        return shutil.disk_usage(where).free < 1 << 20
    except OSError:
        return False


def _one_line(exc: BaseException, step: str, where: Path | None = None) -> str:
    text = exc.problem if isinstance(exc, DatasetError) else str(exc)
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in text:
        # Also when a tool (CASA) died of it: say so, not "child died (SIGABRT)".
        target = getattr(exc, "filename", None) or where or ""
        return f"{step}: disk full (no space left on device) writing {target}".strip()
    if isinstance(exc, ToolError) and _disk_full(where):
        # WSClean reports ENOSPC as e.g. "Error writing to temporary weights file".
        return f"{step}: disk full (no space left on device) under {where}: {exc.tool} failed"
    msg = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if isinstance(exc, SelfcalBatchError):
        return f"{step}: {msg}"
    return f"{step}: internal error {type(exc).__name__}: {msg}"


def run_dataset(
    name: str,
    ms: str | Path,
    config: PipelineConfig,
    out_dir: str | Path,
    *,
    threads: int | None = None,
    restart: bool = False,
    restart_from: str | None = None,
    ebs: list[str] | tuple[str | Path, ...] | None = None,
    notes: list[str] | None = None,
) -> DatasetResult:
    """Self-calibrate one MS (or ``ebs``: joint EBs of one target, ``ms`` the first; steps_joint) into
    ``<out_dir>/datasets/<name>/``, ``notes`` (campaign warnings) logged and kept; never raises."""
    eb_paths = tuple(Path(p).resolve() for p in ebs) if ebs and len(ebs) > 1 else ()
    t0 = time.monotonic()
    root = Path(out_dir).resolve() / "datasets" / name
    ms_path = Path(ms).resolve()
    if ms_path == root or root in ms_path.parents or ms_path in root.parents:
        # restart (rmtree), startup (removes work.ms) or any output would touch the input.
        problem = (f"output directory {root} is inside the input MS {ms_path}" if ms_path in root.parents
                   else f"input MS {ms_path} is inside the dataset's output directory {root}")
        return DatasetResult(name=name, ms=str(ms), status="failed",
                             error=f"setup: {problem}: refusing to run (the input must never be modified)")
    prior: list[dict[str, Any]] = []
    alive = records.last_write(root / "logs")  # before this attempt writes: a killed one's end
    if not restart and (why := _inputs_change(root / "state.json", ms_path, eb_paths, config)):
        # The campaign (and run-one) print the one-MS line on the console before the dataset starts.
        log.warning("%s: %s (input %s)", name, why, ms_path, extra={"console": False})
        restart = True
    try:
        if restart and root.exists():
            # From scratch: the records of earlier attempts are kept, marked discarded (not summed).
            prior = records.discard(_prior_attempts(root / "state.json"), _stopped_runs(root))
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        # A previous run's result must not outlive this run if its own cannot be written
        # (disk full): a stale 'finished' would hide the failure.
        (root / RESULT_JSON).unlink(missing_ok=True)
        # Only this dataset's lines, also when a worker process runs several at once.
        handler = dataset_handler(root / "logs" / "pipeline.log", name)
    except OSError as exc:
        return DatasetResult(name=name, ms=str(ms), status="failed", error=_one_line(exc, "setup", root),
                             wall_s=round(time.monotonic() - t0, 2))
    pkg_log = _bind_log(handler)
    try:
        with in_dataset(name), process.recording(root / "logs" / "tools.jsonl") as rec:
            for note in notes or []:
                log.warning("%s: %s", name, note, extra={"console": False})
            res = _attempt(name, ms, config, root, t0, rec, prior, threads, restart_from, eb_paths, alive)
    finally:
        pkg_log.removeHandler(handler)
        handler.close()
    res.eb_paths, res.notes = [str(p) for p in eb_paths], list(notes or [])
    try:
        atomic_write_json(root / RESULT_JSON, res.to_dict())
    except OSError as exc:
        log.error("%s: cannot write result.json: %s", name, exc)
    return res


def _bind_log(handler: logging.Handler) -> logging.Logger:
    """The package logger with the dataset's ``handler`` added (INFO at least)."""
    (pkg_log := logging.getLogger("selfcal_batch")).addHandler(handler)
    pkg_log.setLevel(min(pkg_log.level or logging.INFO, logging.INFO))
    return pkg_log


def _attempt(name: str, ms: str | Path, config: PipelineConfig, root: Path, t0: float,
             rec: process.ToolRecorder, prior: list[dict[str, Any]], threads: int | None,
             restart_from: str | None, ebs: tuple[Path, ...] = (), alive: str | None = None) -> DatasetResult:
    """One attempt at a dataset (log handler and tool recorder already bound)."""
    ctx: Context | None = None
    attempt: dict[str, Any] | None = None
    status, error, step = "finished", "", "setup"
    try:
        ctx = Context(name=name, ms=Path(ms).resolve(), cfg=config, root=root,
                      threads=threads or config.threads, ebs=ebs)
        rec.step_of = lambda: str(ctx.state.data.get("current_step") or "") if ctx else ""
        attempt = _open_attempt(ctx.state, prior, t0, rec, alive)
        ctx.state.set("config", config.to_dict())
        ctx.state.set("name", name)
        ctx.state.set("ms", str(Path(ms).resolve()))
        ctx.state.set("status", "running")
        ctx.state.set("error", "")
        if restart_from:
            _invalidate_from(ctx, registry.canonical(restart_from))
        ctx.state.set("input_fingerprint", input_fingerprint(ctx.ms))
        if ebs:
            ctx.state.set("eb_fingerprints", {str(p): input_fingerprint(p) for p in ebs})
        ctx.state.save()
        try:
            run_steps(ctx)
        finally:
            ctx.close()  # the dataset's CASA child
    except KeyboardInterrupt:
        if ctx is not None and attempt is not None:
            records.finish_attempt(attempt, "interrupted", records.STOPPED_WHY, records.utc_now())
            ctx.state.set("status", "interrupted")
            ctx.state.set("error", records.STOPPED_WHY)
            try:
                ctx.state.save()
            except OSError:
                pass
        raise
    except BaseException as exc:  # noqa: BLE001  (reported as the dataset's failure)
        step = ctx.state.get("current_step") or step if ctx else step
        status, error = "failed", _one_line(exc, step, root)
        # The traceback goes to the dataset's pipeline.log only: the console (run-one's summary
        # table, the campaign's progress) shows the one-line error.
        log.error("%s: FAILED: %s\n%s", name, error, traceback.format_exc(), extra={"console": False})
        if isinstance(exc, SystemExit):
            raise
    timing = {k: rec.seconds.get(k, 0.0) for k in ("wsclean", "casa", process.CORE_WAIT)}
    wall = time.monotonic() - t0
    if ctx is None:
        return DatasetResult(name=name, ms=str(ms), status=status, error=error, wall_s=round(wall, 2))
    return _close_attempt(ctx, attempt, status, error, wall, timing)


def input_change(state_json: Path, ms: Path, first_step: str) -> str:
    """``""``, or the line saying that the input MS changed since the run recorded in
    ``state_json`` (:func:`restart.input_change_message`): the MS at this path was replaced,
    rewritten or had a sub-table changed, and step hashes (which hold the path, not the data)
    would wrongly keep every finished step. Outputs of earlier versions (no fingerprint
    recorded) are trusted; an unreadable state.json is no record."""
    try:
        state = json.loads(Path(state_json).read_text())
    except (OSError, ValueError):
        return ""
    return restart_plan.input_change_message(state, input_fingerprint(ms), first_step)


def _inputs_change(state_json: Path, ms: Path, ebs: tuple[Path, ...], config: PipelineConfig) -> str:
    """Why the recorded run no longer matches its input(s), or ``""``: :func:`eb_change` first
    (a reordered list is said so, tester s7 #11), then :func:`input_change`."""
    first = (config.steps or ("startup",))[0]
    return eb_change(state_json, ebs, first) or input_change(state_json, ms, first)


def eb_change(state_json: Path, ebs: tuple[Path, ...], first_step: str = "startup") -> str:
    """Joint EBs: :func:`restart.eb_change_message` for the recorded state, or ``""``."""
    if not ebs:
        return ""
    try:
        state = json.loads(Path(state_json).read_text())
    except (OSError, ValueError):
        return ""
    return restart_plan.eb_change_message(state, {str(p): input_fingerprint(p) for p in ebs}, first_step)


def _invalidate_from(ctx: Context, step: str) -> None:
    """--restart-from: log what is redone and forget ``step`` and the steps after it."""
    log.info("%s: --restart-from %s: %s", ctx.name, step,
             restart_plan.describe(restart_plan.plan_from_state(ctx.state.data, step, ctx.work_ms.exists(),
                                                                ctx.cfg.keep_work_ms)))
    keys = list(ctx.state.steps)
    if step in keys:
        ctx.state.invalidate_from(keys, step)


def _close_attempt(ctx: Context, attempt: dict[str, Any] | None, status: str, error: str, wall: float,
                   timing: dict[str, float]) -> DatasetResult:
    """Final status (honest outcome), clean-up after success, state saved, the result built."""
    root = ctx.root
    status = outcome.final_status(ctx.state.get("outcome"), status)[0]
    if status in outcome.SUCCESS_STATUSES:
        ctx.state.set("current_step", "")
        if not ctx.cfg.keep_work_ms:
            ctx.remove(ctx.work_ms, Path(str(ctx.work_ms) + ".flagversions"), ctx.root / "phase_only.ms")
            # Without work.ms any restart redoes everything: no model will be predicted again.
            prune_finished(ctx.root / "images", ctx.cfg.keep_products)
            compress_finished(ctx.root, ctx.cfg.keep_products)
    ctx.state.set("status", status)
    ctx.state.set("error", error)
    if attempt is not None:
        records.finish_attempt(attempt, status, error, records.utc_now())
    try:
        ctx.state.save()
    except OSError as exc:  # e.g. the disk filled up: the result must still be returned
        log.error("%s: cannot write state.json: %s", ctx.name, exc)
        if status in outcome.SUCCESS_STATUSES:
            status, error = "failed", _one_line(exc, "finish", root)
            if attempt is not None:
                records.finish_attempt(attempt, status, error, records.utc_now())
    return build_result(ctx, status, error, wall, timing)

