"""Output directories written before the step renames (state.json schema 1) resume; a
state.json of an unknown schema is refused with one line and --restart still works.

Uses the uninterrupted reference run of ``kill_chain`` (conftest; shared with test_resume):
its state.json is turned back into the version-1 form (old step names) and the same
configuration is run again: nothing may be redone.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from selfcal_batch.config import PipelineConfig
from selfcal_batch.pipeline.runner import run_dataset

from .conftest import CHAIN_CFG, GuardedMS, casa_requests, one_line, read_state, wsclean_commands

pytestmark = pytest.mark.integration

#: New step name -> the name a version-1 state.json carries.
OLD_NAMES = {"split_calibrated": "split_trial_1", "dataset_plots": "report_results",
             "autoflag_init": "run_rflag_init", "autoflag_final": "run_rflag_final"}


def _as_version_1(root: Path) -> dict[str, Any]:
    st = read_state(root)
    st["version"] = 1
    st["steps"] = {OLD_NAMES.get(k, k): v for k, v in st["steps"].items()}
    st["snapshots"] = {OLD_NAMES.get(k, k): v for k, v in (st.get("snapshots") or {}).items()}
    (root / "state.json").write_text(json.dumps(st))
    return st


def test_version_1_state_resumes_without_redoing(kill_chain: dict[str, Any], base_ms: GuardedMS,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    root = out / "datasets" / "d"
    shutil.copytree(kill_chain["ref_root"], root, symlinks=True)
    old = _as_version_1(root)
    assert "split_trial_1" in old["steps"]
    ws, casa = wsclean_commands(root), casa_requests(root)
    res = run_dataset("d", base_ms.path, PipelineConfig.from_dict(dict(CHAIN_CFG, keep_work_ms=True)), out)
    assert res.status == "finished", res.error
    assert wsclean_commands(root) == ws and casa_requests(root) == casa  # nothing redone
    assert res.attempts[-1]["steps"] == []
    st = read_state(root)
    assert st["version"] == 2 and "split_calibrated" in st["steps"] and "split_trial_1" not in st["steps"]
    ref = kill_chain["ref"]
    for key in ("decisions", "steps_accepted", "template_final", "snr_final", "peak_final"):
        assert res.to_dict()[key] == ref[key], key


def test_unknown_state_version_is_refused_then_restart_works(kill_chain: dict[str, Any], base_ms: GuardedMS,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    root = out / "datasets" / "d"
    shutil.copytree(kill_chain["ref_root"], root, symlinks=True)
    st = read_state(root)
    st.pop("version")
    (root / "state.json").write_text(json.dumps(st))
    cfg = PipelineConfig.from_dict(dict(CHAIN_CFG, keep_work_ms=True, steps=["startup"]))
    res = run_dataset("d", base_ms.path, cfg, out)
    assert res.status == "failed" and one_line(res.error), res.error
    assert "schema version" in res.error and "--restart" in res.error and "internal error" not in res.error
    assert "version" not in read_state(root)  # the refused file is left as it was
    res = run_dataset("d", base_ms.path, cfg, out, restart=True)
    assert res.status == "finished", res.error
    assert base_ms.changes() == []
