"""The input MS is never modified: every file (table.lock included) is byte-identical after
a full run, after runs killed mid-way, and after a run killed while reading the input.

``base_ms`` has no table.lock files (see conftest): casacore creates one in every table it
opens, even read-only, so any open of the input itself (rather than of the startup step's
read-only view) would show up here. The directory holding the input is checked too: no
``.flagversions`` or other file may appear next to the MS.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from selfcal_batch.ms.checksum import tree_checksums, tree_diff
from selfcal_batch.ms.view import leaving_links

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
    assert tree_diff(before, tree_checksums(d)) == ["changed: .", "added: NEW", "changed: SUB/table.lock",
                                                    "removed: table.dat", "added: table.lock"]
    # Same bytes, other mode or modification time: still a change.
    before = tree_checksums(d)
    os.chmod(d / "SUB" / "table.lock", 0o600)
    st = (d / "NEW").stat()
    os.utime(d / "NEW", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert tree_diff(before, tree_checksums(d)) == ["changed: NEW", "changed: SUB/table.lock"]



def _read_only_mount_wrapper(src_dir: Path, mountpoint: Path) -> list[str]:
    """argv prefix running a command with ``src_dir`` bind-mounted read-only at ``mountpoint``
    in a private mount namespace (skips the test where that is not possible)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("read-only bind mounts need root and unshare(1)")
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            f"mount --bind -o ro '{src_dir}' '{mountpoint}' && ! touch '{mountpoint}/.w'"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {probe.stderr.strip()[:200]}")
    return ["unshare", "-m", "sh", "-c", f"mount --bind -o ro '{src_dir}' '{mountpoint}' && exec \"$@\"", "sh"]


@pytest.mark.parametrize("which", ["base_ms", "vla_real_ms"])
def test_input_on_read_only_mount_then_moved(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Survey data live on read-only archive storage: the run reads the input from a
    read-only bind mount and finishes; the input keeps bytes, modes and mtimes; no link
    under the output leaves it; after the input is moved away, final.ms and work.ms still
    open with casacore and image with WSClean. The real VLA MS has a filled POINTING table
    (split copies subtables file by file: links there used to leak into final.ms)."""
    ms: GuardedMS = request.getfixturevalue(which)
    archive = tmp_path / "archive"
    archive.mkdir()
    src = Path(shutil.copytree(ms.path, archive / "target.ms", symlinks=True))
    before = tree_checksums(src)
    mnt = tmp_path / "ro"
    mnt.mkdir()
    wrap = _read_only_mount_wrapper(archive, mnt)
    out = tmp_path / "out"
    res = run_pipeline("ro", mnt / "target.ms", out, quick_config(keep_work_ms=True), wrap=wrap)
    assert res["status"] in ("finished", "unchanged"), res["error"]
    assert tree_diff(before, tree_checksums(src)) == []
    assert not any(mnt.iterdir()), "the mount must not outlive its namespace"
    moved = Path(shutil.move(str(archive), tmp_path / "moved"))
    assert not src.exists() and (moved / "target.ms").is_dir()
    root = out / "datasets" / "ro"
    assert leaving_links(out) == []
    assert subprocess.run(["find", str(out), "-type", "l"], capture_output=True, text=True).stdout == ""
    from casacore.tables import table

    for ms in (root / "final.ms", root / "work.ms"):
        with table(str(ms), ack=False) as t:
            assert t.nrows() > 0 and t.getcol("DATA", 0, 10).shape[0] == 10
            for sub in t.getkeywords().values():
                if isinstance(sub, str) and sub.startswith("Table: "):
                    with table(sub[len("Table: "):], ack=False) as st:
                        st.nrows()
    img = tmp_path / "moved-img"
    run = subprocess.run(["wsclean", "-quiet", "-reorder", "-size", "64", "64", "-scale", "4asec", "-niter", "0",
                          "-name", str(img), str(root / "final.ms")], capture_output=True, text=True,
                         cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-2000:] + run.stdout[-2000:]
    assert Path(f"{img}-image.fits").exists()
