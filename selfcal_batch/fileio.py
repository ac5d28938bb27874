"""Atomic file writes: a reader sees the old file or the complete new one, never a torn file.

Each write goes to a hidden temporary file beside the target (same directory, so the final
``os.replace`` is a rename on one file system) and is renamed over the target; the temporary
file is removed if writing fails. The temporary name keeps the target's suffix, so writers
that infer the format from the name (matplotlib, PIL) write the right format. ``fsync=True``
also flushes the data to disk before the rename (files that must survive a machine crash).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "atomic_write_json", "atomic_write_text"]


def _tmp_path(path: Path) -> Path:
    """Hidden temporary name beside ``path``, unique per process and thread."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}{path.suffix}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any], *, fsync: bool = False) -> Path:
    """Call ``write(tmp)`` (it creates the file ``tmp``), then rename ``tmp`` to ``path``.

    Creates the parent directory. Raises whatever ``write`` or the rename raises (OSError);
    the temporary file is removed then and ``path`` is left as it was. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8",
                      fsync: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding), fsync=fsync)


def atomic_write_json(path: str | os.PathLike[str], data: Any, *, fsync: bool = False) -> Path:
    """Write ``data`` as JSON (indent 1; ``str()`` of anything JSON cannot encode) atomically."""
    return atomic_write_text(path, json.dumps(data, indent=1, default=str), fsync=fsync)
