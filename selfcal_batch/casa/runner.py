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


def main(argv: list[str]) -> int:
    req_path = Path(argv[1])
    req = json.loads(req_path.read_text())
    logfile = Path(req["logfile"])
    result_path = Path(req["result"])
    from selfcal_batch.casa.env import configure_inprocess  # in the CASA child only

    configure_inprocess(logfile)
    import casatasks  # noqa: F401  (import after configuration)
    from casatasks import casalog  # casatasks: after configure_inprocess, CASA child only

    casalog.setlogfile(str(logfile))
    casalog.showconsole(False)
    from selfcal_batch.casa import jobs as casa_jobs  # (same reason)

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
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(result_path)
    return 1 if "error" in out else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
