"""The 'settings changed since the last run (<keys>): redoing from <step>' line (pure): the
same step the runner's resume hashes redo from, for a change of any key (generated)."""
from __future__ import annotations

import pytest

from selfcal_batch.config import PipelineConfig
from selfcal_batch.pipeline import registry
from selfcal_batch.pipeline.restart import settings_change_message

#: One other valid value per key (the keys the steps' resume hashes hold).
OTHER = {"field": "0", "spw": "0", "timebin": "20s", "chanbin": 2, "input_column": "corrected",
         "statwt_init": True, "imsize": 192, "cell": "0.5arcsec", "band": "L", "test_robust": 0.5,
         "channels_out": 2, "detection_sigma": 7.0, "refant": "ea05", "flag_bad_antennas": False,
         "niter": 5000, "calwt": True, "final_robust": -0.5, "final_niter": 1000, "statwt_final": False,
         "plots": False, "primary_beam": False, "ladder_economy": False}


#: Written out by hand (not derived from the registry): where an astronomer expects the redo.
KNOWN = {"field": "startup", "statwt_init": "save_init_flags", "imsize": "test_image", "refant": "select_refant",
         "niter": "p0", "statwt_final": "split_calibrated", "plots": "dataset_plots", "band": "test_image"}


def _state(cfg: dict, steps: list[str]) -> dict:
    return {"config": cfg, "steps": {s: {"status": "done"} for s in steps}}


@pytest.mark.parametrize("key", sorted(OTHER))
def test_redo_from_the_first_step_that_hashes_the_key(key):
    base = PipelineConfig()
    old = base.to_dict()
    if old[key] == OTHER[key]:
        pytest.fail(f"OTHER[{key!r}] equals the default")
    new = base.with_updates(**{key: OTHER[key]}).to_dict()
    steps = list(base.steps)
    expect = next((s for s in steps if registry.depends(s, old) != registry.depends(s, new)), "")
    assert expect == KNOWN.get(key, expect)
    line = settings_change_message(_state(old, steps), new, steps)
    if not expect:  # a key no requested step hashes: nothing is redone, nothing said
        assert line == ""
        return
    assert line.startswith("settings changed since the last run (")
    assert f"{key}" in line.split("(")[1].split(")")[0]
    assert line.endswith(f"redoing from {expect}")


def test_imsize_redoes_from_test_image_and_names_the_key():
    base = PipelineConfig(imsize=128)
    steps = list(base.steps)
    line = settings_change_message(_state(base.to_dict(), steps), base.with_updates(imsize=192).to_dict(), steps)
    assert line == "settings changed since the last run (imsize): redoing from test_image"
    # work.ms removed after success: test_image needs it, so the run starts from startup
    line = settings_change_message(_state(base.to_dict(), steps), base.with_updates(imsize=192).to_dict(), steps,
                                   work_ms_exists=False)
    assert line.startswith("settings changed since the last run (imsize): redoing from startup (work.ms")


def test_no_line_without_a_change_a_record_or_for_steps_not_done():
    base = PipelineConfig()
    steps = list(base.steps)
    assert settings_change_message(_state(base.to_dict(), steps), base.to_dict(), steps) == ""
    assert settings_change_message(None, base.to_dict(), steps) == ""
    assert settings_change_message({"steps": {}}, base.to_dict(), steps) == ""
    # only startup was done: an imsize change redoes nothing that was done (test_image runs anyway)
    new = base.with_updates(imsize=192).to_dict()
    assert settings_change_message(_state(base.to_dict(), ["startup"]), new, steps) == ""
