"""Shared, generic test fixtures (keep small)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


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
