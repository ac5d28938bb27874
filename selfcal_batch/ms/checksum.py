"""Checksums of every file of a directory tree (to prove an input MS was not modified)."""
from __future__ import annotations

import hashlib
import os
import re
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


#: What an image of a data column reads besides the column: flags and weights.
FLAG_WEIGHT_COLUMNS = ("FLAG", "FLAG_ROW", "WEIGHT", "WEIGHT_SPECTRUM")
#: Columns an image of DATA does not read and the pipeline writes between images
#: (MODEL_KEPT: the reverted step's model kept beside MODEL_DATA, pipeline/model_keep.py).
NOT_IMAGED_COLUMNS = ("MODEL_DATA", "CORRECTED_DATA", "MODEL_KEPT")
#: Sub-tables no image depends on; CASA tasks append HISTORY rows on every call.
_NOT_IMAGED = frozenset({"HISTORY", "FLAG_CMD"})


def _column_files(ms: Path, dminfo: dict[str, Any], columns: set[str]) -> list[str]:
    """Names of the storage-manager files of the data managers holding any of ``columns``
    (from ``table.getdminfo()``): ``table.f<SEQNR>`` and every file named after it
    (``table.f<SEQNR>i``: a StandardStMan's indirect arrays; ``table.f<SEQNR>_TSM<k>``: tiles)."""
    seqnrs = {int(dm.get("SEQNR", -1)) for dm in dminfo.values() if set(dm.get("COLUMNS", ())) & columns}
    out = []
    for p in ms.iterdir():
        m = re.match(r"table\.f(\d+)", p.name)
        if m and int(m.group(1)) in seqnrs:
            out.append(p.name)
    return sorted(out)


def _stat_hash(ms: Path, names: list[str], head: str) -> str:
    h = hashlib.sha256(head.encode())
    for name in names:
        st = (ms / name).stat()
        h.update(f"{name} {st.st_size} {st.st_ino} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def storage_identity(ms: str | os.PathLike[str], column: str = "DATA") -> dict[str, str]:
    """Cheap identities (``stat`` plus one table open; no cell read) of what an image of
    ``column`` sees, for our own working copy only (casacore writes table.lock):

    - ``"data"``: the row count, the column names, (name, size, inode, mtime ns) of the
      storage-manager files of every column except :data:`NOT_IMAGED_COLUMNS` and the flags
      and weights (so ``column`` itself, UVW, TIME, ANTENNA1/2, DATA_DESC_ID, ...), and every
      sub-table file except :data:`_NOT_IMAGED` (frequencies, antennas, fields);
    - ``"flags"``: the same for the storage files of :data:`FLAG_WEIGHT_COLUMNS`.

    Any write to a column rewrites its storage file (new mtime; a rebuilt table: new inodes),
    so an equal identity means the same values; writes of other columns (MODEL_DATA,
    CORRECTED_DATA) leave both unchanged. A different ``"flags"`` may still be the same
    content (flags restored from a saved version): :func:`flags_digest` tells. A write in
    the same clock tick (~1-10 ms) as the previous write of that file keeps the mtime:
    callers take identities after imaging (seconds after any write), never between writes.
    Raises RuntimeError/OSError from casacore if the MS cannot be opened.
    """
    from casacore.tables import table  # lazy: loaded only on this path

    ms = Path(ms)
    with table(str(ms), ack=False) as t:
        have = set(t.colnames())
        dminfo, nrows = t.getdminfo(), t.nrows()
    flag_cols = {c for c in FLAG_WEIGHT_COLUMNS if c in have}
    data_cols = (have - flag_cols - set(NOT_IMAGED_COLUMNS)) | ({column} & have)
    subs = [f"{rel} {size} {mtime}" for rel, (size, mtime) in sorted(input_fingerprint(ms)["files"].items())
            if "/" in rel and rel.split("/", 1)[0] not in _NOT_IMAGED]
    head = f"{nrows} {column in have} {sorted(data_cols)} {sorted(flag_cols)}\n" + "\n".join(subs)
    # A storage manager shared with the flags (one StandardStMan for all) counts in both.
    return {"data": _stat_hash(ms, _column_files(ms, dminfo, data_cols), head),
            "flags": _stat_hash(ms, _column_files(ms, dminfo, flag_cols), f"{nrows}")}


def flags_digest(ms: str | os.PathLike[str], chunk_rows: int = 100_000) -> str:
    """SHA-256 of the flags and weights (:data:`FLAG_WEIGHT_COLUMNS` present; FLAG packed to
    bits) read in row chunks with python-casacore (not the data column: DATA is 8 bytes a visibility, FLAG 1). Our own working copy only.
    Raises RuntimeError/OSError from casacore if the MS cannot be read."""
    import numpy as np  # lazy: loaded only on this path
    from casacore.tables import table  # lazy: loaded only on this path

    h = hashlib.sha256()
    with table(str(ms), ack=False) as t:
        cols = [c for c in FLAG_WEIGHT_COLUMNS if c in t.colnames()]
        cols = [c for c in cols if c != "WEIGHT_SPECTRUM" or (t.nrows() and t.iscelldefined(c, 0))]
        n = t.nrows()
        h.update(f"{n} {cols}".encode())
        for start in range(0, n, chunk_rows):
            for c in cols:
                v = t.getcol(c, startrow=start, nrow=min(chunk_rows, n - start))
                h.update(np.packbits(v).tobytes() if v.dtype == bool else v.tobytes())
    return h.hexdigest()


#: Files left out of :func:`input_fingerprint`: casacore rewrites ``table.lock`` whenever anyone
#: opens a table, even read-only (e.g. a user's casabrowser), without changing the data.
_NOT_DATA = frozenset({"table.lock"})


def input_fingerprint(ms: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"scope": "tree", "files": {relative path: [size bytes, mtime ns]}}`` for every file
    under the MS directory ``ms``: the main table and every sub-table (ANTENNA,
    SPECTRAL_WINDOW, FIELD, FLAG_CMD, POINTING, ...). Links are followed; ``table.lock`` files
    are left out (:data:`_NOT_DATA`). Only ``stat`` is called (no file is opened, so nothing
    is written into the input): cheap, and different when the MS at this path is replaced,
    rewritten, or has a sub-table changed, added or removed. A missing MS gives no files.
    """
    root = Path(ms)
    files: dict[str, list[int]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name in _NOT_DATA:
                continue
            p = Path(dirpath) / name
            try:
                st = p.stat()
            except OSError:  # a dangling link: recorded as such
                files[str(p.relative_to(root))] = [-1, -1]
                continue
            files[str(p.relative_to(root))] = [st.st_size, st.st_mtime_ns]
    return {"scope": "tree", "files": files}


def _main_table_file(rel: str) -> bool:
    return "/" not in rel and (rel == "table.dat" or rel.startswith("table.f"))


def fingerprint_change(before: Any, now: dict[str, Any]) -> str:
    """What changed between a recorded :func:`input_fingerprint` and ``now`` (pure):
    ``""`` when nothing did, else e.g. ``"SPECTRAL_WINDOW changed; FLAG_CMD added"`` naming
    the main table (``"main table"``) or the sub-table directory of each difference.

    ``before`` may be the older record (a list of ``[name, size, mtime_ns]`` of the main-table
    files ``table.dat``/``table.f*`` only): then only those files are compared, so outputs
    written before sub-tables were covered are not redone for that reason alone. ``None``
    (nothing recorded) is trusted: ``""``.
    """
    if before is None:
        return ""
    new = {k: list(v) for k, v in (now.get("files") or {}).items()}
    if isinstance(before, list):  # the older, main-table-only record
        old = {str(e[0]): [e[1], e[2]] for e in before if isinstance(e, (list, tuple)) and len(e) == 3}
        new = {k: v for k, v in new.items() if _main_table_file(k)}
    elif isinstance(before, dict):
        old = {k: list(v) for k, v in (before.get("files") or {}).items()}
    else:
        return "unreadable earlier record"
    if not new and old:
        return "the MS is gone"
    parts: dict[str, set[str]] = {}
    for k in sorted(set(old) | set(new)):
        if old.get(k) == new.get(k):
            continue
        what = "removed" if k not in new else "added" if k not in old else "changed"
        top = k.split("/", 1)[0] if "/" in k else "main table"
        parts.setdefault(what, set()).add(top)
    return "; ".join(f"{', '.join(sorted(tops, key=lambda t: (t != 'main table', t)))} {what}"
                     for what, tops in sorted(parts.items(), key=lambda kv: ("changed", "added", "removed").index(kv[0])))
