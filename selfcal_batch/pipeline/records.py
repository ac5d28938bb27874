"""Run records that accumulate: one record per attempt of a dataset, costs summed over them.

An *attempt* is one call of ``pipeline.run_dataset`` on a dataset directory. Its record
(a JSON dict kept in ``state.json["attempts"]`` and copied into ``result.json``) is::

    {"start": "2026-12-03T08:00:00+00:00",   # UTC, ISO 8601, seconds
     "end": "2026-12-03T08:01:02+00:00",     # None while running
     "steps": ["p0", "p1"],                  # steps started in this attempt (in order)
     "exit": "finished" | "finished (nothing to redo)" | "failed: <reason>"
             | "interrupted: <how>" | "running",
     "host": "node17", "worker": "tcp://10.0.0.3:4242" | "pid 1234",
     "wall_s": 62.1, "time_wsclean_s": 30.2, "time_casa_s": 28.0, "time_python_s": 3.9,
     "wsclean_runs": 7,
     "last_seen": "2026-12-03T08:01:02+00:00"}  # last state save (end of a killed attempt)

Costs are updated at every state save, so an attempt killed with SIGKILL keeps its costs up
to its last save (a tool killed mid-run loses only that run's seconds). An attempt with a
start and no end found when the next attempt starts is closed as interrupted, its end being
its last save. Summed costs count only attempts that ran at least one step: a no-op resume
(every step already done) adds a record but changes none of the sums. ``--restart`` (from
scratch) keeps the earlier records, marked ``"discarded": true`` and no longer counted, so
the sums are always the cost of the outputs on disk.

Everything here is pure (dicts in, dicts out); the pipeline and the campaign call it.
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any, Iterable

#: Cost fields of an attempt and of a DatasetResult (seconds, except the run count).
COST_FIELDS = ("wall_s", "time_wsclean_s", "time_casa_s", "time_python_s", "wsclean_runs", "time_core_wait_s")
INTERRUPTED = "interrupted: killed or crashed (no end recorded; end = its last state save)"
#: Why the user stopped a dataset (Ctrl-C or SIGTERM to the campaign or to ``run-one``).
STOPPED_WHY = "stopped by the user (Ctrl-C/SIGTERM); rerun to resume"
#: Exit of an attempt the user stopped (the runner's own record, or an open attempt that
#: started during a campaign run that ended ``interrupted``).
STOPPED = f"interrupted: {STOPPED_WHY}"


def utc_now() -> str:
    """Now as UTC ISO 8601 with seconds, e.g. ``2026-12-03T08:00:00+00:00``."""
    return iso(_dt.datetime.now(_dt.timezone.utc))


def iso(t: _dt.datetime) -> str:
    """A datetime as UTC ISO 8601 (seconds)."""
    return t.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")


def last_write(directory: Path | str) -> str | None:
    """ISO time (UTC) of the newest file write in ``directory`` (a dataset's ``logs``: the
    last sign of life of a killed attempt, for :func:`close_open`); None without files."""
    try:
        newest = max((p.stat().st_mtime for p in Path(directory).iterdir() if p.is_file()), default=None)
    except OSError:
        return None
    return None if newest is None else iso(_dt.datetime.fromtimestamp(newest, _dt.timezone.utc))


def new_attempt(start: str, host: str, worker: str) -> dict[str, Any]:
    """An open attempt record (exit ``running``, zero costs)."""
    rec: dict[str, Any] = {"start": start, "end": None, "steps": [], "exit": "running",
                           "host": host, "worker": worker, "last_seen": start}
    rec.update({k: 0 if k == "wsclean_runs" else 0.0 for k in COST_FIELDS})
    return rec


def close_open(attempts: list[dict[str, Any]], stopped: Iterable[tuple[str, str | None]] = (),
               alive_until: str | None = None) -> list[dict[str, Any]]:
    """Close every attempt without an end as interrupted (end = its last save). New list.

    ``stopped``: ``(start, end)`` (ISO 8601 UTC; end None = still stopping) of campaign runs
    the user stopped (:func:`stopped_runs`): an open attempt that started inside one was
    stopped with it (:data:`STOPPED`), any other was killed or crashed (:data:`INTERRUPTED`).
    ``alive_until``: the last sign of life of the dataset (ISO; the newest write to its logs):
    costs are saved only with the state, so an attempt killed in a long step (minutes of
    WSClean) would otherwise be recorded with the wall time of its last save. The last
    (newest) open attempt then ends there and its ``wall_s`` grows by the gap (not attributed
    to WSClean, CASA or Python: ``time_python_s`` is left as saved).
    """
    spans = [(str(a), str(b) if b else "\uffff") for a, b in stopped if a]
    out = []
    newest_open = max((i for i, a in enumerate(attempts) if not a.get("end")), default=-1)
    for i, a in enumerate(attempts):
        a = dict(a)
        if not a.get("end"):
            a["end"] = a.get("last_seen") or a.get("start")
            if i == newest_open and alive_until and str(alive_until) > str(a["end"]):
                gap = (_dt.datetime.fromisoformat(str(alive_until))
                       - _dt.datetime.fromisoformat(str(a["end"]))).total_seconds()
                a["wall_s"] = round(float(a.get("wall_s") or 0.0) + gap, 2)
                a["end"] = a["last_seen"] = str(alive_until)
            start = str(a.get("start") or "")
            a["exit"] = STOPPED if any(lo <= start <= hi for lo, hi in spans) else INTERRUPTED
        out.append(a)
    return out


def stopped_runs(campaign_record: Any) -> list[tuple[str, str | None]]:
    """``(started, finished)`` of every run in a ``campaign.json`` content that ended
    ``interrupted`` (Ctrl-C or SIGTERM), for :func:`close_open`. [] when none or unreadable."""
    return [(str(r.get("started")), r.get("finished")) for r in campaign_runs(campaign_record)
            if r.get("status") == "interrupted" and r.get("started")]


def start_attempt(attempts: Iterable[dict[str, Any]], start: str, host: str, worker: str,
                  stopped: Iterable[tuple[str, str | None]] = (), alive_until: str | None = None
                  ) -> list[dict[str, Any]]:
    """Earlier attempts (open ones closed as interrupted, :func:`close_open`) + a new open attempt."""
    return close_open([a for a in attempts if isinstance(a, dict)], stopped, alive_until) + [
        new_attempt(start, host, worker)]


def note_step(attempt: dict[str, Any], step: str) -> None:
    """Record that ``step`` started in this attempt (once, in order)."""
    steps = attempt.setdefault("steps", [])
    if step not in steps:
        steps.append(step)


def set_costs(attempt: dict[str, Any], *, wall: float, wsclean: float, casa: float, wsclean_runs: int,
              seen: str, core_wait: float = 0.0) -> None:
    """The attempt's costs so far; ``core_wait``: seconds WSClean/CASA runs waited for cores
    of a shared worker; Python time = wall - WSClean - CASA - core wait (>= 0)."""
    attempt["wall_s"] = round(wall, 2)
    attempt["time_wsclean_s"] = round(wsclean, 2)
    attempt["time_casa_s"] = round(casa, 2)
    attempt["time_core_wait_s"] = round(core_wait, 2)
    attempt["time_python_s"] = round(python_seconds(wall, wsclean, casa, core_wait), 2)
    attempt["wsclean_runs"] = int(wsclean_runs)
    attempt["last_seen"] = seen


def python_seconds(wall: float, wsclean: float, casa: float, core_wait: float = 0.0) -> float:
    """Seconds of an attempt spent in the pipeline's own Python: the rest of the wall time (>= 0)."""
    return max(0.0, wall - wsclean - casa - core_wait)


def finish_attempt(attempt: dict[str, Any], status: str, error: str, end: str) -> None:
    """Close an attempt: exit ``finished``, ``failed: <error>`` or ``interrupted: <error>``."""
    attempt["end"] = end
    attempt["last_seen"] = end
    if status == "finished":
        attempt["exit"] = "finished" if attempt.get("steps") else "finished (nothing to redo)"
    elif status == "interrupted":
        attempt["exit"] = f"interrupted: {error}" if error else "interrupted"
    else:
        attempt["exit"] = f"failed: {error}" if error else "failed"


def discard(attempts: Iterable[dict[str, Any]], stopped: Iterable[tuple[str, str | None]] = ()
            ) -> list[dict[str, Any]]:
    """Earlier attempts whose outputs ``--restart`` wiped: kept as records, marked
    ``discarded`` (open ones closed as interrupted, :func:`close_open`), no longer counted in
    the sums, which then are the cost of the outputs on disk. New list."""
    return [dict(a, discarded=True) for a in close_open([a for a in attempts if isinstance(a, dict)], stopped)]


def counted(attempt: dict[str, Any]) -> bool:
    """Whether an attempt's costs enter the sums: it ran (started) at least one step and
    its outputs were not wiped by a later ``--restart``."""
    return bool(attempt.get("steps")) and not attempt.get("discarded")


def summed(attempts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Costs summed over the attempts that ran a step, plus ``n_attempts`` (all of them).

    Returns ``wall_s, time_wsclean_s, time_casa_s, time_python_s`` (s, rounded to 0.01),
    ``wsclean_runs`` (int) and ``n_attempts``. Missing or non-numeric fields count as 0.
    """
    attempts = [a for a in attempts if isinstance(a, dict)]
    out: dict[str, Any] = {k: 0.0 for k in COST_FIELDS}
    for a in attempts:
        if not counted(a):
            continue
        for k in COST_FIELDS:
            try:
                out[k] += float(a.get(k) or 0.0)
            except (TypeError, ValueError):
                pass
    res: dict[str, Any] = {k: round(v, 2) for k, v in out.items()}
    res["wsclean_runs"] = int(round(out["wsclean_runs"]))
    res["n_attempts"] = len(attempts)
    return res


def row_from_state(state: dict[str, Any] | None, stopped: Iterable[tuple[str, str | None]] = ()
                   ) -> dict[str, Any]:
    """Summed costs and attempts of a dataset from its ``state.json`` content, for rows the
    campaign writes itself (worker died, campaign stopped): open attempts count as
    interrupted (:func:`close_open` with ``stopped``). ``{}`` when the state has no attempts."""
    if not isinstance(state, dict) or not isinstance(state.get("attempts"), list) or not state["attempts"]:
        return {}
    attempts = close_open(state["attempts"], stopped)
    return {**summed(attempts), "attempts": attempts}


def campaign_runs(previous: Any) -> list[dict[str, Any]]:
    """The earlier campaign runs recorded in a previous ``campaign.json`` (its ``runs``; for a
    file written before runs were recorded, its own started/finished/status)."""
    if not isinstance(previous, dict):
        return []
    runs = previous.get("runs")
    if isinstance(runs, list):
        return [r for r in runs if isinstance(r, dict)]
    if previous.get("started"):
        return [{k: previous.get(k) for k in ("started", "finished", "status", "elapsed_s")}]
    return []
