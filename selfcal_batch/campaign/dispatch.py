"""Dispatch of dataset tasks to the Dask cluster and the runner-side failure records.

:class:`Dispatcher` keeps at most one task per free slot in flight, resubmits a dataset
whose worker died while running it (up to the cluster's retries) and turns every other
failure into a ``failed`` row with a one-line reason, written next to the dataset's outputs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any

from selfcal_batch.campaign.cluster import capacity, dataset_claim
from selfcal_batch.campaign.jobpool import JobPoolHealer
from selfcal_batch.campaign.manifest import DatasetSpec
from selfcal_batch.campaign.plan import RunOptions
from selfcal_batch.campaign.progress import CampaignProgress, failed_row, normalise_row
from selfcal_batch.campaign.worker import _now, count_deaths, execute_dataset, shared_deaths
from selfcal_batch.fileio import atomic_write_json
from selfcal_batch.pipeline import records

log = logging.getLogger("selfcal_batch.campaign.run")  # the name the campaign log and the benchmarks know


def _with_records(out_dir: Path, row: dict[str, Any], stopped: list[tuple[str, str | None]] | None = None
                  ) -> dict[str, Any]:
    """A runner-side row with the dataset's attempts and summed costs from its state.json
    (a worker death or a stopped campaign must not lose the cost of earlier attempts).
    ``stopped``: campaign runs the user stopped (:func:`records.close_open`)."""
    try:
        state = json.loads((out_dir / "datasets" / str(row["name"]) / "state.json").read_text())
    except (OSError, ValueError):
        return row
    row.update(records.row_from_state(state, stopped or ()))
    return row


def _record_failure(out_dir: Path, row: dict[str, Any], tb: str = "") -> None:
    """Keep a runner-side failure next to the dataset's own outputs."""
    ddir = out_dir / "datasets" / str(row["name"])
    _with_records(out_dir, row)
    try:
        atomic_write_json(ddir / "result.json", row)
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


def _task_key(name: str, spec_kind: str, out_dir: Path) -> str:
    if spec_kind == "address":  # a shared scheduler: keep keys unique per output directory
        return f"selfcal-{name}-{hashlib.sha1(str(out_dir).encode()).hexdigest()[:8]}"
    return f"selfcal-{name}"


def _error_reason(fut: Any) -> tuple[str, str, bool]:
    """(one-line reason, traceback text, worker-death?) for a future that did not finish."""
    from distributed.scheduler import KilledWorker  # Dask loaded only once a campaign runs

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


class Dispatcher:
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
        #: Datasets that died in a worker shared with others: from then on they run alone.
        self.solo: set[str] = set()
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
            **({"ebs": [str(p) for p in d.ebs]} if d.ebs else {}),
            **({"notes": list(d.notes)} if d.notes else {}),
            resources={"cores": (claim := self._claim(d.name, t))}, retries=self.spec.retries)
        self.in_flight[key] = (fut, d)
        log.info("submitted %s (%s, cores=%d, Dask claim cores=%g%s)", d.name, key, t, claim,
                 ", alone after a death in a shared worker" if d.name in self.solo else "")

    def _claim(self, name: str, threads: int) -> float:
        """The dataset's Dask ``cores`` claim: its share (:func:`dataset_claim`), or a whole
        largest worker after it died in a worker shared with other datasets (so a further
        death is its own)."""
        if name not in self.solo:
            return dataset_claim(self.spec, threads)
        with contextlib.suppress(Exception):
            largest = capacity(self.spec, self.client)[0]
            if largest:
                return max(float(threads), largest)
        return float(max(threads, self.spec.threads_per_dataset))

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
                # key); a task that merely waited on a dying worker is not to blame. A death
                # while other datasets ran in the same worker process (shared cores) is not
                # counted either: the dataset is resubmitted to run alone, where a death is its own.
                attempt = f"{self.run_id} {fut.key}"
                all_n = count_deaths(self.out_dir, d.name, attempt)
                shared = shared_deaths(self.out_dir, d.name, attempt, self.claims)
                if shared:
                    self.solo.add(d.name)
                n = self.deaths[d.name] = self.deaths.get(d.name, 0) + all_n - shared
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
        from distributed import wait  # Dask loaded only once a campaign runs

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
