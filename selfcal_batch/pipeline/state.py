"""Per-dataset state on disk (``state.json``), written atomically after every change.

A step is *done* when its record has status ``done`` and the same input hash as now; the
hash chains the previous step's hash with the configuration the step depends on, so a
changed setting invalidates the affected step and everything after it, nothing before.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from selfcal_batch.errors import SelfcalBatchError
from selfcal_batch.pipeline.registry import canonical, rename_old_steps

#: Schema version of state.json. 2: steps renamed (split_calibrated, dataset_plots,
#: autoflag_init/final; pipeline.registry) and sections typed (pipeline.state_records).
#: Version 1 files are migrated on load (step records renamed; their resume hashes are
#: unchanged, so finished steps stay finished); files without a known version are refused.
STATE_VERSION = 2
#: Versions :meth:`DatasetState.load` migrates.
MIGRATES = (1,)


class StateVersionError(SelfcalBatchError):
    """state.json has a schema version this code cannot read (one-line message)."""


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 state (seed step names) as version 2: step records, snapshots and
    ``current_step`` under the new step names. Pure; returns a new dict."""
    out = dict(data)
    out["steps"] = rename_old_steps(data.get("steps") or {})
    out["snapshots"] = rename_old_steps(data.get("snapshots") or {})
    out["current_step"] = canonical(str(data.get("current_step") or ""))
    out["version"] = STATE_VERSION
    return out


def chain_hash(previous: str, step: str, *parts: Any) -> str:
    """Hash of a step's inputs: the previous step's hash plus the given config parts."""
    h = hashlib.sha256(previous.encode())
    h.update(step.encode())
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:20]


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temp file + fsync + rename (never a torn file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # e.g. ENOSPC: never leave a half-written temp file behind (the old file is intact).
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


@dataclass
class DatasetState:
    """Everything the step machine persists for one dataset."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)
    #: Called with ``data`` before every save (the pipeline updates the attempt's costs).
    on_save: Callable[[dict[str, Any]], None] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, path: Path) -> "DatasetState":
        """Load ``state.json`` (or start empty when absent or unreadable).

        Raises :class:`StateVersionError` when the file is a JSON object without a version
        this code reads (no ``version``, or a newer one): resuming it could redo or skip the
        wrong steps; ``--restart`` starts the dataset afresh."""
        path = Path(path)
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                data = None
            if isinstance(data, dict):
                version = data.get("version")
                if version == STATE_VERSION:
                    return cls(path, data)
                if version in MIGRATES:
                    return cls(path, migrate(data))
                raise StateVersionError(
                    f"{path}: state.json schema version {version!r} is not supported by this version "
                    f"(reads {STATE_VERSION}, migrates {', '.join(map(str, MIGRATES))}): "
                    "rerun with --restart to start this dataset afresh")
        return cls(path, {"version": STATE_VERSION, "steps": {}, "current_step": ""})

    def save(self) -> None:
        """Persist atomically."""
        self.data["updated"] = time.time()
        if self.on_save is not None:
            self.on_save(self.data)
        atomic_write_json(self.path, self.data)

    # -- step records ------------------------------------------------------------

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        return self.data.setdefault("steps", {})

    def is_done(self, step: str, input_hash: str) -> bool:
        """True when ``step`` finished with these inputs."""
        rec = self.steps.get(step)
        return bool(rec and rec.get("status") in ("done", "skipped") and rec.get("input_hash") == input_hash)

    def start(self, step: str, input_hash: str) -> None:
        """Mark a step as running (persisted before any side effect)."""
        prev = self.steps.get(step, {})
        self.steps[step] = {"status": "running", "input_hash": input_hash,
                            "started": time.time(), "attempts": prev.get("attempts", 0) + 1}
        self.data["current_step"] = step
        self.save()

    def finish(self, step: str, status: str = "done", **info: Any) -> None:
        """Record a step's outcome and outputs."""
        rec = self.steps.setdefault(step, {})
        rec.update(info)
        rec["status"] = status
        rec["finished"] = time.time()
        self.data["current_step"] = ""
        self.save()

    def invalidate_from(self, order: list[str], step: str) -> None:
        """Forget ``step`` and every step after it in ``order``."""
        if step in order:
            for s in order[order.index(step):]:
                self.steps.pop(s, None)
        self.save()

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
