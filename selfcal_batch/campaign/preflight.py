"""Up-front checks, run before anything is submitted (also by ``--dry-run``).

* :func:`output_dir_problem` / :func:`ensure_output_dir`: the output directory exists as a
  writable directory or can be created (a file in its place, a parent that is a file or
  not writable, a read-only mount: one line naming the path).
* :func:`input_problems`: each input MS opens as a measurement set: the main table and the
  subtables the pipeline reads (``SUBTABLES``) exist, open, have rows and their columns
  the pipeline reads can be read; the input column exists. One line per problem naming
  the user's MS path.

The input itself is never opened with casacore (casacore writes ``table.lock`` even when
opening read-only): the structure check only lists and opens files with the OS, and the
table check opens a private view made by ``steps_prep.read_only_view`` in a temporary
directory, in a child process (``python -m selfcal_batch.campaign.preflight``), so a damaged table
that crashes casacore cannot take the campaign down, and every message names the user's
MS path, never the view's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

from selfcal_batch.errors import OutputDirError
from selfcal_batch.ms.view import archive_hint
from selfcal_batch.ms.selection import field_selection_problem, has_science_intents

#: Subtables the pipeline reads (casa_jobs.inspect_ms, split, gaincal) and the columns of
#: each that must be readable. FEED: CASA cannot calibrate an MS without feeds.
SUBTABLES: dict[str, tuple[str, ...]] = {
    "ANTENNA": ("NAME", "POSITION", "DISH_DIAMETER"),
    "SPECTRAL_WINDOW": ("NUM_CHAN", "CHAN_FREQ", "CHAN_WIDTH", "REF_FREQUENCY"),
    "POLARIZATION": ("NUM_CORR", "CORR_TYPE"),
    "DATA_DESCRIPTION": ("SPECTRAL_WINDOW_ID", "POLARIZATION_ID"),
    "FIELD": ("NAME", "PHASE_DIR"),
    "FEED": ("ANTENNA_ID", "SPECTRAL_WINDOW_ID"),
}
#: Main-table columns the pipeline reads (besides the input column).
MAIN_COLUMNS = ("ANTENNA1", "ANTENNA2", "TIME", "UVW", "FLAG", "DATA_DESC_ID", "FIELD_ID")
#: Seconds allowed per MS for the table check (a child process checks them all).
CHECK_TIMEOUT_S = 120.0


# ---------------------------------------------------------------------------- output


def _not_writable(d: Path) -> str:
    """'' when a file can be created in the directory ``d``, else the reason."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".selfcal-batch-probe-", dir=d)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass
    return ""


def output_dir_problem(path: str | Path) -> str:
    """One line describing why ``path`` cannot be used as the output directory, or ''.

    Creates nothing but a probe file that is removed at once (in ``path`` when it exists,
    else in its nearest existing ancestor, which is what ``mkdir -p`` would write to).
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return f"output directory {path} is a broken symbolic link"
    if path.exists():
        if not path.is_dir():
            return f"output directory {path} is a file, not a directory"
        why = _not_writable(path)
        return f"output directory {path} is not writable ({why})" if why else ""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create output directory {path}: {parent} is a file, not a directory"
    why = _not_writable(parent)
    return f"cannot create output directory {path}: {parent} is not writable ({why})" if why else ""


def output_inside_input(out_dir: str | Path, inputs: Iterable[str | Path | None]) -> str:
    """One line when the output directory is, or lies inside, an input MS ('' otherwise).

    Checked before anything is written: the campaign's lock, log and report would
    otherwise land inside the user's MS before the dataset itself refuses to run.
    """
    out = Path(os.path.realpath(Path(out_dir).expanduser()))
    for ms in inputs:
        if ms is None:
            continue
        src = Path(os.path.realpath(Path(ms).expanduser()))
        if out == src or src in out.parents:
            return f"output directory {out_dir} is inside the input MS {ms}: choose an output directory outside it"
    return ""


def ensure_output_dir(path: str | Path) -> Path:
    """Create the output directory (parents too); :class:`OutputDirError` with one line if
    it cannot be created or written."""
    path = Path(path)
    problem = output_dir_problem(path)
    if problem:
        raise OutputDirError(problem)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot create output directory {path}: {exc.strerror}") from None
    why = _not_writable(path)
    if why:
        raise OutputDirError(f"output directory {path} is not writable ({why})")
    return path


# ---------------------------------------------------------------------------- inputs


def structure_problems(ms: str | Path) -> list[str]:
    """Problems visible without opening any table: missing MS, not a directory, no
    table.dat, missing or incomplete subtables, unreadable files (one line each)."""
    ms = Path(ms)
    if not ms.exists():
        return [f"{ms}: MS not found{archive_hint(ms)}"]
    if not ms.is_dir() or not (ms / "table.dat").is_file():
        return [f"{ms}: not a measurement set (no table.dat){archive_hint(ms)}"]
    problems = []
    for sub in SUBTABLES:
        d = ms / sub
        if not d.is_dir():
            problems.append(f"{ms}: {sub} table is missing")
        elif not (d / "table.dat").is_file():
            problems.append(f"{ms}: {sub} table is damaged (no table.dat)")
    unreadable = []
    for dirpath, _dirs, files in os.walk(ms, followlinks=True):
        if not os.access(dirpath, os.R_OK | os.X_OK):
            unreadable.append(os.path.relpath(dirpath, ms) + "/")
        for f in files:
            p = os.path.join(dirpath, f)
            try:
                with open(p, "rb"):
                    pass
            except OSError as exc:
                unreadable.append(f"{os.path.relpath(p, ms)} ({exc.strerror})")
    if unreadable:
        more = f" and {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        problems.append(f"{ms}: cannot read {', '.join(unreadable[:3])}{more}")
    return problems


def _first_line(exc: BaseException, view: str, ms: str) -> str:
    text = " ".join(str(exc).replace(view, ms).split())
    return text[:200] if text else type(exc).__name__


def data_column(input_column: str) -> str:
    """The MS column of an ``input_column`` setting: 'data' -> DATA, 'corrected' ->
    CORRECTED_DATA (not 'CORRECTED': the check refused every corrected input)."""
    c = (input_column or "data").strip().upper()
    return "CORRECTED_DATA" if c == "CORRECTED" else c


def field_problem(field: str, names: list[str]) -> str:
    """Why a ``field`` setting selects nothing in an MS whose FIELD names are ``names``, or
    ''. Pure: :func:`selfcal_batch.ms.selection.field_selection_problem` for a set ``field``
    (the rule startup applies)."""
    return field_selection_problem(field, names) if (field or "").strip() else ""


def _obs_modes(view: str) -> list[str]:
    """The STATE OBS_MODE strings of an open-able view ([] without STATE or on error)."""
    from casacore.tables import table  # runs in the preflight child only

    try:
        with table(os.path.join(view, "STATE"), readonly=True, ack=False) as st:
            return [str(m) for m in st.getcol("OBS_MODE")] if st.nrows() and "OBS_MODE" in st.colnames() else []
    except Exception:  # noqa: BLE001  (no STATE table: no intents; damage is not this check's business)
        return []


def table_problems(ms: str | Path, column: str = "DATA", field: str = "") -> list[str]:
    """Open a read-only view of ``ms`` with python-casacore and check the main table and
    ``SUBTABLES`` (open, rows, the columns the pipeline reads) and that ``field`` (the
    setting) names fields of the MS. Run in a child process."""
    from casacore.tables import table  # runs in the preflight child only

    from selfcal_batch.ms.view import read_only_view  # (same reason)

    ms = Path(ms)
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="selfcal-batch-check-") as tmp:
        view = str(read_only_view(ms, Path(tmp) / "view.ms"))
        try:
            t = table(view, readonly=True, ack=False)
        except Exception as exc:  # noqa: BLE001  (casacore raises RuntimeError subclasses)
            return [f"{ms}: main table cannot be opened: {_first_line(exc, view, str(ms))}"]
        try:
            cols = set(t.colnames())
            nrows = t.nrows()
            if column not in cols:
                problems.append(f"{ms}: no {column} column")
            missing = [c for c in MAIN_COLUMNS if c not in cols]
            if missing:
                problems.append(f"{ms}: main table has no {', '.join(missing)} column(s)")
            if nrows == 0:
                problems.append(f"{ms}: main table has no rows")
            else:
                for c in [c for c in (*MAIN_COLUMNS, column) if c in cols]:
                    for row in sorted({0, nrows - 1}):
                        try:
                            t.getcol(c, startrow=row, nrow=1)
                        except Exception as exc:  # noqa: BLE001
                            problems.append(f"{ms}: main table is damaged: column {c} row {row} "
                                            f"cannot be read ({_first_line(exc, view, str(ms))})")
                            break
        finally:
            t.close()
        for sub, sub_cols in SUBTABLES.items():
            if not (Path(view) / sub / "table.dat").exists():
                continue  # reported by structure_problems
            try:
                st = table(os.path.join(view, sub), readonly=True, ack=False)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{ms}: {sub} table is damaged (cannot be opened: "
                                f"{_first_line(exc, view, str(ms))})")
                continue
            try:
                if st.nrows() == 0:
                    problems.append(f"{ms}: {sub} table is empty (no rows)")
                    continue
                if sub == "FIELD" and "NAME" in st.colnames():
                    names = [str(n) for n in st.getcol("NAME")]
                    intents = not field and len(names) > 1 and has_science_intents(_obs_modes(view))
                    if why := field_selection_problem(field, names, intents):  # startup's rule and line
                        problems.append(f"{ms}: {why}")
                for c in sub_cols:
                    if c not in st.colnames():
                        problems.append(f"{ms}: {sub} table has no {c} column")
                        break
                    try:
                        st.getcol(c)
                    except Exception as exc:  # noqa: BLE001
                        problems.append(f"{ms}: {sub} table is damaged (column {c} cannot be read: "
                                        f"{_first_line(exc, view, str(ms))})")
                        break
            finally:
                st.close()
    return problems


Item = tuple[str, str, str]  # (ms, main-table column, field setting): what one check covers


def _check_in_children(items: list[Item]) -> dict[Item, list[str]]:
    """Run :func:`table_problems` for (ms, column, field) items in child processes; a child
    that dies on an MS reports that MS as damaged and a new child continues with the rest.
    Keyed by the whole item: one MS checked for two columns (two datasets) has two answers."""
    out: dict[Item, list[str]] = {}
    todo = list(items)
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])  # the directory holding selfcal_batch/
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    while todo:
        try:
            proc = subprocess.run([sys.executable, "-m", "selfcal_batch.campaign.preflight", json.dumps(todo)],
                                  capture_output=True, text=True, env=env,
                                  timeout=CHECK_TIMEOUT_S * len(todo) + 30)
            stdout, rc, err = proc.stdout, proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            rc, err = None, "timed out"
        for line in stdout.splitlines():
            if line.startswith("CHECK "):
                rec = json.loads(line[6:])
                out[tuple(rec["item"])] = rec["problems"]  # type: ignore[index]
        todo = [it for it in todo if it not in out]
        if todo:
            item = todo.pop(0)
            ms = item[0]
            how = (f"signal {-rc}" if rc is not None and rc < 0 else f"exit {rc}" if rc is not None
                   else "timed out")
            last = next((ln for ln in reversed(err.strip().splitlines()) if ln.strip()), "")
            out[item] = [f"{ms}: the table check crashed ({how}{': ' + last[:150] if last else ''}): "
                       "the MS is probably damaged"]
    return out


def item_problems(inputs: Iterable[tuple[str | Path, str, str]]) -> dict[Item, list[str]]:
    """``{(ms, input column, field): [one line per problem]}`` for each distinct item; only
    items with problems are keys. Structure first (no casacore); the table check only for
    MSs whose structure is complete."""
    result: dict[Item, list[str]] = {}
    deep: dict[Item, Item] = {}
    for ms, column, field in inputs:
        key = (str(ms), column, field or "")
        probs = structure_problems(key[0])
        if probs:
            result[key] = probs
        else:
            deep[key] = (key[0], data_column(column), key[2])
    if deep:
        found = _check_in_children(sorted(set(deep.values())))
        for key, item in deep.items():
            if probs := found.get(item):
                result[key] = probs
    return result


def input_problems(inputs: Iterable[tuple[str | Path, str]], field: str = "") -> dict[str, list[str]]:
    """``{ms path: [one line per problem]}`` for (ms, input column) pairs (one dataset's
    MSs), ``field`` the dataset's setting; only MSs with problems are keys."""
    return {k[0]: v for k, v in item_problems((ms, col, field) for ms, col in inputs).items()}


def one_line_per_ms(ms: str, lines: list[str], where: str = "") -> str:
    """The problems of one MS as one line naming it once (pure): ``"<ms>: a; b<where>"``
    (each line of :func:`item_problems` starts with ``"<ms>: "``)."""
    parts = [ln[len(ms) + 2:] if ln.startswith(ms + ": ") else ln for ln in lines]
    return f"{ms}: {'; '.join(parts)}{where}"


def dataset_input_problems(datasets: Iterable[Any]) -> dict[str, list[str]]:
    """``{dataset name: [one line per MS with problems]}`` of :func:`input_problems` for
    every valid dataset (a ``manifest.DatasetSpec`` without ``error``) whose MS exists or is
    not simulated on first use; every execution block of a joint dataset (``DatasetSpec.ebs``)
    is checked with its own field selection (``eb_fields``), its line naming the EB and its
    place (``(execution block 2 of 2)``)."""
    pairs: dict[str, list[tuple[str, str, str]]] = {}
    for d in datasets:
        if not d.ok or d.ms is None or d.config is None or (d.simulate and not Path(d.ms).exists()):
            continue
        ebs = getattr(d, "ebs", ()) or (d.ms,)
        fields = list(getattr(d.config, "eb_fields", ()) or ()) if len(ebs) > 1 else []
        pairs[d.name] = [(str(ms), d.config.input_column, fields[k] if len(fields) == len(ebs) else d.config.field)
                         for k, ms in enumerate(ebs)]
    found = item_problems(sorted({p for ps in pairs.values() for p in ps}))
    out = {}
    for name, ps in pairs.items():
        lines = [one_line_per_ms(p[0], found[p], f" (execution block {k + 1} of {len(ps)})" if len(ps) > 1 else "")
                 for k, p in enumerate(ps) if found.get(p)]
        if lines:
            out[name] = lines
    return out


def restart_messages(datasets: Iterable[Any], out_dir: Path, step: str) -> dict[str, str]:
    """``{dataset name: what restarting from step will redo and why}`` (:mod:`restart`),
    from each dataset's ``state.json`` and ``work.ms`` under ``out_dir``."""
    from selfcal_batch.pipeline import restart  # lazy: loaded only on this path

    out: dict[str, str] = {}
    for d in datasets:
        if not d.ok or d.config is None:
            continue
        root = Path(out_dir) / "datasets" / d.name
        try:
            state = json.loads((root / "state.json").read_text())
        except (OSError, ValueError):
            state = None
        p = restart.plan_from_state(state if isinstance(state, dict) else None, step,
                                    (root / "work.ms").exists(), d.config.keep_work_ms)
        out[d.name] = restart.describe(p)
    return out


def input_change_messages(datasets: Iterable[Any], out_dir: Path) -> dict[str, str]:
    """``{dataset name: "input MS changed since the last run (<what>): redoing from <step>"}``
    for every valid dataset whose input MS differs from the one its ``state.json`` under
    ``out_dir`` recorded, else ``"settings changed since the last run (<keys>): redoing from
    <step>"`` when a finished step's settings changed (:func:`restart.settings_change_message`) (:func:`restart.input_change_message`; the run itself decides the
    same way in ``runner.run_dataset``). Only ``stat`` is called on the inputs."""
    from selfcal_batch.ms.checksum import input_fingerprint  # lazy: loaded only on this path
    from selfcal_batch.pipeline import restart  # lazy: loaded only on this path

    out: dict[str, str] = {}
    for d in datasets:
        if not d.ok or d.config is None or d.ms is None or not d.config.steps:
            continue
        try:
            state = json.loads((Path(out_dir) / "datasets" / d.name / "state.json").read_text())
        except (OSError, ValueError):
            continue
        ebs = tuple(getattr(d, "ebs", ()) or ())
        # the EBs first: a reordered list is said as such, not as the first EB's tables changed
        if len(ebs) > 1 and (line := restart.eb_change_message(
                state, {str(Path(p).resolve()): input_fingerprint(p) for p in ebs}, d.config.steps[0])):
            out[d.name] = line
        elif line := restart.input_change_message(state, input_fingerprint(d.ms), d.config.steps[0]):
            out[d.name] = line
        elif line := restart.settings_change_message(state, d.config.to_dict(), d.config.steps,
                                                     (Path(out_dir) / "datasets" / d.name / "work.ms").exists()):
            out[d.name] = line
    return out


def _main(argv: list[str]) -> int:
    for item in json.loads(argv[0]):
        ms, column, field = (list(item) + ["", ""])[:3]
        try:
            probs = table_problems(ms, column, field)
        except Exception as exc:  # noqa: BLE001  (the check itself must report, not crash)
            probs = [f"{ms}: cannot be checked: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"]
        print("CHECK " + json.dumps({"item": item, "problems": probs}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
