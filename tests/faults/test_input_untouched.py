"""The input MS is never modified: every file (table.lock included) is byte-identical after
a full run, after runs killed mid-way, and after a run killed while reading the input.

``base_ms`` has no table.lock files (see conftest): casacore creates one in every table it
opens, even read-only, so any open of the input itself (rather than of the startup step's
read-only view) would show up here. The directory holding the input is checked too: no
``.flagversions`` or other file may appear next to the MS.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from selfcal_batch.checksum import tree_checksums, tree_diff

from .conftest import GuardedMS, casa_child_calls, quick_config, read_state, run_pipeline, run_until_killed

pytestmark = pytest.mark.integration


def test_full_run_leaves_input_identical(kill_chain: dict, base_ms: GuardedMS) -> None:
    """The reference run: every default step, to the end (every calibration step ran)."""
    ref = kill_chain["ref"]
    assert ref["status"] == "finished", ref["error"]
    assert ref["steps_run"] == ["p0", "p1", "p2", "ap1"], ref["decisions"]
    assert kill_chain["ref_input_changes"] == []
    assert sorted(p.name for p in base_ms.path.parent.iterdir() if p.name.startswith(base_ms.path.name)) \
        == [base_ms.path.name]


def test_killed_runs_leave_input_identical(kill_chain: dict, base_ms: GuardedMS) -> None:
    """Checked right after each SIGKILL (WSClean, gaincal, final split) and at the end."""
    assert kill_chain["input_changes"] == [[], [], []]
    assert base_ms.changes() == []


def test_run_killed_while_reading_input_leaves_it_identical(base_ms: GuardedMS, tmp_path: Path) -> None:
    """SIGKILL during the working-copy split (the only time the input is read), then resume."""
    out = tmp_path / "out"
    out.mkdir()
    cfg = quick_config(steps=["startup"])

    def during_split(st: dict, kids: list, root: Path) -> str | None:
        for p in kids:
            calls = casa_child_calls(p)
            # The working_copy job inspects the input view, then splits it into work.ms.
            if calls and calls[0].get("job") == "working_copy" and (root / "work.ms").exists():
                time.sleep(0.2)
                return f"split {calls[0]['kwargs']['view']} -> {calls[0]['kwargs']['work']}"
        return None

    kill = run_until_killed("k", base_ms.path, out, cfg, "startup-split", during_split)
    assert kill.step == "startup" and "input_view.ms" in kill.detail
    assert base_ms.changes() == []
    res = run_pipeline("k", base_ms.path, out, cfg)
    assert res["status"] == "finished", res["error"]
    root = out / "datasets" / "k"
    assert read_state(root)["steps"]["startup"]["attempts"] == 2
    assert not (root / "input_view.ms").exists()
    assert base_ms.changes() == []


def test_checksum_helper_sees_every_kind_of_change(tmp_path: Path) -> None:
    d = tmp_path / "t.ms"
    (d / "SUB").mkdir(parents=True)
    (d / "table.dat").write_bytes(b"x")
    (d / "SUB" / "table.lock").write_bytes(b"lock")
    before = tree_checksums(d)
    (d / "SUB" / "table.lock").write_bytes(b"lock2")
    (d / "table.lock").write_bytes(b"")
    (d / "table.dat").unlink()
    (d / "NEW").mkdir()
    assert tree_diff(before, tree_checksums(d)) == ["added: NEW", "changed: SUB/table.lock",
                                                    "removed: table.dat", "added: table.lock"]
