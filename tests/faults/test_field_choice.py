"""Dry-run and run agree on the field choice (finding F6 of the s6 review).

A generated EB (phase calibrator + three science targets, scan intents in STATE) given
without ``field``: --dry-run refused it with the line startup gives (one shared check,
``ms.selection.field_selection_problem``), pointing at ``targets = "science"``; before, the
dry-run listed it as valid and the run failed at startup.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from selfcal_batch.config import PipelineConfig
from selfcal_batch.ms.checksum import tree_checksums, tree_diff
from selfcal_batch.pipeline.runner import run_dataset

from tests.integration.survey_data import eb_spec, make

from .conftest import one_line, quick_config

pytestmark = pytest.mark.integration


def test_several_fields_without_field_same_line_in_dry_run_and_run(tmp_path: Path, subprocess_env) -> None:
    eb = make(eb_spec(duration_s=80.0, n_scans=2), tmp_path / "eb.ms")
    before = tree_checksums(eb)
    m = tmp_path / "c.toml"
    m.write_text('[defaults]\nimsize = 128\nthreads = 1\nplots = false\n[[datasets]]\nname = "EB"\nms = "eb.ms"\n')
    dry = subprocess.run([sys.executable, "-m", "selfcal_batch.cli", str(m), "--dry-run"],
                         capture_output=True, text=True, env=subprocess_env, timeout=600)
    assert dry.returncode == 2, dry.stdout + dry.stderr
    invalid = [ln for ln in dry.stdout.splitlines() if "INVALID" in ln]
    assert len(invalid) == 1 and 'targets = "science"' in invalid[0], dry.stdout
    line = invalid[0].split(f"{eb}: ", 1)[1].strip()
    assert line.startswith("the MS has 4 fields ("), line
    res = run_dataset("EB", eb, PipelineConfig.from_dict(quick_config()), tmp_path / "out")
    assert res.status == "failed" and one_line(res.error), res.error
    assert res.error == f"startup: {eb}: {line}"
    assert tree_diff(before, tree_checksums(eb)) == []
