"""Per-phase core claims on a real campaign (issue 16): one LocalCluster worker with 2 cores
runs two real datasets at once, and the WSClean/CASA runs it logs never hold more cores
than the worker has (every WSClean -j equals the cores it was granted)."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from selfcal_batch.campaign.cluster import local_cores

pytestmark = pytest.mark.integration

NAMES = ("left", "right")
CORES = 2


def _held_at(runs: list[dict], t: float) -> int:
    """Cores held by the runs active at time ``t`` (ends exclusive; 50 ms of clock slack)."""
    return sum(r["cores"] for r in runs if r["start"] + 0.05 <= t < r["start"] + r["seconds"] - 0.05)


@pytest.mark.skipif(local_cores() < CORES, reason=f"needs {CORES} cores")
def test_two_datasets_share_a_two_core_worker(tmp_path: Path, subprocess_env, python_exe) -> None:
    from selfcal_batch.simulate import simulate_ms_isolated, spec_from_preset

    for i, n in enumerate(NAMES):
        simulate_ms_isolated(spec_from_preset("vla-c", flux_jy=0.08, duration_s=300.0, n_spw=1, n_chan=4,
                                              phase_rms_deg=30.0, seed=60 + i), tmp_path / f"{n}.ms")
    manifest = tmp_path / "share.toml"
    manifest.write_text(textwrap.dedent(f"""
        [campaign]
        name = "share"
        output_dir = "out"
        [defaults]
        imsize = 128
        plots = false
        solint = {{ extend_ladder = false }}
        steps = ["startup", "save_init_flags", "test_image", "select_refant", "p0", "split_calibrated"]
        [cluster]
        workers = 1
        threads_per_dataset = {CORES}
        dashboard = false
        """) + "".join(f'[[datasets]]\nname = "{n}"\nms = "{tmp_path / n}.ms"\n' for n in NAMES))
    t0 = time.monotonic()
    res = subprocess.run([python_exe, "-m", "selfcal_batch.cli", str(manifest), "--quiet"], env=subprocess_env,
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    print(res.stdout[-2000:], res.stderr[-2000:])
    out = tmp_path / "out"
    rows = {r["name"]: r for r in csv.DictReader(open(out / "survey" / "datasets.csv"))}
    assert res.returncode == 0 and all(rows[n]["status"] == "finished" for n in NAMES), rows
    campaign_log = (out / "campaign.log").read_text()
    assert f"1 worker process(es) x {CORES} thread(s), resources cores={CORES}" in campaign_log

    runs: list[dict] = []
    spans = {}
    for n in NAMES:
        tools = [json.loads(ln) for ln in (out / "datasets" / n / "logs" / "tools.jsonl").read_text().splitlines()]
        assert tools and all({"cores", "start", "core_wait_s"} <= t.keys() for t in tools), tools[:2]
        log = (out / "datasets" / n / "logs" / "pipeline.log").read_text()
        calls = re.findall(r"\[wsclean\] (wsclean .*?)  # cores (\d+) of the worker's pool", log)
        wsclean = [t for t in tools if t["category"] == "wsclean"]
        assert len(calls) == len(wsclean) >= 2, (n, len(calls), len(wsclean))
        for argv, cores in calls:                       # the logged command line has -j = granted cores
            assert f" -j {cores} " in f" {argv} " and 1 <= int(cores) <= CORES, argv
        for t in tools:
            if t["category"] == "wsclean":
                assert t["argv"][t["argv"].index("-j") + 1] == str(t["cores"]), t
            else:
                assert t["cores"] == 1, t                 # a CASA request holds one core
            runs.append({**t, "dataset": n})
        spans[n] = (min(t["start"] for t in tools), max(t["start"] + t["seconds"] for t in tools))
        # the time runs waited for cores is its own cost (not Python's): the sum over the runs
        assert float(rows[n]["time_core_wait_s"]) == pytest.approx(sum(t["core_wait_s"] for t in tools), abs=0.02)
    # both datasets ran at once: their tool spans overlap and some runs of the two overlap
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values()), spans
    overlapping = [(a, b) for a in runs if a["dataset"] == NAMES[0] for b in runs if b["dataset"] == NAMES[1]
                   and a["start"] < b["start"] + b["seconds"] and b["start"] < a["start"] + a["seconds"]]
    assert overlapping, "no WSClean/CASA run of one dataset overlapped one of the other"
    # never more cores held than the worker has: checked at every run's start (where the count rises)
    for r in runs:
        t = r["start"] + 0.06
        assert _held_at(runs, t) <= CORES, (r["dataset"], r["argv"][:3], _held_at(runs, t))
    grants = sorted((r["dataset"], r["category"], r["cores"]) for r in runs if r["category"] == "wsclean")
    print(f"2 datasets on 1 worker x {CORES} cores: {time.monotonic() - t0:.1f} s; "
          f"{len(overlapping)} overlapping run pairs; WSClean grants {grants}")


def test_a_worker_killer_does_not_take_a_dataset_sharing_its_worker_down(tmp_path: Path, fake_ms) -> None:
    """1 worker x 2 cores shared: 'kill-late' kills the worker while 'ok-1' runs in it too.
    The shared deaths count against neither; both are resubmitted alone; ok-1 finishes and
    kill-late fails on its own deaths (stand-in task, no programs run)."""
    from selfcal_batch.campaign.manifest import load_manifest
    from selfcal_batch.campaign.run import RunOptions, run_campaign

    for n in ("ok-1", "kill-late-1"):
        fake_ms(tmp_path / "data" / f"{n}.ms")
    manifest = tmp_path / "kill.toml"
    manifest.write_text(textwrap.dedent("""
        [campaign]
        name = "kill"
        output_dir = "out"
        [cluster]
        workers = 1
        threads_per_dataset = 2
        retries = 1
        dashboard = false
        [[datasets]]
        ms = "data/ok-1.ms"
        [[datasets]]
        ms = "data/kill-late-1.ms"
        """))
    outcome = run_campaign(load_manifest(manifest), RunOptions(task="campaign_helpers:stand_in", quiet=True))
    rows = {r["name"]: r for r in outcome.rows}
    assert rows["ok-1"]["status"] == "finished", rows["ok-1"]
    assert rows["kill-late-1"]["status"] == "failed"
    assert rows["kill-late-1"]["error"].startswith("worker died 2 times"), rows["kill-late-1"]["error"]
    log = (tmp_path / "out" / "campaign.log").read_text()
    assert "submitted ok-1 (selfcal-ok-1-r2, cores=2, Dask claim cores=2, alone after a death" in log
