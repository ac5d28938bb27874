"""``run-one MS MS``: the execution blocks of one target self-calibrated jointly without a
manifest (issue 18), with the campaign's up-front checks (an EB listed twice, a missing EB,
EBs at different pointings: one line each, exit 2, nothing run).

Real WSClean and CASA: the two 50 mJy EBs of tests/integration/survey_data.py
``joint_eb_specs`` (different phase errors, spw numbering, EB2's flux scale 5 % high).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfcal_batch.ms.checksum import tree_checksums

from tests.faults.conftest import REPO, one_line
from tests.integration.survey_data import JOINT_P0_CONFIG, drop_spw_rows, group_eb_spec, joint_eb_specs, make

pytestmark = pytest.mark.integration

CONFIG = JOINT_P0_CONFIG


def _run_one(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "selfcal_batch.cli", "run-one", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=900)


def test_run_one_with_two_ebs_runs_them_jointly(tmp_path: Path) -> None:
    s1, s2 = joint_eb_specs()
    eb1, eb2 = make(s1, tmp_path / "eb1.ms"), make(s2, tmp_path / "eb2.ms")
    drop_spw_rows(eb2, 0)
    (tmp_path / "cfg.toml").write_text(CONFIG)
    before = {p: tree_checksums(p) for p in (eb1, eb2)}
    dry = _run_one("eb1.ms", "eb2.ms", "--out", "out space", "--config", "cfg.toml", "--name", "joint", "--dry-run",
                   cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.startswith("run-one  joint\n") and "process  this process (no Dask): WSClean -j 1" in dry.stdout
    assert f"        eb0  {eb1}\n        eb1  {eb2}\n" in dry.stdout and " align_ebs p0 " in dry.stdout
    assert not (tmp_path / "out space" / "datasets").exists()  # a dry-run makes no dataset
    t0 = time.monotonic()
    # an output path with a space (CASA concat cut absolute paths at it: tester s7-break #1)
    res = _run_one("eb1.ms", "eb2.ms", "--out", "out space", "--config", "cfg.toml", "--name", "joint", cwd=tmp_path)
    wall = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    row = json.loads((tmp_path / "out space" / "datasets" / "joint" / "result.json").read_text())
    assert row["status"] == "finished" and "p0" in row["steps_accepted"], row["error"]
    assert [e["ms"] for e in row["ebs"]] == [str(eb1), str(eb2)]
    assert all(Path(e["final_ms"]).is_dir() for e in row["ebs"])
    state = json.loads((tmp_path / "out space" / "datasets" / "joint" / "state.json").read_text())
    assert state["steps"]["align_ebs"]["status"] == "done"  # the joint path, not EB1 alone
    assert {p: tree_checksums(p) for p in (eb1, eb2)} == before  # inputs untouched

    # up-front refusals: one line naming the problem, exit 2, no dataset directory made
    shifted = make(group_eb_spec(5, "2024-01-05", shift_arcsec=36.0), tmp_path / "ebC.ms")
    other = make(group_eb_spec(6, "2024-01-07"), tmp_path / "ebD.ms")
    (tmp_path / "field.toml").write_text(CONFIG + 'field = "J1003+4100"\n')
    cases = {("eb1.ms", "./eb1.ms", "cfg.toml"): "the same execution block is listed twice",
             ("eb1.ms", "nope.ms", "cfg.toml"): f"ms not found: {tmp_path / 'nope.ms'} (execution block 2 of 2)",
             (other.name, shifted.name, "field.toml"): "phase centre 36 arcsec from execution block 1's"}
    for (*args, cfg), want in cases.items():
        bad = _run_one(*args, "--out", "bad", "--config", cfg, "--name", "bad", cwd=tmp_path)
        err = bad.stderr.strip().splitlines()
        assert bad.returncode == 2 and err and want in err[0] and one_line(err[0]), (args, bad.stderr[-2000:])
        assert not (tmp_path / "bad" / "datasets" / "bad" / "state.json").exists()
    print(f"run-one joint: {wall:.0f} s, align factors {[e['align_flux_factor'] for e in row['ebs']]}; "
          f"load {os.getloadavg()}")
