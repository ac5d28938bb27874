"""Paths with spaces and non-ASCII characters (findings F4, F5 of the s6 review).

One `selfcal-batch run-one` of a copy of ``base_ms`` named ``base ü.ms`` (dataset name
``base ü``: its directory has a space) into an output directory ``out ü space``, steps up to
p0 and split_calibrated. Before the fix the CASA child's done-marker was parsed with
``split()`` and the run hung for the CASA timeout (1 h); the non-ASCII MS name crashed the
FITS provenance stamp after all the work. Now: it finishes, the FITS cards are ASCII
(escaped), result.json keeps the full name, the input copy is byte-identical.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from selfcal_batch.ms.checksum import tree_checksums, tree_diff

from .conftest import PY, REPO, GuardedMS, MSFactory, quick_config

pytestmark = pytest.mark.integration

STEPS = ["startup", "test_image", "select_refant", "p0", "split_calibrated"]


def test_space_and_non_ascii_in_every_path(base_ms: GuardedMS, tmp_path: Path) -> None:
    from astropy.io import fits  # test-only

    ms = MSFactory.copy(base_ms, tmp_path / "in ü dir" / "base ü.ms")
    before = tree_checksums(ms)
    out = tmp_path / "out ü space"
    cfg = tmp_path / "quick.toml"
    q = quick_config(steps=STEPS)
    cfg.write_text("\n".join([f"imsize = {q['imsize']}", f"threads = {q['threads']}", "plots = false",
                              f"steps = {json.dumps(STEPS)}", "[solint]", "extend_ladder = false", ""]))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([PY, "-m", "selfcal_batch.cli", "run-one", str(ms), "--out", str(out),
                           "--config", str(cfg)], capture_output=True, text=True, env=env, timeout=900)
    root = out / "datasets" / "base ü"
    res = json.loads((root / "result.json").read_text(encoding="utf-8"))
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:])
    assert res["status"] in ("finished", "unchanged"), res["error"]
    assert res["ms"] == str(ms)  # the full UTF-8 name kept in result.json
    assert "Traceback" not in proc.stdout + proc.stderr
    header = fits.getheader(root / "final-image.fits")
    assert header["SCB_INMS"] == "base \\u00fc.ms"  # FITS cards are printable ASCII
    assert tree_diff(before, tree_checksums(ms)) == []
