"""A sub-table of the input changed between two campaign runs (breaker: only main-table files
were fingerprinted, so resume kept the stale results; and the redo was only in pipeline.log).

A real campaign (``selfcal-batch MANIFEST``, Dask, CASA) runs ``startup`` on a private copy of
the simulated MS; then one cell of its SPECTRAL_WINDOW table is rewritten with python-casacore
(what a user's CASA task would do to the input), and the same command runs again: the console
must say, in one line, that the input changed and the dataset is redone from startup, and the
step must really be redone. A third run with nothing changed says nothing and redoes nothing.
"""
from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.faults.conftest import GuardedMS, MSFactory, read_state

pytestmark = pytest.mark.integration


def _run(manifest: Path, env: dict[str, str], python_exe: str) -> str:
    p = subprocess.run([python_exe, "-m", "selfcal_batch.cli", str(manifest)], env=env, cwd=str(manifest.parent),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert p.returncode == 0, p.stdout
    return p.stdout


def test_subtable_change_is_seen_said_and_redone(tmp_path, base_ms: GuardedMS, subprocess_env, python_exe) -> None:
    from casacore.tables import table

    ms = MSFactory.copy(base_ms, tmp_path / "in.ms")
    manifest = tmp_path / "c.toml"
    manifest.write_text(textwrap.dedent(f"""
        [campaign]
        name = "changed"
        output_dir = "out"
        [defaults]
        imsize = 128
        threads = 1
        plots = false
        steps = ["startup"]
        [cluster]
        workers = 1
        threads_per_dataset = 1
        dashboard = false
        [[datasets]]
        name = "sim"
        ms = "{ms}"
        """))
    root = tmp_path / "out" / "datasets" / "sim"
    first = _run(manifest, subprocess_env, python_exe)
    assert "input MS changed" not in first
    t1 = read_state(root)["steps"]["startup"]["finished"]

    with table(str(ms / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        t.putcell("NAME", 0, t.getcell("NAME", 0) + "-edited")
    second = _run(manifest, subprocess_env, python_exe)
    said = [ln for ln in second.splitlines() if "input MS changed" in ln]
    assert said == ["sim: input MS changed since the last run (SPECTRAL_WINDOW changed): redoing from startup"], second
    state = read_state(root)
    assert state["steps"]["startup"]["finished"] != t1  # really redone
    assert any(k.startswith("SPECTRAL_WINDOW/") for k in state["input_fingerprint"]["files"])

    third = _run(manifest, subprocess_env, python_exe)
    assert "input MS changed" not in third
    assert read_state(root)["steps"]["startup"]["finished"] == state["steps"]["startup"]["finished"]
