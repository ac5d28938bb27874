"""Shared, generic test fixtures (keep small), and the folder markers.

tests/unit: pure logic, no WSClean/CASA/Dask cluster (marker ``unit``; ``pytest tests/unit`` is
the fast loop). tests/integration and tests/faults: real programs on generated data (marker
``integration``, and ``faults`` for tests/faults). Shared helper modules (campaign_helpers,
report_fixtures, survey_clone, mini_slurm) stay in tests/, which pytest puts on sys.path
(rootdir conftest; tests/ has no __init__.py) and subprocess_env puts on child PYTHONPATH.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


#: folder under tests/ -> markers every test in it carries.
FOLDER_MARKERS = {"unit": ("unit",), "integration": ("integration",), "faults": ("integration", "faults")}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder, so ``-m "not integration"`` equals tests/unit."""
    for item in items:
        try:
            top = Path(str(item.path)).resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        for name in FOLDER_MARKERS.get(top, ()):
            item.add_marker(getattr(pytest.mark, name))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (contains selfcal_batch/ and campaigns/)."""
    return REPO


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """Environment for child Python processes: this checkout and tests/ importable."""
    env = dict(os.environ)
    parts = [str(REPO), str(TESTS)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


@pytest.fixture(scope="session")
def python_exe() -> str:
    """The interpreter running the tests (the project's virtualenv)."""
    return sys.executable


@pytest.fixture
def fake_ms():
    """Factory: ``fake_ms(path)`` makes a directory standing in for an MS (not readable)."""

    def make(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        (path / "table.dat").write_bytes(b"not a real table")
        return path

    return make


def make_tiny_ms(path: Path) -> Path:
    """A minimal but structurally valid MS (python-casacore ``default_ms``: 2 main rows with
    DATA and FLAG, one row in each subtable the up-front check reads). ~0.15 s."""
    import numpy as np
    from casacore.tables import default_ms, makearrcoldesc, maketabdesc, table

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = default_ms(str(path), maketabdesc([makearrcoldesc("DATA", 0j, ndim=2, shape=[1, 1])]))
    t.addrows(2)
    t.putcol("FLAG", np.zeros((2, 1, 1), bool))
    t.putcol("DATA", np.zeros((2, 1, 1), complex))
    t.close()
    arrays = {"SPECTRAL_WINDOW": {"CHAN_FREQ": np.array([5e9]), "CHAN_WIDTH": np.array([1e6])},
              "POLARIZATION": {"CORR_TYPE": np.array([5], np.int32)},
              "FIELD": {"PHASE_DIR": np.zeros((1, 2))}}
    for sub in ("ANTENNA", "SPECTRAL_WINDOW", "POLARIZATION", "DATA_DESCRIPTION", "FIELD", "FEED"):
        with table(str(path / sub), readonly=False, ack=False) as st:
            st.addrows(1)
            for col, v in arrays.get(sub, {}).items():
                st.putcell(col, 0, v)
    return path


@pytest.fixture
def tiny_ms():
    """Factory: ``tiny_ms(path)`` makes a minimal MS that passes the up-front input check."""
    return make_tiny_ms
