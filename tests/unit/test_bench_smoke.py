"""Smoke test of the benchmark's pure helpers (tables, JSON, fits, smearing) on synthetic numbers.

No timing assertions: the benchmark itself (``scripts/bench``) is never run here.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_selfcal.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_selfcal", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _synthetic(bench) -> dict:
    row = {"name": "standard_1", "status": "finished", "template_initial": "faint", "template_final": "standard_1",
           "wall_s": 160.0, "time_wsclean_s": 55.0, "time_casa_s": 90.0, "time_python_s": 15.0, "plots_s": 12.0,
           "dask_s": 1.5, "py_dask_pct": 10.3, "wsclean_pct": 34.4, "casa_pct": 56.2, "wsclean_runs": 11,
           "casa_starts": 21, "gaincal_calls": 8, "dr_initial": 37.0, "dr_final": 410.0,
           "steps_run": ["p0", "p1", "p2", "p3", "ap1"]}
    camp = {"label": "1x2", "datasets": [row, dict(row, name="faint", template_final="faint", wsclean_runs=9,
                                                   py_dask_pct=float("nan"))],
            "n_finished": 2, "span_s": 330.0, "throughput_per_h": 21.8, "throughput_e2e_per_h": 20.0,
            "queued_s": 160.0, "cpu_sys_queued_pct": 99.0, "cpu_tree_queued_pct": 60.0,
            "cpu_demand_queued_pct": 70.0, "py_dask_noplots_pct": 2.0, "cpu_sys_all_pct": 71.0,
            "cpu_tree_all_pct": 61.0, "load1_mean": 2.5, "startup_s": 6.0, "teardown_s": 4.0,
            "workers": [{"pid": 123, "peak_rss_mb": 310.0, "peak_children_mb": 900.0, "peak_wsclean_mb": 400.0,
                         "peak_casa_mb": 500.0, "peak_total_mb": 1200.0}]}
    points = [{"label": lab, "nvis": n, "k": k, "wall_s": w, "time_wsclean_s": w / 3, "time_casa_s": w / 2,
               "time_python_s": w / 6, "wsclean_runs": 9, "s_per_wsclean_run": w / 27, "status": "finished"}
              for lab, n, k, w in (("base", 1e6, 1, 100.0), ("time x2", 2e6, 2, 150.0), ("time x4", 4e6, 4, 230.0))]
    return {
        "meta": {"mode": "quick", "cores": 2, "mem_gb": 24.0, "imsize": 256, "duration_s": 600, "n_chan": 4,
                 "load_samples": [{"at": "start", "load": [1.0, 2.0, 3.0]}]},
        "campaigns": {"1x2": camp, "2x1": dict(camp, label="2x1", cpu_demand_queued_pct=float("nan"))},
        "wsclean_runs": [{"name": "standard_1", "template": "faint->standard_1", "default": 11, "seed_like": 12,
                          "no_extension": 8, "ladder_template": None, "seed": "11-13", "steps_default": "p0 p1"}],
        "scaling": {"threads": 2, "points": points,
                    "exponents": {"time": {k: bench.fit_exponent([p["nvis"] for p in points], [p[k] for p in points])
                                           for k in ("wall_s", "time_wsclean_s", "time_casa_s", "time_python_s",
                                                     "s_per_wsclean_run")}}},
        "opt": {"threads": 2, "runs": [dict(row, variant="base", d_wall_pct=0.0, steps="p0 p1", load1=2.0)],
                "smearing": [{"label": "none", "where": "edge",
                              **bench.smearing_table(5.888e9, 32e6, 10.0, 23.3, 0.9)}]},
        "micro": {"wsclean": [{"image": "final", "variant": "as run", "min_s": 4.2, "mean_s": 4.4, "speedup": 1.0,
                               "peak_rss_mb": 250.0, "snr": 400.0, "rms_ujy": 80.0}],
                  "python": [{"what": "imstats", "calls": 20, "mean_s": 0.05, "per_dataset_s": 1.0,
                              "vs_wsclean_run_pct": 1.0}]},
    }


def test_fit_exponent(bench):
    assert bench.fit_exponent([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    assert bench.fit_exponent([1, 2, 4], [5, 5, 5]) == pytest.approx(0.0)
    assert math.isnan(bench.fit_exponent([1], [2]))


def test_smearing_limits(bench):
    assert bench.bandwidth_smearing(0.0, 10.0, 1.0) == 1.0
    assert bench.time_smearing(0.0, 10.0, 1.0) == 1.0
    # Bridle & Schwab: 1 - 1.22e-9 (r/beam)^2 tau^2
    assert 1 - bench.time_smearing(100.0, 100.0, 1.0) == pytest.approx(1.22e-9 * 100**2 * 100**2, rel=0.01)
    row = bench.smearing_table(6e9, 64e6, 20.0, 30.0, 0.9)
    assert 0 < row["bw_loss_pct"] < row["total_loss_pct"] < 100


def test_campaign_log_parsing_and_windows(bench):
    text = ("2026-11-24 02:42:06,083 INFO selfcal_batch.campaign.run: submitted a (selfcal-a, cores=2)\n"
            "2026-11-24 02:44:06,583 INFO selfcal_batch.campaign.run: a finished\n"
            "2026-11-24 02:44:07,000 ERROR selfcal_batch.campaign.run: b failed: boom\n")
    t = bench.parse_campaign_log(text)
    assert t["a"]["finished"] - t["a"]["submitted"] == pytest.approx(120.5)
    assert t["b"]["status"] == "failed" and "submitted" not in t["b"]
    samples = [{"t": float(i), "cpu": 50.0 + i, "tree_cpu_s": 1.5 * i} for i in range(11)]
    assert bench.window_mean(samples, "cpu", 0.0, 10.0) == pytest.approx(55.5)
    assert bench.tree_utilisation(samples, 0.0, 10.0, 2) == pytest.approx(75.0)


def test_report_json_and_targets(bench, tmp_path):
    res = _synthetic(bench)
    res["targets"] = bench.evaluate_targets(res)
    by = {t["target"]: t for t in res["targets"]}
    assert by["own Python + Dask overhead < 5% of dataset wall"]["result"] == "FAIL"
    assert by["WSClean imaging runs for a standard dataset"]["result"] == "FAIL"
    assert by["CPU utilisation while queued (2x1)"]["result"] == "n/a"
    assert by["CPU utilisation while queued (1x2)"]["result"] == "FAIL"  # judged on demand, not system %
    assert by["worker peak RSS (1x2)"]["result"] == "PASS"
    assert by["time vs visibilities (time)"]["result"] == "PASS"
    text = bench.render_report(res)
    for needle in ("Per dataset, campaign 1x2", "Campaign throughput", "Peak memory", "WSClean runs per dataset",
                   "Fitted exponent", "Expected smearing", "WSClean replays", "Targets", "faint->standard_1"):
        assert needle in text
    path = bench.write_json(res, tmp_path / "bench.json")
    back = json.loads(path.read_text())  # strict JSON: NaN written as null
    assert back["campaigns"]["2x1"]["cpu_demand_queued_pct"] is None
    assert back["campaigns"]["1x2"]["datasets"][0]["wall_s"] == 160.0


def test_format_table_and_argv_edit(bench):
    t = bench.format_table("T", ["a", "bb"], [(1, 2.345), ("x", float("nan")), (None, 1234.5)])
    lines = t.splitlines()
    assert lines[0] == "T" and "2.3" in t and "1234" in t and " -" in lines[4]
    argv = ["wsclean", "-name", "/x/p1", "-size", "256", "256", "-fits-mask", "/m.fits", "-use-wgridder",
            "-data-column", "DATA", "a.ms"]
    out = bench.edit_argv(argv, "/y/r", {"-fits-mask": 1, "-use-wgridder": 0}, ["-parallel-gridding", "2"], 1024)
    assert out == ["wsclean", "-name", "/y/r", "-size", "1024", "1024", "-parallel-gridding", "2",
                   "-data-column", "DATA", "a.ms"]
