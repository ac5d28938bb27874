"""Pure parts of the working-copy repairs (selfcal_batch.ms.repair): channel matching of the
input's zero-weight mask, FIELD-row merge plan and its tolerance."""
from __future__ import annotations

import numpy as np

from selfcal_batch.casa.jobs import repair_warnings
from selfcal_batch.ms.repair import channel_map, field_merge_plan, merge_tolerance_rad, project_mask

FREQ = 4.0e9 + 1.0e6 * np.arange(8)


def test_channel_map_same_channels_is_identity() -> None:
    assert channel_map(FREQ, FREQ, np.full(8, 1.0e6)).tolist() == list(range(8))


def test_channel_map_selection_and_averaging_by_frequency() -> None:
    # spw = '0:2~5': the copy holds input channels 2..5 as its 0..3
    assert channel_map(FREQ, FREQ[2:6], np.full(4, 1.0e6)).tolist() == [-1, -1, 0, 1, 2, 3, -1, -1]
    # chanbin 2: copy channel k = mean of input channels 2k, 2k+1
    avg = 0.5 * (FREQ[0::2] + FREQ[1::2])
    assert channel_map(FREQ, avg, np.full(4, 2.0e6)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # decreasing frequency (negative CHAN_WIDTH)
    assert channel_map(FREQ[::-1], FREQ[::-1], np.full(8, -1.0e6)).tolist() == list(range(8))


def test_project_mask_keeps_zero_weight_channels_only() -> None:
    mask = np.zeros((2, 8, 3), bool)
    mask[0, 0:2, 1] = True        # channels 0-1 of correlation 0, row 1
    out = project_mask(mask, channel_map(FREQ, FREQ, np.full(8, 1.0e6)), 8)
    assert out.sum() == 2 and out[0, 0:2, 1].all()
    out = project_mask(mask, np.array([0, 0, 1, 1, 2, 2, 3, 3]), 4)   # averaged: channel 0 only
    assert out.sum() == 1 and out[0, 0, 1]
    # a zero WEIGHT (one "channel"): every channel of that correlation and row
    w = np.zeros((2, 1, 3), bool)
    w[1, 0, 2] = True
    out = project_mask(w, np.array([0]), 8)
    assert out.sum() == 8 and out[1, :, 2].all()


def test_field_merge_plan() -> None:
    tol = merge_tolerance_rad(6.0e9, 3400.0)   # VLA C band, C config: 2 % of ~3 arcsec
    assert 0.05 < np.degrees(tol) * 3600 < 0.1
    d = (150.0, 40.0)
    assert field_merge_plan(["T", "T"], [d, d], tol) == ([0, 0], "")
    assert field_merge_plan(["CAL", "T", "T", "X"], [d, d, d, d], tol) == ([0, 1, 1, 2], "")
    assert field_merge_plan(["A", "B"], [d, (150.0, 41.0)], tol) == ([0, 1], "")
    ids, problem = field_merge_plan(["T", "T"], [d, (150.0, 40.001)], tol)
    assert ids == [0, 1] and "field 'T'" in problem and "3.6 arcsec" in problem and "\n" not in problem


def test_repair_warnings_say_what_was_done() -> None:
    assert repair_warnings({"flag_row_rows": 0, "flag_row_flagged": 0}, {"field_rows_merged": 0}) == []
    lines = repair_warnings({"flag_row_rows": 10, "flag_row_flagged": 320},
                            {"field_rows_merged": 1, "rows_refielded": 21060})
    assert "10 rows" in lines[0] and "320 samples flagged" in lines[0]
    assert "21060 rows merged into one FIELD_ID" in lines[1]
