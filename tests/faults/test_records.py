"""Run records accumulate: a run killed with SIGKILL, resumed by a campaign, re-run (no-op)
and restarted from a step keeps every attempt in result.json and the summed costs in
result.json, survey/datasets.csv and the report; --restart-from says on the console what it
redoes and why.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from selfcal_batch.pipeline import records

from .conftest import REPO, GuardedMS, quick_config, read_state, run_until_killed, wsclean_named

pytestmark = pytest.mark.integration

STEPS = ["startup", "test_image", "p0", "split_calibrated"]  # a ladder needs its guard
CFG = quick_config(steps=STEPS)
COSTS = ("wall_s", "time_wsclean_s", "time_casa_s", "time_python_s", "wsclean_runs", "n_attempts")


def _manifest(tmp: Path, ms: Path) -> Path:
    p = tmp / "rec.toml"
    p.write_text(textwrap.dedent(f"""
        [campaign]
        name = "rec"
        output_dir = "out"
        [defaults]
        imsize = {CFG['imsize']}
        threads = 1
        plots = false
        steps = {json.dumps(STEPS)}
        solint = {{ extend_ladder = false }}
        [cluster]
        workers = 1
        threads_per_dataset = 1
        dashboard = false
        [[datasets]]
        name = "d"
        ms = "{ms}"
        """))
    return p


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "selfcal_batch.cli", *args, "--quiet"], env=env,
                          capture_output=True, text=True, timeout=600)


def _costs(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(d[k]) for k in COSTS}


def _csv_row(out: Path) -> dict[str, str]:
    rows = list(csv.DictReader(open(out / "survey" / "datasets.csv")))
    assert [r["name"] for r in rows] == ["d"]
    assert "attempts" not in rows[0]  # the records stay in result.json
    return rows[0]


def test_attempts_and_summed_costs_survive_kill_resume_noop_and_restart(base_ms: GuardedMS,
                                                                         tmp_path: Path) -> None:
    t_start = time.monotonic()
    out = tmp_path / "out"
    root = out / "datasets" / "d"
    manifest = _manifest(tmp_path, base_ms.path)

    # 1. killed (SIGKILL of the whole tree) while WSClean makes p0's post image
    kill = run_until_killed("d", base_ms.path, out, CFG, "wsclean", wsclean_named("p0", "p0_post"))
    st = read_state(root)
    killed = st["attempts"]
    assert len(killed) == 1 and killed[0]["end"] is None and killed[0]["exit"] == "running"
    assert killed[0]["steps"] == STEPS[:3] and killed[0]["wall_s"] > 0 and killed[0]["wsclean_runs"] >= 1

    # 2. the campaign resumes it
    res = _cli(str(manifest))
    assert res.returncode == 0, res.stdout + res.stderr
    r2 = json.loads((root / "result.json").read_text())
    assert r2["status"] == "finished", r2["error"]
    a = r2["attempts"]
    assert len(a) == 2 and r2["n_attempts"] == 2
    # the killed attempt's cost is kept, up to its last log write (the kill), not its last save
    assert a[0]["exit"] == records.INTERRUPTED and a[0]["end"] >= killed[0]["last_seen"]
    assert a[0]["wall_s"] >= killed[0]["wall_s"] and a[0]["wall_s"] >= kill.seconds - 10
    assert a[1]["exit"] == "finished" and a[1]["steps"] == ["p0", "split_calibrated"] and a[1]["worker"].startswith("tcp://")
    for k in ("wall_s", "time_wsclean_s", "time_casa_s", "time_python_s"):
        assert r2[k] == pytest.approx(a[0][k] + a[1][k], abs=0.011), k
    assert r2["wall_s"] > a[1]["wall_s"]
    assert r2["wsclean_runs"] == a[0]["wsclean_runs"] + a[1]["wsclean_runs"] == read_state(root)["wsclean_runs"]
    row = _csv_row(out)
    assert _costs(row) == _costs(r2)

    # 3. re-run: nothing to do; one more record, no summed figure changes
    res = _cli(str(manifest))
    assert res.returncode == 0, res.stdout + res.stderr
    r3 = json.loads((root / "result.json").read_text())
    assert r3["n_attempts"] == 3 and r3["attempts"][2]["steps"] == []
    assert r3["attempts"][2]["exit"] == "finished (nothing to redo)"
    assert r3["attempts"][:2] == r2["attempts"]
    assert {k: r3[k] for k in COSTS if k != "n_attempts"} == {k: r2[k] for k in COSTS if k != "n_attempts"}
    assert _costs(_csv_row(out)) == _costs(r3)
    camp = json.loads((out / "campaign.json").read_text())
    assert len(camp["runs"]) == 2 and camp["elapsed_s"] < r3["wall_s"]  # the no-op run was quick
    assert "summed dataset time" in res.stdout and "campaign elapsed" in res.stdout
    html = (out / "survey" / "report.html").read_text()
    assert "campaign elapsed (last run;" in html and "over 2 runs" in html
    assert f"<b>{r3['wall_s']:.0f} s</b><span>summed dataset time" in html

    # 4. --restart-from p0 after success (work.ms removed): the console says what and why
    dry = _cli(str(manifest), "--dry-run", "--restart-from", "p0")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "restart   work.ms was removed after success: redoing from startup" in dry.stdout
    res = _cli(str(manifest), "--restart-from", "p0")
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("d: "))
    print("\n" + line)
    assert line.startswith("d: work.ms was removed after success: redoing from startup, all 4 steps, "
                           "not only from p0")
    r4 = json.loads((root / "result.json").read_text())
    assert r4["n_attempts"] == 4 and r4["attempts"][3]["steps"] == STEPS
    assert r4["wall_s"] == pytest.approx(r3["wall_s"] + r4["attempts"][3]["wall_s"], abs=0.011)
    assert r4["wsclean_runs"] == r3["wsclean_runs"] + r4["attempts"][3]["wsclean_runs"]
    assert _costs(_csv_row(out)) == _costs(r4)
    assert base_ms.changes() == []
    print(f"killed after {kill.seconds:.1f} s; sums {_costs(r4)}; test {time.monotonic() - t_start:.0f} s")
