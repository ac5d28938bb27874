"""The console of a real campaign when stdout is not a terminal, Ctrl-C, and resume.

One simulated dataset (128 px, 4 channels, 10 min), run by ``selfcal-batch`` in a child
process group whose stdout/stderr are pipes (not a terminal). After the first step line,
SIGINT goes to the whole group (what Ctrl-C in a terminal does: the Dask workers get it
too). The run must end with exit 130, the one line "interrupted: rerun the same command to
resume" last and no traceback anywhere; the same command then resumes (the steps already
done are not redone) and finishes.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

STEP_LINE = re.compile(r"^sim (\w+): (kept|reverted|skipped|done|failed)\b.*\(\S+\)( · ETA \S+)?$")


@pytest.fixture(scope="module")
def one_ms(tmp_path_factory) -> Path:
    from selfcal_batch.simulate import simulate_ms_isolated, spec_from_preset

    d = tmp_path_factory.mktemp("console-data")
    spec = spec_from_preset("vla-c", flux_jy=0.08, duration_s=1200.0, n_spw=1, n_chan=4,
                            phase_rms_deg=40.0, phase_timescale_s=200.0, seed=31)
    simulate_ms_isolated(spec, d / "sim.ms")
    return d / "sim.ms"


def _manifest(tmp: Path, ms: Path) -> Path:
    p = tmp / "c.toml"
    p.write_text(textwrap.dedent(f"""
        [campaign]
        name = "console"
        output_dir = "out"
        [defaults]
        imsize = 384                       # long enough to be interrupted (the pipeline got faster:
        threads = 1                        # at 128 px the dataset finished before the SIGINT)
        plots = false
        steps = ["startup", "save_init_flags", "test_image", "select_refant", "p0", "p1", "p2", "ap1",
                 "split_trial_1"]
        solint = {{ extend_ladder = false }}
        [cluster]
        workers = 1
        threads_per_dataset = 1
        dashboard = false
        [[datasets]]
        name = "sim"
        ms = "{ms}"
        """))
    return p


def _start(manifest: Path, env: dict[str, str], python_exe: str, log: Path) -> subprocess.Popen:
    # As from an interactive shell: SIGINT at its default. A test run started in the background
    # (nohup ... &) ignores SIGINT, and an ignored signal stays ignored across exec.
    return subprocess.Popen([python_exe, "-m", "selfcal_batch.cli", str(manifest)], env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True,
                            cwd=str(manifest.parent), start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_step_lines_ctrl_c_and_resume(tmp_path, one_ms, subprocess_env, python_exe):
    manifest = _manifest(tmp_path, one_ms)
    log1 = tmp_path / "run1.txt"
    t0 = time.monotonic()
    proc = _start(manifest, subprocess_env, python_exe, log1)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if any(STEP_LINE.match(ln) for ln in log1.read_text().splitlines()):
                break
            time.sleep(0.5)
        assert proc.poll() is None, log1.read_text()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log1.read_text()
    print(text)
    print(f"interrupted run: {time.monotonic() - t0:.1f} s")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert rc == 130, text
    banner = [i for i, ln in enumerate(lines) if ln.startswith("selfcal-batch ")]
    assert banner and "campaign console: 1 dataset(s)" in lines[banner[0]]
    first_step = next(i for i, ln in enumerate(lines) if STEP_LINE.match(ln))
    assert banner[0] < first_step
    assert "Traceback" not in text
    assert lines[-1] == "interrupted: rerun the same command to resume"
    assert "Campaign console: 0 finished, 0 failed, 1 interrupted" in text
    step_lines = [ln for ln in lines if STEP_LINE.match(ln)]
    assert step_lines and step_lines[0].startswith("sim startup: done")
    state = json.loads((tmp_path / "out" / "datasets" / "sim" / "state.json").read_text())
    done_before = {s for s, r in state["steps"].items() if r.get("status") in ("done", "skipped")}
    assert "startup" in done_before

    log2 = tmp_path / "run2.txt"
    proc2 = _start(manifest, subprocess_env, python_exe, log2)
    rc2 = proc2.wait(timeout=900)
    text2 = log2.read_text()
    print(text2)
    print(f"interrupted + resumed: {time.monotonic() - t0:.1f} s")
    assert rc2 == 0, text2
    reported = [m.group(1) for ln in text2.splitlines() if (m := STEP_LINE.match(ln))]
    # the resumed run reports only the steps it ran: none of those done before the interrupt
    assert reported and not set(reported) & done_before, (reported, done_before)
    assert "p1" in reported and any("ETA" in ln for ln in text2.splitlines())
    res = json.loads((tmp_path / "out" / "datasets" / "sim" / "result.json").read_text())
    assert res["status"] in ("finished", "unchanged")
    assert res["n_attempts"] == 2
    # The Ctrl-C'd attempt (its worker died with the SIGINT, the attempt left open) is
    # recorded as stopped by the user, not as "killed or crashed".
    from selfcal_batch.pipeline.records import STOPPED

    exits = [a["exit"] for a in res["attempts"]]
    assert exits[0] == STOPPED and exits[1] == res["status"], exits  # its honest outcome, not "failed"
