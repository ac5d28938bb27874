"""Stand-in task functions for runner tests (importable by Dask worker processes).

``stand_in`` has the pipeline's signature; its behaviour is chosen by the dataset name:
``ok*`` finishes, ``fail*`` returns a failed result, ``raise*`` raises, ``kill-once*`` kills
its own worker process on the first attempt (marker file) and finishes on the retry,
``kill-always*`` kills its worker every time, ``kill-late*`` too but 0.3 s after its start.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any


def _state(root: Path, step: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "state.json").write_text(json.dumps({"version": 1, "current_step": step}))


def stand_in(name: str, ms: str, config: Any, out_dir: Path, *, threads: int,
             restart: bool = False, restart_from: str | None = None) -> dict[str, Any]:
    root = Path(out_dir) / "datasets" / name
    _state(root, "startup")
    (root / "attempts.log").open("a").write(f"{os.getpid()} threads={threads} cfg.threads={config.threads}\n")
    if name.startswith("kill-once"):
        marker = root / "killed-once"
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    if name.startswith("kill-always"):
        os.kill(os.getpid(), signal.SIGKILL)
    if name.startswith("kill-late"):  # kills its worker 0.3 s in (another dataset may be running)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    if name.startswith("raise"):
        raise RuntimeError(f"stand-in crash in {name}\nsecond line")
    time.sleep(0.5)
    _state(root, "p0")
    time.sleep(0.5)
    status = "failed" if name.startswith("fail") else "finished"
    res = {
        "name": name, "ms": ms, "status": status,
        "error": "stand-in failure: bad data" if status == "failed" else "",
        "template_initial": "faint", "template_final": "standard",
        "steps_run": ["p0", "p1"], "steps_accepted": ["p0"], "steps_reverted": ["p1"],
        "snr_initial": 10.0, "snr_final": 25.0, "dr_initial": 50.0, "dr_final": 100.0,
        "wall_s": 1.0, "final_ms": str(root / "final.ms"),
    }
    (root / "result.json").write_text(json.dumps(res))
    return res


def noop(name: str, ms: str, config: Any, out_dir: Path, *, threads: int,
         restart: bool = False, restart_from: str | None = None) -> dict[str, Any]:
    """A dataset that does nothing (scheduler-overhead benchmarks)."""
    return {"name": name, "ms": ms, "status": "finished", "error": "", "wall_s": 0.0}
