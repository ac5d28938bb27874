"""One runner for every external program (WSClean, the CASA child, containers).

argv lists only (never a shell string), an explicit environment, its own process group
(so a timeout or cancellation kills the whole tree), every output line streamed to a
log file, and wall time accumulated per category for the benchmarks.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from selfcal_batch.corepool import Grant
from selfcal_batch.errors import ToolError
from selfcal_batch.numeric import seconds_text

log = logging.getLogger(__name__)

#: Seconds spent in external programs in this process, by category ("wsclean", "casa", ...).
#: Process-wide (benchmarks only): a dataset's own costs come from its :class:`ToolRecorder`.
TOOL_SECONDS: dict[str, float] = defaultdict(float)
#: Number of runs in this process, by category.
TOOL_RUNS: dict[str, int] = defaultdict(int)


#: ``ToolRecorder.seconds`` key of the time runs waited for cores (:mod:`selfcal_batch.corepool`).
CORE_WAIT = "core_wait"

@dataclass
class ToolRecorder:
    """One dataset's external-program runs: summed per category and, when ``path`` is
    set, one JSON line per run (``logs/tools.jsonl``: time, step, tool, category, seconds,
    exit code, argv).

    Bound to the running code with :func:`recording`; it lives in a context variable, so
    two datasets running in two threads of one worker process never see each other's
    runs (a Dask worker runs each task in its own thread, with its own context).
    """

    path: Path | None = None
    step: str = ""
    #: When set, called at each run for the step name (e.g. the dataset state's current step).
    step_of: Callable[[], str] | None = None
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    runs: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def record(self, tool: str, category: str, argv: Sequence[str], seconds: float, returncode: int,
               cpu_s: float | None = None, grant: Grant | None = None) -> None:
        """Add one run; ``cpu_s``: user + system CPU seconds of the child and its waited-for
        descendants (None when unknown), written as ``cpu_s``. ``grant``: the cores the run
        held (:mod:`selfcal_batch.corepool`), written as ``cores``, ``core_wait_s`` (seconds
        waited for them, not part of ``seconds``) and ``start`` (Unix time the run started)."""
        self.seconds[category] += seconds
        self.runs[category] += 1
        if grant is not None:  # waiting for cores is neither the tool's time nor Python's
            self.seconds[CORE_WAIT] += grant.waited
        if self.path is not None:
            step = self.step_of() if self.step_of is not None else self.step
            line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": step, "tool": tool,
                    "category": category, "seconds": round(seconds, 3), "returncode": returncode,
                    "argv": list(argv)}
            if cpu_s is not None:
                line["cpu_s"] = round(cpu_s, 3)
            if grant is not None:
                line.update(cores=grant.cores, core_wait_s=round(grant.waited, 3),
                            start=round(time.time() - seconds, 3))
            with open(self.path, "a") as fh:
                fh.write(json.dumps(line) + "\n")


_RECORDER: contextvars.ContextVar[ToolRecorder | None] = contextvars.ContextVar("tool_recorder", default=None)


@contextlib.contextmanager
def recording(path: Path | None = None) -> Iterator[ToolRecorder]:
    """Record every :func:`run_tool` call made by this thread inside the block."""
    rec = ToolRecorder(path)
    token = _RECORDER.set(rec)
    try:
        yield rec
    finally:
        _RECORDER.reset(token)


def current_recorder() -> ToolRecorder | None:
    """The recorder bound by the innermost :func:`recording` of this thread, if any."""
    return _RECORDER.get()


def held_comment(grant: Grant | None) -> str:
    """``"  # cores 2 of the worker's pool, waited 1.3 s"`` for a pooled grant, else ''
    (a shell comment: the logged command line stays ready to copy and paste)."""
    if grant is None or not grant.pooled:
        return ""
    waited = f", waited {grant.waited:.1f} s" if grant.waited >= 0.05 else ""
    return f"  # cores {grant.cores} of the worker's pool{waited}"


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM us when the parent dies (no orphaned WSClean/CASA
    left writing into a dataset directory after its Dask worker was killed)."""
    try:
        import ctypes  # inside the try: prctl exists on Linux only

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass(frozen=True)
class ToolResult:
    """Outcome of one external program run."""

    argv: tuple[str, ...]
    returncode: int
    seconds: float
    tail: str
    #: User + system CPU seconds of the child tree (None when not measured).
    cpu_s: float | None = None


def describe_returncode(rc: int) -> str:
    """'exit 3' or 'killed by SIGSEGV' for a subprocess return code."""
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit {rc}"


class StopTool(Exception):
    """Raised by a ``run_tool`` line watcher (``on_line``) to stop the program at once: its
    process group is killed and ``run_tool`` raises its ``error_cls`` with this one-line
    reason (e.g. WSClean cleaning an infinite peak forever)."""


def run_tool(
    argv: Sequence[str],
    *,
    tool: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    category: str | None = None,
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
    error_cls: type[ToolError] = ToolError,
    grant: Grant | None = None,
) -> ToolResult:
    """Run ``argv``; append its output to ``log_path``; raise ``error_cls`` on failure.

    The exact command line is written to the log and to the module logger first, ready to
    copy and paste. ``grant``: the cores the caller claimed for this run (see
    :mod:`selfcal_batch.corepool`), logged with the command line and in ``tools.jsonl``.
    """
    argv = [str(a) for a in argv]
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmdline = shlex.join(argv)
    log.info("[%s] %s%s", tool, cmdline, held_comment(grant))
    tail: deque[str] = deque(maxlen=40)
    t0 = time.monotonic()
    timed_out = threading.Event()
    stopped = ""
    with open(log_path, "a", buffering=1) as fh:
        fh.write(f"\n$ {cmdline}{held_comment(grant)}\n")
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(cwd) if cwd else None,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except FileNotFoundError as exc:
            raise error_cls(tool, f"program not found: {argv[0]!r} ({exc.strerror})") from exc
        except OSError as exc:
            raise error_cls(tool, f"cannot start {argv[0]!r}: {exc}") from exc

        def _kill() -> None:
            timed_out.set()
            _kill_group(proc)

        timer = threading.Timer(timeout, _kill) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                line = line.rstrip("\n")
                tail.append(line)
                if on_line is not None:
                    try:
                        on_line(line)
                    except StopTool as exc:
                        stopped = str(exc)
                        _kill_group(proc)
                        break
            rc, cpu_s = _wait_cpu(proc)
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            if timer:
                timer.cancel()
        seconds = time.monotonic() - t0
        fh.write(f"# {tool}: {'stopped: ' + stopped if stopped else describe_returncode(rc)} after {seconds:.1f} s\n")
    cat = category or tool
    TOOL_SECONDS[cat] += seconds
    TOOL_RUNS[cat] += 1
    if (rec := _RECORDER.get()) is not None:
        rec.record(tool, cat, argv, seconds, rc, cpu_s=cpu_s, grant=grant)
    result = ToolResult(tuple(argv), rc, seconds, "\n".join(tail), cpu_s)
    if stopped:
        raise error_cls(tool, f"{stopped} (log: {log_path})", returncode=rc, log_tail=result.tail)
    if check and (rc != 0 or timed_out.is_set()):
        if timed_out.is_set():
            msg = f"timed out after {seconds_text(timeout)} s"
        else:
            last = next((ln.strip() for ln in reversed(tail) if ">>>" in ln), "") or next(
                (ln.strip() for ln in reversed(tail) if re.search(r"[A-Za-z]{3}", ln)), "")
            msg = f"{describe_returncode(rc)}" + (f": {last[:300]}" if last else "")
        raise error_cls(tool, msg + f" (log: {log_path})", returncode=rc, log_tail=result.tail)
    return result


def _wait_cpu(proc: subprocess.Popen[str]) -> tuple[int, float | None]:
    """Reap the child with ``os.wait4``: (return code, CPU seconds of the child and the
    descendants it waited for). Falls back to ``proc.wait()`` (CPU unknown) when the child
    was reaped elsewhere (a timeout's kill)."""
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:
        return proc.wait(), None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the child's process group, then SIGKILL after a grace period."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
