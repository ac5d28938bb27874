"""The apply plan from a dataset's records (pure)."""
from __future__ import annotations

from selfcal_batch.campaign.apply import applycal_record, plan_dataset

STATE = {"chain": [{"step": "p0", "table": "/old/place/datasets/x/caltables/p0.G", "spwmap": []},
                   {"step": "ap1", "table": "/old/place/datasets/x/caltables/ap1.G", "spwmap": [0, 0]}],
         "config": {"field": "T", "spw": "", "input_column": "Corrected", "calwt": False}}


def test_finished_dataset_plan_uses_paths_relative_to_outdir():
    p = plan_dataset("x", {"status": "finished", "ms": "/data/x.ms"}, STATE)
    assert not p.skip
    assert p.tables == ["datasets/x/caltables/p0.G", "datasets/x/caltables/ap1.G"]
    assert p.spwmaps == [[], [0, 0]] and p.field == "T" and p.column == "corrected"
    rec = applycal_record(p, "datasets/x/applied.ms")
    kw = rec["kwargs"]
    assert kw["vis"] == "datasets/x/applied.ms" and kw["gaintable"] == p.tables
    assert kw["interp"] == ["linear", "linear"] and kw["applymode"] == "calflag"
    assert not any(str(v).startswith("/old") for v in kw["gaintable"])


def test_other_statuses_are_skipped_with_the_reason():
    for status in ("unchanged", "no_detection", "needs_calibration", "failed", "skipped"):
        p = plan_dataset("x", {"status": status, "reason": "why not"}, STATE)
        assert p.skip.startswith(f"status {status}") and "why not" in p.skip and not p.tables
    p = plan_dataset("x", {"status": "finished"}, {"chain": []})
    assert p.skip == "no gain table was delivered"
