"""One long-lived CASA child per dataset (a separate process, restarted if it dies).

Starting a Python interpreter and importing casatasks costs ~1.5-2.5 s; a dataset makes
10-15 CASA requests. :class:`CasaChild` starts ``python -m selfcal_batch.casa.runner --serve``
once and sends it request files (the same JSON as the one-shot mode), one JSON line per
request on stdin; the child answers each with a marker line on stdout
(:func:`selfcal_batch.casa.runner.request_line` / ``done_line``: paths with spaces work). Per request, as for a one-shot
child: the calls go to the pipeline log and the dataset's casa.log, the child's output to
logs/casa-child.log, and one line (wall and CPU seconds of this request) to the dataset's
:class:`selfcal_batch.process.ToolRecorder` (``logs/tools.jsonl``, category ``casa``).

A request that times out kills the child (its whole process group); a child that dies
(segfault, abort, killed) fails the request in flight with :class:`CasaTaskError`, like a
one-shot child. Either way the next request starts a new child.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from selfcal_batch import corepool, process
from selfcal_batch.casa.calibration import Call, _prepare, _results
from selfcal_batch.casa.env import casa_child_env
from selfcal_batch.casa.runner import DONE_MARKER, parse_done_line, request_line
from selfcal_batch.errors import CasaTaskError
from selfcal_batch.numeric import seconds_text


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` and its waited-for children (/proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class CasaChild:
    """A dataset's CASA child: ``run(calls, label)`` like :func:`run_casa`; ``close()`` at the end.

    ``starts`` counts child start-ups (1 unless a child died or timed out). Not thread-safe:
    one dataset runs its steps one after another.
    """

    def __init__(self, workdir: Path, log_path: Path | None = None):
        self.workdir = Path(workdir)
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.argv: list[str] = []
        self.starts = 0
        self._cpu0 = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def _start(self, casa_log: Path, child_log: Path) -> None:
        rundir = self.workdir / "casa_calls"
        self.argv = [sys.executable, "-m", "selfcal_batch.casa.runner", "--serve", str(rundir), str(casa_log)]
        with open(child_log, "a") as fh:
            fh.write(f"\n$ {shlex.join(self.argv)}\n")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=casa_child_env(), cwd=str(rundir), text=True, errors="replace", bufsize=1,
            start_new_session=True,
            preexec_fn=process._die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
        )
        self.starts += 1
        self._cpu0 = 0.0

    def run(self, calls: list[Call], *, label: str, timeout: float | None = 3600.0) -> list[Any]:
        """Run ``calls`` in order in the child (started or restarted as needed); their results.

        Raises :class:`CasaTaskError` naming the failing task, or saying the child died or
        timed out (the child is then gone and the next call starts a new one).
        """
        req, res, casa_log = _prepare(calls, self.workdir, label, self.log_path)
        # One core of the worker's pool while the child starts and runs this request; an
        # idle child (between requests) holds none.
        with corepool.claim(1) as grant:
            return self._run(req, res, casa_log, label, timeout, grant)

    def _run(self, req: Path, res: Path, casa_log: Path, label: str, timeout: float | None,
             grant: corepool.Grant) -> list[Any]:
        child_log = casa_log.with_name("casa-child.log")
        t0 = time.monotonic()
        if self.pid is None:
            self._reap()
            self._start(casa_log, child_log)
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        proc = self.proc
        timed_out = threading.Event()

        def _kill() -> None:
            timed_out.set()
            self._kill()

        timer = threading.Timer(timeout, _kill) if timeout else None
        if timer:
            timer.daemon = True
            timer.start()
        tail: deque[str] = deque(maxlen=40)
        rc: int | None = None
        try:
            with open(child_log, "a", buffering=1) as fh:
                fh.write(f"# request {req.name}{process.held_comment(grant)}\n")
                try:
                    proc.stdin.write(request_line(req))
                    proc.stdin.flush()
                except (BrokenPipeError, OSError):
                    pass  # died at start: reported below from its exit code
                for line in proc.stdout:
                    if line.startswith(DONE_MARKER):
                        done = parse_done_line(line)
                        if done is not None and done[0] == str(req):
                            rc = done[1]
                            break
                        continue
                    fh.write(line)
                    tail.append(line.rstrip("\n"))
                if rc is None:
                    self._reap()
                    rc = proc.returncode if proc.returncode is not None else -1
                    fh.write(f"# casa child: {process.describe_returncode(rc)} during {req.name}\n")
        except BaseException:
            self._kill()
            raise
        finally:
            if timer:
                timer.cancel()
        seconds = time.monotonic() - t0
        cpu = _cpu_seconds(proc.pid) if self.pid is not None else None
        cpu_s = None if cpu is None else max(0.0, cpu - self._cpu0)
        if cpu is not None:
            self._cpu0 = cpu
        self._record(req, seconds, rc, cpu_s, grant)
        if timed_out.is_set():
            raise CasaTaskError("casa", f"{label}: timed out after {seconds_text(timeout)} s (log: {child_log})",
                                returncode=rc, log_tail="\n".join(tail))
        return _results(res, label, rc, "\n".join(tail))

    def _record(self, req: Path, seconds: float, rc: int, cpu_s: float | None,
                grant: corepool.Grant | None = None) -> None:
        argv = [*self.argv, str(req)]
        process.TOOL_SECONDS["casa"] += seconds
        process.TOOL_RUNS["casa"] += 1
        if (rec := process.current_recorder()) is not None:
            rec.record("casa", "casa", argv, seconds, rc, cpu_s=cpu_s, grant=grant)

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()

    def _kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        """End the child: end of input, then SIGKILL of its group after 30 s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc = proc
            self._kill()
            self.proc = None
        finally:
            if proc.stdout:
                proc.stdout.close()
