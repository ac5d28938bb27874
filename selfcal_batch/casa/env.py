"""Offline CASA: a project-owned measures directory and site configuration.

casatools refuses to import unless it can resolve ``geodetic/IERSeop2000`` and, with
casaconfig's defaults, tries to download ~1 GB into ``~/.casa/data``. We never let it:

1. The python-casacore wheel ships the WSRT measures tables under ``casacore/data``.
   :func:`ensure_casadata` copies them (once) into a directory we own and writes the two
   ``readme.txt`` files casaconfig reads, so casatools recognises the data as a known,
   maintained set and prints no SEVERE lines.
2. :func:`site_config_path` writes a ``casasiteconfig.py`` that points ``measurespath``
   there and turns both auto-updates off.
3. :func:`casa_child_env` returns the environment for a CASA child process
   (``CASASITECONFIG`` set), and :func:`configure_inprocess` sets ``casaconfig.config``
   directly for code that imports casatools itself (the simulator, the CASA child).

The data directory is ``$SELFCAL_BATCH_CASADATA`` if set, else
``<sys.prefix>/share/selfcal-batch/casadata`` when writable, else
``~/.cache/selfcal-batch/casadata``.
"""
from __future__ import annotations

import datetime as _dt
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

from selfcal_batch.errors import MeasuresDataError
from selfcal_batch.fileio import atomic_write_text

_SUBDIRS = ("geodetic", "ephemerides")
_STAMP = ".selfcal-batch-complete"


def _casacore_data() -> Path:
    spec = importlib.util.find_spec("casacore")
    if spec is None or not spec.submodule_search_locations:
        raise MeasuresDataError(
            "python-casacore is not installed: it provides the offline measures tables "
            "(pip install python-casacore==3.8.1)"
        )
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (data / "geodetic" / "IERSeop2000").is_dir():
        raise MeasuresDataError(f"no geodetic/IERSeop2000 under {data}: reinstall python-casacore>=3.6.1")
    return data


def casadata_dir() -> Path:
    """Directory that holds (or will hold) the project's measures data."""
    env = os.environ.get("SELFCAL_BATCH_CASADATA")
    if env:
        return Path(env).expanduser().resolve()
    prefix = Path(sys.prefix) / "share" / "selfcal-batch"
    try:
        prefix.mkdir(parents=True, exist_ok=True)
        if os.access(prefix, os.W_OK):
            return prefix / "casadata"
    except OSError:
        pass
    return Path.home() / ".cache" / "selfcal-batch" / "casadata"


def ensure_casadata() -> Path:
    """Create the offline measures directory if needed and return its path. Idempotent."""
    target = casadata_dir()
    if (target / _STAMP).exists() and (target / "geodetic" / "IERSeop2000").is_dir():
        return target
    src = _casacore_data()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp dir and rename: concurrent workers never see a half copy.
    tmp = Path(tempfile.mkdtemp(prefix=".casadata-", dir=target.parent))
    try:
        for sub in _SUBDIRS:
            shutil.copytree(src / sub, tmp / sub, symlinks=True)
        today = _dt.date.today().isoformat()
        (tmp / "readme.txt").write_text(
            "# casarundata subset prepared by selfcal-batch (offline; no auto-updates)\n"
            "version : selfcal-batch-offline\n"
            f"date : {today}\n"
            "#\n" + "\n".join(_SUBDIRS) + "\n"
        )
        (tmp / "geodetic" / "readme.txt").write_text(
            "# measures tables from the python-casacore wheel, copied by selfcal-batch\n"
            f"site : file://{src}\n"
            "version : python-casacore-wheel\n"
            f"date : {today}\n"
        )
        (tmp / _STAMP).write_text(str(src) + "\n")
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process won the race; use theirs.
            if not (target / _STAMP).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def site_config_path() -> Path:
    """Write (if needed) and return the casasiteconfig.py for the offline data."""
    data = ensure_casadata()
    path = data.parent / "casasiteconfig.py"
    text = (
        "# Written by selfcal-batch: CASA runs offline on the measures in measurespath.\n"
        f"measurespath = {str(data)!r}\n"
        "measures_auto_update = False\n"
        "data_auto_update = False\n"
        "nogui = True\n"
    )
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


def casa_child_env(base: dict[str, str] | None = None, threads: int = 1) -> dict[str, str]:
    """Environment for a child process that imports casatools/casatasks."""
    env = dict(os.environ if base is None else base)
    env["CASASITECONFIG"] = str(site_config_path())
    env["OMP_NUM_THREADS"] = str(max(1, threads))
    env.setdefault("MPLBACKEND", "Agg")
    return env


def configure_inprocess(logfile: str | os.PathLike[str] | None = None) -> None:
    """Configure casaconfig in this process before ``import casatools``.

    Must be called before casatools is imported; afterwards it has no effect.
    """
    data = ensure_casadata()
    os.environ["CASASITECONFIG"] = str(site_config_path())
    from casaconfig import config  # noqa: PLC0415  (deliberately late)

    config.measurespath = str(data)
    config.measures_auto_update = False
    config.data_auto_update = False
    config.nogui = True
    if logfile is not None:
        config.logfile = str(logfile)
