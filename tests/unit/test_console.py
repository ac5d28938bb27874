"""Pure parts of the console and CLI habits (issue 20, item 5): no programs run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from selfcal_batch.campaign.progress import (CampaignProgress, new_step_events, step_decision,
                                             step_eta_s, step_line)
from selfcal_batch.cli import main, unknown_command
from selfcal_batch.report.compare import compare_problem, default_compare_dir


def test_step_decision_and_line() -> None:
    kept = {"status": "done", "accepted": True, "started": 100.0, "finished": 142.0,
            "snr_pre": 40.0, "snr_post": 55.5}
    rev = {"status": "done", "accepted": False, "reason": "SNR decreased 40.1 -> 38.0",
           "started": 0.0, "finished": 5.0}
    skip = {"status": "skipped", "reason": "not in template faint", "started": 1.0, "finished": 1.0}
    assert [step_decision(r) for r in (kept, rev, skip, {"status": "done"})] == \
        ["kept", "reverted", "skipped", "done"]
    assert step_line("J1", "p1", kept, eta=190.0) == "J1 p1: kept (SNR 40→55.5) (42s) · ETA 3m10s"
    assert step_line("J1", "p2", rev) == "J1 p2: reverted: SNR decreased 40.1 -> 38.0 (5s)"
    assert step_line("J1", "ap1", skip) == "J1 ap1: skipped: not in template faint (0s)"
    assert step_line("J1", "x", {"status": "failed", "error": "boom\nline 2"}) == "J1 x: failed: boom line 2 (-)"


def test_new_step_events_only_new_and_ordered() -> None:
    steps = {"startup": {"status": "done", "started": 1.0, "finished": 10.0},
             "p0": {"status": "done", "started": 30.0, "finished": 40.0},
             "test_image": {"status": "done", "started": 11.0, "finished": 20.0},
             "p1": {"status": "running", "started": 41.0}}
    seen: set[str] = set()
    # startup ended before this campaign run started (a resume): not reported
    assert [s for s, _ in new_step_events(steps, 15.0, seen)] == ["test_image", "p0"]
    assert new_step_events(steps, 15.0, seen) == []
    steps["p0"] = {"status": "done", "started": 50.0, "finished": 60.0}  # redone: reported again
    assert [s for s, _ in new_step_events(steps, 15.0, seen)] == ["p0"]


def test_step_eta() -> None:
    assert step_eta_s([], 10, 2) is None
    assert step_eta_s([10.0, 30.0], 6, 2) == 60.0
    assert step_eta_s([10.0], -3, 1) == 0.0


def test_progress_prints_step_lines_when_not_a_terminal(tmp_path: Path) -> None:
    import time

    root = tmp_path / "datasets" / "a"
    root.mkdir(parents=True)
    now = time.time()
    state = {"steps": {"startup": {"status": "done", "started": now, "finished": now + 4}}}
    (root / "state.json").write_text(json.dumps(state))
    out = tmp_path / "console.txt"
    console = Console(file=open(out, "w"), width=300)  # a file: not a terminal
    with CampaignProgress(tmp_path, ["a", "b"], slots=1, console=console, steps_per_dataset=3) as prog:
        prog.set_running(["a"])
        prog.poll_steps(force=True)
        state["steps"]["p0"] = {"status": "done", "accepted": False, "reason": "rms rose",
                                "started": now + 4, "finished": now + 6}
        (root / "state.json").write_text(json.dumps(state))
        prog.finished({"name": "a", "status": "unchanged", "reason": "no step kept", "wall_s": 6.0})
    console.file.close()
    lines = out.read_text().splitlines()
    # a: 3 planned - 1 ended, b: 3 planned = 5 steps left x 4 s mean / 1 slot
    assert lines[0] == "a startup: done (4s) · ETA 20s"
    # a finishes: only b's 3 steps are left, mean of (4 s, 2 s)
    assert lines[1] == "a p0: reverted: rms rose (2s) · ETA 9s"
    assert lines[2].startswith("[1/2] a unchanged: no step kept")


@pytest.mark.parametrize("quiet", [False, True])
def test_pipeline_notices_reach_the_console_once(tmp_path: Path, quiet: bool) -> None:
    """A full redo the pipeline decides (work.ms removed after success) was only in
    pipeline.log: its notice in state.json is printed once, also with --quiet; notices of
    earlier runs are not."""
    import time

    root = tmp_path / "datasets" / "a"
    root.mkdir(parents=True)
    why = "step p0 must run but work.ms was removed after success: redoing from startup"
    state = {"steps": {}, "notices": [{"time": time.time() - 3600, "text": "from an earlier run"}]}
    (root / "state.json").write_text(json.dumps(state))
    out = tmp_path / "console.txt"
    console = Console(file=open(out, "w"), width=300)
    prog = CampaignProgress(tmp_path, ["a"], quiet=quiet, console=console)
    prog.set_running(["a"])
    prog.poll_steps(force=True)
    state["notices"].append({"time": time.time(), "text": why})
    (root / "state.json").write_text(json.dumps(state))
    prog.poll_steps(force=True)
    prog.poll_steps(force=True)
    prog.finished({"name": "a", "status": "finished", "wall_s": 1.0})
    console.file.close()
    lines = out.read_text().splitlines()
    assert [ln for ln in lines if "work.ms" in ln or "earlier run" in ln] == [f"a: {why}"]


def test_quiet_prints_no_step_lines(tmp_path: Path) -> None:
    console = Console(file=open(tmp_path / "c.txt", "w"))
    prog = CampaignProgress(tmp_path, ["a"], quiet=True, console=console)
    assert not prog.step_lines and not prog.live_mode


def test_mistyped_subcommand_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    assert unknown_command("reprot", ["compare", "report", "run"]) is not None
    assert "did you mean 'report'" in unknown_command("reprot", ["compare", "report", "run"])
    assert "did you mean" not in unknown_command("zzz", ["compare", "report", "run"])
    for manifest in ("c.toml", "dir/c", "-v"):
        assert unknown_command(manifest, ["report"]) is None
    (tmp_path / "mycampaign").write_text("")
    assert unknown_command(str(tmp_path / "mycampaign"), ["report"]) is None
    res = CliRunner().invoke(main, ["reprot", str(tmp_path)])
    assert res.exit_code == 2
    assert "no such command 'reprot' (did you mean 'report'?)" in res.output
    assert "manifest not found" not in res.output


def test_compare_writes_a_folder_of_its_own(tmp_path: Path) -> None:
    a, b = tmp_path / "run_a", tmp_path / "run_b"
    for d in (a, b):
        (d / "datasets").mkdir(parents=True)
    assert default_compare_dir(a, b) == tmp_path / "compare-run_a-vs-run_b"
    assert compare_problem(default_compare_dir(a, b), [a, b]) is None
    assert "inside the compared run" in compare_problem(b / "cmp", [a, b])
    assert "inside the compared run" in compare_problem(a, [a, b])
    other = tmp_path / "other"
    (other / "datasets").mkdir(parents=True)
    assert "campaign output directory" in compare_problem(other, [a, b])
    res = CliRunner().invoke(main, ["compare", str(a), str(b), "--out", str(b / "x")])
    assert res.exit_code == 2 and "inside the compared run" in res.output
    assert not (b / "x").exists()


@pytest.mark.parametrize("restart", [False, True])
def test_finished_line_wall_is_the_total_over_attempts(restart: bool) -> None:
    """Tester s6 M4: "over 2 attempts" showed one attempt's wall time. Attempt records made by
    pipeline.records (a killed first attempt, resumed or restarted from scratch): the line
    shows the total of both and each one."""
    from selfcal_batch.campaign.progress import finished_line
    from selfcal_batch.pipeline import records

    first = records.new_attempt("2026-12-03T08:00:00+00:00", "h", "pid 1")
    records.note_step(first, "startup")
    records.set_costs(first, wall=180.0, wsclean=100.0, casa=50.0, wsclean_runs=3, seen="2026-12-03T08:03:00+00:00")
    prior = records.discard([first]) if restart else [first]
    attempts = records.start_attempt(prior, "2026-12-03T08:10:00+00:00", "h", "pid 2")
    records.note_step(attempts[-1], "p0")
    records.set_costs(attempts[-1], wall=130.0, wsclean=80.0, casa=40.0, wsclean_runs=2,
                      seen="2026-12-03T08:12:10+00:00")
    records.finish_attempt(attempts[-1], "finished", "", "2026-12-03T08:12:10+00:00")
    row = {"name": "J1", "status": "success", "template_initial": "faint", "snr_initial": 10.0,
           "snr_final": 20.0, **records.summed(attempts), "attempts": attempts}
    assert row["wall_s"] == (130.0 if restart else 310.0)  # the cost of the outputs on disk
    assert finished_line(row, 1, 1).endswith("wall 5m10s over 2 attempts: 3m00s + 2m10s)")
    one = {**row, "n_attempts": 1, "attempts": attempts[-1:], "wall_s": 130.0}
    assert finished_line(one, 1, 1).endswith("wall 2m10s)")
    many = {**row, "n_attempts": 5, "attempts": [attempts[-1]] * 5}
    assert finished_line(many, 1, 1).endswith("wall 10m50s over 5 attempts)")
