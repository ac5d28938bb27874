"""The one configuration validator (selfcal_batch.schema): types, ranges, choices, unknown
keys, angles, durations and solution intervals, template overrides, cluster keys. Pure: no
program runs, no file is read."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from selfcal_batch import schema
from selfcal_batch.campaign_config import CampaignSection, ClusterSpec
from selfcal_batch.config import (
    GateConfig,
    GuardConfig,
    PipelineConfig,
    SolintConfig,
    WSCleanConfig,
)
from selfcal_batch.errors import ConfigError
from selfcal_batch.selfcal import acceptance
from selfcal_batch.selfcal.templates import StepParams, template_params


def error_of(data: dict, where: str = "") -> str:
    with pytest.raises(ConfigError) as ei:
        PipelineConfig.from_dict(data, where)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


# -- declarations ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [PipelineConfig, WSCleanConfig, GateConfig, SolintConfig,
                                 GuardConfig, ClusterSpec, CampaignSection, StepParams])
def test_every_field_is_declared_with_help(cls):
    for f in dataclasses.fields(cls):
        s = f.metadata.get(schema.SCHEMA_KEY)
        assert s is not None, f"{cls.__name__}.{f.name} is not declared with schema.setting"
        assert s.help.strip() and "\n" not in s.help and len(s.help) < 300, (cls, f.name, s.help)


def test_defaults_pass_their_own_validation():
    PipelineConfig().validate()
    ClusterSpec().validate()
    schema.check(CampaignSection())
    assert PipelineConfig.from_dict({}) == PipelineConfig()
    assert schema.build(ClusterSpec, {}, "cluster") == ClusterSpec()


def test_setting_needs_help_and_copies_mutable_defaults():
    with pytest.raises(TypeError):
        schema.setting(1)

    @dataclasses.dataclass
    class T:
        d: dict = schema.setting({}, "A table.")  # noqa: RUF009 (a dataclasses.field)

    a, b = T(), T()
    a.d["x"] = 1
    assert b.d == {}


# -- types -----------------------------------------------------------------------------


@pytest.mark.parametrize("data, key, words", [
    ({"imsize": "big"}, "imsize", "expected an integer"),
    ({"imsize": 512.0}, "imsize", "expected an integer"),
    ({"threads": True}, "threads", "expected an integer"),
    ({"plots": "yes"}, "plots", "expected true/false"),
    ({"plots": 1}, "plots", "expected true/false"),
    ({"final_robust": "0.5"}, "final_robust", "expected a finite number"),
    ({"final_robust": float("nan")}, "final_robust", "expected a finite number"),
    ({"gate": {"high_snr": float("inf")}}, "gate.high_snr", "expected a finite number"),
    ({"steps": "p0"}, "steps", "expected a list"),
    ({"steps": ["p0", 1]}, "steps[1]", "expected a string"),
    ({"template_thresholds_mjy": [1, 2, "x", 4]}, "template_thresholds_mjy[2]",
     "expected a finite number"),
    ({"wsclean": 3}, "wsclean", "expected a table"),
    ({"templates": []}, "templates", "expected a table"),
    ({"cell": 0.1}, "cell", "expected a string"),
])
def test_wrong_types_name_the_key(data, key, words):
    msg = error_of(data, "datasets[2]")
    assert msg.startswith(f"datasets[2].{key}: ") and words in msg, msg


def test_numbers_are_coerced():
    cfg = PipelineConfig.from_dict({"final_robust": 1, "template_thresholds_mjy": [1, 2, 3, 4],
                                    "steps": ["startup", "test_image"]})
    assert cfg.final_robust == 1.0 and isinstance(cfg.final_robust, float)
    assert cfg.template_thresholds_mjy == (1.0, 2.0, 3.0, 4.0) and cfg.steps == ("startup", "test_image")


# -- ranges and choices ------------------------------------------------------------------


@pytest.mark.parametrize("data, ok", [
    ({"final_robust": -2}, True), ({"final_robust": 2}, True), ({"final_robust": 2.01}, False),
    ({"wsclean": {"mgain": 0.99}}, True), ({"wsclean": {"mgain": 1.0}}, False),
    ({"wsclean": {"mgain": 0}}, False),
    ({"decorrelation_limit": 0.0}, True), ({"decorrelation_limit": 1.0}, False),
    ({"threads": 1}, True), ({"threads": 0}, False),
    ({"imsize": 32}, True), ({"imsize": 30}, False), ({"imsize": 513}, False),
    ({"guard": {"near_beams": 0.0}}, False), ({"gate": {"max_antenna_loss": 1.0}}, True),
    ({"template_thresholds_mjy": [5, 20, 50, 100]}, True),
    ({"template_thresholds_mjy": [20, 10, 50, 100]}, False),
    ({"template_thresholds_mjy": [0, 10, 50, 100]}, False),
    ({"template_thresholds_mjy": [10, 20, 50]}, False),
])
def test_ranges(data, ok):
    if ok:
        PipelineConfig.from_dict(data)
    else:
        key = next(iter(data))
        assert error_of(data).startswith(key)


def test_range_message_shows_the_interval():
    assert error_of({"final_robust": 3.0}) == "final_robust: must be within [-2, 2], got 3"
    assert error_of({"wsclean": {"mgain": 1}}) == "wsclean.mgain: must be within (0, 1), got 1"
    assert error_of({"solint": {"min_snr": -1}}) == "solint.min_snr: must be >= 0, got -1"


@pytest.mark.parametrize("data, message", [
    ({"ladder_imaging": "shard"}, "ladder_imaging: unknown value 'shard' (did you mean 'shared'?)"),
    ({"solnorm_type": "max"}, "solnorm_type: unknown value 'max' (choose from: median, mean)"),
    ({"keep_products": "al"}, "keep_products: unknown policy 'al' (did you mean 'all'?)"),
    ({"force_template": "brigth"},
     "force_template: unknown template 'brigth' (did you mean 'bright'?)"),
    ({"steps": ["startup", "p9"]}, "steps: unknown step 'p9' (choose from: "),
    ({"wsclean": {"container_runtime": "docker"}},
     "wsclean.container_runtime: unknown value 'docker'"),
])
def test_choices_with_did_you_mean(data, message):
    assert error_of(data).startswith(message)


def test_choice_spellings_kept():
    cfg = PipelineConfig.from_dict({"input_column": "CORRECTED", "force_template": "",
                                    "steps": ["startup", "run_autoflag_init"]})
    assert cfg.input_column == "CORRECTED" and cfg.steps == ("startup", "run_autoflag_init")


# -- unknown keys ------------------------------------------------------------------------


@pytest.mark.parametrize("data, message", [
    ({"imsze": 128}, "imsze: unknown key (did you mean 'imsize'?)"),
    ({"wsclean": {"binray": "x"}}, "wsclean.binray: unknown key (did you mean 'binary'?)"),
    ({"gate": {"zzz": 1}}, "gate.zzz: unknown key (choose from: "),
    ({"templates": {"fiant": {}}}, "templates: unknown template 'fiant' (did you mean 'faint'?)"),
    ({"templates": {"faint": {"p0": {"solnt": "5s"}}}},
     "templates.faint.p0.solnt: unknown key (did you mean 'solint'?)"),
])
def test_unknown_keys(data, message):
    msg = error_of(data)
    assert msg.startswith(message), msg


def test_instrument_and_band():
    assert PipelineConfig.from_dict({"instrument": "e-MERLIN", "band": "k"}).band == "k"
    assert error_of({"instrument": "ALMA"}).startswith("instrument: unknown instrument 'ALMA'")
    msg = error_of({"instrument": "eMERLIN", "band": "X"})
    assert msg.startswith("instrument/band: unknown eMERLIN band")


# -- angles --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, arcsec", [
    ("0.1arcsec", 0.1), ("0.1asec", 0.1), ("1.5arcmin", 90.0), ("2amin", 120.0),
    ("1e-3deg", 3.6), ("50mas", 0.05), (".5arcsec", 0.5), ("2.arcsec", 2.0),
])
def test_angles(text, arcsec):
    assert schema.angle_arcsec(text) == pytest.approx(arcsec)
    cfg = PipelineConfig.from_dict({"cell": text, "test_uvtaper": text})
    assert cfg.cell == text  # passed on as written (every unit is one WSClean reads)


@pytest.mark.parametrize("text", ["0.1", "arcsec", "-0.1arcsec", "0arcsec", "0.1 arcsec",
                                  "0.1ARCSEC", "0.1rad", "autoo", "1e-3", "0.1arcsecs"])
def test_bad_angles_fail_at_load_naming_the_key(text):
    with pytest.raises(ValueError):
        schema.angle_arcsec(text)
    msg = error_of({"cell": text}, "defaults")
    assert msg.startswith("defaults.cell: expected an angle") and repr(text) in msg
    assert error_of({"test_uvtaper": text}).startswith("test_uvtaper: expected an angle")


def test_fov_image_reads_every_cell_unit():
    """fov_image doubles the cell in arcsec: the crash of 'float(cell.replace("arcsec", ""))'
    on '0.1asec' is gone for every accepted unit (same number for '...arcsec' as before)."""
    for text in ("0.06arcsec", "0.06asec", "0.001amin", "1e-5deg"):
        assert schema.angle_arcsec(text) > 0
    assert schema.angle_arcsec("0.06arcsec") == float("0.06arcsec".replace("arcsec", ""))
    assert PipelineConfig.from_dict({"cell": "auto"}).cell == "auto"


def test_with_updates_validates():
    with pytest.raises(ConfigError, match="^cell: "):
        PipelineConfig().with_updates(cell="0.1")
    assert PipelineConfig().with_updates(threads=4).threads == 4


# -- durations and solution intervals -------------------------------------------------------


@pytest.mark.parametrize("text, seconds", [("20s", 20.0), ("1.5min", 90.0), ("0.5s", 0.5)])
def test_durations(text, seconds):
    assert schema.duration_seconds(text) == seconds
    assert PipelineConfig.from_dict({"timebin": text}).timebin == text


@pytest.mark.parametrize("text", ["inf", "int", "20", "0s", "-5s", "5h", "20 s", "s"])
def test_timebin_refuses_solint_words_and_bad_durations(text):
    msg = error_of({"timebin": text})
    assert msg.startswith("timebin: expected a duration") and repr(text) in msg
    if text in ("inf", "int"):
        assert "solution intervals" in msg


def test_timebin_empty_is_no_averaging():
    assert PipelineConfig.from_dict({"timebin": ""}).timebin == ""


@pytest.mark.parametrize("text, seconds", [("int", 10.0), ("inf", 600.0), ("60s", 60.0),
                                           ("2min", 120.0), (" 96s ", 96.0)])
def test_solints(text, seconds):
    assert schema.solint_seconds(text, 10.0, 600.0) == seconds
    assert acceptance.solint_seconds(text, 10.0, 600.0) == seconds  # the same parser


@pytest.mark.parametrize("text", ["60", "0s", "-5s", "5h", "", "infinite"])
def test_bad_solints(text):
    with pytest.raises(ValueError, match="solint must be"):
        schema.solint_seconds(text, 10.0, 600.0)
    with pytest.raises(ConfigError, match=r"^templates\.bright\.p1\.solint: solint must be"):
        template_params("bright", "VLA", "C", {"p1": {"solint": text}})


# -- template overrides ----------------------------------------------------------------------


def test_template_overrides_are_normalised_and_typed():
    p = template_params("bright", "VLA", "C", {"p1": {
        "solint": " 30s ", "combine": " spw , scan", "scales": "None", "robust": 1,
        "uvtaper": "0.5asec", "calmode": "ap", "gaintype": "T", "with_multiscale": False}})["p1"]
    assert (p.solint, p.combine, p.scales) == ("30s", "spw,scan", "")
    assert (p.robust, p.uvtaper) == (1.0, "0.5asec")
    assert isinstance(p.robust, float) and p.calmode == "ap" and p.gaintype == "T"


@pytest.mark.parametrize("key, value, words", [
    ("robust", 2.5, "must be within [-2, 2]"), ("minsnr", -1, "must be >= 0"),
    ("sigma_mask", 0, "must be > 0"), ("calmode", "x", "unknown value 'x'"),
    ("gaintype", "g", "(choose from: G, T)"), ("combine", "spw,foo", "combine tokens"),
    ("uvtaper", "0.6", "expected an angle"), ("scales", "0,a", "comma-separated integers"),
    ("with_multiscale", 1, "expected true/false"), ("robust", "0", "expected a finite number"),
])
def test_template_override_errors(key, value, words):
    with pytest.raises(ConfigError) as ei:
        PipelineConfig.from_dict({"templates": {"bright": {"p1": {key: value}}}}, "datasets[1]")
    msg = str(ei.value)
    assert msg.startswith(f"datasets[1].templates.bright.p1.{key}: ") and words in msg, msg


def test_template_tables_must_be_tables():
    assert "expected a table" in error_of({"templates": {"faint": 5}})
    assert "templates.faint.p1: expected a table" in error_of({"templates": {"faint": {"p1": 5}}})


# -- cluster and campaign -------------------------------------------------------------------


def cluster_error(data: dict) -> str:
    with pytest.raises(ConfigError) as ei:
        schema.build(ClusterSpec, data, "cluster").validate()
    return str(ei.value)


@pytest.mark.parametrize("data, message", [
    ({"worker": 2}, "cluster.worker: unknown key (did you mean 'workers'?)"),
    ({"workers": "two"}, "cluster.workers: expected an integer"),
    ({"workers": -1}, "cluster.workers: must be >= 0"),
    ({"kind": "slrum"}, "cluster.kind: unknown kind 'slrum' (did you mean 'slurm'?)"),
    ({"memory": "lots"}, "cluster.memory: expected e.g. '16GiB'"),
    ({"walltime": "4 hours"}, "cluster.walltime: expected e.g. '04:00:00'"),
    ({"address": "my host"}, "cluster.address: expected e.g. 'tcp://host:8786'"),
    ({"no_worker_timeout_s": 0}, "cluster.no_worker_timeout_s: must be > 0"),
    ({"prologue": "module load x"}, "cluster.prologue: expected a list"),
    ({"kwargs": 3}, "cluster.kwargs: expected a table"),
])
def test_cluster_keys(data, message):
    assert cluster_error(data).startswith(message)


def test_cluster_values_accepted():
    spec = schema.build(ClusterSpec, {"kind": "slurm", "memory": "16GiB", "walltime": "1-02:00:00",
                                      "address": "tcp://10.0.0.5:8786", "prologue": ["a", "b"],
                                      "kwargs": {"x": 1}, "wait_for_workers_s": 5}, "cluster")
    spec.validate()
    assert spec.prologue == ("a", "b") and spec.wait_for_workers_s == 5.0


def test_campaign_section_unknown_key():
    with pytest.raises(ConfigError,
                       match=r"^campaign\.outdir: unknown key \(did you mean 'output_dir'\?\)"):
        schema.build(CampaignSection, {"outdir": "x"}, "campaign")


def test_deployment_code_does_not_import_the_manifest_loader():
    code = ("import sys, selfcal_batch.campaign.cluster; "
            "mods = ('selfcal_batch.campaign.manifest', 'tomllib'); "
            "bad = [m for m in mods if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
