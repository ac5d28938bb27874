"""Checksums of every file of a directory tree (to prove an input MS was not modified)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


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


def tree_checksums(root: str | os.PathLike[str]) -> dict[str, str]:
    """``{relative path: sha256}`` for every file under ``root`` (a file: its own entry).

    Directories are listed with the value ``"<dir>"`` so that an added empty directory
    also shows up as a difference; symlinks are recorded by their target, not followed.
    """
    root = Path(root)
    if root.is_file():
        return {root.name: file_sha256(root)}
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for d in dirnames:
            p = base / d
            rel = str(p.relative_to(root))
            out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else "<dir>"
        for f in sorted(filenames):
            p = base / f
            rel = str(p.relative_to(root))
            out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else file_sha256(p)
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
