"""Child-process entry point that runs CASA tasks: ``python -m selfcal_batch.casa.runner REQ.json``.

CASA never runs inside a Dask worker: casacore is not thread-safe, a malformed MS can
abort the interpreter and long calls hold the GIL. The parent (``calibration.run_casa``)
writes a request::

    {"calls": [{"task": "gaincal", "kwargs": {...}, "strict": true},
               {"job": "inspect_ms", "kwargs": {...}}],
     "logfile": ".../casa.log", "result": ".../result.json"}

and this module runs the calls in order, then writes ``{"results": [...]}`` or
``{"results": [...], "error": "...", "failed_call": i}``. ``task`` names a casatasks task;
``job`` a function of :mod:`selfcal_batch.casa.jobs`. SEVERE log lines written during a
strict call make it fail (except known-harmless ones).

Long-lived mode (one CASA start per dataset, :class:`selfcal_batch.casa.calibration.CasaChild`):
``python -m selfcal_batch.casa.runner --serve RUNDIR LOGFILE`` reads request paths from stdin,
one per line, runs each like the one-shot mode and prints ``DONE_MARKER`` and a JSON object
``{"request": path, "rc": rc}`` (:func:`request_line` / :func:`done_line`: JSON with ASCII
escapes, so a path with spaces or non-ASCII characters survives the pipe in any locale).
"""
from __future__ import annotations

import json
import re
import sys
import traceback
from pathlib import Path
from typing import Any

_HARMLESS_SEVERE = re.compile(
    r"MeasTable::dUTC|not being maintained by casaconfig|do not appear to be casarundata|"
    r"external-data\.html|SEVERE\s+::casa\s*$"
)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy containers and scalars returned by CASA into JSON-friendly values."""
    import numpy as np  # lazy: loaded only on this path

    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if np.iscomplexobj(obj):
            return {"real": obj.real.tolist(), "imag": obj.imag.tolist()}
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def _severe_lines(logfile: Path, offset: int) -> tuple[list[str], int]:
    try:
        with open(logfile, errors="replace") as fh:
            fh.seek(offset)
            text = fh.read()
            new_offset = fh.tell()
    except FileNotFoundError:
        return [], offset
    lines = [
        ln.strip()
        for ln in text.splitlines()
        if "SEVERE" in ln and not _HARMLESS_SEVERE.search(ln)
    ]
    return lines, new_offset


_LOGFILE: dict[str, str] = {}


def _start_casa(logfile: Path) -> tuple[Any, Any]:
    """Configure CASA offline, import casatasks, route its log to ``logfile``."""
    from selfcal_batch.casa.env import configure_inprocess  # CASA child only

    configure_inprocess(logfile)
    import casatasks  # (imported after configuration)
    from casatasks import casalog  # CASA child only

    casalog.setlogfile(str(logfile))
    casalog.showconsole(False)
    _LOGFILE["path"] = str(logfile)
    return casatasks, casalog


def run_request(req: dict[str, Any], casatasks: Any, casalog: Any) -> dict[str, Any]:
    """Run one request's calls in order; returns ``{"results": [...]}`` plus ``error`` and
    ``failed_call`` when a call raised or a strict call logged SEVERE; writes the result file."""
    from selfcal_batch.casa import jobs as casa_jobs  # CASA child only

    logfile = Path(req["logfile"])
    if _LOGFILE.get("path") != str(logfile):
        casalog.setlogfile(str(logfile))
        _LOGFILE["path"] = str(logfile)
    results: list[Any] = []
    out: dict[str, Any] = {"results": results}
    offset = logfile.stat().st_size if logfile.exists() else 0
    for i, call in enumerate(req["calls"]):
        name = call.get("task") or call.get("job")
        kwargs = call.get("kwargs", {})
        casalog.post(f"selfcal-batch call {i}: {name}({kwargs!r})", "INFO")
        try:
            if "task" in call:
                fn = getattr(casatasks, call["task"])
            else:
                fn = getattr(casa_jobs, call["job"])
            value = fn(**kwargs)
            severe, offset = _severe_lines(logfile, offset)
            if severe and call.get("strict", True):
                out["error"] = f"{name}: CASA reported SEVERE: {severe[-1][:400]}"
                out["failed_call"] = i
                break
            results.append(to_jsonable(value))
        except Exception as exc:  # noqa: BLE001  (reported to the parent, not swallowed)
            out["error"] = f"{name}: {type(exc).__name__}: {str(exc).strip()[:400]}"
            out["failed_call"] = i
            out["traceback"] = traceback.format_exc()
            break
    result_path = Path(req["result"])
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(result_path)
    return out


#: Printed by the server after each request: ``<marker> {"request": path, "rc": exit code}``.
DONE_MARKER = "@@selfcal-batch-casa-done"


def request_line(path: str | Path) -> str:
    """The stdin line that asks the server to run the request file ``path`` (JSON, ASCII)."""
    return json.dumps({"request": str(path)}) + "\n"


def parse_request_line(line: str) -> str:
    """The request path of a :func:`request_line` ('' for a blank line); a line that is not
    JSON is taken as a bare path (older parents), only its line end stripped."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return ""
    if text.lstrip().startswith("{"):
        return str(json.loads(text)["request"])
    return text


def done_line(path: str, rc: int) -> str:
    """The server's answer to the request ``path``: ``DONE_MARKER {json}`` (no newline)."""
    return f"{DONE_MARKER} {json.dumps({'request': str(path), 'rc': int(rc)})}"


def parse_done_line(line: str) -> tuple[str, int] | None:
    """``(request path, rc)`` of a :func:`done_line`, or None for any other output line.
    Paths may hold spaces (the old ``split()`` parse never matched them: the parent waited
    for ever)."""
    if not line.startswith(DONE_MARKER):
        return None
    try:
        rec = json.loads(line[len(DONE_MARKER):])
        return str(rec["request"]), int(rec["rc"])
    except (ValueError, KeyError, TypeError):
        return None
#: File in the server's run directory naming the request being run (for tools and tests).
SERVING_FILE = "serving.json"


def serve(rundir: Path, logfile: Path) -> int:
    """Long-lived mode: read :func:`request_line` lines from stdin, run each request and print
    its :func:`done_line`; exits 0 at end of input. CASA is imported once."""
    casatasks, casalog = _start_casa(logfile)
    print(done_line("ready", 0), flush=True)
    serving = rundir / SERVING_FILE
    for line in sys.stdin:
        req_path = parse_request_line(line)
        if not req_path:
            continue
        serving.write_text(json.dumps({"request": req_path}))
        out = run_request(json.loads(Path(req_path).read_text()), casatasks, casalog)
        serving.unlink(missing_ok=True)
        print(done_line(req_path, 1 if "error" in out else 0), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) > 1 and argv[1] == "--serve":
        return serve(Path(argv[2]), Path(argv[3]))
    req = json.loads(Path(argv[1]).read_text())
    casatasks, casalog = _start_casa(Path(req["logfile"]))
    out = run_request(req, casatasks, casalog)
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
