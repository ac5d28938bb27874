"""SIGTERM to ``run-one`` (a batch system cancelling it) is a stop by the user, recorded like
Ctrl-C: exit 130, the one line "interrupted: rerun the same command to resume", the attempt
``interrupted: stopped by the user (Ctrl-C/SIGTERM); rerun to resume`` (breaker: a stop was
recorded as "killed or crashed"; run-one had no SIGTERM handler at all), and the same
command resumes. The campaign's own Ctrl-C path is tested in
tests/integration/test_console_lines.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from selfcal_batch.pipeline.records import STOPPED
from tests.faults.conftest import GuardedMS, read_state

pytestmark = pytest.mark.integration


def test_sigterm_to_run_one_is_a_user_stop(tmp_path, base_ms: GuardedMS, subprocess_env, python_exe) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('imsize = 128\nthreads = 1\nplots = false\nsteps = ["startup", "test_image", "select_refant"]\n')
    out = tmp_path / "out"
    argv = [python_exe, "-m", "selfcal_batch.cli", "run-one", str(base_ms.path), "--out", str(out),
            "--config", str(cfg), "--name", "d"]
    proc = subprocess.Popen(argv, env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    root = out / "datasets" / "d"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (read_state(root).get("steps") or {}).get("startup", {}).get("status") == "done":
                break
            time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGTERM)  # the process only, as a batch system's first signal
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stdout + stderr
    assert stderr.strip().splitlines()[-1] == "interrupted: rerun the same command to resume", stderr
    assert "Traceback" not in stdout + stderr
    state = read_state(root)
    assert state["status"] == "interrupted" and state["attempts"][-1]["exit"] == STOPPED, state["attempts"]

    res = subprocess.run(argv, env=subprocess_env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    attempts = json.loads((root / "result.json").read_text())["attempts"]
    assert [a["exit"] for a in attempts] == [STOPPED, "finished"]
    assert "startup" not in attempts[1]["steps"]  # resumed, not redone
    assert base_ms.changes() == []
