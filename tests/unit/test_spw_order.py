"""Output channels WSClean 3.1 can write MODEL_DATA back for (imaging/spw_order.py): pure."""

from __future__ import annotations

import numpy as np
import pytest

from selfcal_batch.imaging.spw_order import (
    ChannelPlan,
    ddid_channel_frequencies,
    first_appearance_ok,
    plan_output_channels,
)

GHZ = 1e9


def window(start_ghz: float, nchan: int = 4, width_mhz: float = 24.0) -> np.ndarray:
    """Channel centres (Hz) of a window whose lower edge is ``start_ghz``."""
    w = width_mhz * 1e6
    return start_ghz * GHZ + w / 2 + w * np.arange(nchan)


# The tester's joint layout (issue 18 finding 2): EB A 2 spw, EB D 3 spw offset by half a spw.
JOINT = [window(5.888), window(6.016), window(5.824), window(5.952), window(6.080)]


def wsclean_part_list(chan_hz, cuts) -> list[int]:
    """DATA_DESC_IDs of WSClean 3.1's reorder parts with output channels cut at ``cuts``: per
    output channel in frequency order, the windows with a channel in it, in id order (the
    order measured with -v, 'Partitioning in N channels', on the tester's work.ms)."""
    edges = [-np.inf, *sorted(cuts), np.inf]
    parts = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        parts += [d for d, f in enumerate(chan_hz) if np.any((f > lo) & (f < hi))]
    return parts


def ids_in_first_appearance_order(parts: list[int]) -> list[int]:
    seen: list[int] = []
    for d in parts:
        if d not in seen:
            seen.append(d)
    return seen


def test_oracle_reproduces_the_measured_bad_list():
    # WSClean -v on the tester's work.ms with -channel-division-frequencies 6.064e9 -channels-out 2:
    # "0:0-4 1:0-2 2:0-4 3:0-4 1:2-4 4:0-4" (worked); plain -channels-out 3 cut near 5.94/6.06 GHz
    # gave "0 2 0 1 3 1 4" (crashed).
    assert wsclean_part_list(JOINT, [6.064e9]) == [0, 1, 2, 3, 1, 4]
    bad = wsclean_part_list(JOINT, [5.94e9, 6.064e9])
    assert ids_in_first_appearance_order(bad) != list(range(5))
    assert not first_appearance_ok([f.min() for f in JOINT], [5.94e9, 6.064e9])


@pytest.mark.parametrize("want", [2, 3, 5, 6])
def test_joint_interleaved_windows_get_safe_cuts(want):
    plan = plan_output_channels(JOINT, want)
    assert 2 <= plan.channels_out <= want
    assert plan.channels_out == len(plan.division_hz) + 1
    assert all(c > window(6.016)[0] for c in plan.division_hz)  # nothing below EB A's 2nd window start
    assert ids_in_first_appearance_order(wsclean_part_list(JOINT, plan.division_hz)) == list(range(5))
    assert "not numbered in frequency order" in plan.reason and "GHz" in plan.reason


def test_windows_in_frequency_order_keep_the_request():
    one_eb = [window(5.888), window(6.016), window(6.144)]
    assert plan_output_channels(one_eb, 6) == ChannelPlan(6)
    assert plan_output_channels(JOINT, 1) == ChannelPlan(1)


def test_no_safe_cut_gives_one_channel():
    # window 0 one channel at the top, window 1 below it: every cut separates them.
    layout = [np.array([2.0e9]), np.linspace(1.0e9, 1.5e9, 6)]
    plan = plan_output_channels(layout, 4)
    assert plan.channels_out == 1 and plan.division_hz == ()
    assert "1 output channel" in plan.reason


def test_descending_window_order_cuts_only_inside_the_top_window():
    layout = [window(6.0, 8), window(5.8, 8)]
    plan = plan_output_channels(layout, 3)
    assert plan.division_hz and all(c > layout[0].min() for c in plan.division_hz)
    assert ids_in_first_appearance_order(wsclean_part_list(layout, plan.division_hz)) == [0, 1]


def test_random_layouts_always_safe():
    rng = np.random.default_rng(7)
    for _ in range(300):
        n = int(rng.integers(1, 6))
        layout = [window(float(rng.uniform(1.0, 2.0)), int(rng.integers(1, 9)), float(rng.uniform(1, 40)))
                  for _ in range(n)]
        want = int(rng.integers(1, 9))
        plan = plan_output_channels(layout, want)
        assert 1 <= plan.channels_out <= want
        cuts = plan.division_hz
        if plan.reason:  # cut or reduced: WSClean's list must be in id order with exactly these cuts
            assert ids_in_first_appearance_order(wsclean_part_list(layout, cuts)) == list(range(n))
        else:  # kept: one channel, or the windows' lowest channels rise with the id
            lows = [f.min() for f in layout]
            assert plan.channels_out == want and (want == 1 or lows == sorted(lows))


def test_empty_window_raises():
    with pytest.raises(ValueError, match="without channels"):
        plan_output_channels([window(1.0), np.array([])], 2)


def test_frequencies_from_msinfo_follow_data_description_ids():
    info = {"data_descriptions": [{"id": 1, "spw": 0}, {"id": 0, "spw": 3}],
            "spws": [{"id": 0, "nchan": 2, "freq_min": 5.0e9, "freq_max": 5.1e9},
                     {"id": 3, "nchan": 3, "freq_min": 6.0e9, "freq_max": 6.2e9}]}
    f = ddid_channel_frequencies(info)
    assert [list(x) for x in f] == [[6.0e9, 6.1e9, 6.2e9], [5.0e9, 5.1e9]]
    assert plan_output_channels(f, 2).reason  # ddid 0 above ddid 1
    assert ddid_channel_frequencies({}) == []
