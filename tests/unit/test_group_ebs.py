"""Grouping the targets of several EBs into joint datasets, and the up-front EB checks
(issue 18, item 2): pure decisions on generated field lists; no MS is read."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selfcal_batch.campaign.ebs import channel_note, eb_layout, layout_check, layout_problem, selected_fields, working_nchan
from selfcal_batch.campaign.groups import group_datasets, parse_group_keys
from selfcal_batch.campaign.manifest import DatasetSpec
from selfcal_batch.campaign.preflight import one_line_per_ms
from selfcal_batch.campaign.targets import expand_datasets
from selfcal_batch.config import PipelineConfig
from selfcal_batch.selfcal.ebjoint import (PHASE_SHIFT_PB_FRACTION, angular_separation_arcsec, group_ebs,
                                           phase_shift_plan, pointing_problem, shift_limit_arcsec)

DAY = 86400.0
T0 = 5.1e9  # MJD seconds (2020s)


def _field(k: int, name: str, dec: float, start: float | None, intents=("OBSERVE_TARGET",), nchan=(4, 4),
           ra: float = 150.0, corr=("RR", "LL")) -> dict:
    return {"id": k, "name": name, "ra_deg": ra, "dec_deg": dec, "intents": list(intents), "rows": 100,
            "scans": 2, "time_on_source_s": 120.0, "start_s": start,
            "spws": [[w, n] for w, n in enumerate(nchan)],
            "correlations": {str(w): list(corr) for w in range(len(nchan))}}


def _eb(start: float, shift_arcsec: float = 0.0, nchan=(4, 4), names=("T1", "T2"), corr=("RR", "LL")) -> list[dict]:
    """A generated EB's FIELD list: a calibrator, then two targets (the second shifted north)."""
    return [_field(0, "CAL", 38.5, start, ("CALIBRATE_PHASE",), nchan, corr=corr),
            _field(1, names[0], 40.0, start + 60, nchan=nchan, corr=corr),
            _field(2, names[1], 41.0 + shift_arcsec / 3600.0, start + 120, nchan=nchan, corr=corr)]


def _rec(ms: str, f: dict) -> dict:
    return {"ms": ms, "field": f["name"], "ra_deg": f["ra_deg"], "dec_deg": f["dec_deg"], "start_s": f["start_s"]}


@pytest.mark.parametrize("n_ebs", [2, 3, 5])
def test_groups_are_one_per_target_in_time_order(n_ebs: int) -> None:
    """Generated EBs listed in reverse time order: each target's group holds one field per EB,
    ordered by the target's start, whatever the input order."""
    ebs = {f"eb{k}.ms": _eb(T0 + (n_ebs - k) * DAY) for k in range(n_ebs)}  # eb0 observed last
    recs = [_rec(ms, f) for ms, fields in ebs.items() for f in fields[1:]]
    for by in ("name", "position"):
        groups = group_ebs(recs, by, 1.0)
        assert len(groups) == 2 and not any(g.problem for g in groups), groups
        for g in groups:
            assert len(g.members) == n_ebs and len({recs[i]["field"] for i in g.members}) == 1
            starts = [recs[i]["start_s"] for i in g.members]
            assert starts == sorted(starts)
            assert [recs[i]["ms"] for i in g.members] == [f"eb{k}.ms" for k in reversed(range(n_ebs))]
    # the order is the same for any input order
    rev = list(reversed(recs))
    assert [[rev[i]["ms"] for i in g.members] for g in group_ebs(rev)] == \
        [[recs[i]["ms"] for i in g.members] for g in group_ebs(recs)]


def test_name_group_at_two_positions_is_refused_naming_both_and_the_separation() -> None:
    recs = [_rec("a.ms", f) for f in _eb(T0)[1:]] + [_rec("b.ms", f) for f in _eb(T0 + DAY, shift_arcsec=36.0)[1:]]
    groups = group_ebs(recs, "name", 1.0)
    ok, bad = groups
    assert not ok.problem and len(ok.members) == 2
    assert "a.ms" in bad.problem and "b.ms" in bad.problem and "36 arcsec apart" in bad.problem
    assert "\n" not in bad.problem and "group_tolerance_arcsec = 1" in bad.problem
    assert not group_ebs(recs, "name", 40.0)[1].problem  # within a larger tolerance
    # by position the shifted field is its own target (no problem, three groups)
    pos = group_ebs(recs, "position", 1.0)
    assert [len(g.members) for g in pos] == [2, 1, 1] and not any(g.problem for g in pos)


def test_position_groups_fields_named_differently() -> None:
    recs = [_rec("a.ms", f) for f in _eb(T0)[1:]] + [_rec("b.ms", f) for f in _eb(T0 + DAY, names=("X1", "X2"))[1:]]
    assert [len(g.members) for g in group_ebs(recs, "position", 1.0)] == [2, 2]
    assert [len(g.members) for g in group_ebs(recs, "name", 1.0)] == [1, 1, 1, 1]


def test_unknown_start_goes_last() -> None:
    recs = [_rec("a.ms", _eb(T0)[1] | {"start_s": None}), _rec("b.ms", _eb(T0 + DAY)[1])]
    assert [recs[i]["ms"] for i in group_ebs(recs)[0].members] == ["b.ms", "a.ms"]


def test_pointing_problem_names_the_eb_and_separation() -> None:
    """Without a known beam (default limit 1 mas) nothing is re-phased: every offset > 1 mas is refused."""
    assert pointing_problem(["a", "b"], [(150.0, 40.0), (150.0, 40.0)]) == ""
    assert pointing_problem(["a", "b"], [(150.0, 40.0), (150.0, 40.0 + 0.5e-3 / 3600)]) == ""  # 0.5 mas
    line = pointing_problem(["a.ms", "b.ms", "c.ms"], [(150.0, 40.0), (150.0, 40.0), (150.0, 40.01)])
    assert line.startswith("execution block 3 (c.ms): phase centre 36 arcsec from execution block 1's (a.ms), "
                           "more than the 0.001 arcsec a joint run re-phases"), line
    assert line.endswith("the EBs' primary beams stay where they were observed): run them separately"), line


@pytest.mark.parametrize("freq_hz, dish_m, want_arcsec", [
    (1.4e9, 25.0, 6.5), (6.0e9, 25.0, 1.52), (345e9, 12.0, 0.055), (5e9, 76.0, 0.60)])
def test_shift_limit_is_a_small_fraction_of_the_narrowest_primary_beam(freq_hz: float, dish_m: float,
                                                                       want_arcsec: float) -> None:
    """0.36 % of 1.02 lambda / D: a source at the half-power radius sees the EBs' beams
    differ by <= 1 % (Gaussian beam: 4 ln2 d / FWHM)."""
    assert shift_limit_arcsec(freq_hz, dish_m) == pytest.approx(want_arcsec, rel=0.02)
    fwhm = np.degrees(1.02 * 299_792_458.0 / freq_hz / dish_m) * 3600.0
    d = shift_limit_arcsec(freq_hz, dish_m)
    gauss = lambda r, c: np.exp(-4 * np.log(2) * (r - c) ** 2 / fwhm ** 2)  # noqa: E731  (1-D cut through both beams)
    r = np.linspace(-fwhm / 2, fwhm / 2, 2001)
    assert np.max(np.abs(np.log(gauss(r, d) / gauss(r, 0.0)))) == pytest.approx(0.01, rel=0.01)
    assert PHASE_SHIFT_PB_FRACTION == pytest.approx(0.0036, rel=0.01)
    for bad in ((0.0, 25.0), (1e9, 0.0), (float("nan"), 25.0)):
        assert shift_limit_arcsec(*bad) == 0.001  # unknown beam: nothing re-phased


def test_phase_shift_plan_shifts_the_ebs_off_eb1_and_refuses_beyond_the_limit() -> None:
    c0 = (150.0, 40.0)
    north = lambda arcsec: (150.0, 40.0 + arcsec / 3600.0)  # noqa: E731
    plan = phase_shift_plan(["a", "b", "c", "d"], [c0, north(0.5), north(0.0005), north(-1.2)], 1.5)
    assert plan.problem == "" and plan.shifted == (1, 3)
    assert plan.shifts_arcsec[0] == 0.0 and plan.shifts_arcsec[2] == 0.0  # 0.5 mas: one pointing, kept
    assert plan.shifts_arcsec[1] == pytest.approx(0.5, rel=1e-6) and plan.shifts_arcsec[3] == pytest.approx(1.2, rel=1e-6)
    plan = phase_shift_plan(["a", "b"], [c0, (150.0 + 0.4 / 3600 / np.cos(np.radians(40)), 40.0)], 1.5)
    assert plan.shifted == (1,) and plan.shifts_arcsec[1] == pytest.approx(0.4, rel=1e-4)  # east: on the sky
    plan = phase_shift_plan(["a", "b", "c"], [c0, north(0.5), north(2.0)], 1.5)
    assert plan.shifted == () and "\n" not in plan.problem
    assert plan.problem.startswith("execution block 3 (c): phase centre 2 arcsec from execution block 1's (a), "
                                   "more than the 1.5 arcsec a joint run re-phases (0.36% of the primary beam"), plan
    assert phase_shift_plan(["a"], [c0], 1.5) == phase_shift_plan(["a"], [c0], 0.001)  # one EB: nothing to do


@pytest.mark.parametrize("ra, dec", [(150.0, 40.0), (359.9999999999, -0.5), (0.0, -89.99), (12.3456789, 7.654321)])
def test_casa_direction_round_trips_within_a_fraction_of_a_mas(ra: float, dec: float) -> None:
    from astropy.coordinates import SkyCoord

    from selfcal_batch.selfcal.ebjoint import casa_direction

    text = casa_direction(ra, dec)
    frame, r, d = text.split()
    back = SkyCoord(r, d, frame="fk5")
    assert frame == "J2000" and not r.startswith("24")
    assert angular_separation_arcsec(ra, dec, back.ra.deg, back.dec.deg) < 0.2e-3


@pytest.mark.parametrize("n, width, want", [(4, 1, 4), (4, 2, 2), (4, 3, 1), (64, 5, 12), (2, 4, 1)])
def test_working_copy_channels(n: int, width: int, want: int) -> None:
    assert working_nchan(n, width) == want


def test_layout_problem_on_generated_fields() -> None:
    a, b = Path("a.ms"), Path("b.ms")
    found = {"a.ms": _eb(T0), "b.ms": _eb(T0 + DAY), "s.ms": _eb(T0, shift_arcsec=5.0), "c.ms": _eb(T0, nchan=(8, 8)),
             "bad.ms": "cannot read its fields: boom"}
    assert layout_problem((a, b), ["1", "1"], found, 1) == ""
    assert layout_problem((a, b), ["T2", "2"], found, 1) == ""  # by name or id
    line = layout_problem((a, Path("s.ms")), ["2", "2"], found, 1)
    assert line.startswith("execution block 2 (s.ms): phase centre 5 arcsec")
    assert layout_problem((a, Path("s.ms")), ["1", "1"], found, 1) == ""  # the first target is not shifted
    # 4 vs 8 channels: startup averages c.ms x2 (channel_note says so), no refusal any more
    assert layout_problem((a, Path("c.ms")), ["1", "1"], found, 1) == ""
    assert channel_note((a, Path("c.ms")), ["1", "1"], found, 1).startswith("averaged to 4 channels per spw "
                                                                             "in the working copies (eb1 x2/2;")
    assert channel_note((a, b), ["1", "1"], found, 1) == ""  # equal counts: nothing to say
    assert layout_problem((a, Path("c.ms")), ["1", "1"], found, 2) == ""  # 2 vs 4: x2 again
    found["c6.ms"] = _eb(T0, nchan=(6, 6))
    line = layout_problem((a, Path("c6.ms")), ["1", "1"], found, 1)
    assert "different channel counts (a.ms: 4,4; c6.ms: 6,6) that cannot be averaged" in line
    assert "c6.ms spw 0 has 6 channels, not a multiple of 4" in line and "\n" not in line
    assert channel_note((a, Path("c6.ms")), ["1", "1"], found, 1) == ""  # refused, not averaged
    found["c5.ms"] = _eb(T0, nchan=(5, 5))
    line = layout_problem((a, Path("c5.ms")), ["1", "1"], found, 1)
    assert "channel counts" in line and "cannot be averaged" in line  # 4 and 5: no common count
    assert layout_problem((a, Path("c5.ms")), ["1", "1"], found, 2) == ""  # 2 and 2 (a partial bin is dropped)
    assert layout_problem((a, Path("c6.ms")), ["1", "1"], found, 1, spw="0") == ""  # spw selection: startup's
    assert layout_problem((a, Path("bad.ms")), ["1", "1"], found, 1) == ""  # reported by the table check
    assert layout_problem((a, b), ["J*", "1"], found, 1) == ""  # a CASA pattern: left to CASA
    # tester #6: with the beam known (6 GHz, 25 m: limit 1.52"), 0.5" off is re-phased, 5" refused
    beam = {"freq_max_hz": 6e9, "dish_m": 25.0}
    found["a6.ms"] = [f | beam for f in _eb(T0)]
    found["s05.ms"] = [f | beam for f in _eb(T0 + DAY, shift_arcsec=0.5)]
    found["s5.ms"] = [f | beam for f in _eb(T0 + DAY, shift_arcsec=5.0)]
    line, shifts = layout_check((Path("a6.ms"), Path("s05.ms")), ["2", "2"], found, 1)
    assert line == "" and shifts[0] == 0.0 and shifts[1] == pytest.approx(0.5, rel=1e-6)
    assert layout_check((Path("a6.ms"), Path("s05.ms")), ["1", "1"], found, 1) == ("", (0.0, 0.0))
    line = layout_problem((Path("a6.ms"), Path("s5.ms")), ["2", "2"], found, 1)
    assert line.startswith("execution block 2 (s5.ms): phase centre 5 arcsec") and "1.52 arcsec" in line, line
    assert layout_problem((a, Path("s05.ms")), ["2", "2"], found, 1).startswith(  # one EB's beam unknown: 1 mas
        "execution block 2 (s05.ms): phase centre 0.5 arcsec")
    # tester s6 G5: RR LL with full polarisation, refused by the startup, now also by the dry-run
    found["full.ms"] = _eb(T0, corr=("RR", "RL", "LR", "LL"))
    line = layout_problem((a, Path("full.ms")), ["1", "1"], found, 1)
    assert line.startswith("the execution blocks have different correlation products "
                           "(a.ms: RR,LL; full.ms: RR,RL,LR,LL)"), line
    found["full2.ms"] = _eb(T0 + DAY, corr=("RR", "RL", "LR", "LL"))
    assert layout_problem((Path("full.ms"), Path("full2.ms")), ["1", "1"], found, 1) == ""


def test_eb_layout_gives_the_shifts_of_runnable_joint_datasets(tmp_path: Path) -> None:
    beam = {"freq_max_hz": 6e9, "dish_m": 25.0}
    found = {"a.ms": [f | beam for f in _eb(T0)], "s.ms": [f | beam for f in _eb(T0 + DAY, shift_arcsec=0.5)],
             "far.ms": [f | beam for f in _eb(T0 + DAY, shift_arcsec=5.0)]}
    cfg = PipelineConfig.from_dict({"field": "T2"})
    ds = [DatasetSpec("near", Path("a.ms"), cfg, ebs=(Path("a.ms"), Path("s.ms"))),
          DatasetSpec("far", Path("a.ms"), cfg, ebs=(Path("a.ms"), Path("far.ms"))),
          DatasetSpec("same", Path("a.ms"), PipelineConfig.from_dict({"field": "T1"}), ebs=(Path("a.ms"), Path("s.ms")))]
    problems, shifts = eb_layout(ds, reader=lambda paths: found)
    assert list(problems) == ["far"] and "5 arcsec" in problems["far"]
    assert list(shifts) == ["near"] and shifts["near"][1] == pytest.approx(0.5, rel=1e-6)


def test_selected_fields() -> None:
    fields = _eb(T0)
    assert [f["id"] for f in selected_fields(fields, "1,T2")] == [1, 2]
    assert selected_fields(fields, "nope") is None and selected_fields(fields, "T*") is None
    assert len(selected_fields(fields, "")) == 3


def test_damaged_eb_is_one_line_naming_it() -> None:
    line = one_line_per_ms("/d/eb2.ms", ["/d/eb2.ms: ANTENNA table is missing", "/d/eb2.ms: FIELD table is missing",
                                         "/d/eb2.ms: no DATA column"], " (execution block 2 of 2)")
    assert line == ("/d/eb2.ms: ANTENNA table is missing; FIELD table is missing; no DATA column "
                    "(execution block 2 of 2)")


@pytest.mark.parametrize("entry, key, needle", [
    ({"group": "name", "ms": "x.ms"}, "group", "only with targets"),
    ({"group": "name", "ms": "x.ms", "targets": "science"}, "group", "several MSs"),
    ({"group": "field", "ms": "*.ms", "targets": "science"}, "group", 'expected "name" or "position"'),
    ({"group": 1, "ms": "*.ms", "targets": "science"}, "group", "expected"),
    ({"group_tolerance_arcsec": 2.0, "ms": "*.ms", "targets": "science"}, "group_tolerance_arcsec", "only with group"),
    ({"group": "position", "group_tolerance_arcsec": 0, "ms": "*.ms", "targets": "science"},
     "group_tolerance_arcsec", "> 0"),
    ({"group": "position", "group_tolerance_arcsec": "1arcsec", "ms": ["a", "b"], "targets": "science"},
     "group_tolerance_arcsec", "number of arcsec"),
])
def test_group_keys_validated(entry: dict, key: str, needle: str) -> None:
    kw, problem = parse_group_keys(entry)
    assert kw == {} and problem is not None and problem[0] == key and needle in problem[1] and key in problem[1]


def test_group_keys_accepted() -> None:
    assert parse_group_keys({"group": "position", "group_tolerance_arcsec": 3, "ms": ["a", "b"],
                             "targets": "science"}) == ({"group": "position", "group_tolerance_arcsec": 3.0}, None)
    assert parse_group_keys({"ms": "a.ms"}) == ({}, None)


def _specs(tmp_path: Path, order: list[str], **kw) -> list[DatasetSpec]:
    cfg = PipelineConfig.from_dict({"imsize": 128})
    return [DatasetSpec(n, tmp_path / f"{n}.ms", cfg, index=0, targets=("science",), min_target_time_s=10.0,
                        group="name", group_tolerance_arcsec=1.0, **kw) for n in order]


def test_group_datasets_make_one_joint_dataset_per_target(tmp_path: Path) -> None:
    found = {str(tmp_path / "late.ms"): _eb(T0 + 2 * DAY), str(tmp_path / "early.ms"): _eb(T0),
             str(tmp_path / "shifted.ms"): _eb(T0 + DAY, shift_arcsec=20.0)}
    other = DatasetSpec("other", tmp_path / "o.ms", PipelineConfig.from_dict({}), index=1)
    expanded, _skipped = expand_datasets([*_specs(tmp_path, ["late", "early"], entry_name="svy"), other],
                                         reader=lambda paths: found)
    out = group_datasets(expanded)
    assert [d.name for d in out] == ["svy__T1", "svy__T2", "other"]
    for d, fid in zip(out[:2], ("1", "2"), strict=True):
        assert d.ok and d.ebs == (tmp_path / "early.ms", tmp_path / "late.ms") and d.ms == tmp_path / "early.ms"
        assert d.config.eb_fields == (fid, fid) and d.config.field == ""
        assert [t["ms"] for t in d.target["ebs"]] == [str(tmp_path / "early.ms"), str(tmp_path / "late.ms")]
    # a shifted second pointing: that target fails with one line, the other target and entries run
    expanded, _ = expand_datasets(_specs(tmp_path, ["early", "shifted"]), reader=lambda paths: found)
    out = group_datasets(expanded)
    assert [d.name for d in out] == ["T1", "T2"]  # no entry name: the field name
    assert out[0].ok and len(out[0].ebs) == 2
    assert not out[1].ok and "20 arcsec apart" in out[1].error and str(tmp_path / "shifted.ms") in out[1].error
    # a target in one MS only is an ordinary dataset
    solo = {**found, str(tmp_path / "late.ms"): _eb(T0 + 2 * DAY, names=("T1", "U2"))}
    out = group_datasets(expand_datasets(_specs(tmp_path, ["late", "early"]), reader=lambda paths: solo)[0])
    assert [(d.name, len(d.ebs)) for d in out] == [("T1", 2), ("T2", 0), ("U2", 0)]
    assert out[1].config.field == "2" and out[1].ms == tmp_path / "early.ms"


@pytest.mark.parametrize("cal_position", [0, 1, 2])
def test_calibrator_only_ms_in_a_glob_is_skipped_not_failed(tmp_path: Path, cal_position: int) -> None:
    """Tester s6 M3: a glob of EBs also picks up a calibrator-only MS (e.g. the flux-scale
    run); it is a skipped MS with its reasons, not a failed dataset, wherever it sorts. One
    MS alone without targets, or an entry none of whose MSs has a target, still fails."""
    cal_only = [_field(0, "3C286", 30.5, T0, ("CALIBRATE_BANDPASS", "CALIBRATE_FLUX")),
                _field(1, "J1331", 30.0, T0 + 60, ("CALIBRATE_PHASE",))]
    found = {str(tmp_path / "a.ms"): _eb(T0), str(tmp_path / "b.ms"): _eb(T0 + DAY),
             str(tmp_path / "cal.ms"): cal_only}
    order = ["a", "b"]
    order.insert(cal_position, "cal")
    expanded, skipped = expand_datasets(_specs(tmp_path, order), reader=lambda paths: found)
    out = group_datasets(expanded)
    assert [(d.name, len(d.ebs), d.ok) for d in out] == [("T1", 2, True), ("T2", 2, True)]
    cal = dict(skipped)[str(tmp_path / "cal.ms")]
    assert cal.startswith("no target field left: 3C286: not a science target (intents CALIBRATE_BANDPASS")
    # every MS of the entry calibrator-only: failed, each naming its MS
    found2 = {**found, str(tmp_path / "a.ms"): cal_only, str(tmp_path / "b.ms"): cal_only}
    out2, skipped2 = expand_datasets(_specs(tmp_path, order), reader=lambda paths: found2)
    assert len(out2) == 3 and not any(d.ok for d in out2) and not any(k.endswith(".ms") for k, _ in skipped2)
    assert all(str(d.ms) in d.error and "no target field left" in d.error for d in out2)
    # a damaged MS next to good ones is still a failure naming it
    found3 = {**found, str(tmp_path / "cal.ms"): "cannot read its fields: FIELD table is missing"}
    out3 = group_datasets(expand_datasets(_specs(tmp_path, order), reader=lambda paths: found3)[0])
    bad = [d for d in out3 if not d.ok]
    assert len(bad) == 1 and "cal.ms: cannot read its fields" in bad[0].error


def test_antenna_absent_from_one_eb_is_not_judged_bad_in_the_other() -> None:
    """Generated refant table: 6 antennas, 2 EBs (observation ids), EB 2 three times longer;
    antennas 4 and 5 have no data in EB 2 (their solutions there are flagged). Counted over
    every row they look bad (0.25 good) and would be flagged in both EBs; counted over the EBs
    where they have data they are good. An antenna failing where it has data still counts."""
    from selfcal_batch.selfcal.acceptance import antennas_to_flag
    from selfcal_batch.selfcal.refant import good_fractions

    names = [f"ea{k:02d}" for k in range(6)]
    rows = [(a, 0) for _ in range(2) for a in range(6)] + [(a, 1) for _ in range(6) for a in range(6)]
    a1 = np.array([a for a, _ in rows])
    obs = np.array([o for _, o in rows])
    flags = np.zeros((len(rows), 1, 2), bool)
    flags[(obs == 1) & (a1 >= 4)] = True  # absent from EB 2
    flags[(obs == 0) & (a1 == 3)] = True  # antenna 3 fails in EB 1, where it has data
    present = [set(names), set(names[:4])]
    plain = good_fractions(a1, flags, names)
    assert plain["ea04"] == pytest.approx(0.25) and plain["ea00"] == 1.0
    per_eb = good_fractions(a1, flags, names, obs, present)
    assert per_eb["ea04"] == per_eb["ea05"] == 1.0 and per_eb["ea00"] == 1.0
    assert per_eb["ea03"] == pytest.approx(0.75)  # its EB-1 failures still count
    many = {f"x{k}": 1.0 for k in range(10)}
    assert antennas_to_flag({**many, **{k: v for k, v in plain.items()}}) == ["ea04", "ea05"]
    assert antennas_to_flag({**many, **per_eb}) == []
