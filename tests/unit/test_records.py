"""Pure logic of run records (records.py), --restart-from plans (restart.py) and the
filesystem-only part of the up-front checks (preflight.py). No programs run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfcal_batch.pipeline import records
from selfcal_batch.campaign.preflight import ensure_output_dir, output_dir_problem, structure_problems
from selfcal_batch.errors import OutputDirError
from selfcal_batch.pipeline.restart import plan

# -- records ---------------------------------------------------------------------------------


def _attempt(start: str, steps: list[str], wall: float, ws: float, casa: float, runs: int,
             end: str | None = "2026-01-01T00:10:00+00:00") -> dict:
    a = records.new_attempt(start, "h", "pid 1")
    for s in steps:
        records.note_step(a, s)
    records.set_costs(a, wall=wall, wsclean=ws, casa=casa, wsclean_runs=runs, seen=start)
    if end:
        records.finish_attempt(a, "finished", "", end)
    return a


def test_set_costs_python_time_is_the_rest_never_negative() -> None:
    a = _attempt("t0", ["p0"], wall=10.0, ws=4.0, casa=5.0, runs=2)
    assert (a["wall_s"], a["time_wsclean_s"], a["time_casa_s"], a["time_python_s"], a["wsclean_runs"]) == \
        (10.0, 4.0, 5.0, 1.0, 2)
    b = _attempt("t0", ["p0"], wall=1.0, ws=0.8, casa=0.5, runs=0)  # clock granularity
    assert b["time_python_s"] == 0.0


def test_core_wait_is_not_python_time() -> None:
    """Waiting for a shared worker's cores (corepool) is its own cost, not the pipeline's Python."""
    a = records.new_attempt("t0", "h", "pid 1")
    records.note_step(a, "p0")
    records.set_costs(a, wall=10.0, wsclean=4.0, casa=3.0, wsclean_runs=1, seen="t0", core_wait=2.5)
    assert (a["time_core_wait_s"], a["time_python_s"]) == (2.5, 0.5)
    assert records.summed([a, a])["time_core_wait_s"] == 5.0


def test_sums_skip_attempts_that_ran_no_step() -> None:
    """A no-op resume adds a record but changes none of the summed figures."""
    first = _attempt("t0", ["startup", "p0"], wall=30.0, ws=10.0, casa=15.0, runs=3)
    noop = _attempt("t1", [], wall=0.02, ws=0.0, casa=0.0, runs=0)
    s1 = records.summed([first])
    s2 = records.summed([first, noop])
    assert {k: v for k, v in s2.items() if k != "n_attempts"} == {k: v for k, v in s1.items() if k != "n_attempts"}
    assert (s1["n_attempts"], s2["n_attempts"]) == (1, 2)
    assert s2 == {"wall_s": 30.0, "time_wsclean_s": 10.0, "time_casa_s": 15.0, "time_python_s": 5.0,
                  "wsclean_runs": 3, "time_core_wait_s": 0.0, "n_attempts": 2}
    assert noop["exit"] == "finished (nothing to redo)" and first["exit"] == "finished"


def test_sums_add_every_attempt_that_ran_including_interrupted() -> None:
    killed = _attempt("t0", ["startup", "p0"], wall=20.0, ws=8.0, casa=9.0, runs=2, end=None)
    resumed = _attempt("t1", ["p0", "p1"], wall=25.0, ws=9.5, casa=12.0, runs=3)
    s = records.summed(records.close_open([killed]) + [resumed])
    assert s == {"wall_s": 45.0, "time_wsclean_s": 17.5, "time_casa_s": 21.0, "time_python_s": 6.5,
                 "wsclean_runs": 5, "time_core_wait_s": 0.0, "n_attempts": 2}


def test_open_attempt_found_at_next_start_is_interrupted() -> None:
    killed = records.new_attempt("2026-01-01T00:00:00+00:00", "h", "pid 1")
    records.note_step(killed, "startup")
    records.set_costs(killed, wall=5.0, wsclean=0.0, casa=4.0, wsclean_runs=0, seen="2026-01-01T00:00:05+00:00")
    out = records.start_attempt([killed], "2026-01-01T00:01:00+00:00", "h2", "tcp://w:1")
    assert len(out) == 2
    assert out[0]["exit"] == records.INTERRUPTED and out[0]["end"] == "2026-01-01T00:00:05+00:00"
    assert out[0]["wall_s"] == 5.0  # its costs up to its last save are kept
    assert out[1]["exit"] == "running" and out[1]["end"] is None and out[1]["host"] == "h2"
    assert killed["end"] is None  # pure: the input is not modified
    # closing twice changes nothing
    assert records.close_open(out[:1]) == out[:1]


def test_finish_attempt_exit_reasons() -> None:
    a = records.new_attempt("t", "h", "w")
    records.note_step(a, "p0")
    records.note_step(a, "p0")
    assert a["steps"] == ["p0"]
    records.finish_attempt(a, "failed", "p0: wsclean: program not found", "t2")
    assert a["exit"] == "failed: p0: wsclean: program not found" and a["end"] == "t2"
    records.finish_attempt(a, "interrupted", "stopped", "t3")
    assert a["exit"] == "interrupted: stopped"


def test_row_from_state_for_runner_side_rows() -> None:
    assert records.row_from_state(None) == {} and records.row_from_state({"steps": {}}) == {}
    killed = _attempt("t0", ["p0"], wall=7.0, ws=3.0, casa=2.0, runs=1, end=None)
    row = records.row_from_state({"attempts": [killed]})
    assert row["wall_s"] == 7.0 and row["n_attempts"] == 1
    assert row["attempts"][0]["exit"] == records.INTERRUPTED


def test_sums_ignore_garbage_fields() -> None:
    a = _attempt("t0", ["p0"], wall=3.0, ws=1.0, casa=1.0, runs=1)
    a["time_casa_s"] = "n/a"
    s = records.summed([a, "not a dict"])  # type: ignore[list-item]
    assert s["time_casa_s"] == 0.0 and s["wall_s"] == 3.0 and s["n_attempts"] == 1


def test_utc_now_is_utc_iso() -> None:
    assert records.utc_now().endswith("+00:00") and "T" in records.utc_now()


# -- --restart-from plans ------------------------------------------------------------------------

DONE = ["startup", "save_init_flags", "test_image", "select_refant", "p0", "p1", "split_trial_1",
        "report_results"]


def test_restart_with_work_ms_removed_redoes_from_startup_and_says_why() -> None:
    p = plan("p1", DONE, work_ms_exists=False, keep_work_ms=False)
    assert p.first == "startup" and p.redo == tuple(DONE)
    assert p.reason.startswith("work.ms was removed after success: redoing from startup")
    assert "keep_work_ms = true" in p.reason
    p = plan("p1", DONE, work_ms_exists=False, keep_work_ms=True)
    assert p.first == "startup" and p.reason.startswith("work.ms is missing")


def test_restart_with_work_ms_kept_redoes_only_from_the_step() -> None:
    p = plan("p1", DONE, work_ms_exists=True, keep_work_ms=True)
    assert p.first == "p1" and p.redo == ("p1", "split_trial_1", "report_results")
    assert p.reason == "redoing from p1: p1 split_trial_1 report_results (work.ms kept)"


def test_restart_of_steps_that_do_not_read_work_ms_needs_no_copy() -> None:
    p = plan("report_results", DONE, work_ms_exists=False, keep_work_ms=False)
    assert p.first == "report_results" and p.redo == ("report_results",)


def test_restart_without_records() -> None:
    assert plan("p1", [], False, False).reason == "no earlier run: every step runs"
    p = plan("ap1", DONE, True, True)
    assert p.first == "" and "ap1 has not run on this dataset" in p.reason


# -- output directory ---------------------------------------------------------------------------


def test_output_dir_problems(tmp_path: Path) -> None:
    assert output_dir_problem(tmp_path / "new" / "deeper") == ""  # creatable
    assert not (tmp_path / "new").exists()  # the check creates nothing
    f = tmp_path / "afile"
    f.write_text("x")
    assert output_dir_problem(f) == f"output directory {f} is a file, not a directory"
    assert output_dir_problem(f / "out") == f"cannot create output directory {f / 'out'}: {f} is a file, not a directory"
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    assert "broken symbolic link" in output_dir_problem(link)
    with pytest.raises(OutputDirError, match="is a file"):
        ensure_output_dir(f)
    assert ensure_output_dir(tmp_path / "made" / "here").is_dir()
    assert not list((tmp_path / "made" / "here").iterdir())  # the probe file is gone


# -- input structure (no table opened) -----------------------------------------------------------


def test_structure_problems(tmp_path: Path, tiny_ms) -> None:
    assert structure_problems(tmp_path / "none.ms") == [f"{tmp_path / 'none.ms'}: MS not found"]
    (tmp_path / "plain.ms").write_text("x")
    assert "not a measurement set (no table.dat)" in structure_problems(tmp_path / "plain.ms")[0]
    ms = tiny_ms(tmp_path / "t.ms")
    assert structure_problems(ms) == []
    os.remove(ms / "FIELD" / "table.dat")
    import shutil

    shutil.rmtree(ms / "ANTENNA")
    assert structure_problems(ms) == [f"{ms}: ANTENNA table is missing",
                                      f"{ms}: FIELD table is damaged (no table.dat)"]


def test_restart_from_scratch_keeps_records_but_not_their_cost() -> None:
    old = _attempt("t0", ["startup", "p0"], wall=30.0, ws=10.0, casa=15.0, runs=3)
    killed = _attempt("t1", ["startup"], wall=4.0, ws=0.0, casa=3.0, runs=0, end=None)
    kept = records.discard([old, killed])
    assert [a["discarded"] for a in kept] == [True, True] and kept[1]["exit"] == records.INTERRUPTED
    new = _attempt("t2", ["startup", "p0"], wall=28.0, ws=9.0, casa=14.0, runs=3)
    s = records.summed(kept + [new])
    assert (s["wall_s"], s["wsclean_runs"], s["n_attempts"]) == (28.0, 3, 3)


# -- report: campaign elapsed vs summed dataset time ---------------------------------------------


def test_campaign_elapsed_from_campaign_json() -> None:
    import math

    from selfcal_batch.report.html import campaign_elapsed

    camp = {"elapsed_s": 5.0, "runs": [{"elapsed_s": 30.0}, {"started": "2026-01-01T00:00:00+00:00",
                                                              "finished": "2026-01-01T00:00:05+00:00"}]}
    assert campaign_elapsed(camp) == (5.0, 35.0, 2)
    # an older campaign.json: no elapsed_s and no runs, only started/finished
    old = {"started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00"}
    assert campaign_elapsed(old) == (60.0, 60.0, 1)
    last, total, n = campaign_elapsed({})
    assert math.isnan(last) and math.isnan(total) and n == 0


def test_campaign_runs_history() -> None:
    assert records.campaign_runs(None) == [] and records.campaign_runs({}) == []
    old = {"started": "a", "finished": "b", "status": "finished"}
    assert records.campaign_runs(old) == [{"started": "a", "finished": "b", "status": "finished",
                                           "elapsed_s": None}]
    assert records.campaign_runs({"started": "c", "runs": [old, "junk"]}) == [old]


def test_an_attempt_stopped_with_its_campaign_is_interrupted_not_killed(tmp_path) -> None:
    """Breaker: a caught Ctrl-C was recorded as 'killed or crashed'. The Dask worker running
    the dataset dies with the campaign's SIGINT, so its attempt stays open; an open attempt
    that started inside a campaign run that ended 'interrupted' was stopped by the user."""
    import json

    from selfcal_batch.pipeline.runner import _stopped_runs

    def open_attempt(start: str) -> dict:
        a = records.new_attempt(start, "h", "w")
        records.note_step(a, "p0")
        return a

    campaign = {"runs": [
        {"started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:10:00+00:00", "status": "interrupted"},
        {"started": "2026-01-01T01:00:00+00:00", "finished": "2026-01-01T01:10:00+00:00", "status": "failed"},
        {"started": "2026-01-01T02:00:00+00:00", "finished": None, "status": "running"}]}
    stopped = records.stopped_runs(campaign)
    assert stopped == [("2026-01-01T00:00:00+00:00", "2026-01-01T00:10:00+00:00")]
    inside, killed = open_attempt("2026-01-01T00:05:00+00:00"), open_attempt("2026-01-01T01:05:00+00:00")
    out = records.close_open([inside, killed], stopped)
    assert out[0]["exit"] == records.STOPPED == "interrupted: stopped by the user (Ctrl-C/SIGTERM); rerun to resume"
    assert out[1]["exit"] == records.INTERRUPTED  # a worker that died on its own
    # the campaign's own row while it is stopping (its run has no end yet)
    now = open_attempt("2026-01-01T02:01:00+00:00")
    row = records.row_from_state({"attempts": [now]}, [("2026-01-01T02:00:00+00:00", None)])
    assert row["attempts"][0]["exit"] == records.STOPPED
    # the next attempt (resume and --restart alike) reads the stops from campaign.json
    (tmp_path / "datasets" / "d").mkdir(parents=True)
    (tmp_path / "campaign.json").write_text(json.dumps(campaign))
    assert _stopped_runs(tmp_path / "datasets" / "d") == stopped
    assert _stopped_runs(tmp_path / "other" / "datasets" / "d") == []  # run-one: no campaign.json
    resumed = records.start_attempt([inside], "2026-01-01T03:00:00+00:00", "h", "w", stopped)
    assert resumed[0]["exit"] == records.STOPPED
    assert records.discard([inside], stopped)[0]["exit"] == records.STOPPED


@pytest.mark.parametrize("gap_s", [0, 1, 148, 3600])
def test_killed_attempt_wall_runs_to_its_last_sign_of_life(gap_s, tmp_path) -> None:
    """Costs are saved with the state only: an attempt killed 148 s into a WSClean run was
    recorded with 'wall 2s'. Its last log write extends it (the newest open attempt only)."""
    import datetime as dt

    t_save = dt.datetime(2026, 1, 1, 0, 0, 2, tzinfo=dt.timezone.utc)
    killed = records.new_attempt("2026-01-01T00:00:00+00:00", "h", "pid 1")
    records.set_costs(killed, wall=2.0, wsclean=0.0, casa=1.5, wsclean_runs=0, seen=records.iso(t_save))
    older = dict(killed, start="2025-12-31T00:00:00+00:00")
    alive = records.iso(t_save + dt.timedelta(seconds=gap_s))
    out = records.start_attempt([older, killed], "2026-01-01T01:00:00+00:00", "h", "w", alive_until=alive)
    assert out[1]["wall_s"] == 2.0 + gap_s and out[1]["end"] == alive
    assert out[1]["time_casa_s"] == 1.5 and out[1]["time_python_s"] == 0.5  # the gap is not attributed
    assert out[0]["wall_s"] == 2.0  # an older open attempt keeps its saved costs
    # an alive_until before the last save (clock skew, a touched file) never shortens a record
    early = records.start_attempt([killed], "x", "h", "w", alive_until="2025-01-01T00:00:00+00:00")
    assert early[0]["wall_s"] == 2.0 and early[0]["end"] == records.iso(t_save)
    # last_write: the newest file of a directory, None for an empty or missing one
    assert records.last_write(tmp_path / "none") is None and records.last_write(tmp_path) is None
    f = tmp_path / "wsclean.log"
    f.write_text("x")
    os.utime(f, (t_save.timestamp() + gap_s, t_save.timestamp() + gap_s))
    assert records.last_write(tmp_path) == alive
