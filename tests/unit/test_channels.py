"""Joint EBs of different channel counts (issue 18, item 2): which EB's spws are averaged by how
much (selfcal/channels.common_channels), the refusal reasons and the one line naming each EB
(steps_joint.channel_count_problem), on generated spw layouts; no MS is read."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selfcal_batch.campaign.ebs import working_spw
from selfcal_batch.ms.fields import spw_edge
from selfcal_batch.pipeline.steps_joint import channel_count_problem, channel_plan, work_spw_channels
from selfcal_batch.selfcal.channels import SpwChannels, common_channels

MHZ = 1e6


def _band(spw: int, low_mhz: float, n: int, width_mhz: float) -> SpwChannels:
    return SpwChannels(spw, n, low_mhz * MHZ, width_mhz * MHZ)


def test_equal_counts_average_nothing() -> None:
    plan = common_channels([[_band(0, 1000, 64, 2)], [_band(1, 1000, 64, 2)]])
    assert plan.common == 64 and plan.factors == [{0: 1}, {1: 1}] and plan.reasons == [] and not plan.averaged


def test_survey_case_64_vs_128_same_band() -> None:
    """EB1: 2 spws x 64 x 2 MHz; EB2: the same bands as 128 x 1 MHz in spw ids 2, 3 -> EB2 x2."""
    eb1 = [_band(0, 1000, 64, 2), _band(1, 1128, 64, 2)]
    eb2 = [_band(2, 1000, 128, 1), _band(3, 1128, 128, 1)]
    plan = common_channels([eb1, eb2])
    assert plan.common == 64 and plan.factors == [{0: 1, 1: 1}, {2: 2, 3: 2}] and plan.averaged
    assert common_channels([eb2, eb1]).factors == [{2: 2, 3: 2}, {0: 1, 1: 1}]  # order does not matter


def test_factor_per_spw_and_three_ebs() -> None:
    plan = common_channels([[_band(0, 1000, 64, 2), _band(1, 1128, 32, 4)],
                            [_band(0, 1000, 128, 1), _band(1, 1128, 128, 1)], [SpwChannels(0, 32)]])
    assert plan.common == 32 and plan.factors == [{0: 2, 1: 1}, {0: 4, 1: 4}, {0: 1}] and not plan.reasons


@pytest.mark.parametrize("counts, bad", [([64, 96], "spw 0 has 96 channels, not a multiple of 64"),
                                         ([4, 5], "spw 0 has 5 channels, not a multiple of 4"),
                                         ([8, 12], "spw 0 has 12 channels, not a multiple of 8")])
def test_non_integer_ratio_is_refused(counts: list[int], bad: str) -> None:
    plan = common_channels([[SpwChannels(0, counts[0])], [SpwChannels(0, counts[1])]])
    assert plan.reasons == [(1, bad)] and not plan.averaged


def test_misaligned_edges_are_refused_aligned_shifts_are_not() -> None:
    eb1 = [_band(0, 1000, 64, 2)]
    # EB2's fine channels start 1 MHz up: averaged x2 they sit half a channel off EB1's
    plan = common_channels([eb1, [_band(0, 1001, 128, 1)]])
    assert plan.reasons == [(1, "spw 0 averaged x2: its channel edges are 0.50 of a channel off execution "
                                "block 1's spw 0")]
    assert not common_channels([eb1, [_band(0, 1004, 128, 1)]]).reasons  # two whole channels up: aligned
    assert not common_channels([eb1, [_band(0, 1000.01, 128, 1)]]).reasons  # 0.005 of a channel: within 1 %
    assert common_channels([eb1, [_band(0, 1000.05, 128, 1)]]).reasons  # 0.025 of a channel: not
    # averaged to another width (a wider band): kept apart like EBs of equal counts, not refused
    assert not common_channels([eb1, [_band(0, 1001, 128, 1.5)]]).reasons
    # no overlap: nothing to align with
    assert not common_channels([eb1, [_band(0, 3001, 128, 1)]]).reasons
    # equal counts are as before, aligned or not
    assert not common_channels([eb1, [_band(0, 1001, 64, 2)]]).reasons
    # unknown frequencies: only the counts are judged
    assert not common_channels([eb1, [SpwChannels(0, 128)]]).reasons


def test_bad_counts_raise() -> None:
    with pytest.raises(ValueError, match="channel counts must be >= 1"):
        common_channels([[SpwChannels(0, 0)], [SpwChannels(0, 4)]])


def test_refusal_is_one_line_naming_each_eb_and_reason() -> None:
    a, b, c = Path("/d/a.ms"), Path("/d/b.ms"), Path("/d/c.ms")
    assert channel_count_problem([a, b], [[64, 64], [128, 128]]) == ""
    line = channel_count_problem([a, b, c], [[64, 64], [128, 96], [_band(0, 1001, 128, 1)]])
    assert "\n" not in line and "(/d/a.ms: 64,64; /d/b.ms: 128,96; /d/c.ms: 128)" in line
    assert "/d/b.ms spw 1 has 96 channels, not a multiple of 64" in line
    assert "/d/b.ms spw 0" not in line  # 128 = 2 x 64: not a reason
    # one chanbin keeps the ratio 128 : 96; the advice is the common divisor, per EB and spw
    assert "average every spw to 32 channels first (CASA split width /d/a.ms: 2,2; /d/b.ms: 4,3; /d/c.ms: 4)" in line
    assert line.endswith("or run the EBs separately")
    odd = channel_count_problem([a, b], [[4], [7]])
    assert odd.endswith("run the EBs separately (their channel counts have no common divisor above 1)")
    edges = channel_count_problem([a, c], [[_band(0, 1000, 64, 2)], [_band(0, 1001, 128, 1)]])
    assert "/d/c.ms spw 0 averaged x2: its channel edges are 0.50 of a channel off execution block 1's spw 0" in edges


def test_inspected_spws_and_field_records_give_the_same_layout() -> None:
    """The startup's reading (inspect_ms records) and the dry-run's (fields records after
    chanbin) of one spw of 8 x 1 MHz channels centred on 1000.5 .. 1007.5 MHz."""
    freqs, widths = (1000.5 + np.arange(8)) * MHZ, np.full(8, MHZ)
    low, width = spw_edge(freqs, widths)
    assert (low, width) == (1000 * MHZ, MHZ)
    assert spw_edge(freqs[::-1], -widths) == (low, width)  # descending channels: same edges
    inspected = work_spw_channels([{"id": 3, "nchan": 8, "freq_min": 1000.5 * MHZ, "chan_width": MHZ}])
    assert inspected == [SpwChannels(3, 8, low, width)]
    assert working_spw((3, 8, low, width), 1) == inspected[0]
    assert working_spw((3, 8, low, width), 2) == SpwChannels(3, 4, low, 2 * MHZ)
    assert working_spw((3, 8), 2) == SpwChannels(3, 4)
    assert channel_plan([[4, 4], [8, 8]]).factors == [{0: 1, 1: 1}, {0: 2, 1: 2}]
