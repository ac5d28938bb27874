"""One Dask worker process running two real datasets at once (an existing scheduler whose
workers have several threads): each dataset's pipeline.log holds only its own lines, and
its WSClean/CASA seconds are what its logs/tools.jsonl records."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

QUICK = {"imsize": 128, "threads": 1, "plots": False, "solint": {"extend_ladder": False},
         "steps": ["startup", "save_init_flags", "test_image", "select_refant", "p0", "split_calibrated"]}


def test_two_datasets_in_one_worker_process(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    from selfcal_batch.config import PipelineConfig
    from selfcal_batch.pipeline.runner import run_dataset
    from selfcal_batch.simulate import simulate_ms_isolated, spec_from_preset

    names = ("left", "right")
    for i, n in enumerate(names):
        simulate_ms_isolated(spec_from_preset("vla-c", flux_jy=0.08, duration_s=300.0, n_spw=1, n_chan=4,
                                              phase_rms_deg=30.0, seed=40 + i), tmp_path / f"{n}.ms")
    cfg = PipelineConfig.from_dict(QUICK)
    out = tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, resources={"cores": 2},
                      dashboard_address=None) as cluster, Client(cluster) as client:
        futs = [client.submit(run_dataset, n, str(tmp_path / f"{n}.ms"), cfg, str(out), threads=1,
                              key=f"ds-{n}", pure=False, resources={"cores": 1}) for n in names]
        results = {r.name: r for r in client.gather(futs)}
    pids = set()
    for n in names:
        other = names[1 - names.index(n)]
        res = results[n]
        assert res.status in ("finished", "unchanged"), res.error
        log = (out / "datasets" / n / "logs" / "pipeline.log").read_text()
        assert f"{n}:" in log and f"{other}:" not in log and f"datasets/{other}" not in log
        tools = [json.loads(ln) for ln in (out / "datasets" / n / "logs" / "tools.jsonl").read_text().splitlines()]
        assert {t["step"] for t in tools} >= {"startup", "test_image", "p0"}
        assert all(f"datasets/{other}" not in " ".join(t["argv"]) for t in tools)
        for cat, field in (("wsclean", "time_wsclean_s"), ("casa", "time_casa_s")):
            assert getattr(res, field) == pytest.approx(sum(t["seconds"] for t in tools if t["category"] == cat),
                                                        abs=0.02), (n, cat)
        pids.add(res.attempts[-1]["worker"])
    assert len(pids) == 1, f"both datasets must run in the same worker process: {pids}"
    spans = [(results[n].attempts[-1]["start"], results[n].attempts[-1]["end"]) for n in names]
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"the datasets did not overlap: {spans}"
