"""Checksums of every file of a directory tree (to prove an input MS was not modified)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of one file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _entry(p: Path) -> str:
    """What is compared for one path: link target, or content + mode + modification time."""
    if p.is_symlink():
        return f"-> {os.readlink(p)}"
    st = p.stat()
    content = "<dir>" if p.is_dir() else file_sha256(p)
    return f"{content} mode={st.st_mode:o} mtime_ns={st.st_mtime_ns}"


def tree_checksums(root: str | os.PathLike[str]) -> dict[str, str]:
    """``{relative path: fingerprint}`` for every file and directory under ``root``.

    A fingerprint is the SHA-256 of a file's bytes (``"<dir>"`` for a directory) with the
    path's mode and modification time (ns), so a rewrite with the same bytes, a chmod, or
    a file added to or removed from a directory (its mtime changes) all show up. The
    root itself is the entry ``"."``. Symlinks are recorded by their target, not followed.
    """
    root = Path(root)
    if root.is_file():
        return {root.name: _entry(root)}
    out: dict[str, str] = {".": _entry(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in dirnames + sorted(filenames):
            p = base / name
            out[str(p.relative_to(root))] = _entry(p)
    return out


def tree_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Human-readable differences between two :func:`tree_checksums` results ([] = same)."""
    diffs: list[str] = []
    for k in sorted(set(before) | set(after)):
        if k not in after:
            diffs.append(f"removed: {k}")
        elif k not in before:
            diffs.append(f"added: {k}")
        elif before[k] != after[k]:
            diffs.append(f"changed: {k}")
    return diffs


def visibility_digest(ms: str | os.PathLike[str], column: str = "DATA", chunk_rows: int = 100_000) -> str:
    """SHA-256 of what an image of ``column`` sees: the column, FLAG, FLAG_ROW, WEIGHT and
    WEIGHT_SPECTRUM (when present), read in row chunks with python-casacore.

    For our own working copy only (casacore writes table.lock even when reading; never use it
    on a user's input MS). Raises RuntimeError/OSError from casacore if the MS cannot be read.
    """
    from casacore.tables import table  # lazy: loaded only on this path

    h = hashlib.sha256()
    with table(str(ms), ack=False) as t:
        cols = [c for c in (column, "FLAG", "FLAG_ROW", "WEIGHT", "WEIGHT_SPECTRUM") if c in t.colnames()]
        cols = [c for c in cols if c != "WEIGHT_SPECTRUM" or t.iscelldefined(c, 0)]
        n = t.nrows()
        h.update(f"{n} {cols}".encode())
        for start in range(0, n, chunk_rows):
            for c in cols:
                h.update(t.getcol(c, startrow=start, nrow=min(chunk_rows, n - start)).tobytes())
    return h.hexdigest()


def input_fingerprint(ms: Path) -> list[list[Any]]:
    """(name, size, mtime_ns) of the main-table files of ``ms`` (``table.dat``, ``table.f*``;
    links followed): cheap, and different when the MS at this path is replaced or rewritten."""
    out = []
    for p in sorted(Path(ms).glob("table.*")):
        if p.name == "table.dat" or p.name.startswith("table.f"):
            s = p.stat()
            out.append([p.name, s.st_size, s.st_mtime_ns])
    return out
