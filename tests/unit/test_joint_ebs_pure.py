"""Pure parts of joint EBs (issue 18, item 2): the alignment kept in front of scratch chains,
the channel-count refusal, the result's per-EB rows and their report rows."""
from __future__ import annotations

from pathlib import Path

from selfcal_batch.pipeline.eb_records import eb_rows as result_eb_rows
from selfcal_batch.pipeline.steps_joint import channel_count_problem
from selfcal_batch.report.dataset_page import eb_rows
from selfcal_batch.selfcal.chaining import chain_after, pre_apply_chain

ALIGN = {"step": "align_ebs", "table": "align.G", "spwmap": []}
P0 = {"step": "p0", "table": "p0.G", "spwmap": []}


def test_alignment_stays_in_front_of_scratch_steps():
    assert pre_apply_chain("p1", [ALIGN, P0]) == [ALIGN]  # p1 discards p0, not the alignment
    assert chain_after("p1", [ALIGN, P0], {"step": "p1"}) == [ALIGN, {"step": "p1"}]
    assert pre_apply_chain("p2", [ALIGN, P0]) == [ALIGN, P0]
    assert pre_apply_chain("p1", [P0]) == []  # one MS: as before


def test_channel_count_problem_names_every_eb():
    assert channel_count_problem([Path("a.ms"), Path("b.ms")], [[4, 4], [4, 4]]) == ""
    assert channel_count_problem([Path("a.ms"), Path("b.ms")], [[4, 4], [8, 8]]) == ""  # averaged x2 by startup
    msg = channel_count_problem([Path("a.ms"), Path("b.ms")], [[4, 4], [6, 6]])
    assert "a.ms: 4,4" in msg and "b.ms: 6,6" in msg and "b.ms spw 1 has 6 channels" in msg and "\n" not in msg


def _state(accepted: bool) -> dict:
    return {"steps": {"align_ebs": {"status": "done", "accepted": accepted,
                                    "per_eb": [{"scale": 0.98, "phase_rms_deg": 37.0},
                                               {"scale": 1.02, "phase_rms_deg": 29.0}],
                                    "flagged_solutions_per_eb": [0.0, 0.537]},
                      "p0": {"status": "done", "flagged_solutions_per_eb": [0.0, 0.37]},
                      "p1": {"status": "skipped", "reason": "stopped"}},
            "ebs": [{"ms": "/d/eb1.ms", "input_spws": [0, 1], "spws": [0, 1], "nchan": [4, 4],
                     "final_ms": "/o/final/eb0.ms", "flagged_fraction": 0.01},
                    {"ms": "/d/eb2.ms", "input_spws": [1, 2], "spws": [0, 1], "nchan": [4, 4],
                     "final_ms": "/o/final/eb1.ms", "flagged_fraction": 0.02, "phase_shift_arcsec": 0.5,
                     "phase_centre": "J2000 10h00m00.00000s +40d00m00.0000s"}]}


def test_result_rows_carry_the_alignment_only_when_kept():
    kept = result_eb_rows(_state(True))
    assert [r["align_gain"] for r in kept] == [0.98, 1.02]
    assert kept[1]["align_flux_factor"] == round(1 / 1.02 ** 2, 5) and kept[0]["align_phase_rms_deg"] == 37.0
    reverted = result_eb_rows(_state(False))
    assert [r["align_flux_factor"] for r in reverted] == [1.0, 1.0]
    assert result_eb_rows({}) == []
    # tester s7 #6: how far each EB's working copy was re-phased (0.0: not; older states: 0.0)
    assert [r["phase_shift_arcsec"] for r in kept] == [0.0, 0.5]
    assert [r["phase_centre"] for r in kept] == [None, "J2000 10h00m00.00000s +40d00m00.0000s"]


def test_report_rows_say_the_channel_averaging():
    state = _state(True)
    state["ebs"][1]["channel_averaging"] = {"input_nchan": [8, 8], "chanbin": 1, "factor": [2, 2],
                                            "delivered_nchan": [8, 8], "delivered_resolution": "input"}
    state["ebs"][0]["channel_averaging"] = {"input_nchan": [4, 4], "chanbin": 1, "factor": [1, 1],
                                            "delivered_nchan": [4, 4]}
    rows = eb_rows({"ebs": result_eb_rows(state)})
    assert rows[0]["nchan"] == "4,4" and rows[1]["nchan"] == "8,8 → 4,4 (final MS: 8,8)"


def test_report_rows():
    rows = eb_rows({"ebs": result_eb_rows(_state(True))})
    assert rows[1]["spws"] == "1,2 → 0,1" and rows[1]["final_ms"] == "eb1.ms"
    assert rows[0]["align"] == f"{1 / 0.98 ** 2:.4f}" and rows[1]["flagged"] == "2.0%"
    # each EB's share of the failed solutions, per step that solved (pipeline/eb_solutions.py)
    assert rows[0]["solutions_flagged"] == "align_ebs 0%, p0 0%"
    assert rows[1]["solutions_flagged"] == "align_ebs 54%, p0 37%"
    assert [r["shift"] for r in rows] == ["–", "0.5 arcsec"]
    assert eb_rows({"ebs": []}) == [] and eb_rows(None) == [] and eb_rows([1]) == []


def test_steps_for_adds_alignment_only_for_joint_ebs():
    from selfcal_batch.config import DEFAULT_STEPS
    from selfcal_batch.pipeline.registry import run_order, steps_for

    assert "align_ebs" not in DEFAULT_STEPS
    assert steps_for(DEFAULT_STEPS, joint=False) == run_order(DEFAULT_STEPS)  # one MS: as before
    joint = steps_for(DEFAULT_STEPS, joint=True)
    assert joint.index("select_refant") < joint.index("align_ebs") == joint.index("p0") - 1
    assert steps_for(["startup", "align_ebs", "p0"], joint=False) == ["startup", "p0"]
    assert steps_for(["startup", "test_image"], joint=True) == ["startup", "test_image"]  # no ladder


def test_apply_skips_joint_datasets():
    from selfcal_batch.campaign.apply import plan_dataset

    state = {"chain": [ALIGN, P0], "config": {}}
    joint = plan_dataset("j", {"status": "finished", "ms": "/d/eb1.ms", "ebs": [{"ms": "/d/eb1.ms"}]}, state)
    assert joint.skip.startswith("joint execution blocks")
    assert not plan_dataset("one", {"status": "finished", "ms": "/d/x.ms", "ebs": []}, state).skip


def test_changed_eb_redoes_the_joint_dataset(tmp_path, fake_ms):
    import json
    import os

    from selfcal_batch.ms.checksum import input_fingerprint
    from selfcal_batch.pipeline.runner import eb_change

    def bool_eb_change(state, ebs):
        return bool(eb_change(state, ebs))

    a, b = fake_ms(tmp_path / "a.ms"), fake_ms(tmp_path / "b.ms")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"eb_fingerprints": {str(p): input_fingerprint(p) for p in (a, b)}}))
    assert not bool_eb_change(state, (a, b))
    assert bool_eb_change(state, (b, a))  # another EB list (order = observation ids)
    st = (b / "table.dat").stat()
    os.utime(b / "table.dat", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # EB b rewritten
    assert bool_eb_change(state, (a, b))
    assert not bool_eb_change(state, ())  # one MS: not this check's business
    assert not bool_eb_change(tmp_path / "absent.json", (a, b))


def test_changed_eb_is_said_naming_it(tmp_path, fake_ms):
    """The console/dry-run line (restart.eb_change_message) names the EB that changed; the
    runner redoes from the same message."""
    import os

    from selfcal_batch.ms.checksum import input_fingerprint
    from selfcal_batch.pipeline.restart import eb_change_message

    a, b = fake_ms(tmp_path / "a.ms"), fake_ms(tmp_path / "b.ms")
    state = {"eb_fingerprints": {str(p): input_fingerprint(p) for p in (a, b)}}
    now = lambda *ps: {str(p): input_fingerprint(p) for p in ps}  # noqa: E731
    assert eb_change_message(state, now(a, b), "startup") == ""
    assert eb_change_message(state, now(b, a), "startup") == (
        "the execution blocks were reordered since the last run (now b.ms, a.ms; before a.ms, b.ms): "
        "redoing from startup")
    c = fake_ms(tmp_path / "c.ms")
    assert eb_change_message(state, now(a, c), "startup") == (
        f"the execution blocks listed changed since the last run (added {c}; no longer listed {b}): "
        "redoing from startup")
    st = (b / "table.dat").stat()
    os.utime(b / "table.dat", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    line = eb_change_message(state, now(a, b), "startup")
    assert line.startswith(f"execution block 2 ({b}) changed since the last run (") and line.endswith(
        "redoing from startup"), line
    assert eb_change_message({}, now(a, b), "startup") == ""  # no record: an older run, trusted
    assert eb_change_message(None, now(a, b), "startup") == ""


def test_implausible_alignment_is_not_applied():
    """Factors measured on the re-break's noisy EB (0.804 / 1.322 antenna-gain factors, i.e.
    visibilities x1.55 / x0.57) are not a flux-scale offset; the healthy pair's are applied."""
    import math

    from selfcal_batch.selfcal.ebjoint import MAX_ALIGNMENT_OFFSET, alignment_scales, applied_alignment_scales

    healthy = alignment_scales([1.0 * math.sqrt(1.05), 1.0], [1.0, 1.0])
    assert applied_alignment_scales(healthy) == (healthy, "")
    scales, why = applied_alignment_scales([0.804, 1.322])
    assert scales == [1.0, 1.0] and why.startswith("flux alignment not applied: visibility factors 1.55/0.572")
    edge = 1 / math.sqrt(1 + MAX_ALIGNMENT_OFFSET * 0.99)
    assert applied_alignment_scales([edge, 1.0])[1] == ""
    assert applied_alignment_scales([1 / math.sqrt(1 + MAX_ALIGNMENT_OFFSET * 1.01), 1.0])[1]


def test_eb_record_maps_spws_by_frequency() -> None:
    """s6-break2 G3: an EB whose spw 0 is the upper band was recorded as 0,1 -> 0,1 while the
    joint copy (concat renumbers by frequency) holds it as spw 1."""
    from selfcal_batch.pipeline.steps_joint import _eb_record

    upper, lower = (6.008e9, 6.12e9), (5.88e9, 5.992e9)
    src = {"spws": [{"id": 0, "freq_min": upper[0], "freq_max": upper[1]},
                    {"id": 1, "freq_min": lower[0], "freq_max": lower[1]}], "flagged_fraction": 0.0}
    work = {"spws": [{"id": 0, "freq_min": lower[0], "freq_max": lower[1], "nchan": 8},
                     {"id": 1, "freq_min": upper[0], "freq_max": upper[1], "nchan": 8}],
            "nrows": 10, "n_antennas_present": 27, "integration_s": 10.0, "antenna_names": ["ea01"],
            "antennas_present": [0], "time_on_source_s": 600.0}
    joint_spws = [{"id": 0, "freq_min": lower[0], "freq_max": lower[1]},
                  {"id": 1, "freq_min": upper[0], "freq_max": upper[1]},
                  {"id": 2, "freq_min": 8.0e9, "freq_max": 8.1e9}]  # another EB's band
    rec = _eb_record(1, Path("eb2.ms"), {"src": src, "work": work}, {"spws": [0, 1], "scans": [1]}, joint_spws)
    assert rec["input_spws"] == [0, 1] and rec["spws"] == [1, 0]


def test_correlation_problem_names_each_eb_setup() -> None:
    """s6-break2 G5: RR LL joined with full polarisation crashed WSClean on the WEIGHT shape."""
    from selfcal_batch.pipeline.steps_joint import correlation_problem

    dual = {"0": ["RR", "LL"], "1": ["RR", "LL"]}
    full = {"0": ["RR", "RL", "LR", "LL"], "1": ["RR", "RL", "LR", "LL"]}
    assert correlation_problem(["a.ms", "b.ms"], [dual, dict(dual)]) == ""
    line = correlation_problem(["a.ms", "b.ms"], [dual, full])
    assert line.startswith("the execution blocks have different correlation products (a.ms: RR,LL; "
                           "b.ms: RR,RL,LR,LL)") and "correlation='RR,LL'" in line and "\n" not in line


def test_own_spws_and_final_spw_ids_follow_frequency():
    from selfcal_batch.pipeline.eb_records import final_spw_ids, own_spws

    def spw(i, lo, hi):
        return {"id": i, "freq_min": lo, "freq_max": hi}

    # joint copy: EB1's windows 0, 1; EB2's 2, 3, 4 (interleaved in frequency)
    joint = [spw(0, 1.0e9, 1.1e9), spw(1, 1.2e9, 1.3e9), spw(2, 0.95e9, 1.05e9), spw(3, 1.15e9, 1.25e9),
             spw(4, 1.35e9, 1.45e9)]
    eb2 = {"input_spws": [0, 1, 2], "spws": [4, 2, 3]}  # input spw 0 is the upper window
    assert own_spws(eb2) == [2, 3, 4] and own_spws({"spws": [None, 1]}) == [1]
    # split with spw="2,3,4" renumbers 0, 1, 2; a final at input resolution spans the averaged band
    final = [spw(0, 0.9499e9, 1.0501e9), spw(1, 1.1499e9, 1.2501e9), spw(2, 1.3499e9, 1.4501e9)]
    assert final_spw_ids(eb2, joint, final) == [2, 0, 1]
    # a window the final does not hold, and an input spw with no joint counterpart
    assert final_spw_ids({"spws": [4, None]}, joint, final[:2]) == [None, None]
