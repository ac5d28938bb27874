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
    assert kw["interp"] == ["linearperobs", "linearperobs"] and kw["applymode"] == "calflag"
    assert not any(str(v).startswith("/old") for v in kw["gaintable"])


def test_other_statuses_are_skipped_with_the_reason():
    for status in ("unchanged", "no_detection", "needs_calibration", "failed", "skipped"):
        p = plan_dataset("x", {"status": status, "reason": "why not"}, STATE)
        assert p.skip.startswith(f"status {status}") and "why not" in p.skip and not p.tables
    p = plan_dataset("x", {"status": "finished"}, {"chain": []})
    assert p.skip == "no gain table was delivered"


def test_apply_outputs_reports_and_skips_without_running_casa(tmp_path):
    import json

    import pytest

    from selfcal_batch.campaign.apply import apply_outputs

    with pytest.raises(ValueError, match="not a campaign output"):
        apply_outputs(tmp_path)
    for name, status in (("a", "unchanged"), ("b", "no_detection")):
        d = tmp_path / "datasets" / name
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"status": status, "reason": "r", "ms": "/x.ms"}))
        (d / "state.json").write_text(json.dumps(STATE))
    rows = apply_outputs(tmp_path)
    assert [(r["name"], r["status"]) for r in rows] == [("a", "skipped"), ("b", "skipped")]
    assert not (tmp_path / "datasets" / "a" / "applied.ms").exists()
    with pytest.raises(ValueError, match="unknown dataset"):
        apply_outputs(tmp_path, ["zz"])
    # A finished dataset whose tables are gone fails with one line, nothing written.
    d = tmp_path / "datasets" / "c"
    d.mkdir()
    (d / "result.json").write_text(json.dumps({"status": "finished", "ms": "/x.ms"}))
    (d / "state.json").write_text(json.dumps(STATE))
    row = apply_outputs(tmp_path, ["c"])[0]
    assert row["status"] == "failed" and "caltables/p0.G is missing" in row["detail"]


def test_cli_apply_refuses_a_non_output_directory(tmp_path):
    from click.testing import CliRunner

    from selfcal_batch.cli import main

    res = CliRunner().invoke(main, ["apply", str(tmp_path)])
    assert res.exit_code == 2 and "not a campaign output" in res.output


def test_in_place_refused_for_spw_selection_and_shared_ms() -> None:
    """Breaker finding: a dataset of spw 1 applied --in-place wrote its gains into spw 0 of the
    input (the caltables carry the working copy's renumbered ids)."""
    from selfcal_batch.campaign.apply import ApplyPlan, in_place_problem

    assert in_place_problem(ApplyPlan(name="a", input_ms="x.ms", spw="")) == ""
    assert "selects spw '1'" in in_place_problem(ApplyPlan(name="a", input_ms="x.ms", spw="1"))
    assert "same input MS" in in_place_problem(ApplyPlan(name="a", input_ms="x.ms"), shared_ms=True)


def test_in_place_refused_for_a_corrected_data_dataset() -> None:
    """Breaker finding: applycal in place writes CORRECTED_DATA from DATA, over the
    observatory-calibrated column the dataset was self-calibrated from."""
    from selfcal_batch.campaign.apply import ApplyPlan, in_place_problem

    assert "CORRECTED_DATA" in in_place_problem(ApplyPlan(name="a", input_ms="x.ms", column="corrected"))


def test_apply_refuses_an_input_changed_since_the_run(tmp_path):
    """Same kind as the sub-table fingerprint fault: gains solved on the data the run saw must
    not be applied to an input replaced or edited since (a sub-table alone counts)."""
    import json

    from selfcal_batch.campaign.apply import apply_outputs
    from selfcal_batch.ms.checksum import input_fingerprint

    ms = tmp_path / "in.ms"
    (ms / "FIELD").mkdir(parents=True)
    (ms / "table.dat").write_bytes(b"main")
    (ms / "FIELD" / "table.f0").write_bytes(b"field")
    out = tmp_path / "out"
    d = out / "datasets" / "x"
    for t in ("p0.G", "ap1.G"):
        (d / "caltables" / t).mkdir(parents=True)
        (d / "caltables" / t / "table.dat").write_bytes(b"gain")
    (d / "result.json").write_text(json.dumps({"status": "finished", "ms": str(ms)}))
    (d / "state.json").write_text(json.dumps({**STATE, "input_fingerprint": input_fingerprint(ms)}))
    (ms / "FIELD" / "table.f0").write_bytes(b"moved field")
    row = apply_outputs(out, ["x"])[0]
    assert row["status"] == "failed", row
    assert row["detail"] == (f"input MS {ms} changed since the run that solved these gains (FIELD changed): "
                             "rerun the campaign first")
    assert not (d / "applied.ms").exists()
