"""The worker side of a campaign: the Dask task :func:`execute_dataset` and its attempt log.

Each dataset runs :func:`execute_dataset` in a worker process; it calls the pipeline task
(by default ``selfcal_batch.pipeline.runner:run_dataset``) and records every start and end
in ``<out>/logs/attempts/<name>.log`` so the runner can tell a worker death while running a
dataset from one while the dataset only waited in the worker's queue.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import fcntl
import logging
import os
import socket
import uuid
from pathlib import Path
from typing import Any, Callable

from selfcal_batch import corepool
from selfcal_batch.campaign.manifest import build_sim_spec
from selfcal_batch.campaign.progress import failed_row
from selfcal_batch.errors import ConfigError, DatasetError, SimulationError

log = logging.getLogger("selfcal_batch.campaign.run")  # the name the campaign log and the benchmarks know


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


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
        from selfcal_batch.simulate import simulate_ms_isolated  # only for manifest-simulated datasets
    except ImportError as exc:
        raise SimulationError(f"cannot simulate {ms.name}: simulator unavailable ({exc})") from None
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
    return len(_deaths(out_dir, name, attempt.split()[0], attempt.split()[1]))


def _deaths(out_dir: str | Path, name: str, run_id: str, key: str | None) -> list[tuple[str, str]]:
    """(host, pid) of each start of ``name`` in campaign run ``run_id`` (of task ``key``;
    None = any) that never reached its end line."""
    starts: dict[str, tuple[str, str]] = {}
    ends: set[str] = set()
    for f in _read_attempts(out_dir, name):
        if len(f) >= 4 and f[0] == run_id and (key is None or f[1] == key):
            if f[2] == "start":
                starts[f[3]] = (f[4], f[5]) if len(f) >= 6 else ("?", "?")
            else:
                ends.add(f[3])
    return [where for token, where in starts.items() if token not in ends]


def shared_deaths(out_dir: str | Path, name: str, attempt: str, others: Any) -> int:
    """Deaths of task ``attempt`` in a worker process (host, pid) where another dataset of
    ``others`` (names) was running too in the same campaign run: the death cannot be told
    to be this dataset's doing (datasets that share a worker's cores die together)."""
    run_id, key = attempt.split()
    busy = {where for o in others if o != name for where in _deaths(out_dir, o, run_id, None)}
    return sum(1 for where in _deaths(out_dir, name, run_id, key) if where in busy)


def worker_cores() -> float | None:
    """The ``cores`` resource the Dask worker running this task declares (None outside a
    worker, or for a worker that declares none)."""
    try:
        from distributed import get_worker  # Dask is loaded in a worker process already
    except ImportError:
        return None
    try:
        res = get_worker().state.total_resources
    except (ValueError, AttributeError):  # not in a worker (e.g. selfcal-batch run)
        return None
    return res.get("cores")


def execute_dataset(task: str, name: str, ms: str, config: Any, out_dir: str, *, threads: int,
                    restart: bool = False, restart_from: str | None = None,
                    simulate: dict[str, Any] | None = None, attempt: str = "",
                    ebs: list[str] | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """The Dask task: (simulate the MS if needed), run the pipeline, return its result dict.

    ``attempt`` ('<run-id> <key>') is logged before anything else so the runner can tell a
    worker death *during* this dataset from one while it merely waited in a worker's queue;
    a re-run after a death resumes (``restart``/``restart_from`` apply to the first start
    only). Input problems (simulation failure) return a failed row; unexpected exceptions
    propagate so Dask retries them. ``ebs``: the execution blocks of a joint dataset (passed
    to the task as ``ebs=`` only when given, so one-MS tasks keep their signature); ``notes``
    (``DatasetSpec.notes``) likewise.
    """
    # The worker's cores are shared by its datasets' WSClean and CASA runs (one pool per
    # worker process; no pool = every run gets its dataset's threads, the old behaviour).
    corepool.install(worker_cores())
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
        if ebs:
            kwargs["ebs"] = [str(p) for p in ebs]
        if notes:
            kwargs["notes"] = list(notes)
        result = fn(name, str(ms), config, Path(out_dir), **kwargs)
        if hasattr(result, "to_dict"):
            result = result.to_dict()
        return dict(result)
    finally:
        if token:
            _append_attempt(out_dir, name, f"{attempt} end {token} {_now()}")
