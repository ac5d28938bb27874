"""The per-dataset pipeline: a step machine with its state on disk.

``run_dataset`` never raises for a problem with the data or a tool: it returns a
``DatasetResult`` with status ``failed`` and a one-line reason (full traceback in
``logs/pipeline.log``). Finished steps whose inputs are unchanged are skipped, so a
crashed or killed run resumes where it stopped.
"""
from __future__ import annotations

import copy
import dataclasses
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from selfcal_batch.pipeline import ladder
from selfcal_batch.selfcal import outcome
from selfcal_batch import process
from selfcal_batch.pipeline import records
from selfcal_batch.pipeline import steps_finish as steps_final
from selfcal_batch.pipeline import steps_prepare as steps_prep
from selfcal_batch.pipeline import restart as restart_plan
from selfcal_batch.config import STEP_ALIASES, STEP_NAMES, PipelineConfig
from selfcal_batch.pipeline.context import Context
from selfcal_batch.pipeline.dataset_log import dataset_handler, in_dataset
from selfcal_batch.pipeline.products import prune_finished
from selfcal_batch.errors import SelfcalBatchError
from selfcal_batch.pipeline.state import DatasetState, atomic_write_json, chain_hash
from selfcal_batch.selfcal.templates import TEMPLATE_TABLE_VERSION

log = logging.getLogger("selfcal_batch.pipeline")

LADDER_KEYS = ("instrument", "band", "imsize", "cell", "pixels_per_beam", "channels_out", "niter", "templates",
               "force_template", "template_thresholds_mjy", "gate", "solint", "ladder_imaging", "calwt",
               "refantmode", "wsclean", "allow_negative", "solnorm_amplitude", "solnorm_type", "ladder_economy")
DEPENDS: dict[str, tuple[str, ...]] = {
    "startup": ("field", "spw", "timebin", "chanbin", "input_column"),
    "save_init_flags": ("statwt_init",),
    "fov_image": ("instrument", "band", "imsize", "cell", "pixels_per_beam", "wsclean"),
    "run_rflag_init": (),
    "test_image": ("instrument", "band", "imsize", "cell", "pixels_per_beam", "channels_out", "test_robust", "test_uvtaper",
                   "test_imaging", "final_robust", "final_multiscale", "final_niter", "force_template",
                   "template_thresholds_mjy", "wsclean", "allow_negative", "detection_sigma",
                   "decorrelation_limit"),
    "select_refant": ("refant", "refantmode", "flag_bad_antennas", "guard"),
    "split_trial_1": ("statwt_final", "final_robust", "final_multiscale", "final_niter", "calwt", "guard"),
    "report_results": ("plots",),
    "run_rflag_final": (),
}
#: State entries a step may change and that are rolled back before re-running it.
SNAPSHOT_KEYS = ("chain", "current", "template_initial", "template_final", "ladder_stopped", "extensions",
                 "applied", "modified_robust", "test_image", "initial", "final", "outcome", "guard",
                 "ladder_economy")


@dataclass
class DatasetResult:
    """One dataset's outcome (written to ``result.json``; one row of datasets.csv).

    The cost fields (``wall_s``, ``time_*_s``, ``wsclean_runs``) are summed over every
    attempt that ran a step (:mod:`selfcal_batch.pipeline.records`); ``attempts`` lists every attempt.
    """

    name: str
    ms: str
    #: finished | unchanged | no_detection | needs_calibration | failed (outcome.ALL_STATUSES)
    status: str = "failed"
    error: str = ""
    #: Why the input was delivered unchanged (status unchanged / no_detection / needs_calibration).
    reason: str = ""
    template_initial: str = ""
    template_final: str = ""
    steps_run: list[str] = field(default_factory=list)
    steps_accepted: list[str] = field(default_factory=list)
    steps_reverted: list[str] = field(default_factory=list)
    steps_skipped: list[str] = field(default_factory=list)
    snr_initial: float = math.nan
    snr_final: float = math.nan
    dr_initial: float = math.nan
    dr_final: float = math.nan
    rms_initial: float = math.nan
    rms_final: float = math.nan
    peak_initial: float = math.nan
    peak_final: float = math.nan
    total_flux_initial: float = math.nan
    total_flux_final: float = math.nan
    wall_s: float = 0.0
    final_ms: str = ""
    final_image: str = ""
    wsclean_runs: int = 0
    #: Of those, predict-only runs (MODEL_DATA refilled from an earlier model after a revert).
    wsclean_predicts: int = 0
    time_wsclean_s: float = 0.0
    time_casa_s: float = 0.0
    time_python_s: float = 0.0
    #: Number of attempts on this dataset directory (also no-op resumes).
    n_attempts: int = 0
    decisions: dict[str, Any] = field(default_factory=dict)
    #: One record per attempt (records.py): start, end (UTC ISO), steps, exit, host, worker, costs.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: The final guard's verdict: deliver (bool), reason, changes {metric: [before, after, z]}.
    guard: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly mapping (NaN -> None)."""
        d = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def _step_func(step: str) -> Callable[[Context], Any]:
    table: dict[str, Callable[[Context], Any]] = {
        "startup": steps_prep.startup,
        "save_init_flags": steps_prep.save_init_flags,
        "fov_image": steps_prep.fov_image,
        "run_rflag_init": lambda c: steps_prep.run_rflag(c, final=False),
        "test_image": steps_prep.test_image,
        "select_refant": steps_prep.select_refant,
        "split_trial_1": steps_final.split_trial_1,
        "report_results": steps_final.report_results,
        "run_rflag_final": steps_final.run_rflag_final,
    }
    return table[step]


#: Settings the test image depends on only when it uses the final-image settings.
_FINAL_IMAGING_KEYS = ("final_robust", "final_multiscale", "final_niter")
#: Steps that do not read work.ms (every other step needs it).
_NO_WORK_MS = restart_plan.NO_WORK_MS


class _WorkMSMissing(Exception):
    """A step must run but work.ms was deleted after an earlier successful run."""


def _config_part(cfg: PipelineConfig, step: str) -> dict[str, Any]:
    keys = DEPENDS.get(step, LADDER_KEYS)
    if step == "test_image" and cfg.test_imaging != "final":
        # The seed-style test image does not use the final-image settings: changing them
        # must not redo the test image and the whole ladder after it.
        keys = tuple(k for k in keys if k not in _FINAL_IMAGING_KEYS)
    d = cfg.to_dict()
    return {k: d.get(k) for k in keys}


class _Runner:
    """Runs the requested steps in order, skipping finished ones."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.prev_hash = chain_hash("", "dataset", str(ctx.ms), TEMPLATE_TABLE_VERSION)
        self.upstream_ran = False

    def run(self, step: str, func: Callable[[Context], Any]) -> None:
        ctx, st = self.ctx, self.ctx.state
        h = chain_hash(self.prev_hash, step, _config_part(ctx.cfg, step))
        self.prev_hash = h
        if st.is_done(step, h) and not self.upstream_ran:
            return
        if step not in _NO_WORK_MS and "startup" in st.steps and not ctx.work_ms.exists():
            raise _WorkMSMissing(step)
        snaps = st.data.setdefault("snapshots", {})
        resumed = step in snaps and not self.upstream_ran
        # A resumed attempt restores the flags its first attempt saved; a fresh one saves anew.
        st.data["resuming"] = resumed
        if resumed:
            # Roll back to the state before this step's first attempt. Keys that did not
            # exist then are removed (restoring them as None breaks `st.get(k, default)`).
            for k in SNAPSHOT_KEYS:
                if k in snaps[step]:
                    st.data[k] = copy.deepcopy(snaps[step][k])
                else:
                    st.data.pop(k, None)
        else:
            snaps[step] = {k: copy.deepcopy(st.data[k]) for k in SNAPSHOT_KEYS if k in st.data}
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
    requested = [STEP_ALIASES.get(s, s) for s in cfg.steps]
    order = [s for s in STEP_NAMES if s in requested]
    try:
        _run_order(ctx, order)
    except _WorkMSMissing as exc:
        # work.ms is deleted after success; a finished dataset whose steps are all still
        # valid must not redo anything, but a step that has to run needs a new copy.
        log.warning("%s: step %s must run but work.ms was removed after success: redoing from startup",
                    ctx.name, exc)
        st.invalidate_from(list(st.steps), next(iter(st.steps)))
        _run_order(ctx, order)


def _run_order(ctx: Context, order: list[str]) -> None:
    runner = _Runner(ctx)
    last_phase = [s for s in order if ladder.is_phase(s)][-1:]
    for step in order:
        if step == "ap1":
            _run_extensions(ctx, runner)
        if step in ("p0", "p1", "p2", "ap1"):
            runner.run(step, lambda c, s=step: _calibration_step(c, s))
        else:
            runner.run(step, _step_func(step))
        if [step] == last_phase and "ap1" not in order:
            _run_extensions(ctx, runner)


def _calibration_step(ctx: Context, step: str) -> Any:
    if step == "ap1" and ctx.state.get("chain") and ctx.cfg.keep_work_ms:
        # The phase-only calibrated copy (seed: <ms>_p_trial_1.ms) is only kept with the
        # working files; otherwise it would be deleted unread at the end of the run.
        steps_final.split_before_ap1(ctx)
    return ladder.run_step(ctx, step)


def _run_extensions(ctx: Context, runner: _Runner) -> None:
    """Shorter phase steps after the template's ladder, while each passes the gate."""
    st = ctx.state
    template = st.get("template_final")
    if not template:
        return
    phase = [s for s in ladder.ladder_for(template) if ladder.is_phase(s)]
    last = phase[-1] if phase else None
    if last is None or st.steps.get(last, {}).get("status") != "done":
        return
    done_ext = list(st.get("extensions", {}))
    i = 0
    while True:
        if i < len(done_ext):
            name = done_ext[i]
        else:
            name = ladder.plan_extension(ctx, last)
            if name is None:
                break
        runner.run(name, lambda c, s=name: ladder.run_step(c, s))
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
        if not (ladder.is_phase(step) or step.startswith("ap")):
            continue
        if rec.get("status") == "done":
            res.steps_run.append(step)
            (res.steps_accepted if rec.get("accepted") else res.steps_reverted).append(step)
        elif rec.get("status") == "skipped":
            res.steps_skipped.append(step)
        res.decisions[step] = {k: rec.get(k) for k in ("status", "accepted", "reason", "solint", "combine",
                                                         "est_snr", "solint_reason", "flagged_solutions")
                               if rec.get(k) not in (None, "")}
    init = (st.get("initial") or st.get("test_image") or {}).get("stats") or {}
    fin = (st.get("final") or {}).get("stats") or {}
    for suffix, s in (("initial", init), ("final", fin)):
        setattr(res, f"snr_{suffix}", float(s.get("snr", math.nan)))
        setattr(res, f"dr_{suffix}", float(s.get("dynamic_range", math.nan)))
        setattr(res, f"rms_{suffix}", float(s.get("rms_offsource", math.nan)))
        setattr(res, f"peak_{suffix}", float(s.get("peak", math.nan)))
        setattr(res, f"total_flux_{suffix}", float(s.get("total_flux_mask", math.nan)))
    if ctx.final_ms.exists():
        res.final_ms = str(ctx.final_ms)
    if (ctx.root / "final-image.fits").exists():
        res.final_image = str(ctx.root / "final-image.fits")
    res.wsclean_runs = int(st.get("wsclean_runs", 0))
    res.wsclean_predicts = int(st.get("wsclean_predicts", 0))
    res.time_wsclean_s = round(timing.get("wsclean", 0.0), 2)
    res.time_casa_s = round(timing.get("casa", 0.0), 2)
    res.time_python_s = round(max(0.0, wall - res.time_wsclean_s - res.time_casa_s), 2)
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


def _open_attempt(st: DatasetState, prior: list[dict[str, Any]], t0: float,
                  rec: process.ToolRecorder) -> dict[str, Any]:
    """Append this attempt to the state's records; its costs are refreshed at every save."""
    attempts = records.start_attempt(prior or st.get("attempts") or [], records.utc_now(),
                                     socket.gethostname(), _worker_id())
    st.set("attempts", attempts)
    att = attempts[-1]
    runs0 = int(st.get("wsclean_runs", 0) or 0)

    def costs(data: dict[str, Any]) -> None:
        records.set_costs(att, wall=time.monotonic() - t0,
                          wsclean=rec.seconds.get("wsclean", 0.0), casa=rec.seconds.get("casa", 0.0),
                          wsclean_runs=int(data.get("wsclean_runs", 0) or 0) - runs0, seen=records.utc_now())

    st.on_save = costs
    return att


def _disk_full(where: Path | None) -> bool:
    """True when the file system of ``where`` has (almost) no space left."""
    if where is None:
        return False
    try:
        return shutil.disk_usage(where).free < 1 << 20
    except OSError:
        return False


def _one_line(exc: BaseException, step: str, where: Path | None = None) -> str:
    from selfcal_batch.errors import DatasetError, ToolError

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
) -> DatasetResult:
    """Self-calibrate one MS into ``<out_dir>/datasets/<name>/``; never raises for bad data."""
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
    try:
        if restart and root.exists():
            # From scratch: the records of earlier attempts are kept, marked discarded (not summed).
            prior = records.discard(DatasetState.load(root / "state.json").data.get("attempts") or [])
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        # A previous run's result must not outlive this run if its own cannot be written
        # (disk full): a stale 'finished' would hide the failure.
        (root / "result.json").unlink(missing_ok=True)
        # Only this dataset's lines, also when a worker process runs several at once.
        handler = dataset_handler(root / "logs" / "pipeline.log", name)
    except OSError as exc:
        return DatasetResult(name=name, ms=str(ms), status="failed", error=_one_line(exc, "setup", root),
                             wall_s=round(time.monotonic() - t0, 2))
    pkg_log = logging.getLogger("selfcal_batch")
    pkg_log.addHandler(handler)
    if pkg_log.level == logging.NOTSET or pkg_log.level > logging.INFO:
        pkg_log.setLevel(logging.INFO)
    try:
        with in_dataset(name), process.recording(root / "logs" / "tools.jsonl") as rec:
            res = _attempt(name, ms, config, root, t0, rec, prior, threads, restart_from)
    finally:
        pkg_log.removeHandler(handler)
        handler.close()
    try:
        atomic_write_json(root / "result.json", res.to_dict())
    except OSError as exc:
        log.error("%s: cannot write result.json: %s", name, exc)
    return res


def _attempt(name: str, ms: str | Path, config: PipelineConfig, root: Path, t0: float,
             rec: process.ToolRecorder, prior: list[dict[str, Any]], threads: int | None,
             restart_from: str | None) -> DatasetResult:
    """One attempt at a dataset (log handler and tool recorder already bound)."""
    ctx: Context | None = None
    attempt: dict[str, Any] | None = None
    status, error, step = "finished", "", "setup"
    try:
        ctx = Context(name=name, ms=Path(ms).resolve(), cfg=config, root=root,
                      threads=threads or config.threads)
        rec.step_of = lambda: str(ctx.state.data.get("current_step") or "") if ctx else ""
        attempt = _open_attempt(ctx.state, prior, t0, rec)
        ctx.state.set("config", config.to_dict())
        ctx.state.set("name", name)
        ctx.state.set("ms", str(Path(ms).resolve()))
        ctx.state.set("status", "running")
        ctx.state.set("error", "")
        if restart_from:
            restart_from = STEP_ALIASES.get(restart_from, restart_from)
            log.info("%s: --restart-from %s: %s", name, restart_from,
                     restart_plan.describe(restart_plan.plan_from_state(ctx.state.data, restart_from,
                                                              ctx.work_ms.exists(), config.keep_work_ms)))
            keys = list(ctx.state.steps)
            if restart_from in keys:
                ctx.state.invalidate_from(keys, restart_from)
        ctx.state.save()
        try:
            run_steps(ctx)
        finally:
            ctx.close()  # the dataset's CASA child
    except KeyboardInterrupt:
        if ctx is not None and attempt is not None:
            records.finish_attempt(attempt, "interrupted", "stopped (KeyboardInterrupt/SIGTERM)",
                                   records.utc_now())
            try:
                ctx.state.save()
            except OSError:
                pass
        raise
    except BaseException as exc:  # noqa: BLE001  (reported as the dataset's failure)
        step = ctx.state.get("current_step") or step if ctx else step
        status, error = "failed", _one_line(exc, step, root)
        log.error("%s: FAILED: %s\n%s", name, error, traceback.format_exc())
        if isinstance(exc, SystemExit):
            raise
    timing = {k: rec.seconds.get(k, 0.0) for k in ("wsclean", "casa")}
    wall = time.monotonic() - t0
    if ctx is None:
        res = DatasetResult(name=name, ms=str(ms), status=status, error=error, wall_s=round(wall, 2))
    else:
        status = outcome.final_status(ctx.state.get("outcome"), status)[0]
        if status in outcome.SUCCESS_STATUSES:
            ctx.state.set("current_step", "")
            if not ctx.cfg.keep_work_ms:
                ctx.remove(ctx.work_ms, Path(str(ctx.work_ms) + ".flagversions"), ctx.root / "phase_only.ms")
                # Without work.ms any restart redoes everything: no model will be predicted again.
                prune_finished(ctx.root / "images", ctx.cfg.keep_products)
        ctx.state.set("status", status)
        ctx.state.set("error", error)
        if attempt is not None:
            records.finish_attempt(attempt, status, error, records.utc_now())
        try:
            ctx.state.save()
        except OSError as exc:  # e.g. the disk filled up: the result must still be returned
            log.error("%s: cannot write state.json: %s", name, exc)
            if status in outcome.SUCCESS_STATUSES:
                status, error = "failed", _one_line(exc, "finish", root)
                if attempt is not None:
                    records.finish_attempt(attempt, status, error, records.utc_now())
        res = build_result(ctx, status, error, wall, timing)
    return res


def load_result(root: Path) -> dict[str, Any] | None:
    """Read a dataset's result.json (None if absent or unreadable)."""
    try:
        return json.loads((Path(root) / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
