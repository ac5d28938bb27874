"""Multi-field simulation specs (pure: no MS is written)."""
from __future__ import annotations

from pathlib import Path

import pytest

from selfcal_batch.errors import SimulationError
from selfcal_batch.simulate import Component, SimSpec, spec_from_preset
from selfcal_batch.simulate.fields import FieldSpec, field_scan_plan, field_truth


def _eb(**over) -> SimSpec:
    fields = [FieldSpec("CAL", "CALIBRATE_PHASE,calibrate_bandpass", ddec_deg=-1.0,
                        components=(Component("point", 1.0),), scan_fraction=0.5),
              FieldSpec("T1", components=(Component("point", 0.05),)),
              FieldSpec("T2", ddec_deg=1.0, components=({"kind": "point", "flux_jy": 0.03},))]
    return spec_from_preset("vla-c", duration_s=240, n_scans=4, integration_s=10, fields=fields, **over)


def test_scan_plan_interleaves_fields_in_cycles() -> None:
    spec = _eb()
    plan = spec.scan_plan()
    assert [s["field"] for s in plan[:6]] == ["CAL", "T1", "T2", "CAL", "T1", "T2"]
    assert len(plan) == 12 and [s["scan"] for s in plan] == list(range(1, 13))
    lengths = {s["field"]: s["ha_stop_s"] - s["ha_start_s"] for s in plan}
    assert lengths == {"CAL": 30.0, "T1": 60.0, "T2": 60.0}
    for a, b in zip(plan, plan[1:], strict=False):  # no overlap, scan_gap_s between scans
        assert b["ha_start_s"] - a["ha_stop_s"] == pytest.approx(spec.scan_gap_s)
    assert plan[0]["ha_start_s"] == pytest.approx(-spec.time_span_s / 2)
    assert spec.time_span_s == pytest.approx(4 * (30 + 60 + 60) + 11 * 60)


def test_intents_normalised_and_obs_mode() -> None:
    f = _eb().fields[0]
    assert f.intent == "CALIBRATE_PHASE,CALIBRATE_BANDPASS"
    assert f.obs_mode == "CALIBRATE_PHASE#UNSPECIFIED,CALIBRATE_BANDPASS#UNSPECIFIED"
    assert FieldSpec("X", "").obs_mode == ""


@pytest.mark.parametrize("kwargs, match", [
    ({"name": ""}, "field name"),
    ({"name": "A", "intent": "OBSERVE_TARGT"}, "unknown intent"),
    ({"name": "A", "scan_fraction": 0}, "scan_fraction"),
    ({"name": "A", "ddec_deg": 20.0}, "offset"),
    ({"name": "A", "dra_deg": float("nan")}, "finite"),
])
def test_field_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(SimulationError, match=match):
        FieldSpec(**kwargs)


def test_duplicate_field_names_refused() -> None:
    with pytest.raises(SimulationError, match="duplicate field name"):
        spec_from_preset("vla-c", fields=[FieldSpec("A"), FieldSpec("A")])


def test_single_field_spec_serialises_as_before_and_multi_round_trips(tmp_path: Path) -> None:
    single = spec_from_preset("vla-c")
    assert "fields" not in single.to_dict()
    spec = _eb()
    again = SimSpec.from_json(spec.to_json(tmp_path / "s.json"))
    assert again == spec and again.fields[2].components[0].flux_jy == 0.03


def test_field_scan_plan_rounds_to_integrations() -> None:
    plan = field_scan_plan((FieldSpec("A", scan_fraction=0.26),), 2, 6, 10.0, 5.0)
    assert [p["ha_stop_s"] - p["ha_start_s"] for p in plan] == [20.0, 20.0]


def test_field_truth_selects_one_field() -> None:
    truth = {"components": [], "phase_centre": {}, "fields": [
        {"name": "T1", "phase_centre": {"ra_deg": 1.0}, "components": [{"flux_jy": 2.0}]}]}
    t = field_truth(truth, "T1")
    assert t["components"] == [{"flux_jy": 2.0}] and t["phase_centre"]["ra_deg"] == 1.0
    with pytest.raises(SimulationError, match="no field 'T9'"):
        field_truth(truth, "T9")
