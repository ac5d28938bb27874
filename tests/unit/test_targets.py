"""Target expansion (pure: fields are given, no MS is read)."""
from __future__ import annotations

from pathlib import Path

import pytest

from selfcal_batch.campaign.manifest import DatasetSpec
from selfcal_batch.campaign.targets import (
    TargetError, expand_datasets, parse_target_keys, safe_field, select_targets, target_dataset_name,
)
from selfcal_batch.config import PipelineConfig
from selfcal_batch.ms.fields import parse_obs_mode


def _f(k: int, name: str, intents: list[str], tos: float = 300.0, rows: int = 100) -> dict:
    return {"id": k, "name": name, "intents": intents, "rows": rows, "time_on_source_s": tos,
            "ra_deg": 150.0, "dec_deg": 40.0 + k, "scans": 4}


EB = [_f(0, "J0959+3830", ["CALIBRATE_BANDPASS", "CALIBRATE_PHASE"]),
      _f(1, "T1", ["OBSERVE_TARGET"]), _f(2, "T2", ["OBSERVE_TARGET"], tos=30.0),
      _f(3, "T3", ["OBSERVE_TARGET"], rows=0, tos=0.0), _f(4, "3C286", ["CALIBRATE_FLUX"])]


def test_obs_mode_parsing() -> None:
    assert parse_obs_mode("CALIBRATE_PHASE#UNSPECIFIED,OBSERVE_TARGET#ON_SOURCE") == ["CALIBRATE_PHASE", "OBSERVE_TARGET"]
    assert parse_obs_mode("") == [] and parse_obs_mode("observe_target#x,OBSERVE_TARGET#y") == ["OBSERVE_TARGET"]


def test_science_selects_by_intent_and_time() -> None:
    c = select_targets(EB, ("science",), 60.0)
    assert [f["name"] for f in c.selected] == ["T1"]
    reasons = dict(c.skipped)
    assert reasons["J0959+3830"].startswith("not a science target (intents CALIBRATE_BANDPASS")
    assert reasons["T2"] == "30 s on source < min_target_time_s = 60 s"
    assert reasons["T3"] == "no unflagged data (no rows)" and "CALIBRATE_FLUX" in reasons["3C286"]
    assert [f["name"] for f in select_targets(EB, ("science",), 10.0).selected] == ["T1", "T2"]


def test_patterns_without_intents_and_combined() -> None:
    plain = [{**f, "intents": []} for f in EB]
    with pytest.raises(TargetError, match="needs scan intents"):
        select_targets(plain, ("science",), 0.0)
    c = select_targets(plain, ("T*",), 0.0)
    assert [f["name"] for f in c.selected] == ["T1", "T2"]
    assert "matches none of 'T*'" in dict(c.skipped)["3C286"]
    assert [f["name"] for f in select_targets(EB, ("science", "T2"), 0.0).selected] == ["T2"]
    assert [f["name"] for f in select_targets(EB, ("3C*", "J*"), 0.0).selected] == ["J0959+3830", "3C286"]


def test_names_are_safe_directory_names() -> None:
    assert target_dataset_name("{name}__{field}", "eb1", "eb1", "NGC 1275/core") == "eb1__NGC_1275_core"
    assert target_dataset_name("{stem}-{field}", "x", "eb1", "J1008+0730") == "eb1-J1008+0730"
    assert safe_field("_x") == "f_x" and safe_field("") == "field"
    with pytest.raises(TargetError, match="target_name"):
        target_dataset_name("{ms}_{field}", "a", "b", "c")


@pytest.mark.parametrize("entry, key, needle", [
    ({"target_name": "{field}"}, "target_name", "only with targets"),
    ({"targets": "science", "field": "T1"}, "field", "cannot be combined"),
    ({"targets": [], }, "targets", "expected"),
    ({"targets": 3}, "targets", "expected"),
    ({"targets": "science", "target_name": "x"}, "target_name", "containing {field}"),
    ({"targets": "science", "target_name": "{bad}{field}"}, "target_name", "not a pattern"),
    ({"targets": "science", "min_target_time_s": -1}, "min_target_time_s", ">= 0"),
])
def test_target_keys_validated(entry: dict, key: str, needle: str) -> None:
    kw, problem = parse_target_keys(entry)
    assert kw == {} and problem is not None and problem[0] == key and needle in problem[1]


def test_expand_one_dataset_per_target_with_field_set(tmp_path: Path) -> None:
    cfg = PipelineConfig.from_dict({"imsize": 128})
    ms = tmp_path / "eb1.ms"
    d = DatasetSpec("eb1", ms, cfg, index=0, overrides={"imsize": 128}, targets=("science",),
                    min_target_time_s=10.0)
    plain = DatasetSpec("other", tmp_path / "o.ms", cfg, index=1)
    broken = DatasetSpec("bad", tmp_path / "bad.ms", cfg, index=2, targets=("science",))
    out, skipped = expand_datasets([d, plain, broken], reader=lambda paths: {
        str(ms): EB, str(tmp_path / "bad.ms"): "cannot read its fields: FIELD table is missing"})
    assert [x.name for x in out] == ["eb1__T1", "eb1__T2", "other", "bad"]
    t1 = out[0]
    # selected by id: a field named "4" would be read by CASA as id 4 (breaker finding)
    assert t1.config.field == "1" and t1.config.imsize == 128 and t1.overrides == {"imsize": 128, "field": "1"}
    assert t1.target["field_id"] == 1 and t1.targets == () and t1.ok
    assert out[3].error.endswith(f"{tmp_path / 'bad.ms'}: cannot read its fields: FIELD table is missing")
    assert "\n" not in out[3].error
    assert (f"{ms}: J0959+3830", "not a science target (intents CALIBRATE_BANDPASS, CALIBRATE_PHASE)") in skipped


def test_expand_no_target_left_is_one_line_error(tmp_path: Path) -> None:
    cfg = PipelineConfig.from_dict({})
    d = DatasetSpec("eb", tmp_path / "eb.ms", cfg, targets=("science",), min_target_time_s=1000.0)
    out, _ = expand_datasets([d], reader=lambda paths: {str(tmp_path / "eb.ms"): EB})
    assert len(out) == 1 and "no target field left: J0959+3830: not a science target" in out[0].error


def test_time_on_source_of_one_integration_scans() -> None:
    """A field observed one 10-s integration per scan, interleaved with a field of 6: its
    time on source is 4 x 10 s, not 4 x the time between its scans."""
    import numpy as np

    from selfcal_batch.ms.fields import summarise

    rows = []  # (field, time) for one baseline, one data description
    t = 0.0
    for _cycle in range(4):
        for fid, n in ((0, 6), (1, 1)):
            for _k in range(n):
                rows.append((fid, t))
                t += 10.0
            t += 60.0
    fid = np.array([r[0] for r in rows])
    n = len(rows)
    cols = {"FIELD_ID": fid, "TIME": np.array([r[1] for r in rows]), "ANTENNA1": np.zeros(n, int),
            "ANTENNA2": np.ones(n, int), "DATA_DESC_ID": np.zeros(n, int), "INTERVAL": np.full(n, 10.0),
            "EXPOSURE": np.full(n, 10.0), "STATE_ID": fid, "SCAN_NUMBER": np.arange(n) // 7}
    out = summarise(["A", "B"], np.zeros((2, 1, 2)), ["OBSERVE_TARGET#X", "CALIBRATE_PHASE#Y"], cols)
    assert [f["time_on_source_s"] for f in out] == [240.0, 40.0]
    assert out[1]["intents"] == ["CALIBRATE_PHASE"] and out[0]["rows"] == 24


def test_fields_sharing_a_name_make_one_dataset() -> None:
    same = dict(_f(1, "M31", ["OBSERVE_TARGET"]), dec_deg=40.0)  # a repeated row of field 0's pointing
    fields = [_f(0, "M31", ["OBSERVE_TARGET"]), same, _f(2, "T", ["OBSERVE_TARGET"])]
    c = select_targets(fields, ("science",), 0.0)
    assert [f["id"] for f in c.selected] == [0, 2] and c.selected[0]["ids"] == [0, 1]
    assert c.skipped == (("M31", "same name and position as field id 0: part of that target's dataset"),)


def test_fields_sharing_a_name_elsewhere_are_not_merged() -> None:
    """Breaker finding: two fields named 'both' 1 deg apart became one dataset."""
    fields = [_f(0, "M31", ["OBSERVE_TARGET"]), _f(1, "M31", ["OBSERVE_TARGET"])]
    c = select_targets(fields, ("science",), 0.0)
    assert [f["ids"] for f in c.selected] == [[0]]
    assert "60.0 arcmin away: not selected" in c.skipped[0][1]


def test_target_name_with_a_slash_is_refused() -> None:
    from selfcal_batch.campaign.targets import parse_target_keys

    kw, problem = parse_target_keys({"targets": "science", "target_name": "{stem}/{field}"})
    assert problem is not None and problem[0] == "target_name" and "no '/'" in problem[1]


def test_fields_whose_names_sanitise_alike_get_distinct_names(tmp_path: Path, caplog) -> None:
    """Breaker: '3C 286' and '3C_286' both give eb1__3C_286 and the duplicate name stopped the
    whole manifest. Each gets -id<FIELD id>; other fields keep their plain names."""
    from selfcal_batch.campaign.targets import field_dataset_names

    fields = (_f(1, "3C 286", ["OBSERVE_TARGET"]), _f(2, "T1", ["OBSERVE_TARGET"]),
              _f(3, "3C_286", ["OBSERVE_TARGET"]), _f(4, "3C/286", ["OBSERVE_TARGET"]))
    assert field_dataset_names("{name}__{field}", "eb1", "eb1", fields) == [
        "eb1__3C_286-id1", "eb1__T1", "eb1__3C_286-id3", "eb1__3C_286-id4"]
    cfg = PipelineConfig.from_dict({})
    ms = tmp_path / "eb1.ms"
    d = DatasetSpec("eb1", ms, cfg, index=0, targets=("science",), min_target_time_s=10.0)
    with caplog.at_level("WARNING", logger="selfcal_batch.campaign"):
        out, _ = expand_datasets([d], reader=lambda paths: {str(ms): list(fields)})
    assert [x.name for x in out] == ["eb1__3C_286-id1", "eb1__T1", "eb1__3C_286-id3", "eb1__3C_286-id4"]
    assert all(x.ok for x in out) and [x.config.field for x in out] == ["1", "2", "3", "4"]
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"{ms}: fields '3C 286' (id 1), '3C_286' (id 3), '3C/286' (id 4) give the same dataset "
                    "name 'eb1__3C_286': named eb1__3C_286-id1, eb1__3C_286-id3, eb1__3C_286-id4"]


def test_generated_names_colliding_across_mss_fail_that_dataset_only(tmp_path: Path) -> None:
    """target_name = "{field}" over two EBs of one field: the second is one clear error naming
    both MSs and the field, under its own name; the other datasets are untouched."""
    from selfcal_batch.campaign.targets import separate_generated_names

    cfg = PipelineConfig.from_dict({})
    eb1, eb2 = tmp_path / "eb1.ms", tmp_path / "eb2.ms"
    entry = [DatasetSpec(n, p, cfg, index=0, targets=("science",), target_name="{field}", min_target_time_s=10.0)
             for n, p in (("eb1", eb1), ("eb2", eb2))]
    other = DatasetSpec("T2", tmp_path / "o.ms", cfg, index=1)  # hand-written, not generated
    out, _ = expand_datasets([*entry, other], reader=lambda paths: {
        str(eb1): [_f(1, "T1", ["OBSERVE_TARGET"])], str(eb2): [_f(1, "T1", ["OBSERVE_TARGET"])]})
    out = separate_generated_names(out)
    assert [(x.name, x.ok) for x in out] == [("T1", True), ("T1-dup2", False), ("T2", True)]
    assert out[1].error == (f"datasets[0]: field 'T1' of {eb2} gives the dataset name 'T1' of field 'T1' of {eb1} "
                            "(datasets[0]): not run; set target_name with {stem} to tell them apart")
    # two names written by hand stay the manifest's own duplicate-name error
    a, b = DatasetSpec("x", eb1, cfg, index=0), DatasetSpec("x", eb2, cfg, index=1)
    assert separate_generated_names([a, b]) == [a, b]
