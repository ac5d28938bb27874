"""Guard of the fast loop: a unit test that starts WSClean, a CASA child, the simulator's
casatools child or a Dask cluster fails at once (it belongs in tests/integration)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

#: ``python -m`` targets that run CASA (casatools) in a child process.
_CASA_CHILDREN = ("selfcal_batch.casa.runner", "selfcal_batch.simulate")


def _forbidden(args: object) -> str:
    argv = [str(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)]
    if argv and Path(argv[0]).name == "wsclean":
        return "WSClean"
    for i, a in enumerate(argv[:-1]):
        if a == "-m" and argv[i + 1] in _CASA_CHILDREN:
            return f"a CASA child ({argv[i + 1]})"
    return ""


@pytest.fixture(autouse=True)
def _no_programs_in_unit_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    popen_init = subprocess.Popen.__init__

    def guarded(self, args, *a, **k):  # type: ignore[no-untyped-def]
        what = _forbidden(args)
        if what:
            raise AssertionError(f"unit test started {what}: move it to tests/integration ({args!r})")
        return popen_init(self, args, *a, **k)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    try:
        import distributed
    except ImportError:  # pragma: no cover - distributed is a dependency
        return

    def no_cluster(self, *a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("unit test started a Dask LocalCluster: move it to tests/integration")

    monkeypatch.setattr(distributed.LocalCluster, "__init__", no_cluster)
