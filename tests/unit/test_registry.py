"""The step registry, the typed state records and state.json schema migration (pure; no programs run)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfcal_batch.config import PipelineConfig
from selfcal_batch.errors import SelfcalBatchError
from selfcal_batch.pipeline import registry
from selfcal_batch.pipeline.restart import plan_from_state
from selfcal_batch.pipeline.state import (
    STATE_VERSION,
    DatasetState,
    StateVersionError,
    chain_hash,
    migrate,
)
from selfcal_batch.pipeline.state_records import (
    ABSENT,
    GainEntry,
    ImageProduct,
    LadderState,
    MSInfo,
    WorkMSState,
)
from selfcal_batch.selfcal.solint import parse_solint, solint_seconds

#: The hand-written tables the registry replaced (pipeline.DEPENDS/LADDER_KEYS before issue 15),
#: under the old step names: the derived values must equal them.
OLD_LADDER_KEYS = ("instrument", "band", "imsize", "cell", "pixels_per_beam", "channels_out", "niter",
                   "templates", "force_template", "template_thresholds_mjy", "gate", "solint", "ladder_imaging",
                   "calwt", "refantmode", "wsclean", "allow_negative", "solnorm_amplitude", "solnorm_type")
OLD_DEPENDS = {
    "startup": ("field", "spw", "timebin", "chanbin", "input_column"),
    "save_init_flags": ("statwt_init",),
    "fov_image": ("instrument", "band", "imsize", "cell", "pixels_per_beam", "wsclean"),
    "run_rflag_init": (),
    "test_image": ("instrument", "band", "imsize", "cell", "pixels_per_beam", "channels_out", "test_robust",
                   "test_uvtaper", "test_imaging", "final_robust", "final_multiscale", "final_niter",
                   "force_template", "template_thresholds_mjy", "wsclean", "allow_negative", "detection_sigma",
                   "decorrelation_limit"),
    "select_refant": ("refant", "refantmode", "flag_bad_antennas", "guard"),
    "split_trial_1": ("statwt_final", "final_robust", "final_multiscale", "final_niter", "calwt", "guard"),
    "report_results": ("plots",),
    "run_rflag_final": (),
}
OLD_STEP_NAMES = ("startup", "save_init_flags", "fov_image", "run_rflag_init", "test_image", "select_refant",
                  "p0", "p1", "p2", "ap1", "split_trial_1", "report_results", "run_rflag_final")
OLD_DEFAULT = ("startup", "save_init_flags", "test_image", "select_refant", "p0", "p1", "p2", "ap1",
               "split_trial_1", "report_results")


def _old_hashes(cfg: PipelineConfig, order: list[str]) -> list[str]:
    """The resume hashes as pipeline._Runner computed them before the registry (old names)."""
    d = cfg.to_dict()
    prev, out = chain_hash("", "dataset", "ms", "v"), []
    for step in order:
        keys = OLD_DEPENDS.get(step, OLD_LADDER_KEYS)
        if step == "test_image" and cfg.test_imaging != "final":
            keys = tuple(k for k in keys if k not in ("final_robust", "final_multiscale", "final_niter"))
        prev = chain_hash(prev, step, {k: d.get(k) for k in keys})
        out.append(prev)
    return out


def _new_hashes(cfg: PipelineConfig, order: list[str]) -> list[str]:
    prev, out = chain_hash("", "dataset", "ms", "v"), []
    for step in order:
        prev = chain_hash(prev, registry.hash_name(step), registry.depends(step, cfg.to_dict()))
        out.append(prev)
    return out


def test_derived_names_match_the_old_tables() -> None:
    # align_ebs (joint EBs, issue 18) is new and never runs for a one-MS dataset (runner)
    joint_only = ("align_ebs",)
    assert tuple(registry.canonical(s) for s in OLD_STEP_NAMES) == tuple(
        s for s in registry.STEP_NAMES if s not in joint_only)
    assert tuple(registry.canonical(s) for s in OLD_DEFAULT) == tuple(
        s for s in registry.DEFAULT_STEPS if s not in joint_only)
    assert registry.SCRATCH_STEPS == ("p0", "p1")
    assert registry.LADDER_STEPS == ("p0", "p1", "p2", "ap1")
    assert set(registry.NO_WORK_MS) == {registry.canonical(s) for s in ("startup", "report_results",
                                                                       "run_rflag_final")}
    for old in ("split_trial_1", "report_results", "run_rflag_init", "run_rflag_final", "run_autoflag_init",
                "run_autoflag_final"):
        assert registry.canonical(old) in registry.STEP_NAMES and registry.canonical(old) != old
    assert registry.canonical("split_trial_1") == "split_calibrated"
    assert registry.canonical("report_results") == "dataset_plots"
    assert registry.canonical("run_rflag_init") == "autoflag_init"


def test_phase_and_ladder_kinds_match_the_old_string_rules() -> None:
    names = list(registry.STEP_NAMES) + [registry.extension_name(n) for n in range(1, 8)]
    for s in names:
        assert registry.is_phase(s) == s.startswith("p") and s != "prep", s  # ladder.is_phase was startswith("p")
        assert registry.is_ladder(s) == (s.startswith("p") and s[1:].isdigit() or s.startswith("ap")), s
    assert registry.extension_name(1) == "p3" and registry.is_extension("p3") and not registry.is_extension("p2")
    assert [registry.mask_row(s) for s in ("p0", "p1", "p2", "ap1", "p3", "p7")] == \
        ["p0", "p1", "p2", "ap1", "p2", "p2"]


@pytest.mark.parametrize("over", [{}, {"test_imaging": "final"}, {"final_robust": 0.0, "plots": False}])
def test_resume_hashes_are_those_of_the_old_names(over: dict) -> None:
    """A state.json written before the renames resumes without redoing a finished step."""
    cfg = PipelineConfig.from_dict(over)
    old = list(OLD_STEP_NAMES[:9]) + ["p3", "p4"] + list(OLD_STEP_NAMES[9:])
    new = [registry.canonical(s) for s in old]
    assert _new_hashes(cfg, new) == _old_hashes(cfg, old)


def test_every_step_resolves_to_a_callable_and_aliases_validate() -> None:
    for s in registry.STEP_NAMES + ("p3",):
        assert callable(registry.function(s))
    cfg = PipelineConfig.from_dict({"steps": ["startup", "test_image", "split_trial_1", "report_results"]})
    assert registry.run_order(cfg.steps) == ["startup", "test_image", "split_calibrated", "dataset_plots"]
    with pytest.raises(SelfcalBatchError, match="unknown step"):
        PipelineConfig.from_dict({"steps": ["startup", "split_trial_2"]})


def _v1_state() -> dict:
    return {"version": 1, "current_step": "split_trial_1",
            "steps": {"startup": {"status": "done", "input_hash": "a"}, "p0": {"status": "done"},
                      "split_trial_1": {"status": "running"}, "report_results": {"status": "done"}},
            "snapshots": {"split_trial_1": {"chain": []}}, "chain": [{"step": "p0", "table": "t", "spwmap": []}]}


def test_version1_state_is_migrated_and_resumable(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(_v1_state()))
    st = DatasetState.load(path)
    assert st.data["version"] == STATE_VERSION == 2
    assert list(st.steps) == ["startup", "p0", "split_calibrated", "dataset_plots"]
    assert st.data["current_step"] == "split_calibrated" and "split_calibrated" in st.data["snapshots"]
    assert st.data["chain"] == _v1_state()["chain"]
    assert migrate(_v1_state()) == st.data
    # --restart-from with an old or a new name, on an old file
    for name in ("split_trial_1", "split_calibrated"):
        p = plan_from_state(_v1_state(), name, work_ms_exists=True, keep_work_ms=True)
        assert p.redo == ("split_calibrated", "dataset_plots"), p


@pytest.mark.parametrize("content", [{"steps": {}}, {"version": 3, "steps": {}}, {"version": "1"}])
def test_unknown_state_version_is_refused_with_one_line(tmp_path: Path, content: dict) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(content))
    with pytest.raises(StateVersionError) as exc:
        DatasetState.load(path)
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg and "--restart" in msg and "schema version" in msg


def test_absent_or_torn_state_starts_empty(tmp_path: Path) -> None:
    assert DatasetState.load(tmp_path / "none.json").data["steps"] == {}
    (tmp_path / "torn.json").write_text('{"version": 2, "ste')
    assert DatasetState.load(tmp_path / "torn.json").data["version"] == STATE_VERSION


def test_ladder_snapshot_restores_present_and_removes_absent_keys() -> None:
    data = {"chain": [{"step": "p0", "table": "a", "spwmap": [0]}], "template_final": "bright", "other": 1}
    snap = LadderState.capture(data).to_json()
    assert snap == {"chain": data["chain"], "template_final": "bright"}
    data["chain"].append({"step": "p1"})  # deep copy: the snapshot is unaffected
    data.update(current={"image": "x"}, template_final="faint")
    LadderState.from_json(json.loads(json.dumps(snap))).restore(data)
    assert data == {"chain": [{"step": "p0", "table": "a", "spwmap": [0]}], "template_final": "bright", "other": 1}
    assert LadderState.capture({}).chain is ABSENT
    w = {"corrected_chain": ["a"], "model_in_ms": "p", "cell": "1arcsec", "keep": 2}
    WorkMSState.reset(w)
    assert w == {"keep": 2}


def test_typed_records_round_trip() -> None:
    e = GainEntry("p1", "/x/p1.G", (0, 0, 2))
    assert GainEntry.from_json(json.loads(json.dumps(e.to_json()))) == e
    assert e.to_json() == {"step": "p1", "table": "/x/p1.G", "spwmap": [0, 0, 2]}
    key = (128, "1arcsec", "DATA", 0.5, False, "", 1, "", False)  # WSCleanOptions.imaging_key(): flat
    im = ImageProduct("p", "p.fits", "r.fits", {"snr": 3.0}, key, "DATA")
    back = ImageProduct.from_json(json.loads(json.dumps(im.to_json())))
    assert back.shows(key, "DATA") and not back.shows(key, "CORRECTED_DATA")
    assert set(ImageProduct("p", "i").to_json()) == {"prefix", "image", "residual", "stats"}
    info = MSInfo.from_json({"n_antennas_present": 5, "antenna_names": ["a"], "spws": [{}], "scans": [{}, {}],
                             "integration_s": 10, "time_span_s": 600.0, "time_on_source_s": 400.0})
    assert info.scan_s() == 200.0 and info.thermal_noise_jy != info.thermal_noise_jy  # NaN when unknown


def test_one_solint_parser() -> None:
    assert solint_seconds("2min", 10, 300) == 120 and solint_seconds("inf", 10, 300) == 300
    assert solint_seconds("int", 10, 300) == 10 and solint_seconds("30", 10, 300) == 30
    assert parse_solint(".5s").seconds == 0.5
    for bad in ("x", "60 s", "", "1h", " 60s"):
        with pytest.raises(ValueError, match="bad solint"):
            parse_solint(bad)
    with pytest.raises(ValueError):
        parse_solint("30", unit_required=True)
    with pytest.raises(ValueError):
        parse_solint("inf", words=False)


def test_input_fingerprint_sees_a_replaced_ms(tmp_path) -> None:
    """Breaker finding: an MS replaced at the same path (simulate --force) resumed as
    'finished (nothing to redo)' with the old products."""
    import json
    import os

    from selfcal_batch.ms.checksum import input_fingerprint
    from selfcal_batch.pipeline.runner import input_change

    ms = tmp_path / "a.ms"
    ms.mkdir()
    (ms / "table.dat").write_bytes(b"x" * 10)
    (ms / "table.f0").write_bytes(b"y" * 100)
    state = tmp_path / "state.json"
    assert not bool(input_change(state, ms, "startup"))  # no state yet
    state.write_text(json.dumps({"steps": {}}))
    assert not bool(input_change(state, ms, "startup"))  # an earlier version's state: trusted
    state.write_text(json.dumps({"input_fingerprint": input_fingerprint(ms)}))
    assert not bool(input_change(state, ms, "startup"))
    (ms / "table.f0").write_bytes(b"z" * 100)
    os.utime(ms / "table.f0", ns=(1, 1))
    assert bool(input_change(state, ms, "startup"))
