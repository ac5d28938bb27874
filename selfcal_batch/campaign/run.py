"""Run a campaign: one Dask task per dataset, fault isolation, survey outputs.

Each dataset runs :func:`execute_dataset` in a worker process (which calls the pipeline
task, by default ``selfcal_batch.pipeline.runner:run_dataset``). A dataset that fails for any
reason (invalid manifest entry, pipeline failure, exception, worker death after the allowed
retries, a resource claim no worker can meet) becomes a ``failed`` row with a one-line
reason; every other dataset still runs. Outputs: ``<out>/campaign.json``,
``<out>/survey/datasets.csv``, ``<out>/campaign.log`` and the report (if available).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata as md
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from selfcal_batch import __version__
from selfcal_batch.campaign.cluster import (capacity, check_claims, dashboard_available, describe, make_client,
                                            resolve_cluster, warm_imports_plugin)
from selfcal_batch.campaign.dispatch import Dispatcher, _previous_row, _record_failure, _with_records
from selfcal_batch.campaign.lock import CampaignLock
from selfcal_batch.campaign.manifest import Campaign, DatasetSpec
# Re-exported: the CLI, the tests and older imports use these names from campaign.run.
from selfcal_batch.campaign.plan import (DEFAULT_TASK, RunOptions, _claim, check_restart_step,  # noqa: F401
                                         input_change_lines, input_check, plan_text, restart_lines)
from selfcal_batch.campaign.preflight import ensure_output_dir, output_inside_input
from selfcal_batch.campaign.progress import (ROW_FIELDS, CampaignProgress, banner_line, failed_row, fmt_duration,  # noqa: F401
                                             normalise_row, summary_table, write_survey_csv)
from selfcal_batch.campaign.worker import _now, attempts_path, count_deaths, execute_dataset  # noqa: F401
from selfcal_batch.errors import OutputDirError
from selfcal_batch.fileio import atomic_write_json
from selfcal_batch.pipeline import records
from selfcal_batch.selfcal.outcome import ALL_STATUSES
from selfcal_batch.contract import OUTPUT_SCHEMA_VERSION

log = logging.getLogger(__name__)


@dataclass
class CampaignOutcome:
    """What a run produced."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path | None = None
    interrupted: bool = False
    #: Datasets rejected before anything ran (manifest entry, resource claim, input check).
    n_invalid: int = 0

    @property
    def n_failed(self) -> int:
        return sum(1 for r in self.rows if r.get("status") == "failed")

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.n_invalid:
            return 2
        return 1 if self.n_failed else 0


# ----------------------------------------------------------------------------------------
# versions


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def collect_versions(wsclean_binary: str = "wsclean", log_dir: Path | None = None) -> dict[str, Any]:
    """Versions of everything that shapes the results (casatools is never imported here)."""
    # Dask only when a campaign runs (the dry run and `--help` stay light).
    import dask
    import distributed  # (same reason)

    out: dict[str, Any] = {
        "selfcal-batch": __version__, "python": sys.version.split()[0],
        "dask": dask.__version__, "distributed": distributed.__version__,
        "casatasks": _version("casatasks"), "casatools": _version("casatools"),
        "python-casacore": _version("python-casacore"), "dask-jobqueue": _version("dask-jobqueue"),
    }
    try:
        from selfcal_batch.process import run_tool  # inside the try: its failure must not stop the record

        res = run_tool([wsclean_binary, "-version"], tool="wsclean",
                       log_path=log_dir / "versions.log" if log_dir else Path(os.devnull),
                       timeout=60, check=False, category="version")
        first = next((ln.strip() for ln in res.tail.splitlines() if ln.strip()), "")
        out["wsclean"] = first or None
    except Exception as exc:  # a missing binary must not stop the campaign record
        out["wsclean"] = f"unavailable ({' '.join(str(exc).split())})"
    return out


# ----------------------------------------------------------------------------------------
# the run


class _Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. the batch system cancelling the campaign job)."""


def run_campaign(campaign: Campaign, opts: RunOptions, console: Console | None = None) -> CampaignOutcome:
    """Run (the selected datasets of) a campaign; never raises for a dataset's failure."""
    console = console or Console()
    check_restart_step(opts)
    selected = campaign.select(opts.only)
    out_dir = selected.output_dir
    spec = resolve_cluster(selected.cluster, default_threads=selected.base_config.threads,
                           workers=opts.workers, threads_per_dataset=opts.threads_per_dataset,
                           scheduler_address=opts.scheduler_address, n_datasets=len(selected.datasets))
    outcome = CampaignOutcome(out_dir=out_dir)
    if problem := output_inside_input(out_dir, [p for d in selected.datasets for p in d.inputs]):
        raise OutputDirError(problem)  # before anything is written there
    ensure_output_dir(out_dir)  # one line (OutputDirError), never a traceback
    with CampaignLock(out_dir, selected.name):
        handlers = _add_log_file(out_dir / "campaign.log")
        old_term = _install_sigterm()
        try:
            _run_locked(campaign, selected, spec, opts, console, outcome)
        finally:
            _restore_sigterm(old_term)
            for lg, h in handlers:
                lg.removeHandler(h)
                h.close()
    return outcome


def stopped_row(out_dir: Path, d: DatasetSpec, since: float) -> dict[str, Any]:
    """The row of a dataset the campaign stopped (Ctrl-C / SIGTERM): ``interrupted`` when its
    state.json was written since ``since`` (epoch s: it ran in this campaign run), else
    ``not_started``. Rerunning the same command resumes either."""
    try:
        ran = (out_dir / "datasets" / d.name / "state.json").stat().st_mtime >= since
    except OSError:
        ran = False
    row = failed_row(d.name, d.ms, "interrupted while running (campaign stopped); rerun to resume" if ran
                     else "not started (campaign stopped before it ran)")
    row["status"] = "interrupted" if ran else "not_started"
    return row


def resolved_thresholds(campaign: Campaign) -> dict[str, Any]:
    """Template thresholds (mJy) after the manifest is resolved: ``defaults`` and per dataset."""
    return {"defaults": list(campaign.base_config.template_thresholds_mjy),
            "datasets": {d.name: list(d.config.template_thresholds_mjy)
                         for d in campaign.datasets if d.config is not None}}


def _run_locked(campaign: Campaign, selected: Campaign, spec: Any, opts: RunOptions,
                console: Console, outcome: CampaignOutcome) -> None:
    out_dir = selected.output_dir
    started = _now()
    t_start = time.monotonic()
    t_start_wall = time.time()
    try:
        runs = records.campaign_runs(json.loads((out_dir / "campaign.json").read_text()))
    except (OSError, ValueError):
        runs = []
    log.info("campaign %s: %d dataset(s) -> %s; %s", selected.name, len(selected.datasets),
             out_dir, describe(spec))
    for where, why in campaign.skipped_targets:
        log.warning("target expansion skipped %s: %s", where, why)
    for d in selected.datasets:
        for note in d.notes:
            log.warning("%s: %s", d.name, note)
    record: dict[str, Any] = {
        "campaign": selected.name, "manifest": str(selected.path), "output_dir": str(out_dir),
        "status": "running", "started": started, "finished": None, "host": socket.gethostname(),
        "pid": os.getpid(), "argv": sys.argv,
        "options": dataclasses.asdict(opts),
        "cluster": {"description": describe(spec), **dataclasses.asdict(spec)},
        "versions": collect_versions(selected.base_config.wsclean.binary, out_dir / "logs"),
        "manifest_resolved": campaign.to_dict(),
        # The output contract's version and the resolved template thresholds (mJy) the report marks.
        "output_schema": OUTPUT_SCHEMA_VERSION,
        "template_thresholds_mjy": resolved_thresholds(selected),
        # Every run of the campaign in this directory (this one last): started, finished, status,
        # elapsed_s. "started"/"finished" above are this run's; the report sums the runs.
        "runs": [*runs, {"started": started, "finished": None, "status": "running", "elapsed_s": None}],
    }
    atomic_write_json(out_dir / "campaign.json", record)
    rows: dict[str, dict[str, Any]] = {}
    progress: CampaignProgress | None = None
    try:
        # Before the cluster starts: the input check (no casacore on the inputs themselves)
        # and what --restart-from will redo.
        inputs = input_check(selected, opts)
        # A changed input redoes the dataset from its first step, --restart-from or not.
        restarts = restart_lines(selected, opts)
        changes = input_change_lines(selected, opts)
        with make_client(spec, out_dir=out_dir) as client:
            try:
                client.register_plugin(warm_imports_plugin())
            except Exception as exc:  # noqa: BLE001  (an optimisation only)
                log.warning("could not register the warm-up worker plugin: %s", exc)
            link = getattr(client, "dashboard_link", None) if spec.dashboard else None
            if link and dashboard_available():
                console.print(f"Dask dashboard: {link}", markup=False, highlight=False)
                record["dashboard"] = link
            max_cores, slots = capacity(spec, client)
            claims = {d.name: _claim(d, spec.threads_per_dataset, opts.threads_per_dataset)
                      for d in selected.datasets if d.ok}
            problems = check_claims(claims, max_cores, "the cluster")
            n_steps = max((len(d.config.steps) for d in selected.datasets if d.config is not None), default=0)
            progress = CampaignProgress(out_dir, [d.name for d in selected.datasets], slots=slots,
                                        quiet=opts.quiet, console=console, title=selected.name,
                                        steps_per_dataset=n_steps)
            console.print(banner_line(selected.name, len(selected.datasets), out_dir, describe(spec), started),
                          markup=False, highlight=False, soft_wrap=True)
            for name in dict.fromkeys([*restarts, *changes]):
                if name not in inputs and name not in problems:
                    why = changes.get(name) or restarts[name]
                    console.print(f"{name}: {why}", markup=False, highlight=False, soft_wrap=True)
                    log.info("%s: %s", name, why if name in changes else f"--restart-from {opts.restart_from}: {why}",
                             extra={"console": False})
            with progress:
                todo = []
                for d in selected.datasets:
                    found = inputs.get(d.name, [])
                    reason = d.error or problems.get(d.name, "") or "; ".join(found)
                    if reason:
                        outcome.n_invalid += 1
                        row = failed_row(d.name, d.ms, reason)
                        rows[d.name] = row
                        _record_failure(out_dir, row, "\n".join(found))
                        log.error("%s: %s", d.name, reason, extra={"console": False})
                        progress.finished(row)
                    else:
                        todo.append(d)
                Dispatcher(client, spec, opts, out_dir, progress, rows, claims, slots).run(todo)
    except KeyboardInterrupt:
        outcome.interrupted = True
        log.error("campaign interrupted")
        # Open attempts that started in this run (or an earlier stopped one) were stopped by
        # the user, not killed or crashed.
        stopped = [*records.stopped_runs({"runs": record["runs"][:-1]}), (started, None)]
        for d in selected.datasets:
            if d.name not in rows:
                rows[d.name] = _with_records(out_dir, stopped_row(out_dir, d, t_start_wall), stopped)
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        raise
    finally:
        ordered = [rows[d.name] for d in selected.datasets if d.name in rows]
        outcome.rows = ordered
        all_rows = []
        for d in campaign.datasets:  # keep earlier results of datasets not run now (--only)
            if d.name in rows:
                all_rows.append(rows[d.name])
            elif (prev := _previous_row(out_dir, d)) is not None:
                all_rows.append(prev)
        write_survey_csv(all_rows, out_dir / "survey" / "datasets.csv")
        counts = {s: sum(1 for r in ordered if r.get("status") == s) for s in ALL_STATUSES}
        status = "interrupted" if outcome.interrupted else ("failed" if counts["failed"] else "finished")
        record.update(status="error" if record.get("error") else status,
                      finished=_now(), counts=counts, survey_csv=str(out_dir / "survey" / "datasets.csv"),
                      elapsed_s=round(time.monotonic() - t_start, 2))
        record["runs"][-1].update(finished=record["finished"], status=record["status"],
                                  elapsed_s=record["elapsed_s"])
        atomic_write_json(out_dir / "campaign.json", record)
    console.print(summary_table(ordered, title=f"Campaign {selected.name}: "
                                + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("finished", "failed"))))
    summed_s = sum(float(r.get("wall_s") or 0.0) for r in ordered)
    console.print(f"campaign elapsed {fmt_duration(record.get('elapsed_s'))}; summed dataset time "
                  f"{fmt_duration(summed_s)} (every attempt of the {len(ordered)} dataset(s) run now)",
                  markup=False, highlight=False)
    _build_report(out_dir, console)
    if counts["failed"]:
        console.print(f"{counts['failed']} dataset(s) failed; logs in {out_dir / 'datasets'}/<name>/logs",
                      markup=False, highlight=False)


def _build_report(out_dir: Path, console: Console) -> None:
    """Call ``selfcal_batch.report.build_report(out)`` if available; never fails the run."""
    try:
        from selfcal_batch.report import build_report  # optional: a missing report layer only logs
    except ImportError as exc:
        log.info("report not built: %s", exc)
        return
    try:
        res = build_report(out_dir)
        console.print(f"report: {res}" if res else f"report written under {out_dir}",
                      markup=False, highlight=False)
    except Exception as exc:  # noqa: BLE001 - a report failure must not fail the campaign
        log.exception("report failed")
        console.print(f"warning: the report failed: {type(exc).__name__}: {exc}",
                      markup=False, highlight=False)


def _add_log_file(path: Path) -> list[tuple[logging.Logger, logging.Handler]]:
    """Attach ``campaign.log`` (INFO of selfcal_batch, WARNING of distributed).

    Separate handler objects: LocalCluster(silence_logs=...) re-levels every StreamHandler
    (FileHandler included) attached to the ``distributed`` logger.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    attached = []
    for name, level in (("selfcal_batch", logging.INFO), ("distributed", logging.WARNING)):
        h = logging.FileHandler(path)
        h.setFormatter(fmt)
        h.setLevel(level)
        lg = logging.getLogger(name)
        lg.addHandler(h)
        if lg.level == logging.NOTSET or lg.level > level:
            lg.setLevel(level)
        attached.append((lg, h))
    return attached


def _install_sigterm() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None

    def _raise(signum: int, frame: Any) -> None:
        raise _Terminated()

    return signal.signal(signal.SIGTERM, _raise)


def _restore_sigterm(old: Any) -> None:
    if old is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, old)
