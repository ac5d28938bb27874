"""Campaign runner, pure parts: lock semantics, rows/CSV, progress. The runs on a real
LocalCluster (stand-in task and real pipeline) are in tests/integration/test_campaign_cluster.py."""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import pytest

from selfcal_batch.campaign.run import RunOptions, normalise_row, run_campaign, write_survey_csv
from selfcal_batch.errors import CampaignLockedError
from selfcal_batch.campaign.lock import LOCK_NAME, CampaignLock
from selfcal_batch.campaign.manifest import load_manifest

STAND_IN = "campaign_helpers:stand_in"


# -- lock -------------------------------------------------------------------------------


def test_live_lock_refuses_and_release(tmp_path):
    with CampaignLock(tmp_path, "a") as lock:
        info = json.loads((tmp_path / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(CampaignLockedError) as ei:
            CampaignLock(tmp_path, "b").acquire()
        msg = str(ei.value)
        assert msg.startswith(f"output directory {tmp_path} is in use by pid {os.getpid()} on host "
                              f"{socket.gethostname()} since {info['started']}")
        assert lock.info is not None
    assert not (tmp_path / LOCK_NAME).exists()


def test_stale_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": dead.pid, "started": "2020-01-01T00:00:00"}))
    with CampaignLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_reused_pid_is_stale_and_foreign_host_is_not(tmp_path):
    # our own pid, but "started" before this process existed: the pid was reused
    (tmp_path / LOCK_NAME).write_text(json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "process_start": 1.0, "started": "x"}))
    with CampaignLock(tmp_path):
        pass
    (tmp_path / LOCK_NAME).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "T"}))
    with pytest.raises(CampaignLockedError, match="in use by pid 1 on host elsewhere since T"):
        CampaignLock(tmp_path).acquire()
    # release never removes somebody else's lock
    lock = CampaignLock(tmp_path)
    lock.info = {"pid": os.getpid(), "host": socket.gethostname()}
    lock.release()
    assert (tmp_path / LOCK_NAME).exists()


def test_run_refuses_locked_output(tmp_path, fake_ms):
    fake_ms(tmp_path / "a.ms")
    (tmp_path / "c.toml").write_text('[campaign]\noutput_dir = "out"\n[[datasets]]\nms = "a.ms"\n')
    camp = load_manifest(tmp_path / "c.toml")
    with CampaignLock(camp.output_dir):
        with pytest.raises(CampaignLockedError):
            run_campaign(camp, RunOptions(task=STAND_IN, quiet=True))


# -- rows -------------------------------------------------------------------------------


def test_rows_and_csv(tmp_path):
    r = normalise_row({"name": "a", "status": "finished", "steps_run": ["p0", "p1"], "snr_final": 3.5,
                       "extra_metric": 7}, "a", "/x.ms")
    assert r["ms"] == "/x.ms" and r["error"] is None
    bad = normalise_row({"status": "weird"}, "b", None)
    assert bad["status"] == "failed" and "unexpected status" in bad["error"]
    f = normalise_row({"status": "failed", "error": "line one\n  line two"}, "c", None)
    assert f["error"] == "line one line two"
    write_survey_csv([r, bad], tmp_path / "survey" / "datasets.csv")
    rows = list(csv.DictReader(open(tmp_path / "survey" / "datasets.csv")))
    assert rows[0]["steps_run"] == "p0;p1" and rows[0]["snr_final"] == "3.5"
    assert rows[0]["extra_metric"] == "7"
    header = next(csv.reader(open(tmp_path / "survey" / "datasets.csv")))
    assert header[:4] == ["name", "ms", "status", "error"] and "final_ms" in header


# -- progress ---------------------------------------------------------------------------


def test_progress_counts_eta_and_steps(tmp_path):
    from rich.console import Console

    from selfcal_batch.campaign.progress import CampaignProgress, finished_line, fmt_duration

    (tmp_path / "datasets" / "b").mkdir(parents=True)
    (tmp_path / "datasets" / "b" / "state.json").write_text(json.dumps({"current_step": "p1"}))
    console = Console(file=open(tmp_path / "console.txt", "w"), width=200)
    with CampaignProgress(tmp_path, ["a", "b", "c", "d", "e"], slots=2, console=console) as prog:
        prog.set_running(["a", "b"])
        prog.poll_steps(force=True)
        assert prog.steps["b"] == "p1" and prog.steps["a"] == ""
        prog.finished({"name": "a", "status": "finished", "wall_s": 100.0, "snr_initial": 5,
                       "snr_final": 20, "dr_initial": 10, "dr_final": 30,
                       "template_initial": "faint", "template_final": "standard"})
        prog.finished({"name": "x", "status": "failed", "error": "boom"})
        # 3 remaining on 2 slots, mean wall 100 s (failed rows do not count)
        assert prog.eta_s() == 200.0
        assert "1 done · 1 running · 1 failed · 2 queued of 5" in prog.headline()
    text = (tmp_path / "console.txt").read_text()
    assert "[1/5] a finished (template faint→standard, SNR 5→20, DR ×3.00, wall 1m40s)" in text
    assert "[2/5] x failed: boom" in text
    assert fmt_duration(3725) == "1h02m" and fmt_duration(None) == "-"
    assert finished_line({"name": "q", "status": "skipped"}, 1, 1).startswith("[1/1] q skipped")
