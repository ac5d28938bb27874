"""Reading the user's input MS without touching it, and proving outputs stand alone.

The input MS is only ever read through a *view*: a private directory that CASA opens
instead of the input. The view holds

- real **copies** of everything small: ``table.dat``, ``table.info``, the ``table.lock``
  files (they carry the table's sync data, e.g. a row count newer than ``table.dat``'s; a
  real VLA MS reads as empty without them) and every subtable directory (ANTENNA,
  POINTING, SYSCAL, ...), because CASA ``split`` copies subtables file by file, keeps
  symbolic links as links and then rewrites ``table.info`` through them (measured: the
  input's ``POINTING/table.info`` was rewritten on every run, and the output ``final.ms``
  could not be imaged once the input moved);
- **symbolic links** only for the main table's bulk storage-manager files (``table.f<N>*``
  at the top level, at least :data:`LINK_MIN_BYTES` long): ``split`` reads their rows and
  writes a new main table, so no link can reach its output.

casacore writes ``table.lock`` in every table it opens, even read-only: those writes land
in the view's copies. The input's bytes, modes and modification times are unchanged, and
the input may live on a read-only file system.

After every copy that CASA makes, :func:`check_self_contained` proves that no symbolic
link under the output points outside it.
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

from selfcal_batch.errors import SelfcalBatchError

#: Main-table storage files shorter than this are copied, not linked (bytes). Only the
#: bulk column data is worth linking; small files are cheaper to copy than to reason about.
LINK_MIN_BYTES = 1 << 20

_MAIN_STORAGE = re.compile(r"^table\.f\d+(_TSM\d+)?$")


class LeakingLinkError(SelfcalBatchError):
    """A path under an output directory is a symbolic link that leaves it."""


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def read_only_view(src: Path, dest: Path) -> Path:
    """Make the view of the MS ``src`` at ``dest`` (replacing whatever is there).

    Args:
        src: the user's MS directory (it may itself be a symbolic link, or live on a
            read-only file system); only read.
        dest: where the view is made; removed and rebuilt.

    Returns:
        ``dest``.

    Raises:
        OSError: ``src`` cannot be read (the caller names the dataset).
    """
    src = Path(os.path.realpath(src))
    _remove(dest)
    dest.mkdir(parents=True)
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        target = dest / entry.name
        if entry.is_dir(follow_symlinks=True):
            # Subtables: real copies (split copies them file by file, links included).
            shutil.copytree(entry.path, target, symlinks=False, copy_function=shutil.copyfile)
        elif _MAIN_STORAGE.match(entry.name) and entry.stat().st_size >= LINK_MIN_BYTES:
            os.symlink(os.path.realpath(entry.path), target)
        else:
            shutil.copyfile(entry.path, target)
    return dest


ViewIdentity = tuple[str, tuple[str, ...]]
#: File in a view naming the run that made it (casacore ignores unknown files in a table).
VIEW_TOKEN = ".selfcal-batch-view"


def view_identity(view: Path) -> ViewIdentity:
    """Mark a view just made by :func:`read_only_view` as this run's (a random token in
    :data:`VIEW_TOKEN`) and return ``(token, sorted entry names)`` for :func:`view_disturbed`.
    (Directory inode numbers are no identity: a rebuilt view often gets the same one.)
    Raises OSError when ``view`` cannot be written."""
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    (Path(view) / VIEW_TOKEN).write_text(token)
    return token, tuple(sorted(os.listdir(view)))


def view_disturbed(view: Path, identity: ViewIdentity) -> str:
    """Why the private view is no longer the one this run made (``""`` when it is): removed,
    rebuilt (another token: another run writing the same output directory), or an entry of
    it gone. A read error that comes with one of these is about our view, not about the
    user's input MS."""
    try:
        token = (Path(view) / VIEW_TOKEN).read_text()
        entries = set(os.listdir(view))
    except FileNotFoundError:
        if Path(view).exists():
            return f"the private view {view} of the input was rebuilt by another process during the run"
        return f"the private view {view} of the input was removed during the run"
    except OSError as exc:
        return f"the private view {view} of the input cannot be read ({exc.strerror or exc})"
    if token != identity[0]:
        return f"the private view {view} of the input was rebuilt by another process during the run"
    gone = sorted(set(identity[1]) - entries)
    if gone:
        return f"the private view {view} of the input lost {', '.join(gone[:3])} during the run"
    return ""


def leaving_links(root: Path) -> list[tuple[str, str]]:
    """Symbolic links under ``root`` whose target lies outside ``root``.

    Returns:
        ``[(link path relative to root, resolved target), ...]``, sorted; empty when the
        tree stands alone. A dangling link counts as leaving.
    """
    root = Path(os.path.realpath(root))
    out: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                continue
            target = Path(os.path.realpath(p))
            if not target.exists() or root not in target.parents:
                out.append((str(p.relative_to(root)), str(target)))
    return sorted(out)


def check_self_contained(path: Path, what: str) -> None:
    """Raise when the MS (or directory) ``path`` holds a link that leaves it.

    Raises:
        LeakingLinkError: one line naming ``what``, the first offending link and its target.
    """
    if not path.exists():
        return
    leaks = leaving_links(path)
    if leaks:
        rel, target = leaks[0]
        more = f" (and {len(leaks) - 1} more)" if len(leaks) > 1 else ""
        raise LeakingLinkError(f"{what} is not self-contained: {rel} links to {target}{more}")


def input_problem(message: str, view: Path, src: Path) -> str:
    """A CASA/casacore error about the view, rewritten as one line about the user's MS.

    The view's path is replaced by the input's, and the first line that says what is
    wrong is kept (child tracebacks are dropped).
    """
    text = message.replace(str(view), str(src))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for marker in ("ValueError: ", "RuntimeError: ", "Exception: ", "SEVERE"):
        for ln in lines:
            if marker in ln:
                return _without_path(ln.split(marker, 1)[1].strip() if marker != "SEVERE" else ln, src)
    return _without_path(lines[-1] if lines else text, src)


def _without_path(line: str, src: Path) -> str:
    """``line`` without a leading ``src`` path: every caller names the MS first, and
    '<ms>: <ms> has no unflagged data' said the path twice."""
    head = str(src)
    if line.startswith(head) and line != head:
        return line[len(head):].lstrip(": ").strip() or line
    return line


#: Archive name endings (longest first) that are not measurement sets but often hold one.
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".tgz", ".tar", ".zip", ".gz")


def archive_hint(path: str | Path) -> str:
    """'' or a hint (with a leading space) when ``path`` names an archive rather than an MS
    directory, or does not exist while an archive of it does. Pure apart from ``exists``."""
    p = Path(path)
    name = p.name.lower()
    suffix = next((s for s in ARCHIVE_SUFFIXES if name.endswith(s)), "")
    if suffix and not p.is_dir():
        return f" ({p.name} is a {suffix} archive: unpack it first and give the .ms directory inside)"
    if not p.exists():
        packed = next((p.with_name(p.name + s) for s in ARCHIVE_SUFFIXES if p.with_name(p.name + s).exists()), None)
        if packed is not None:
            return f" ({packed.name} exists: unpack it first)"
    return ""
