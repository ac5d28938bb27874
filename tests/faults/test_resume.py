"""Resume: SIGKILL at three points (WSClean, gaincal, final split), finished steps are
skipped, a changed setting invalidates only the steps it affects.

The ``kill_chain`` fixture (conftest) runs one pipeline that is killed three times and
resumed after each kill, next to an uninterrupted reference run of the same MS and
settings (the full default step list).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from selfcal_batch import process
from selfcal_batch.config import DEFAULT_STEPS, PipelineConfig
from selfcal_batch.pipeline.runner import run_dataset

from .conftest import CHAIN_CFG, GuardedMS, casa_requests, quick_config, read_state, wsclean_commands

pytestmark = pytest.mark.integration

STEPS = list(DEFAULT_STEPS)
KILLED_STEPS = ("p0", "p1", "split_calibrated")


def test_kill_points_hit_the_intended_children(kill_chain: dict[str, Any]) -> None:
    """Each kill happened in the intended step while the intended child was working; the
    state left behind is valid JSON with the killed step 'running', never 'done'."""
    kills = kill_chain["kills"]
    assert tuple(k.step for k in kills) == KILLED_STEPS, [k.detail for k in kills]
    assert "p0_post" in kills[0].detail and "gaincal" in kills[1].detail and "final.ms.partial" in kills[2].detail
    for k, st in zip(kills, kill_chain["states"], strict=False):
        assert st["steps"][k.step]["status"] == "running"
        assert st["current_step"] == k.step


def test_resumed_run_gives_the_reference_result(kill_chain: dict[str, Any]) -> None:
    """Same decisions, bit-identical statistics and gain solutions (WSClean -j 1 and CASA
    are deterministic for the same inputs)."""
    ref, res = kill_chain["ref"], kill_chain["res"]
    assert ref["status"] == "finished", ref["error"]
    assert res["status"] == "finished", res["error"]
    for key in ("template_initial", "template_final", "steps_run", "steps_accepted", "steps_reverted",
                "decisions"):
        assert res[key] == ref[key], key
    for key in ("peak_final", "snr_final", "rms_final", "dr_final", "total_flux_final", "peak_initial",
                "snr_initial"):
        assert res[key] == ref[key], (key, res[key], ref[key])
    from casacore.tables import table

    for step in res["steps_run"]:
        with table(str(kill_chain["root"] / "caltables" / f"{step}.G"), ack=False) as t:
            g = t.getcol("CPARAM")
        with table(str(kill_chain["ref_root"] / "caltables" / f"{step}.G"), ack=False) as t:
            g_ref = t.getcol("CPARAM")
        np.testing.assert_array_equal(g, g_ref, err_msg=step)
    assert Path(res["final_image"]).exists() and Path(res["final_ms"]).exists()
    assert not (kill_chain["root"] / "final.ms.partial").exists()
    assert not (kill_chain["root"] / "work.ms").exists()  # removed after success as usual


def test_resume_redoes_no_finished_step(kill_chain: dict[str, Any]) -> None:
    """WSClean runs: reference <= resumed total <= reference + the interrupted attempts' own
    runs; every step ran once, the three interrupted ones twice."""
    ref_root, root, kills = kill_chain["ref_root"], kill_chain["root"], kill_chain["kills"]
    base_log, got_log = wsclean_commands(ref_root), wsclean_commands(root)
    base_state, got_state = read_state(ref_root)["wsclean_runs"], read_state(root)["wsclean_runs"]
    extra_log = sum(k.wsclean_in_attempt for k in kills)
    # A WSClean run killed mid-way is logged but never counted as a completed run.
    extra_state = extra_log - sum(1 for k in kills if k.label == "wsclean")
    print(f"\nWSClean command lines: reference {base_log}, killed+resumed {got_log}; interrupted "
          f"attempts logged {[(k.step, k.wsclean_in_attempt) for k in kills]}; state wsclean_runs: "
          f"reference {base_state}, resumed {got_state}; chain {kill_chain['chain_s']:.0f} s, "
          f"reference {kill_chain['ref_s']:.0f} s")
    assert base_log <= got_log <= base_log + extra_log
    assert base_state <= got_state <= base_state + extra_state
    assert kill_chain["res"]["wsclean_runs"] == got_state
    st = read_state(root)
    attempts = {s: st["steps"][s]["attempts"] for s in STEPS}
    assert attempts == {s: (2 if s in KILLED_STEPS else 1) for s in STEPS}


def test_second_call_on_finished_dataset_does_nothing(kill_chain: dict[str, Any], base_ms: GuardedMS) -> None:
    """The resumed, finished dataset (work.ms deleted): zero WSClean runs, zero CASA children."""
    root = kill_chain["root"]
    assert not (root / "work.ms").exists()
    before = (wsclean_commands(root), casa_requests(root), dict(process.TOOL_RUNS), read_state(root))
    res = run_dataset("d", base_ms.path, PipelineConfig.from_dict(CHAIN_CFG), root.parent.parent)
    after_state = read_state(root)
    assert res.status == "finished", res.error
    assert wsclean_commands(root) == before[0]
    assert casa_requests(root) == before[1]
    assert dict(process.TOOL_RUNS) == before[2]
    assert after_state["wsclean_runs"] == before[3]["wsclean_runs"]
    for step in STEPS:
        assert after_state["steps"][step]["finished"] == before[3]["steps"][step]["finished"], step
    assert res.snr_final == kill_chain["res"]["snr_final"]


def _finished(root: Path) -> dict[str, float]:
    return {s: r["finished"] for s, r in read_state(root)["steps"].items()}


def test_changed_setting_redoes_only_affected_steps(kill_chain: dict[str, Any], base_ms: GuardedMS,
                                                   tmp_path: Path) -> None:
    """final_robust -> only split_calibrated and dataset_plots; restart_from='ap1' -> ap1 and
    after, reproducing the same solutions and image."""
    out = tmp_path / "out"
    root = out / "datasets" / "d"
    shutil.copytree(kill_chain["ref_root"], root, symlinks=True)  # the reference kept work.ms
    first = kill_chain["ref"]
    t1, ws1, casa1 = _finished(root), wsclean_commands(root), casa_requests(root)
    assert (root / "work.ms").exists()

    # WSClean runs of split_trial_1: the like-for-like initial image (final settings, made
    # there when test_imaging='seed'), the final guard's two images and the final image.
    # Counted from logs/tools.jsonl: an image of the same data and settings is not made twice
    # (imaging/reuse.py: the guard's "before" image is the initial one), so rows != runs.
    split_runs = sum(1 for ln in (root / "logs" / "tools.jsonl").read_text().splitlines()
                     if json.loads(ln)["step"] == "split_calibrated" and json.loads(ln)["category"] == "wsclean")
    cfg2 = PipelineConfig.from_dict(dict(CHAIN_CFG, final_robust=0.0, keep_work_ms=True))
    second = run_dataset("d", base_ms.path, cfg2, out).to_dict()
    assert second["status"] == "finished", second["error"]
    t2 = _finished(root)
    assert sorted(s for s in STEPS if t2[s] != t1[s]) == ["dataset_plots", "split_calibrated"]
    assert wsclean_commands(root) == ws1 + split_runs
    new_casa = [n for n in casa_requests(root) if n not in casa1]
    # the final split and the final image's primary beam (issue 19), nothing earlier
    assert new_casa and all(n.endswith(("-final-split.json", "-primary-beam.json")) for n in new_casa), new_casa
    assert second["decisions"] == first["decisions"] and second["template_final"] == first["template_final"]
    assert second["peak_final"] != first["peak_final"]  # robust 0 instead of 0.5

    if "ap1" not in first["steps_run"]:
        pytest.skip(f"ap1 did not run in the reference ({first['decisions']}): restart_from not checked")
    ws2 = wsclean_commands(root)
    ap1_runs = sum(1 for r in read_state(root)["image_rows"] if r["step"] == "ap1")
    res = run_dataset("d", base_ms.path, cfg2, out, restart_from="ap1")
    assert res.status == "finished", res.error
    t3 = _finished(root)
    assert sorted(s for s in STEPS if t3[s] != t2[s]) == ["ap1", "dataset_plots", "split_calibrated"]
    # ap1's own images and split_trial_1's, plus at most one -predict that refills MODEL_DATA
    # with the accepted p1 model (ap1's pre image) after the first ap1 attempt overwrote it.
    commands = (root / "logs" / "wsclean.log").read_text().split("\n$ wsclean")[1:]
    predicts = sum(1 for c in commands[ws2:] if " -predict " in c.split("\n", 1)[0])
    assert wsclean_commands(root) - ws2 - predicts == ap1_runs + split_runs
    assert predicts <= 1
    # Redoing ap1 from its saved flags and gain chain reproduces the same result.
    assert (res.snr_final, res.peak_final, res.snr_initial) == \
        (second["snr_final"], second["peak_final"], second["snr_initial"])
    assert res.decisions == second["decisions"]
    assert base_ms.changes() == []


def test_step_needing_deleted_work_ms_redoes_everything(prepared: Path, base_ms: GuardedMS,
                                                        tmp_path: Path) -> None:
    """A finished dataset whose work.ms was deleted (as after success) must run a step that
    needs it: every step is redone from a new working copy with cleanly rolled-back state
    (this used to fail in p0 with "argument of type 'NoneType' is not iterable": the
    rollback restored keys that did not exist before startup as None)."""
    out = tmp_path / "out"
    root = out / "datasets" / prepared.name
    shutil.copytree(prepared, root, symlinks=True)
    shutil.rmtree(root / "work.ms")
    t1 = _finished(root)
    steps = ["startup", "test_image", "p0", "split_calibrated"]
    res = run_dataset(prepared.name, base_ms.path, PipelineConfig.from_dict(quick_config(steps=steps)), out)
    assert res.status == "finished", res.error
    t2 = _finished(root)
    assert t2["startup"] != t1["startup"]  # redone: the new copy
    st = read_state(root)
    assert all(st["steps"][s]["attempts"] == 1 for s in steps)  # records were reset
    assert st["steps"]["p0"]["status"] == "done" and "p0" in res.steps_run
    # said where the campaign console reads it (campaign.progress.emit_notices), not only in pipeline.log
    assert [n["text"] for n in st["notices"]] == [
        "step test_image must run but work.ms was removed after success: redoing from startup"]
    assert base_ms.changes() == []


def test_killed_attempts_are_recorded_and_summed(kill_chain: dict[str, Any]) -> None:
    """The result of the run killed three times lists four attempts (three interrupted,
    found open at the next start, with the steps each ran) and sums their costs."""
    from selfcal_batch.pipeline import records

    res = kill_chain["res"]
    att = res["attempts"]
    assert [a["exit"] for a in att] == [records.INTERRUPTED] * 3 + ["finished"]
    assert res["n_attempts"] == 4
    assert [a["steps"][-1] for a in att[:3]] == list(KILLED_STEPS)
    assert att[1]["steps"][0] == "p0" and att[3]["steps"][0] == "split_calibrated"  # resumed, not redone
    for k in ("wall_s", "time_wsclean_s", "time_casa_s", "time_python_s"):
        assert res[k] == pytest.approx(sum(a[k] for a in att), abs=0.05), k
    assert res["wsclean_runs"] == sum(a["wsclean_runs"] for a in att)
    assert all(a["end"] and a["end"] >= a["start"] for a in att)
    assert res["wall_s"] > att[3]["wall_s"] and att[0]["wall_s"] > 0
