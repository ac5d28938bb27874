"""Run a campaign: one Dask task per dataset, fault isolation, survey outputs.

Each dataset runs :func:`execute_dataset` in a worker process (which calls the pipeline
task, by default ``selfcal_batch.pipeline.runner:run_dataset``). A dataset that fails for any
reason (invalid manifest entry, pipeline failure, exception, worker death after the allowed
retries, a resource claim no worker can meet) becomes a ``failed`` row with a one-line
reason; every other dataset still runs. Outputs: ``<out>/campaign.json``,
``<out>/survey/datasets.csv``, ``<out>/campaign.log`` and the report (if available).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import importlib
import importlib.metadata as md
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from selfcal_batch import __version__
from selfcal_batch.pipeline import records
from selfcal_batch.selfcal.outcome import ALL_STATUSES
from selfcal_batch.campaign.cluster import (capacity, check_claims, dashboard_available, describe, make_client,
                      render_job_script, resolve_cluster, warm_imports_plugin)
from selfcal_batch.config import STEP_ALIASES, STEP_NAMES
from selfcal_batch.errors import ConfigError, DatasetError, OutputDirError, SimulationError
from selfcal_batch.campaign.lock import CampaignLock
from selfcal_batch.campaign.preflight import (dataset_input_problems, ensure_output_dir, output_dir_problem, output_inside_input,
                        restart_messages)
from selfcal_batch.campaign.manifest import Campaign, DatasetSpec, build_sim_spec
from selfcal_batch.campaign.jobpool import JobPoolHealer
from selfcal_batch.campaign.progress import (ROW_FIELDS, CampaignProgress, banner_line, failed_row, fmt_duration, normalise_row,  # noqa: F401
                       summary_table, write_survey_csv)

log = logging.getLogger(__name__)
DEFAULT_TASK = "selfcal_batch.pipeline.runner:run_dataset"


@dataclass(frozen=True)
class RunOptions:
    """Command-line choices for one campaign run."""

    workers: int | None = None
    threads_per_dataset: int | None = None
    scheduler_address: str | None = None
    only: tuple[str, ...] = ()
    restart: bool = False
    restart_from: str | None = None
    quiet: bool = False
    task: str = DEFAULT_TASK


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
# worker side


def import_task(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function."""
    mod, _, attr = path.partition(":")
    if not mod or not attr:
        raise ConfigError(f"task: expected 'module:function', got {path!r}")
    return getattr(importlib.import_module(mod), attr)


def ensure_simulated(ms: Path, simulate: dict[str, Any], log_path: Path | None = None) -> None:
    """Create ``ms`` with the simulator if absent (it builds elsewhere and moves it in)."""
    if ms.exists():
        return
    try:
        from selfcal_batch.simulate import simulate_ms_isolated
    except ImportError as exc:
        raise SimulationError(f"cannot simulate {ms.name}: simulator unavailable ({exc})") from None
    import fcntl

    spec = build_sim_spec(simulate)
    ms.parent.mkdir(parents=True, exist_ok=True)
    # One simulation per MS: the variants of a template sweep share it and may start at once.
    with open(ms.parent / f".{ms.name}.simulate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ms.exists():
            return
        log.info("simulating %s (preset %s)", ms, simulate.get("preset"))
        simulate_ms_isolated(spec, ms, log_path=log_path)
    if not ms.exists():
        raise SimulationError(f"the simulator did not create {ms}")


def attempts_path(out_dir: str | Path, name: str) -> Path:
    """``<out>/logs/attempts/<name>.log``: one line per start of the dataset's task."""
    return Path(out_dir) / "logs" / "attempts" / f"{name}.log"


def _append_attempt(out_dir: str, name: str, line: str) -> None:
    path = attempts_path(out_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:  # synchronous: must survive an immediate SIGKILL
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_attempts(out_dir: str | Path, name: str) -> list[list[str]]:
    try:
        return [ln.split() for ln in attempts_path(out_dir, name).read_text().splitlines()]
    except FileNotFoundError:
        return []


def count_deaths(out_dir: str | Path, name: str, attempt: str) -> int:
    """Starts of task ``attempt`` ('<run-id> <key>') that never reached their end line."""
    run_id, key = attempt.split()
    starts, ends = set(), set()
    for f in _read_attempts(out_dir, name):
        if len(f) >= 4 and f[0] == run_id and f[1] == key:
            (starts if f[2] == "start" else ends).add(f[3])
    return len(starts - ends)


def execute_dataset(task: str, name: str, ms: str, config: Any, out_dir: str, *, threads: int,
                    restart: bool = False, restart_from: str | None = None,
                    simulate: dict[str, Any] | None = None, attempt: str = "") -> dict[str, Any]:
    """The Dask task: (simulate the MS if needed), run the pipeline, return its result dict.

    ``attempt`` ('<run-id> <key>') is logged before anything else so the runner can tell a
    worker death *during* this dataset from one while it merely waited in a worker's queue;
    a re-run after a death resumes (``restart``/``restart_from`` apply to the first start
    only). Input problems (simulation failure) return a failed row; unexpected exceptions
    propagate so Dask retries them.
    """
    token = ""
    if attempt:
        run_id = attempt.split()[0]
        if any(f[:1] == [run_id] for f in _read_attempts(out_dir, name)):
            restart, restart_from = False, None  # a re-run in this campaign run: resume
        token = uuid.uuid4().hex[:12]
        _append_attempt(out_dir, name, f"{attempt} start {token} {socket.gethostname()} {os.getpid()} {_now()}")
    try:
        try:
            if simulate:
                ensure_simulated(Path(ms), simulate, Path(out_dir) / "logs" / "simulate" / f"{name}.log")
        except (SimulationError, DatasetError, ConfigError) as exc:
            return failed_row(name, ms, f"simulation failed: {' '.join(str(exc).split())}")
        fn = import_task(task)
        kwargs: dict[str, Any] = {"threads": threads, "restart": restart}
        if restart_from:
            kwargs["restart_from"] = restart_from
        result = fn(name, str(ms), config, Path(out_dir), **kwargs)
        if hasattr(result, "to_dict"):
            result = result.to_dict()
        return dict(result)
    finally:
        if token:
            _append_attempt(out_dir, name, f"{attempt} end {token} {_now()}")


# ----------------------------------------------------------------------------------------
# rows and outputs


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _with_records(out_dir: Path, row: dict[str, Any]) -> dict[str, Any]:
    """A runner-side row with the dataset's attempts and summed costs from its state.json
    (a worker death or a stopped campaign must not lose the cost of earlier attempts)."""
    try:
        state = json.loads((out_dir / "datasets" / str(row["name"]) / "state.json").read_text())
    except (OSError, ValueError):
        return row
    row.update(records.row_from_state(state))
    return row


def _record_failure(out_dir: Path, row: dict[str, Any], tb: str = "") -> None:
    """Keep a runner-side failure next to the dataset's own outputs."""
    ddir = out_dir / "datasets" / str(row["name"])
    _with_records(out_dir, row)
    try:
        _write_json(ddir / "result.json", row)
        if tb:
            (ddir / "logs").mkdir(parents=True, exist_ok=True)
            with open(ddir / "logs" / "campaign-error.log", "a") as fh:
                fh.write(f"--- {_now()} {row.get('error')}\n{tb}\n")
    except OSError as exc:
        log.warning("could not record the failure of %s: %s", row["name"], exc)


def _previous_row(out_dir: Path, d: DatasetSpec) -> dict[str, Any] | None:
    try:
        res = json.loads((out_dir / "datasets" / d.name / "result.json").read_text())
    except (OSError, ValueError):
        return None
    return normalise_row(res, d.name, d.ms) if isinstance(res, dict) else None


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def collect_versions(wsclean_binary: str = "wsclean", log_dir: Path | None = None) -> dict[str, Any]:
    """Versions of everything that shapes the results (casatools is never imported here)."""
    import dask
    import distributed

    out: dict[str, Any] = {
        "selfcal-batch": __version__, "python": sys.version.split()[0],
        "dask": dask.__version__, "distributed": distributed.__version__,
        "casatasks": _version("casatasks"), "casatools": _version("casatools"),
        "python-casacore": _version("python-casacore"), "dask-jobqueue": _version("dask-jobqueue"),
    }
    try:
        from selfcal_batch.process import run_tool

        res = run_tool([wsclean_binary, "-version"], tool="wsclean",
                       log_path=log_dir / "versions.log" if log_dir else Path(os.devnull),
                       timeout=60, check=False, category="version")
        first = next((ln.strip() for ln in res.tail.splitlines() if ln.strip()), "")
        out["wsclean"] = first or None
    except Exception as exc:  # a missing binary must not stop the campaign record
        out["wsclean"] = f"unavailable ({' '.join(str(exc).split())})"
    return out


# ----------------------------------------------------------------------------------------
# plan


def _claim(d: DatasetSpec, threads_per_dataset: int, cli_threads: int | None) -> int:
    if cli_threads is not None:
        return cli_threads
    return d.threads or threads_per_dataset


def input_check(camp: Campaign, opts: RunOptions) -> dict[str, list[str]]:
    """The up-front input check (:func:`preflight.dataset_input_problems`), only for the
    pipeline task (a ``--task`` stand-in reads no MS)."""
    return dataset_input_problems(camp.datasets) if opts.task == DEFAULT_TASK else {}


def restart_lines(camp: Campaign, opts: RunOptions) -> dict[str, str]:
    """``{dataset name: what --restart-from will redo and why}`` (empty without it)."""
    if not opts.restart_from:
        return {}
    return restart_messages(camp.datasets, camp.output_dir, STEP_ALIASES.get(opts.restart_from, opts.restart_from))


def check_restart_step(opts: RunOptions) -> None:
    """Raise ConfigError for an unknown ``--restart-from`` step (in runs and dry runs alike)."""
    if opts.restart_from and STEP_ALIASES.get(opts.restart_from, opts.restart_from) not in STEP_NAMES:
        raise ConfigError(f"--restart-from: unknown step {opts.restart_from!r} "
                          f"(choose from: {', '.join(STEP_NAMES)})")


def plan_text(campaign: Campaign, opts: RunOptions) -> tuple[str, int]:
    """The resolved plan printed by ``--dry-run``; also the number of problems (invalid
    datasets, including those failing the input check, plus an unusable output directory)."""
    check_restart_step(opts)
    camp = campaign.select(opts.only)
    spec = resolve_cluster(camp.cluster, default_threads=camp.base_config.threads,
                           workers=opts.workers, threads_per_dataset=opts.threads_per_dataset,
                           scheduler_address=opts.scheduler_address, n_datasets=len(camp.datasets))
    out_problem = output_inside_input(camp.output_dir, [d.ms for d in camp.datasets]) \
        or output_dir_problem(camp.output_dir)
    lines = [f"campaign {camp.name}  (manifest {camp.path})",
             f"output   {camp.output_dir}" + (f"  PROBLEM: {out_problem}" if out_problem else ""),
             f"cluster  {describe(spec)}",
             f"retries  {spec.retries} worker death(s) per dataset"
             + ("" if spec.kind != "address" else " (here: the scheduler's allowed-failures)")]
    if opts.restart or opts.restart_from:
        lines.append(f"restart  {'all steps' if opts.restart else 'from ' + str(opts.restart_from)}")
    max_cores, _ = capacity(spec, None)
    invalid = 0
    inputs = input_check(camp, opts)
    restarts = restart_lines(camp, opts)
    lines.append(f"datasets ({len(camp.datasets)}):")
    for d in camp.datasets:
        t = _claim(d, spec.threads_per_dataset, opts.threads_per_dataset)
        problems = [d.error] if d.error else []
        if not problems and spec.kind != "address":
            problems = [p for p in [check_claims({d.name: t}, max_cores, "this cluster").get(d.name, "")] if p]
        problems = problems or inputs.get(d.name, [])
        if problems:
            invalid += 1
            lines.append(f"  - {d.name}: INVALID -> will be reported failed: {problems[0]}")
            lines.extend(f"      {p}" for p in problems[1:])
            continue
        cfg = d.config
        assert cfg is not None
        sim = ""
        if d.simulate:
            sim = ("  [exists]" if d.ms and d.ms.exists()
                   else f"  [absent: simulated on first use, preset {d.simulate.get('preset')}]")
        templ = cfg.force_template or ("auto by flux, thresholds "
                                       + "/".join(f"{x:g}" for x in cfg.template_thresholds_mjy) + " mJy")
        lines.append(f"  - {d.name}")
        lines.append(f"      ms        {d.ms}{sim}")
        lines.append(f"      template  {templ}")
        lines.append(f"      steps     {' '.join(cfg.steps)}")
        lines.append(f"      imaging   imsize {cfg.imsize}, cell {cfg.cell}, field {cfg.field or '(all)'}, "
                     f"{cfg.instrument} {cfg.band}")
        lines.append(f"      resources cores={t} (WSClean -j {t})")
        if d.overrides:
            lines.append(f"      overrides {json.dumps(d.overrides, sort_keys=True)}")
        if d.name in restarts:
            lines.append(f"      restart   {restarts[d.name]}")
    if spec.kind in ("slurm", "pbs"):
        lines.append("worker job script:")
        try:
            lines.extend("  " + ln for ln in render_job_script(spec, camp.output_dir).splitlines())
        except ConfigError as exc:
            lines.append(f"  cannot render: {exc}")
    if invalid:
        lines.append(f"{invalid} of {len(camp.datasets)} dataset(s) are invalid")
    if out_problem:
        lines.append(f"error: {out_problem}")
        invalid += 1
    return "\n".join(lines), invalid


# ----------------------------------------------------------------------------------------
# the run


class _Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. the batch system cancelling the campaign job)."""


def _task_key(name: str, spec_kind: str, out_dir: Path) -> str:
    if spec_kind == "address":  # a shared scheduler: keep keys unique per output directory
        return f"selfcal-{name}-{hashlib.sha1(str(out_dir).encode()).hexdigest()[:8]}"
    return f"selfcal-{name}"


def _error_reason(fut: Any) -> tuple[str, str, bool]:
    """(one-line reason, traceback text, worker-death?) for a future that did not finish."""
    from distributed.scheduler import KilledWorker

    if fut.status == "cancelled":
        return "cancelled (the scheduler or its connection was lost)", "", False
    try:
        exc = fut.exception(timeout=30)
    except Exception as e:  # noqa: BLE001 - the future itself may be gone
        return f"{fut.status}: {type(e).__name__}: {e}", "", False
    if isinstance(exc, KilledWorker):
        addr = getattr(exc.last_worker, "address", "?")
        return f"last worker {addr}", "", True
    tb = ""
    try:
        tb = "".join(traceback.format_exception(type(exc), exc, fut.traceback()))
    except Exception:  # noqa: BLE001
        pass
    msg = " ".join(str(exc).split())
    return (f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__), tb, False


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
    if problem := output_inside_input(out_dir, [d.ms for d in selected.datasets]):
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
    record: dict[str, Any] = {
        "campaign": selected.name, "manifest": str(selected.path), "output_dir": str(out_dir),
        "status": "running", "started": started, "finished": None, "host": socket.gethostname(),
        "pid": os.getpid(), "argv": sys.argv,
        "options": dataclasses.asdict(opts),
        "cluster": {"description": describe(spec), **dataclasses.asdict(spec)},
        "versions": collect_versions(selected.base_config.wsclean.binary, out_dir / "logs"),
        "manifest_resolved": campaign.to_dict(),
        # Every run of the campaign in this directory (this one last): started, finished, status,
        # elapsed_s. "started"/"finished" above are this run's; the report sums the runs.
        "runs": [*runs, {"started": started, "finished": None, "status": "running", "elapsed_s": None}],
    }
    _write_json(out_dir / "campaign.json", record)
    rows: dict[str, dict[str, Any]] = {}
    progress: CampaignProgress | None = None
    try:
        # Before the cluster starts: the input check (no casacore on the inputs themselves)
        # and what --restart-from will redo.
        inputs = input_check(selected, opts)
        restarts = restart_lines(selected, opts)
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
            for name, why in restarts.items():
                if name not in inputs and name not in problems:
                    console.print(f"{name}: {why}", markup=False, highlight=False, soft_wrap=True)
                    log.info("%s: --restart-from %s: %s", name, opts.restart_from, why,
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
                _Dispatcher(client, spec, opts, out_dir, progress, rows, claims, slots).run(todo)
    except KeyboardInterrupt:
        outcome.interrupted = True
        log.error("campaign interrupted")
        for d in selected.datasets:
            if d.name not in rows:
                rows[d.name] = _with_records(out_dir, stopped_row(out_dir, d, t_start_wall))
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
        _write_json(out_dir / "campaign.json", record)
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


class _Dispatcher:
    """Submit dataset tasks, at most ``slots`` in flight, and collect their rows.

    Why throttle: the scheduler places a task with a resource restriction on any worker
    whose *total* resources suffice, so submitting everything at once queues several
    datasets on each worker. When that worker dies, every task queued on it counts a death
    (``suspicious``), and one dataset that keeps killing its worker would drag innocent
    datasets into ``KilledWorker``. With one task per free slot a death only counts against
    the dataset that was running.
    """

    def __init__(self, client: Any, spec: Any, opts: RunOptions, out_dir: Path,
                 progress: CampaignProgress, rows: dict[str, dict[str, Any]],
                 claims: dict[str, int], slots: int):
        self.client, self.spec, self.opts, self.out_dir = client, spec, opts, out_dir
        self.progress, self.rows, self.claims = progress, rows, claims
        self.slots = max(1, slots)
        self.in_flight: dict[str, tuple[Any, DatasetSpec]] = {}
        self.run_id = f"{_dt.datetime.now():%Y%m%dT%H%M%S}-{os.getpid()}"
        self.submits: dict[str, int] = {}
        self.first_submit: dict[str, float] = {}
        self.deaths: dict[str, int] = {}
        self.healer: JobPoolHealer | None = None
        if spec.kind != "local":
            cluster = getattr(client, "cluster", None) if spec.kind in ("slurm", "pbs") else None
            self.healer = JobPoolHealer(cluster, client, spec.workers,
                                        spec.max_job_replacements or 2 * max(1, spec.workers) + 2,
                                        spec.no_worker_timeout_s)

    def submit(self, d: DatasetSpec) -> None:
        t = self.claims[d.name]
        cfg = dataclasses.replace(d.config, threads=t) if d.config is not None else None
        n = self.submits[d.name] = self.submits.get(d.name, 0) + 1
        self.first_submit.setdefault(d.name, time.time())
        key = _task_key(d.name, self.spec.kind, self.out_dir) + (f"-r{n}" if n > 1 else "")
        fut = self.client.submit(
            execute_dataset, self.opts.task, d.name, str(d.ms), cfg, str(self.out_dir),
            threads=t, restart=self.opts.restart, restart_from=self.opts.restart_from,
            simulate=d.simulate, attempt=f"{self.run_id} {key}", key=key, pure=False,
            resources={"cores": t}, retries=self.spec.retries)
        self.in_flight[key] = (fut, d)
        log.info("submitted %s (%s, cores=%d)", d.name, key, t)

    def _row_on_disk(self, d: DatasetSpec) -> dict[str, Any] | None:
        """The dataset's own result.json when written since its first submission here.

        A finished result lives in its worker's memory until gathered: if that worker dies
        first (another dataset killed it), Dask recomputes the task and may count deaths
        against it. The pipeline's result.json on disk is the authoritative outcome.
        """
        path = self.out_dir / "datasets" / d.name / "result.json"
        try:
            if path.stat().st_mtime < self.first_submit.get(d.name, float("inf")) - 1.0:
                return None
            return normalise_row(json.loads(path.read_text()), d.name, d.ms)
        except (OSError, ValueError, TypeError):
            return None

    def collect(self, fut: Any, d: DatasetSpec) -> None:
        if fut.status == "finished":
            try:
                row = normalise_row(fut.result(), d.name, d.ms)
            except Exception as exc:  # noqa: BLE001 - a malformed result is that dataset's failure
                row = self._row_on_disk(d) or failed_row(d.name, d.ms, f"bad result from the task: {exc}")
                if row["status"] == "failed":
                    _record_failure(self.out_dir, row)
        elif (disk := self._row_on_disk(d)) is not None and disk.get("status") != "failed":
            log.warning("%s: the task was lost with its worker after the dataset ended; using its "
                        "result.json", d.name)
            row = disk
        else:
            reason, tb, died = _error_reason(fut)
            if died:
                # Count only deaths while this dataset was running (its starts under this
                # key); a task that merely waited on a dying worker is not to blame.
                n = self.deaths[d.name] = self.deaths.get(d.name, 0) + count_deaths(
                    self.out_dir, d.name, f"{self.run_id} {fut.key}")
                if n <= self.spec.retries and self.submits[d.name] <= self.spec.retries + 3:
                    log.warning("%s: worker died (%d death(s) while running it so far); "
                                "resubmitting", d.name, n)
                    self.resubmit.append(d)
                    fut.release()
                    return
                reason = (f"worker died {n} time{'s' if n != 1 else ''} while running it "
                          f"(killed or crashed: out of memory? {reason}; see the worker logs)")
            row = failed_row(d.name, d.ms, reason)
            _record_failure(self.out_dir, row, tb)
        self._report(fut, d, row)

    def _report(self, fut: Any, d: DatasetSpec, row: dict[str, Any]) -> None:
        (log.error if row["status"] == "failed" else log.info)(
            "%s %s%s", d.name, row["status"], f": {row['error']}" if row.get("error") else "",
            extra={"console": False})
        self.rows[d.name] = row
        self.progress.finished(row)
        fut.release()

    def run(self, todo: list[DatasetSpec]) -> None:
        queue = deque(todo)
        self.resubmit: list[DatasetSpec] = []
        last_poll = last_cap = time.monotonic()
        while queue or self.in_flight:
            while queue and len(self.in_flight) < self.slots:
                self.submit(queue.popleft())
            for key, (fut, d) in list(self.in_flight.items()):
                if fut.done():
                    del self.in_flight[key]
                    self.collect(fut, d)
            queue.extendleft(reversed(self.resubmit))
            self.resubmit.clear()
            if self.healer is not None and (reason := self.healer.tick(bool(queue or self.in_flight))):
                self._give_up(queue, reason)
            now = time.monotonic()
            if self.spec.kind == "address" and now - last_cap >= 15.0:
                last_cap = now  # workers may join an existing scheduler later
                with contextlib.suppress(Exception):
                    self.slots = max(1, capacity(self.spec, self.client)[1])
                    self.progress.slots = self.slots
            if self.in_flight and now - last_poll >= 2.0:
                last_poll = now
                try:
                    busy = {k for keys in self.client.processing().values() for k in keys}
                except Exception:  # noqa: BLE001 - display only
                    busy = set()
                self.progress.set_running(d.name for k, (_, d) in self.in_flight.items() if k in busy)
                self.progress.refresh()
            self._wait_any(0.25)


    def _wait_any(self, timeout: float) -> None:
        """Sleep until a running dataset ends or ``timeout`` s pass (a finished dataset's
        slot is refilled at once: polling alone cost up to 0.25 s per dataset)."""
        futs = [f for f, _ in self.in_flight.values()]
        if not futs:
            time.sleep(timeout)
            return
        from distributed import wait

        try:
            wait(futs, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass

    def _give_up(self, queue: deque[DatasetSpec], reason: str) -> None:
        """No worker is coming back: every dataset still queued or running fails with ``reason``."""
        log.error("%s", reason)
        for key, (fut, d) in list(self.in_flight.items()):
            del self.in_flight[key]
            fut.cancel()
            row = failed_row(d.name, d.ms, reason)
            _record_failure(self.out_dir, row)
            self._report(fut, d, row)
        while queue:
            d = queue.popleft()
            row = failed_row(d.name, d.ms, reason)
            _record_failure(self.out_dir, row)
            self.rows[d.name] = row
            self.progress.finished(row)


def _build_report(out_dir: Path, console: Console) -> None:
    """Call ``selfcal_batch.report.build_report(out)`` if available; never fails the run."""
    try:
        from selfcal_batch.report import build_report
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
