"""Joint EBs whose spws interleave in frequency (tester s7-break finding 2, issue 18).

EB1: 2 spw x 4 channels, 10 s integrations; EB2: 3 spw x 4 channels, 20 s, centred on the same
frequency (its windows offset by half a window). The joint working copy numbers EB1's windows
0, 1 and EB2's 2, 3, 4: not in frequency order. WSClean 3.1 then wrote one window's model into
another's MODEL_DATA rows and, with fewer rows there (20 s vs 10 s), aborted the test image
("Error reading from temporary model data file", SIGABRT). The pipeline now cuts the output
channels where the windows stay in id order (imaging/spw_order.py) and the run finishes.

Real WSClean and CASA; inputs checked untouched (tree_checksums).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfcal_batch.ms.checksum import tree_checksums
from selfcal_batch.simulate import spec_from_preset

from tests.faults.conftest import REPO
from tests.integration.survey_data import JOINT_P0_CONFIG, JOINT_SKY, make

pytestmark = pytest.mark.integration

CONFIG = JOINT_P0_CONFIG
COMMON = dict(components=JOINT_SKY, n_chan=4, duration_s=120.0, n_scans=2, phase_rms_deg=40.0,
              phase_timescale_s=200.0)


def _spw_freqs(ms: Path) -> list[float]:
    """Each spw's mean channel frequency (Hz), by spw id."""
    from casacore.tables import table

    with table(str(ms / "SPECTRAL_WINDOW"), ack=False) as t:
        return [float(t.getcell("CHAN_FREQ", i).mean()) for i in range(t.nrows())]


def test_joint_ebs_with_interleaved_spws_and_integrations_finish(tmp_path: Path) -> None:
    eb1 = make(spec_from_preset("vla-c", n_spw=2, integration_s=10.0, seed=41, start_date="2024-01-01", **COMMON),
               tmp_path / "eb1.ms")
    eb2 = make(spec_from_preset("vla-c", n_spw=3, integration_s=20.0, seed=42, start_date="2024-01-04", **COMMON),
               tmp_path / "eb2.ms")
    (tmp_path / "cfg.toml").write_text(CONFIG)
    before = {p: tree_checksums(p) for p in (eb1, eb2)}
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "selfcal_batch.cli", "run-one", "eb1.ms", "eb2.ms", "--out", "out",
                          "--config", "cfg.toml", "--name", "joint"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=900)
    wall = time.monotonic() - t0
    root = tmp_path / "out" / "datasets" / "joint"
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    row = json.loads((root / "result.json").read_text())
    assert row["status"] == "finished" and "p0" in row["steps_accepted"], row["error"]
    state = json.loads((root / "state.json").read_text())
    plan = state["channel_plan"]  # the decision and its reason, kept with the dataset
    assert "not numbered in frequency order" in plan["reason"]
    assert plan["channels_out"] == len(plan["division_hz"]) + 1 >= 2
    runs = [json.loads(x) for x in (root / "logs" / "tools.jsonl").read_text().splitlines()]
    test_image = [r for r in runs if r["step"] == "test_image" and r["tool"] == "wsclean"]
    assert test_image and all(r["returncode"] == 0 for r in runs if r["tool"] == "wsclean")
    argv = test_image[0]["argv"]
    assert argv[argv.index("-channels-out") + 1] == str(plan["channels_out"])
    assert "-channel-division-frequencies" in argv and "-update-model-required" in argv
    assert "not numbered in frequency order" in (root / "logs" / "pipeline.log").read_text()
    # each per-EB final holds only its own spws (tester s7-break2 #1: split by observation id
    # alone kept the other EB's windows as empty spws), at the input's frequencies
    for k, src in enumerate((eb1, eb2)):
        eb = row["ebs"][k]
        final, inp = _spw_freqs(Path(eb["final_ms"])), _spw_freqs(src)
        assert len(final) == len(inp) == len(eb["input_spws"]), (final, inp)
        assert eb["final_spws"] == list(range(len(inp)))
        for i, f in zip(eb["input_spws"], eb["final_spws"], strict=True):
            assert abs(final[f] - inp[i]) < 1.0, (k, i, f, final, inp)
    assert {p: tree_checksums(p) for p in (eb1, eb2)} == before  # inputs untouched
    print(f"joint interleaved spws: {wall:.0f} s, plan {plan['channels_out']} channels cut at "
          f"{plan['division_hz']}; load {os.getloadavg()}")
