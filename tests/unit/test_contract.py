"""The output contract: column sets derived from DatasetResult equal the tables they replaced,
and the report finds the template thresholds in new and old campaign.json files (pure)."""
from __future__ import annotations

import json
from pathlib import Path

from selfcal_batch import contract
from selfcal_batch.campaign import progress
from selfcal_batch.config import PipelineConfig
from selfcal_batch.pipeline import context, runner
from selfcal_batch.report import aggregate

#: survey/datasets.csv's leading columns before the contract module (campaign.progress.ROW_FIELDS).
OLD_ROW_FIELDS = (
    "name", "ms", "status", "error", "reason", "template_initial", "template_final", "steps_run",
    "steps_accepted", "steps_reverted", "snr_initial", "snr_final", "dr_initial", "dr_final",
    "rms_initial", "rms_final", "peak_initial", "peak_final", "total_flux_initial",
    "total_flux_final", "wall_s", "final_ms", "final_image", "wsclean_runs", "time_wsclean_s",
    "time_casa_s", "time_python_s", "n_attempts",
)
OLD_NUMERIC = ("snr_initial", "snr_final", "dr_initial", "dr_final", "rms_initial", "rms_final",
               "peak_initial", "peak_final", "total_flux_initial", "total_flux_final", "wall_s",
               "wsclean_runs", "time_wsclean_s", "time_casa_s", "time_python_s", "n_attempts",
               "thermal_noise_jy",  # issue 20: added later (a later CSV column)
               "time_core_wait_s")  # issue 16: time waited for a shared worker's cores


def test_columns_are_derived_and_unchanged() -> None:
    assert progress.ROW_FIELDS == contract.CSV_COLUMNS == OLD_ROW_FIELDS
    assert aggregate.NUMERIC_COLUMNS == OLD_NUMERIC
    assert aggregate.LIST_COLUMNS == ("steps_run", "steps_accepted", "steps_reverted", "steps_skipped")
    assert aggregate.DATASET_COLUMNS == ("name", "ms", "status", "error", "reason", "template_initial",
                                         "template_final", *aggregate.LIST_COLUMNS, *OLD_NUMERIC[:11],
                                         "final_ms", "final_image", *OLD_NUMERIC[11:])
    assert context.ROW_KEYS == aggregate.IMAGE_KEY_COLUMNS == ("dataset", "step", "role", "template", "robust",
                                                               "path")
    assert runner.DatasetResult is contract.DatasetResult
    assert set(contract.RESULT_FIELDS) == set(runner.DatasetResult(name="x", ms="y").to_dict())


def test_thresholds_declared_once() -> None:
    assert PipelineConfig().template_thresholds_mjy == contract.TEMPLATE_THRESHOLDS_MJY
    assert aggregate.DEFAULT_THRESHOLDS_MJY == contract.TEMPLATE_THRESHOLDS_MJY


def test_report_finds_thresholds_in_new_and_old_campaign_json(tmp_path: Path) -> None:
    new = {"template_thresholds_mjy": {"defaults": [1, 2, 3, 4], "datasets": {"a": [5, 6, 7, 8]}}}
    assert aggregate.template_thresholds(tmp_path, new, []) == (1, 2, 3, 4)
    old_defaults = {"manifest_resolved": {"defaults": {"template_thresholds_mjy": [2, 3, 4, 5]}}}
    assert aggregate.template_thresholds(tmp_path, old_defaults, []) == (2, 3, 4, 5)
    old_dataset = {"manifest_resolved": {"defaults": {}, "datasets": [
        {"name": "a", "overrides": {}, "config": {"template_thresholds_mjy": [3, 4, 5, 6]}}]}}
    assert aggregate.template_thresholds(tmp_path, old_dataset, []) == (3, 4, 5, 6)
    d = tmp_path / "datasets" / "a"
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"config": {"template_thresholds_mjy": [4, 5, 6, 7]}}))
    assert aggregate.template_thresholds(tmp_path, {}, ["a"]) == (4, 5, 6, 7)
    assert aggregate.template_thresholds(tmp_path, {"manifest_resolved": []}, ["b"]) == \
        contract.TEMPLATE_THRESHOLDS_MJY


def test_campaign_json_records_resolved_thresholds(tmp_path: Path, fake_ms) -> None:
    from selfcal_batch.campaign.manifest import load_manifest
    from selfcal_batch.campaign.run import resolved_thresholds

    for n in ("a", "b"):
        fake_ms(tmp_path / "data" / f"{n}.ms")
    (tmp_path / "c.toml").write_text(
        '[campaign]\nname = "t"\noutput_dir = "out"\n\n[defaults]\ntemplate_thresholds_mjy = [1, 2, 3, 4]\n\n'
        '[[datasets]]\nname = "a"\nms = "data/a.ms"\n\n'
        '[[datasets]]\nname = "b"\nms = "data/b.ms"\ntemplate_thresholds_mjy = [5, 6, 7, 8]\n')
    got = resolved_thresholds(load_manifest(tmp_path / "c.toml"))
    assert got == {"defaults": [1, 2, 3, 4], "datasets": {"a": [1, 2, 3, 4], "b": [5, 6, 7, 8]}}
    assert aggregate.template_thresholds(tmp_path, {"template_thresholds_mjy": got}, []) == (1, 2, 3, 4)
