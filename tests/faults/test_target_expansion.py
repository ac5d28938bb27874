"""Target expansion on damaged EBs: one line naming the MS, the other entries still run,
the input is never touched (generated EB, then damaged with file operations)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfcal_batch.ms.checksum import tree_checksums

from tests.integration.survey_data import eb_spec, make

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("damage, needle", [
    ("STATE/table.dat", "cannot read its fields"),
    ("FIELD", "FIELD"),
])
def test_damaged_eb_is_one_line_naming_it(tmp_path: Path, subprocess_env, damage: str, needle: str) -> None:
    good = make(eb_spec(duration_s=80.0, n_scans=2), tmp_path / "good.ms")
    bad = tmp_path / "bad.ms"
    shutil.copytree(good, bad)
    target = bad / damage
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    sums = {p: tree_checksums(p) for p in (good, bad)}
    m = tmp_path / "c.toml"
    m.write_text('[defaults]\nimsize = 128\n'
                 '[[datasets]]\nms = "bad.ms"\ntargets = "science"\nmin_target_time_s = 10\n'
                 '[[datasets]]\nms = "good.ms"\ntargets = "science"\nmin_target_time_s = 10\n')
    res = subprocess.run([sys.executable, "-m", "selfcal_batch.cli", str(m), "--dry-run"],
                         capture_output=True, text=True, env=subprocess_env, timeout=600)
    assert res.returncode == 2, res.stdout + res.stderr
    invalid = [ln for ln in res.stdout.splitlines() if "INVALID" in ln]
    assert len(invalid) == 1 and str(bad) in invalid[0] and needle in invalid[0], res.stdout
    assert "Traceback" not in res.stdout + res.stderr
    assert res.stdout.count("  - good__") == 3  # the intact EB still expands to its three targets
    assert {p: tree_checksums(p) for p in (good, bad)} == sums
