"""Tests of selfcal_batch.report, pure statistics (no campaign run); the report of a real
small campaign is tested in tests/integration/test_report.py."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from selfcal_batch.report import pick_winner, template_summary
from selfcal_batch.report.aggregate import split_list
from selfcal_batch.report.figures import merge_orders


# ---------------------------------------------------------------------------- pure
def _toy() -> pd.DataFrame:
    rows = []
    for i, (fin_t, rms_f, flux_f) in enumerate([("standard_2", 0.5, 2.0), ("standard_2", 0.5, 2.0),
                                                ("standard_1", 0.25, 2.0), ("standard_1", 1.0, 4.0)]):
        rows.append(dict(name=f"d{i + 1}", status="finished", template_initial="standard_1",
                         template_final=fin_t, snr_initial=10.0, snr_final=10.0 * (i + 1),
                         dr_initial=100.0, dr_final=100.0 + 200.0 * i, rms_initial=1.0, rms_final=rms_f,
                         total_flux_initial=2.0, total_flux_final=flux_f, wall_s=10.0 * (i + 1),
                         steps_accepted="p0;p1" if i < 3 else "p0", steps_reverted="p2" if i == 0 else ""))
    # failed datasets never enter the statistics (even with values), only n_failed
    rows.append(dict(name="f1", status="failed", error="boom", template_initial="standard_1",
                     template_final="standard_1", snr_initial=1.0, snr_final=1000.0, dr_initial=1.0,
                     dr_final=1000.0, wall_s=999.0, steps_accepted="p0;p1;p2"))
    rows.append(dict(name="f2", status="failed", error="no MS", template_initial="", template_final=None))
    # zero initial SNR: no gain (NaN), but the dataset is counted
    rows.append(dict(name="z", status="finished", template_initial="bright", template_final="bright",
                     snr_initial=0.0, snr_final=5.0, dr_initial=np.nan, dr_final=5.0, wall_s=7.0,
                     steps_accepted=["p0"], steps_reverted=["p1", "p2"]))
    rows.append(dict(name="s", status="skipped", template_initial="bright", template_final="bright"))
    return pd.DataFrame(rows)


def _row(t: pd.DataFrame, sel: str, name: str) -> pd.Series:
    m = t[(t["selection"] == sel) & (t["template"] == name)]
    assert len(m) == 1, (sel, name, t[["selection", "template"]])
    return m.iloc[0]


def test_template_summary_exact_medians_and_iqr() -> None:
    t = template_summary(_toy())
    assert list(t["selection"]).count("initial") == 3 and list(t["selection"]).count("final") == 4
    r = _row(t, "initial", "standard_1")
    assert (r["n_datasets"], r["n_failed"]) == (4, 1)
    # snr gains 1,2,3,4; dr gains 1,3,5,7; rms .5,.5,.25,1; flux 1,1,1,2 (linear quantiles)
    assert (r["snr_gain_median"], r["snr_gain_q25"], r["snr_gain_q75"]) == (2.5, 1.75, 3.25)
    assert (r["dr_gain_median"], r["dr_gain_q25"], r["dr_gain_q75"]) == (4.0, 2.5, 5.5)
    assert (r["rms_change_median"], r["rms_change_q25"], r["rms_change_q75"]) == (0.5, 0.4375, 0.625)
    assert (r["flux_change_median"], r["flux_change_q25"], r["flux_change_q75"]) == (1.0, 1.0, 1.25)
    assert (r["steps_accepted"], r["steps_reverted"]) == (7, 1)
    assert r["frac_steps_kept"] == pytest.approx(7 / 8)
    assert r["wall_s_median"] == 25.0
    f2 = _row(t, "final", "standard_2")  # d1, d2
    assert (f2["n_datasets"], f2["n_failed"]) == (2, 0)
    assert (f2["snr_gain_median"], f2["snr_gain_q25"], f2["snr_gain_q75"]) == (1.5, 1.25, 1.75)
    assert f2["frac_steps_kept"] == pytest.approx(4 / 5) and f2["wall_s_median"] == 15.0
    f1 = _row(t, "final", "standard_1")  # d3, d4 + failed f1
    assert (f1["n_datasets"], f1["n_failed"], f1["snr_gain_median"]) == (2, 1, 3.5)
    b = _row(t, "initial", "bright")  # z (skipped s is neither finished nor failed)
    assert (b["n_datasets"], b["n_failed"]) == (1, 0)
    assert math.isnan(b["snr_gain_median"]) and math.isnan(b["dr_gain_q25"])
    assert b["rms_change_median"] != b["rms_change_median"]  # no rms values at all
    assert b["frac_steps_kept"] == pytest.approx(1 / 3) and b["wall_s_median"] == 7.0
    none = _row(t, "final", "(none)")
    assert (none["n_datasets"], none["n_failed"]) == (0, 1) and math.isnan(none["wall_s_median"])


def test_template_summary_empty_and_list_forms() -> None:
    empty = template_summary(pd.DataFrame())
    assert empty.empty and {"selection", "template", "n_datasets", "n_failed",
                            "snr_gain_median", "frac_steps_kept"} <= set(empty.columns)
    df = _toy()
    as_lists = df.copy()
    as_lists["steps_accepted"] = [split_list(v) for v in df["steps_accepted"]]
    pd.testing.assert_frame_equal(template_summary(df), template_summary(as_lists))


def test_pick_winner_and_merge_orders() -> None:
    assert pick_winner(100.0, 101.9) == "tie" and pick_winner(101.9, 100.0) == "tie"
    assert pick_winner(100.0, 103.0) == "b" and pick_winner(103.0, 100.0) == "a"
    assert pick_winner(None, 5.0) == "b" and pick_winner(5.0, float("nan")) == "a"
    assert pick_winner(None, None) == "tie"
    order = merge_orders([["test", "p0 pre", "p0 post", "final"],
                          ["test", "p0 pre", "p0 post", "p1 post", "ap1 post", "final"],
                          ["test", "final"]])
    assert order == ["test", "p0 pre", "p0 post", "p1 post", "ap1 post", "final"]


def test_compare_dataset_in_one_run_only_is_not_compared() -> None:
    """Breaker finding: a dataset missing from one run counted as a win for the other."""
    import pandas as pd

    from selfcal_batch.report.compare import compare_table

    def ds(names, dr):
        return pd.DataFrame({"name": names, "status": ["finished"] * len(names), "template_final": ["x"] * len(names),
                             "snr_initial": [10.0] * len(names), "snr_final": dr, "dr_initial": [10.0] * len(names),
                             "dr_final": dr})

    t = compare_table(ds(["a", "b"], [100.0, 50.0]), ds(["b", "c"], [60.0, 70.0]))
    w = dict(zip(t["name"], t["winner"], strict=True))
    assert w == {"b": "b", "c": "not compared", "a": "not compared"}
