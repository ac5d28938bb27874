"""A run killed while flagmanager saved a step's flag version (pre_<step>) resumes.

Found by the joint-EB kill test (tests/integration/test_joint_ebs.py): killed at the start
of p1, the resume failed with "FilebufIO::readBlock - incorrect number of bytes read for
.../flags.pre_p1/table.dat" (casacore writes table.dat last: an interrupted save leaves it
empty while FLAG_VERSION_LIST already names the version). Real CASA child, generated MS.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from selfcal_batch.casa import calibration as cal
from selfcal_batch.simulate import simulate_ms_isolated, spec_from_preset

pytestmark = pytest.mark.integration


def test_incomplete_flag_version_is_saved_anew(tmp_path: Path) -> None:
    ms = simulate_ms_isolated(spec_from_preset("vla-c", duration_s=120.0, n_chan=2, seed=5), tmp_path / "w.ms")
    run = lambda calls, label: cal.run_casa(calls, workdir=tmp_path, label=label)  # noqa: E731
    assert run([cal.job("flag_checkpoint", vis=str(ms), versionname="pre_p1")], "save") == ["saved"]
    version = Path(f"{ms}.flagversions") / "flags.pre_p1"
    (version / "table.dat").write_bytes(b"")  # the save was killed before the table was closed
    frac0 = run([cal.job("flag_fraction", vis=str(ms))], "frac")[0]
    # resumed: the version cannot be restored, the MS still holds the step's starting flags
    out = run([cal.job("flag_checkpoint", vis=str(ms), versionname="pre_p1", resume=True)], "resume")
    assert out == ["saved"]
    assert (version / "table.dat").stat().st_size > 0
    # a later resume restores the re-saved version (the flags this step started from)
    out = run([cal.task("flagdata", vis=str(ms), mode="manual", antenna="ea01", flagbackup=False),
               cal.job("flag_checkpoint", vis=str(ms), versionname="pre_p1", resume=True),
               cal.job("flag_fraction", vis=str(ms))], "restore")
    assert out[1] == "restored" and out[2] == pytest.approx(frac0)
    lines = (Path(f"{ms}.flagversions") / "FLAG_VERSION_LIST").read_text().splitlines()
    assert [ln.split(" : ")[0] for ln in lines].count("pre_p1") == 1
    shutil.rmtree(tmp_path / "casa_calls", ignore_errors=True)
