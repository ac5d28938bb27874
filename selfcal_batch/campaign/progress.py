"""Campaign progress: a live rich display, or one plain line per finished dataset; and the
row format shared by the display, the summary table and ``survey/datasets.csv``.

The live view shows done / running / failed / queued counts, an ETA from the mean wall time
of finished datasets, and the current step of every running dataset, read from its
``<out>/datasets/<name>/state.json`` (``current_step``) every ~2 s. With ``quiet`` (batch
jobs) only the per-dataset lines are printed.

How step events travel: a worker's pipeline writes ``state.json`` atomically after every
step (``steps[<step>]``: status, started, finished, accepted, reason); Dask carries only the
final result. The campaign process polls the state.json of each running dataset (the output
directory is shared with the workers in every deployment) and, when the console is not a
terminal and not ``quiet``, prints one line per step that ended since the campaign started
(:func:`step_line`: dataset, step, kept / reverted / skipped / done / failed, reason,
elapsed) followed by an ETA (:func:`step_eta_s`) once steps have been timed.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Iterable

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from selfcal_batch.contract import CSV_COLUMNS, CSV_EXCLUDED
from selfcal_batch.fileio import atomic_write
from selfcal_batch.numeric import float_or_nan

POLL_S = 2.0
#: ``survey/datasets.csv`` leading columns (the DatasetResult fields) and the result keys kept
#: in result.json only: the output contract.
ROW_FIELDS = CSV_COLUMNS


def failed_row(name: str, ms: Any, error: str) -> dict[str, Any]:
    row: dict[str, Any] = {k: None for k in ROW_FIELDS}
    row.update(name=name, ms=str(ms) if ms else "", status="failed", error=error)
    return row


def normalise_row(res: dict[str, Any], name: str, ms: Any) -> dict[str, Any]:
    """A result dict with every ROW_FIELDS key (extra keys kept)."""
    row = {k: res.get(k) for k in ROW_FIELDS}
    row.update({k: v for k, v in res.items() if k not in row})
    row["name"] = row.get("name") or name
    row["ms"] = row.get("ms") or (str(ms) if ms else "")
    from selfcal_batch.selfcal.outcome import ALL_STATUSES  # lazy: loaded only on this path

    if row.get("status") not in ALL_STATUSES:
        row["error"] = row.get("error") or f"unexpected status {row.get('status')!r}"
        row["status"] = "failed"
    if row["status"] == "failed" and not row.get("error"):
        row["error"] = "failed (no reason given)"
    if row.get("error"):
        row["error"] = " ".join(str(row["error"]).split())
    return row


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return ";".join(str(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


def write_survey_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """``survey/datasets.csv``: ROW_FIELDS first, then any extra keys; lists joined with ';'.

    The cost columns are the sums over every attempt (result.json); the attempt records
    themselves (``attempts``) stay in result.json, their number is ``n_attempts``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = sorted({k for r in rows for k in r if k not in ROW_FIELDS and k not in CSV_EXCLUDED})
    cols = list(ROW_FIELDS) + extra

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: _csv_value(r.get(k)) for k in cols})

    atomic_write(path, write)


def fmt_duration(seconds: float | None) -> str:
    """'1h02m', '3m05s', '42s' or '-'."""
    if seconds is None or not isinstance(seconds, (int, float)) or math.isnan(seconds):
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _num(v: Any) -> float | None:
    f = float_or_nan(v)
    return None if math.isnan(f) else f


def _fmt_num(v: Any) -> str:
    f = _num(v)
    if f is None:
        return "-"
    return f"{f:.3g}" if abs(f) < 1000 else f"{f:.0f}"


def template_text(row: dict[str, Any]) -> str:
    a, b = row.get("template_initial") or "", row.get("template_final") or ""
    if not a and not b:
        return "-"
    return a if a == b or not b else f"{a}→{b}"


def snr_text(row: dict[str, Any]) -> str:
    a, b = row.get("snr_initial"), row.get("snr_final")
    if _num(a) is None and _num(b) is None:
        return "-"
    return f"{_fmt_num(a)}→{_fmt_num(b)}"


def dr_gain_text(row: dict[str, Any]) -> str:
    a, b = _num(row.get("dr_initial")), _num(row.get("dr_final"))
    if a is None or b is None or a <= 0:
        return "-"
    return f"×{b / a:.2f}"


def finished_line(row: dict[str, Any], done: int, total: int) -> str:
    """The plain one-line record printed when a dataset ends."""
    head = f"[{done}/{total}] {row.get('name')} {row.get('status')}"
    if row.get("status") == "failed":
        return f"{head}: {row.get('error') or 'unknown error'}"
    if row.get("reason"):  # input delivered unchanged, or nothing delivered (diagnostics-only steps)
        head = f"{head}: {row['reason']}"
    return (f"{head} (template {template_text(row)}, SNR {snr_text(row)}, "
            f"DR {dr_gain_text(row)}, wall {wall_text(row)})")


#: Up to this many attempts, the line lists each attempt's wall time.
MAX_LISTED_ATTEMPTS = 4


def wall_text(row: dict[str, Any]) -> str:
    """The wall time of a finished line: one attempt -> its ``wall_s``; several -> the total
    of every attempt record (``attempts[*].wall_s``: also those ``--restart`` discarded and
    no-op resumes, which the row's summed ``wall_s`` leaves out as costs of outputs no longer
    on disk) and each attempt's, e.g. ``5m10s over 2 attempts: 3m00s + 2m10s`` (tester s6 M4:
    the line showed the last attempt's time only). Pure."""
    attempts = [a for a in row.get("attempts") or [] if isinstance(a, dict)]
    n = int(_num(row.get("n_attempts")) or 0) or len(attempts)
    walls = [_num(a.get("wall_s")) or 0.0 for a in attempts]
    if n <= 1 or len(walls) != n:
        over = f" over {n} attempts" if n > 1 else ""
        return f"{fmt_duration(_num(row.get('wall_s')))}{over}"
    each = ": " + " + ".join(fmt_duration(w) for w in walls) if n <= MAX_LISTED_ATTEMPTS else ""
    return f"{fmt_duration(sum(walls))} over {n} attempts{each}"


def banner_line(campaign: str, n_datasets: int, out_dir: Any, cluster: str, started: str) -> str:
    """The start banner: version, campaign, datasets, output, cluster, start time."""
    from selfcal_batch import __version__  # lazy: avoids importing the package root at module load

    return (f"selfcal-batch {__version__}: campaign {campaign}: {n_datasets} dataset(s) -> {out_dir}; "
            f"{cluster}; started {started}")


def step_decision(rec: dict[str, Any]) -> str:
    """'kept' / 'reverted' (a gated calibration step), 'skipped', 'failed' or 'done'."""
    status = str(rec.get("status") or "")
    if status == "done" and "accepted" in rec:
        return "kept" if rec.get("accepted") else "reverted"
    return status if status in ("skipped", "failed") else "done"


def step_line(name: str, step: str, rec: dict[str, Any], eta: float | None = None) -> str:
    """One plain line for a step that ended, e.g. ``J1008 p1: reverted: SNR decreased 40.1
    -> 38.0 (42s) · ETA 3m10s``. Elapsed = the step record's finished - started (s)."""
    started, finished = _num(rec.get("started")), _num(rec.get("finished"))
    took = finished - started if started is not None and finished is not None else None
    line = f"{name} {step}: {step_decision(rec)}"
    reason = " ".join(str(rec.get("reason") or rec.get("error") or "").split())
    if reason:
        line += f": {reason}"
    if _num(rec.get("snr_pre")) is not None and _num(rec.get("snr_post")) is not None:
        line += f" (SNR {_fmt_num(rec.get('snr_pre'))}→{_fmt_num(rec.get('snr_post'))})"
    line += f" ({fmt_duration(took)})"
    if eta is not None:
        line += f" · ETA {fmt_duration(eta)}"
    return line


def new_step_events(steps: dict[str, Any], since: float, seen: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """Steps of one state.json ``steps`` dict that ended at or after ``since`` (epoch s) and
    are not in ``seen`` (updated), ordered by end time. Keyed by step and end time, so a step
    redone later (resume, --restart-from) is reported again."""
    out = []
    for step, rec in (steps or {}).items():
        if not isinstance(rec, dict) or rec.get("status") not in ("done", "skipped", "failed"):
            continue
        end = _num(rec.get("finished"))
        key = f"{step}@{end}"
        if end is None or end < since or key in seen:
            continue
        seen.add(key)
        out.append((str(step), rec))
    return sorted(out, key=lambda e: float(e[1]["finished"]))


def new_notices(notices: Any, since: float, seen: set[str]) -> list[str]:
    """Texts of a state.json ``notices`` list (``{"time": epoch s, "text": ...}``, written by
    the pipeline when it decides something the user must see, e.g. a full redo) made at or
    after ``since`` and not in ``seen`` (updated), in order (pure)."""
    out = []
    for n in notices if isinstance(notices, list) else []:
        t = _num(n.get("time")) if isinstance(n, dict) else None
        key = f"{t}:{n.get('text')}" if isinstance(n, dict) else ""
        if t is None or t < since or key in seen:
            continue
        seen.add(key)
        out.append(str(n.get("text")))
    return out


def step_eta_s(step_seconds: list[float], steps_left: int, slots: int) -> float | None:
    """Mean step time x steps still to run / concurrent slots (None before any step is timed).

    ``steps_left`` = planned steps of the datasets not finished minus the steps they have
    already ended; ladder extensions and skipped steps make this an estimate."""
    if not step_seconds:
        return None
    return sum(step_seconds) / len(step_seconds) * max(steps_left, 0) / max(slots, 1)


def read_current_step(out_dir: Path, name: str) -> str:
    """``current_step`` from a dataset's state.json ('' when unknown)."""
    try:
        data = json.loads((Path(out_dir) / "datasets" / name / "state.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(data.get("current_step") or "") if isinstance(data, dict) else ""


class CampaignProgress:
    """Tracks and renders a running campaign (use as a context manager)."""

    def __init__(self, out_dir: Path, names: Iterable[str], *, slots: int = 1,
                 quiet: bool = False, console: Console | None = None, title: str = "",
                 steps_per_dataset: int = 0):
        self.out_dir = Path(out_dir)
        self.names = list(names)
        self.total = len(self.names)
        self.slots = max(1, slots)
        self.console = console or Console()
        self.live_mode = not quiet and self.console.is_terminal
        self.title = title
        self.done: list[dict[str, Any]] = []
        self.running: dict[str, float] = {}   # name -> first seen running (monotonic)
        self.steps: dict[str, str] = {}
        self.walls: list[float] = []
        self._last_poll = 0.0
        self._t0 = time.monotonic()
        self._live: Live | None = None
        #: Non-terminal step lines (see the module docstring).
        self.step_lines = not quiet and not self.live_mode
        self.steps_per_dataset = steps_per_dataset
        self._since = time.time() - 1.0
        self._seen: dict[str, set[str]] = {}
        self._ended: dict[str, int] = {}      # steps ended so far per dataset (any run)
        self.step_seconds: list[float] = []

    # -- state updates ----------------------------------------------------------------

    def set_running(self, names: Iterable[str]) -> None:
        now = time.monotonic()
        names = set(names)
        for n in names:
            self.running.setdefault(n, now)
        for n in list(self.running):
            if n not in names:
                self.running.pop(n, None)

    def finished(self, row: dict[str, Any], counted: bool = True) -> None:
        """Record a finished dataset and print its line."""
        name = str(row.get("name"))
        self.emit_notices(name)
        if self.step_lines:
            self.emit_steps(name, final=True)
        started = self.running.pop(name, None)
        if counted:
            self.done.append(row)
        wall = _num(row.get("wall_s"))
        attempts = row.get("attempts")
        if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict):
            wall = _num(attempts[-1].get("wall_s"))  # this run's time, not the sum (for the ETA)
        if wall is None and started is not None:
            wall = time.monotonic() - started
        if wall is not None and row.get("status") != "failed":
            self.walls.append(float(wall))
        line = finished_line(row, len(self.done), self.total)
        style = "red" if row.get("status") == "failed" else "green"
        if self.live_mode:
            self.console.print(Text(line, style=style))
        else:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self.refresh(force=True)

    @property
    def n_failed(self) -> int:
        return sum(1 for r in self.done if r.get("status") == "failed")

    def eta_s(self) -> float | None:
        """Mean wall time of finished datasets x remaining / concurrent slots."""
        remaining = self.total - len(self.done)
        if not self.walls or remaining <= 0:
            return None if remaining > 0 else 0.0
        mean = sum(self.walls) / len(self.walls)
        return mean * math.ceil(remaining / self.slots)

    def poll_steps(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_poll < POLL_S:
            return
        self._last_poll = now
        for n in self.running:
            self.steps[n] = read_current_step(self.out_dir, n)
            self.emit_notices(n)
            if self.step_lines:
                self.emit_steps(n)

    def emit_notices(self, name: str) -> None:
        """Print ``<name>: <text>`` for each notice the dataset's pipeline wrote since the
        last poll (in every console mode, also with --quiet: they say why work is redone)."""
        try:
            notices = json.loads((self.out_dir / "datasets" / name / "state.json").read_text()).get("notices")
        except (OSError, ValueError, AttributeError):
            return
        for text in new_notices(notices, self._since, self._seen.setdefault(f"{name} notices", set())):
            self.console.print(f"{name}: {text}", markup=False, highlight=False, soft_wrap=True)

    def steps_left(self, finishing: str = "") -> int:
        done = {str(r.get("name")) for r in self.done} | {finishing}
        return sum(max(self.steps_per_dataset - self._ended.get(n, 0), 0)
                   for n in self.names if n not in done)

    def emit_steps(self, name: str, final: bool = False) -> None:
        """Print a line per step of ``name`` that ended since the last poll (non-terminal)."""
        try:
            data = json.loads((self.out_dir / "datasets" / name / "state.json").read_text())
            steps = data.get("steps") or {}
        except (OSError, ValueError, AttributeError):
            return
        self._ended[name] = sum(1 for r in steps.values()
                                if isinstance(r, dict) and r.get("status") in ("done", "skipped", "failed"))
        events = new_step_events(steps, self._since, self._seen.setdefault(name, set()))
        for i, (step, rec) in enumerate(events):
            started, ended = _num(rec.get("started")), _num(rec.get("finished"))
            if started is not None and ended is not None and rec.get("status") == "done":
                self.step_seconds.append(ended - started)
            last = i == len(events) - 1
            eta = step_eta_s(self.step_seconds, self.steps_left(name if final else ""), self.slots) \
                if last else None
            self.console.print(step_line(name, step, rec, eta), markup=False, highlight=False,
                               soft_wrap=True)

    # -- rendering ------------------------------------------------------------------

    def headline(self) -> str:
        ok = len(self.done) - self.n_failed
        queued = self.total - len(self.done) - len(self.running)
        eta = self.eta_s()
        return (f"{self.title + ': ' if self.title else ''}{ok} done · {len(self.running)} running · "
                f"{self.n_failed} failed · {max(queued, 0)} queued of {self.total} · "
                f"elapsed {fmt_duration(time.monotonic() - self._t0)} · ETA {fmt_duration(eta)}")

    def renderable(self) -> Group:
        table = Table(box=None, show_header=bool(self.running), pad_edge=False)
        table.add_column("running", style="cyan")
        table.add_column("step")
        table.add_column("elapsed", justify="right")
        now = time.monotonic()
        for n, t in sorted(self.running.items()):
            table.add_row(n, self.steps.get(n) or "starting", fmt_duration(now - t))
        frac = len(self.done) / self.total if self.total else 1.0
        width = 30
        bar = Text("█" * int(frac * width) + "░" * (width - int(frac * width)), style="magenta")
        return Group(Text(self.headline(), style="bold"), bar, table)

    def refresh(self, force: bool = False) -> None:
        self.poll_steps(force=force)
        if self._live is not None:
            self._live.update(self.renderable())

    def __enter__(self) -> "CampaignProgress":
        if self.live_mode:
            self._live = Live(self.renderable(), console=self.console, refresh_per_second=2,
                              transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None


def summary_table(rows: list[dict[str, Any]], title: str = "Campaign summary") -> Table:
    """Rich table: name, status, template, SNR initial→final, DR gain, wall, error."""
    t = Table(title=title, show_lines=False)
    t.add_column("name", style="bold")
    t.add_column("status")
    t.add_column("template")
    t.add_column("SNR init→final", justify="right")
    t.add_column("DR gain", justify="right")
    t.add_column("wall", justify="right")
    t.add_column("error", overflow="fold")
    for r in rows:
        st = str(r.get("status") or "")
        style = {"failed": "red", "finished": "green"}.get(st, "yellow")
        t.add_row(str(r.get("name")), Text(st, style=style), template_text(r), snr_text(r),
                  dr_gain_text(r), fmt_duration(_num(r.get("wall_s"))), str(r.get("error") or ""))
    return t
