"""Bad input: every case ends the dataset as ``failed`` with ONE line naming the problem,
never a traceback or an exception out of ``run_dataset``, and never touches the input.

Runs in this process (CASA only ever in children). Cases that need WSClean start from a
copy of a prepared dataset directory (startup done, work.ms kept) so they fail in seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from selfcal_batch.ms.checksum import tree_checksums, tree_diff
from selfcal_batch.config import PipelineConfig
from selfcal_batch.errors import ConfigError
from selfcal_batch.pipeline.runner import run_dataset

from .conftest import GuardedMS, MSFactory, one_line, quick_config, read_state

pytestmark = pytest.mark.integration


def _run(ms: Path | str, out: Path, name: str = "bad", **over: Any):
    """run_dataset in this process with quick settings; checks the failure contract."""
    cfg = PipelineConfig.from_dict(quick_config(**over))
    before = tree_checksums(ms) if Path(ms).exists() else None
    res = run_dataset(name, ms, cfg, out)
    print(f"\n{name}: {res.error}")
    assert res.status == "failed", res
    assert one_line(res.error), repr(res.error)
    assert "internal error" not in res.error, res.error
    if before is not None:
        assert tree_diff(before, tree_checksums(ms)) == [], "the input was modified"
    root = Path(out) / "datasets" / name
    if (root / "result.json").exists() or not res.error.split(": ", 1)[-1].startswith("disk full"):
        saved = json.loads((root / "result.json").read_text())
        assert saved["status"] == "failed" and saved["error"] == res.error
        assert read_state(root)["status"] == "failed"
    else:
        # Disk full: result.json may be unwritable, but no earlier one may claim success.
        assert read_state(root).get("status") in ("failed", "running")
    # A failed startup never leaves a partial working copy behind.
    if "startup" in res.error.split(":")[0]:
        assert not (root / "work.ms").exists()
    return res


# -- not a measurement set ----------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    res = _run(tmp_path / "nowhere.ms", tmp_path / "out")
    assert res.error == f"startup: MS not found: {tmp_path / 'nowhere.ms'}"


def test_directory_of_random_files(tmp_path: Path) -> None:
    d = tmp_path / "junk.ms"
    d.mkdir()
    for i in range(3):
        (d / f"file{i}.bin").write_bytes(os.urandom(1000))
    res = _run(d, tmp_path / "out")
    assert "not a measurement set" in res.error and str(d) in res.error


def test_plain_file(tmp_path: Path) -> None:
    f = tmp_path / "file.ms"
    f.write_text("not an MS\n")
    res = _run(f, tmp_path / "out")
    assert "not a measurement set" in res.error and str(f) in res.error


def test_directory_with_garbage_table_dat(tmp_path: Path) -> None:
    """Looks like a table, casacore cannot open it: still one line, from the CASA child."""
    d = tmp_path / "garbage.ms"
    d.mkdir()
    (d / "table.dat").write_bytes(os.urandom(4000))
    (d / "table.f0").write_bytes(os.urandom(4000))
    res = _run(d, tmp_path / "out")
    assert "cannot be opened as a table" in res.error and str(d) in res.error
    assert "input_view" not in res.error  # reported with the user's path


# -- measurement sets we cannot self-calibrate -----------------------------------------------


def _damaged(base_ms: GuardedMS, tmp_path: Path, how: str) -> Path:
    from casacore.tables import table

    ms = MSFactory.copy(base_ms, tmp_path / f"{how}.ms")
    with table(str(ms), readonly=False, ack=False) as t:
        if how == "allflagged":
            t.putcol("FLAG", np.ones(t.getcol("FLAG").shape, bool))
        elif how == "nodata":
            t.removecols("DATA")
    return ms


def test_everything_flagged(base_ms: GuardedMS, tmp_path: Path) -> None:
    ms = _damaged(base_ms, tmp_path, "allflagged")
    res = _run(ms, tmp_path / "out")
    assert "no unflagged data" in res.error and res.error.count(str(ms)) == 1, res.error  # named once


def test_field_not_in_ms(base_ms: GuardedMS, tmp_path: Path) -> None:
    res = _run(base_ms.path, tmp_path / "out", field="NOPE")
    assert "field 'NOPE' not in the MS" in res.error and "TARGET" in res.error


def test_no_data_column(base_ms: GuardedMS, tmp_path: Path) -> None:
    ms = _damaged(base_ms, tmp_path, "nodata")
    res = _run(ms, tmp_path / "out")
    assert "no DATA column" in res.error


# -- tools -------------------------------------------------------------------------------------


def _from_prepared(prepared: Path, out: Path) -> Path:
    shutil.copytree(prepared, out / "datasets" / prepared.name, symlinks=True)
    return out


WSCLEAN_STEPS = {"steps": ["startup", "test_image"], "keep_work_ms": True}


def test_wsclean_binary_missing(prepared: Path, base_ms: GuardedMS, tmp_path: Path) -> None:
    out = _from_prepared(prepared, tmp_path / "out")
    res = _run(base_ms.path, out, prepared.name, wsclean={"binary": "/nonexistent/wsclean"}, **WSCLEAN_STEPS)
    assert res.error.startswith("test_image: wsclean: program not found: '/nonexistent/wsclean'"), res.error
    assert (out / "datasets" / prepared.name / "work.ms").exists()  # resumable once fixed


def test_wsclean_not_on_empty_path(prepared: Path, base_ms: GuardedMS, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = _from_prepared(prepared, tmp_path / "out")
    monkeypatch.setenv("PATH", "")
    res = _run(base_ms.path, out, prepared.name, **WSCLEAN_STEPS)
    assert res.error.startswith("test_image: wsclean: program not found: 'wsclean'"), res.error


def test_container_image_missing(prepared: Path, base_ms: GuardedMS, tmp_path: Path) -> None:
    out = _from_prepared(prepared, tmp_path / "out")
    res = _run(base_ms.path, out, prepared.name, wsclean={"container": "/nonexistent.sif"}, **WSCLEAN_STEPS)
    assert res.error == "test_image: wsclean: container image not found: /nonexistent.sif"


# -- disk full -----------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path: Path):
    """Mount a tmpfs of the requested size (root only); unmounted afterwards."""
    mounts: list[Path] = []

    def make(size: str) -> Path:
        d = tmp_path / f"disk{len(mounts)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill up ({r.stderr.strip()}): needs root")
        mounts.append(d)
        return d

    yield make
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_disk_full_during_startup(small_disk, base_ms: GuardedMS, tmp_path: Path) -> None:
    """The 10 MB working copy does not fit in 3 MB: 'disk full', partial copy removed."""
    out = small_disk("3m")
    res = _run(base_ms.path, out)
    assert res.error.startswith("startup: disk full (no space left on device)"), res.error
    root = out / "datasets" / "bad"
    assert not list(root.glob(".*.tmp")), "a half-written temp file was left behind"
    assert shutil.disk_usage(out).free > 2_000_000  # the partial work.ms was removed
    assert base_ms.changes() == []


def test_disk_full_during_wsclean(small_disk, prepared: Path, base_ms: GuardedMS, tmp_path: Path) -> None:
    """work.ms fits, WSClean's temporary files do not: 'disk full' (not WSClean's banner)."""
    size_kb = sum(p.stat().st_size for p in prepared.rglob("*") if p.is_file()) // 1024
    out = small_disk(f"{size_kb + 700}k")
    _from_prepared(prepared, out)
    res = _run(base_ms.path, out, prepared.name, **WSCLEAN_STEPS)
    assert res.error.startswith("test_image: disk full (no space left on device)"), res.error
    assert "wsclean" in res.error
    assert (out / "datasets" / prepared.name / "work.ms").exists()
    assert base_ms.changes() == []


# -- where the output goes --------------------------------------------------------------------


def test_input_inside_output_directory_is_refused(base_ms: GuardedMS, tmp_path: Path) -> None:
    """restart=True would rmtree the dataset directory, startup would replace work.ms: refuse."""
    out = tmp_path / "out"
    root = out / "datasets" / "x"
    root.mkdir(parents=True)
    ms = MSFactory.copy(base_ms, root / "work.ms")
    before = tree_checksums(ms)
    for kw in ({}, {"restart": True}):
        res = run_dataset("x", ms, PipelineConfig.from_dict(quick_config()), out, **kw)
        assert res.status == "failed" and one_line(res.error)
        assert "inside the dataset's output directory" in res.error, res.error
        assert tree_diff(before, tree_checksums(ms)) == []
    # ... and the reverse: an output directory inside the input MS.
    res = run_dataset("y", ms, PipelineConfig.from_dict(quick_config()), ms / "out")
    assert res.status == "failed" and "is inside the input MS" in res.error
    assert not (ms / "out").exists()


def test_restart_wipes_a_failed_dataset(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(tmp_path / "nowhere.ms", out, "r")
    marker = out / "datasets" / "r" / "marker"
    marker.write_text("x")
    res = run_dataset("r", tmp_path / "nowhere.ms", PipelineConfig.from_dict(quick_config()), out, restart=True)
    assert res.status == "failed" and not marker.exists()


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("data, key, words", [
    ({"templates": {"bright": {"p1": {"robust": 5.0}}}}, "templates.bright.p1.robust", "[-2, 2]"),
    ({"templates": {"bright": {"p1": {"solint": "-10s"}}}}, "templates.bright.p1.solint", "-10s"),
    ({"templates": {"bright": {"p7": {"solint": "10s"}}}}, "templates.bright.p7", "unknown step 'p7'"),
    ({"templates": {"nope": {}}}, "datasets[3].templates", "unknown template 'nope'"),
    ({"steps": ["startup", "p9"]}, "datasets[3].steps", "unknown step 'p9'"),
    ({"final_robust": 3.0}, "datasets[3].final_robust", "[-2, 2]"),
    ({"wsclean": {"binray": "x"}}, "datasets[3].wsclean.binray", "did you mean 'binary'"),
    ({"solint": {"min_snr": -1.0}}, "datasets[3].solint.min_snr", ">= 0"),
    ({"imsize": "big"}, "datasets[3].imsize", "expected an integer"),
])
def test_config_errors_name_the_key(data: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as ei:
        PipelineConfig.from_dict(data, where="datasets[3]")
    msg = str(ei.value)
    assert one_line(msg) and key in msg and words in msg, msg


def test_uvrange_selecting_no_baselines(base_ms: GuardedMS, tmp_path: Path) -> None:
    """Breaker finding: a uv range beyond the longest baseline failed with CASA's raw
    'MSSelectionNullSelection' text, which did not name the setting."""
    res = _run(base_ms.path, tmp_path / "out", uvrange_cal=">500klambda")
    assert res.status == "failed" and "uvrange_cal '>500klambda'" in res.error and "selects no baselines" in res.error
    assert base_ms.changes() == []
