"""Survey inputs as they arrive (issue 18, tester s7 break 8): the same EB twice, fully flagged
targets and EBs, globs through links, reordered EB lists. Pure: field records are generated,
no MS is read (tests/integration/test_survey_eb_identity.py reads generated MSs)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from selfcal_batch.campaign.ebs import eb_identity, flagged_eb_problem, layout_problem, same_eb_problem
from selfcal_batch.campaign.manifest import parse_manifest, unique_by_real_path
from selfcal_batch.campaign.targets import no_data_reason, select_targets
from selfcal_batch.ms.fields import summarise

T0 = 5.2108e9  # MJD seconds (2024)


def _field(k: int, name: str, start: float, *, rows: int = 100, total: int | None = None,
           obs: tuple[float, float] | None = None, tel: str = "VLA") -> dict:
    t0, t1 = obs or (start - 60.0, start + 400.0)
    return {"id": k, "name": name, "intents": ["OBSERVE_TARGET"], "rows": rows,
            "rows_total": rows if total is None else total, "time_on_source_s": 300.0 if rows else 0.0,
            "ra_deg": 150.25, "dec_deg": 40.0, "scans": 3, "start_s": start if rows else None,
            "end_s": start + 300.0 if rows else None, "spws": [[0, 4]], "correlations": {"0": ["RR", "LL"]},
            "observations": [[tel, t0, t1]]}


def test_flagged_target_keeps_its_intents_and_says_flagged() -> None:
    """A field whose rows are all FLAG_ROW keeps the intents of its (flagged) rows and is
    skipped as 'no unflagged data (100% ...)', not 'not a science target' (s7 #4)."""
    rng = np.random.default_rng(7)
    n = int(rng.integers(40, 80))
    fid = np.repeat([0, 1], n)
    flag_row = fid == 1  # the target's rows, every one flagged
    cols = {"FIELD_ID": fid, "TIME": np.tile(np.arange(n) * 10.0, 2) + T0, "ANTENNA1": np.zeros(2 * n, int),
            "ANTENNA2": np.ones(2 * n, int), "DATA_DESC_ID": np.zeros(2 * n, int),
            "INTERVAL": np.full(2 * n, 10.0), "EXPOSURE": np.full(2 * n, 10.0), "STATE_ID": fid,
            "FLAG_ROW": flag_row}
    out = summarise(["CAL", "TGT"], np.zeros((2, 1, 2)), ["CALIBRATE_PHASE#X", "OBSERVE_TARGET#ON_SOURCE"], cols)
    assert out[1]["intents"] == ["OBSERVE_TARGET"] and out[1]["rows"] == 0 and out[1]["rows_total"] == n
    assert out[1]["start_s"] is None and out[0]["end_s"] == T0 + (n - 1) * 10.0
    choice = select_targets(out, ("science",), 0.0)
    assert choice.selected == () and dict(choice.skipped)["TGT"] == f"no unflagged data (100% of its {n} rows flagged)"
    assert no_data_reason({"rows": 0, "rows_total": 0}) == "no unflagged data (no rows)"


def test_same_eb_identity_names_both_mss() -> None:
    """A copy (same observation time range, telescope and target time stamps) is refused in
    one line naming both MSs; another EB (another day) or another telescope is not."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        start = T0 + float(rng.uniform(0, 1e6))
        a, copy = _field(1, "T", start), _field(1, "T", start)
        later = _field(1, "T", start + float(rng.uniform(3600, 1e6)))
        ebs = [Path("/d/eb1.ms"), Path("/d/eb1_copy.ms"), Path("/d/eb2.ms")]
        ids = [eb_identity([a]), eb_identity([copy]), eb_identity([later])]
        line = same_eb_problem(ebs, ids)
        assert line.startswith("/d/eb1_copy.ms is the same execution block as /d/eb1.ms: same observation "
                               "time range "), line
        assert "UTC (VLA)" in line and line.endswith("list it once") and "\n" not in line
        assert same_eb_problem([ebs[0], ebs[2]], [ids[0], ids[2]]) == ""
        other_tel = eb_identity([_field(1, "T", start, tel="EVLA")])
        assert same_eb_problem(ebs[:2], [ids[0], other_tel]) == ""
    assert eb_identity([]) is None and eb_identity([{**_field(1, "T", T0), "observations": []}]) is None
    assert same_eb_problem([Path("a"), Path("b")], [None, None]) == ""


def test_layout_problem_refuses_a_copy_and_a_flagged_eb() -> None:
    """The up-front joint check (dry-run and run): a fully flagged EB first (s7 #5), then the
    same EB twice (s7 #3a); distinct EBs pass."""
    ebs = (Path("/d/a.ms"), Path("/d/b.ms"))
    cal = {**_field(0, "CAL", T0), "intents": ["CALIBRATE_PHASE"]}
    good = [cal, _field(1, "T", T0 + 500)]
    other = [{**cal, "observations": [["VLA", T0 + 86400, T0 + 87000]]}, _field(1, "T", T0 + 86900)]
    flagged = [cal, _field(1, "T", T0 + 86900, rows=0, total=812)]
    assert layout_problem(ebs, ["T", "T"], {"/d/a.ms": good, "/d/b.ms": other}, 1) == ""
    line = layout_problem(ebs, ["T", "1"], {"/d/a.ms": good, "/d/b.ms": good}, 1)
    assert line.startswith("/d/b.ms is the same execution block as /d/a.ms"), line
    line = layout_problem(ebs, ["T", "T"], {"/d/a.ms": good, "/d/b.ms": flagged}, 1)
    assert line == ("/d/b.ms (execution block 2 of 2): no unflagged data in field T (100% of its 812 rows "
                    "flagged): remove it from ms to self-calibrate the other EBs")
    # no selection: every field with rows; an MS whose every field is flagged is refused too
    dead = [{**f, "rows": 0, "start_s": None, "end_s": None} for f in flagged]
    assert flagged_eb_problem(ebs, ["", ""], {"/d/a.ms": good, "/d/b.ms": dead}).startswith("/d/b.ms (execution")
    assert flagged_eb_problem(ebs, ["", ""], {"/d/a.ms": good, "/d/b.ms": flagged}) == ""  # CAL has data
    assert flagged_eb_problem(ebs, ["T", "T"], {"/d/a.ms": good, "/d/b.ms": "cannot read"}) == ""


def test_glob_through_a_link_is_used_once(tmp_path: Path, fake_ms, caplog) -> None:
    """A glob matching an MS and a symbolic link to it gives one dataset (the real directory),
    with a warning naming both paths (s7 #3b); links to other MSs are kept."""
    d = tmp_path / "ebs"
    a, b = fake_ms(d / "ebA.ms"), fake_ms(d / "ebB.ms")
    (d / "a_link.ms").symlink_to("ebA.ms")
    (d / "zz_link.ms").symlink_to(a)
    outside = fake_ms(tmp_path / "elsewhere" / "ebC.ms")
    (d / "ebC_link.ms").symlink_to(outside)
    kept, dropped = unique_by_real_path(sorted(d.glob("*.ms")))
    assert kept == [d / "ebA.ms", d / "ebB.ms", d / "ebC_link.ms"]
    assert dropped == [(d / "a_link.ms", d / "ebA.ms"), (d / "zz_link.ms", d / "ebA.ms")]
    assert b in kept
    manifest = tmp_path / "m.toml"
    manifest.write_text('[[datasets]]\nms = "ebs/*.ms"\nfield = "T"\n')
    with caplog.at_level(logging.WARNING, logger="selfcal_batch.campaign"):
        camp = parse_manifest(manifest.read_text(), manifest)
    assert [x.name for x in camp.datasets] == ["ebA", "ebB", "ebC_link"]
    assert any("ebA.ms twice (also as" in r.getMessage() and "a_link.ms" in r.getMessage() for r in caplog.records)


def test_reordered_joint_list_is_said_as_reordered(tmp_path: Path, fake_ms) -> None:
    """The runner's redo reason for a joint dataset whose EBs were listed in another order
    says so (s7 #11), not 'input MS changed' of the new first EB."""
    import json

    from selfcal_batch.config import PipelineConfig
    from selfcal_batch.ms.checksum import input_fingerprint
    from selfcal_batch.pipeline.runner import _inputs_change

    a, b = fake_ms(tmp_path / "a.ms"), fake_ms(tmp_path / "b.ms")
    (b / "table.dat").write_bytes(b"another table, another size")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"input_fingerprint": input_fingerprint(a),
                                 "eb_fingerprints": {str(p): input_fingerprint(p) for p in (a, b)}}))
    cfg = PipelineConfig()
    assert _inputs_change(state, a, (a, b), cfg) == ""
    line = _inputs_change(state, b, (b, a), cfg)
    assert line.startswith("the execution blocks were reordered since the last run (now b.ms, a.ms"), line
    assert _inputs_change(state, b, (), cfg).startswith("input MS changed since the last run")


@pytest.mark.parametrize("sel", ["T", "1"])
def test_selected_flagged_field_by_name_or_id(sel: str) -> None:
    ebs = (Path("/d/a.ms"), Path("/d/b.ms"))
    flagged = [_field(0, "C", T0), _field(1, "T", T0, rows=0, total=10)]
    assert "no unflagged data in field T" in flagged_eb_problem(ebs, [sel, sel], {"/d/a.ms": flagged, "/d/b.ms": flagged})


def _grouped(tmp_path: Path, order: list[str]) -> list:
    from selfcal_batch.campaign.manifest import DatasetSpec
    from selfcal_batch.config import PipelineConfig

    cfg = PipelineConfig.from_dict({"imsize": 128})
    return [DatasetSpec(n, tmp_path / f"{n}.ms", cfg, index=0, targets=("science",), min_target_time_s=10.0,
                        group="name", group_tolerance_arcsec=1.0, entry_name="svy") for n in order]


def _eb_fields(start: float, *, flagged: str = "", intents: bool = True) -> list[dict]:
    cal = {**_field(0, "CAL", start), "intents": ["CALIBRATE_PHASE"] if intents else []}
    out = [cal]
    for k, name in ((1, "T1"), (2, "T2")):
        f = _field(k, name, start + 60 * k, rows=0 if name == flagged else 100, total=640)
        out.append({**f, "dec_deg": 40.0 + k, "intents": f["intents"] if intents else []})
    return out


@pytest.mark.parametrize("order", [["a", "b", "c"], ["c", "b", "a"], ["b", "c", "a"]])
def test_group_notes_name_the_eb_left_out(tmp_path: Path, order: list[str]) -> None:
    """s7 #4: an EB whose T1 is fully flagged is left out of T1's group (the group continues
    with the others) and T1's dataset notes it; T2 uses every EB and has no note. s7 #8: an
    intent-less MS in a targets = "science" group is left out of every group, each saying
    why (it used to become a failed pseudo-dataset while the targets ran silently without it)."""
    from selfcal_batch.campaign.groups import group_datasets
    from selfcal_batch.campaign.targets import expand_datasets

    day = 86400.0
    found = {str(tmp_path / "a.ms"): _eb_fields(T0), str(tmp_path / "b.ms"): _eb_fields(T0 + day, flagged="T1"),
             str(tmp_path / "c.ms"): _eb_fields(T0 + 2 * day)}
    expanded, skipped = expand_datasets(_grouped(tmp_path, order), reader=lambda paths: found)
    out = {d.name: d for d in group_datasets(expanded)}
    assert sorted(out) == ["svy__T1", "svy__T2"] and all(d.ok for d in out.values())
    t1, t2 = out["svy__T1"], out["svy__T2"]
    assert t1.ebs == (tmp_path / "a.ms", tmp_path / "c.ms") and len(t2.ebs) == 3
    assert t1.notes == (f"execution block {tmp_path / 'b.ms'} not included: field T1: no unflagged data "
                        "(100% of its 640 rows flagged)",)
    assert t2.notes == () and t1.to_dict()["notes"] == list(t1.notes)
    assert ("%s: T1" % (tmp_path / "b.ms"), "no unflagged data (100% of its 640 rows flagged)") in skipped
    # an MS without intents in a "science" group: left out of both groups, with the reason
    found[str(tmp_path / "b.ms")] = _eb_fields(T0 + day, intents=False)
    expanded, skipped = expand_datasets(_grouped(tmp_path, order), reader=lambda paths: found)
    out = {d.name: d for d in group_datasets(expanded)}
    assert sorted(out) == ["svy__T1", "svy__T2"] and all(d.ok and len(d.ebs) == 2 for d in out.values())
    for d in out.values():
        assert len(d.notes) == 1 and d.notes[0].startswith(
            f"execution block {tmp_path / 'b.ms'} not included: targets = \"science\" needs scan intents")
    assert any(w == str(tmp_path / "b.ms") and "needs scan intents" in why for w, why in skipped)


def test_left_out_notes_only_for_the_groups_field() -> None:
    from selfcal_batch.campaign.groups import left_out_notes

    skips = (("/x/b.ms", "CAL", "not a science target (intents CALIBRATE_PHASE)"),
             ("/x/b.ms", "T1", "20 s on source < min_target_time_s = 60 s"), ("/x/c.ms", "", "no intents"))
    assert left_out_notes(skips, {"T2"}, {"/x/a.ms", "/x/b.ms", "/x/c.ms"}) == ()
    assert left_out_notes(skips, {"T2"}, {"/x/a.ms"}) == ("execution block /x/c.ms not included: no intents",)
    assert left_out_notes(skips, {"T1"}, {"/x/a.ms"}) == (
        "execution block /x/b.ms not included: field T1: 20 s on source < min_target_time_s = 60 s",
        "execution block /x/c.ms not included: no intents")


def test_result_lists_the_ebs_and_notes_as_later_csv_columns() -> None:
    """s7 #12: the target's datasets.csv row names its EBs (';'-joined) and the notes; both are
    later columns (existing files keep their layout)."""
    from selfcal_batch import contract
    from selfcal_batch.campaign.progress import _csv_value

    res = contract.DatasetResult(name="t", ms="/x/a.ms", eb_paths=["/x/a.ms", "/x/b.ms"], notes=["n1"])
    row = res.to_dict()
    assert _csv_value(row["eb_paths"]) == "/x/a.ms;/x/b.ms" and _csv_value(row["notes"]) == "n1"
    assert {"eb_paths", "notes"} <= set(contract.LATER_FIELDS) and "eb_paths" not in contract.CSV_COLUMNS


def test_report_ms_line_names_every_eb() -> None:
    from selfcal_batch.report.html import ms_text

    assert ms_text("/x/a.ms", ["/x/a.ms", "/x/b.ms"]) == "2 execution blocks: /x/a.ms; /x/b.ms"
    assert ms_text("/x/a.ms", []) == "/x/a.ms" and ms_text("/x/a.ms", ["/x/a.ms"]) == "/x/a.ms"


def test_list_with_a_link_names_both_paths(tmp_path: Path, fake_ms) -> None:
    """s7 #3: an explicit list (with or without group) holding an MS and a link to it is
    refused naming both paths (the fields are never read)."""
    a = fake_ms(tmp_path / "eb1.ms")
    (tmp_path / "link.ms").symlink_to(a)
    for extra in ("", 'targets = "science"\ngroup = "name"\n'):
        m = tmp_path / "m.toml"
        m.write_text(f'[[datasets]]\nname = "j"\nms = ["eb1.ms", "link.ms"]\n{extra}')
        d = parse_manifest(m.read_text(), m).datasets[0]
        assert not d.ok and f"ms: the same execution block is listed twice: {tmp_path / 'link.ms'} is {a}" in d.error
