"""Pure decisions of joint EB self-calibration (selfcal/ebjoint.py)."""
from __future__ import annotations

import math

import pytest

from selfcal_batch.selfcal.ebjoint import (
    SpwInfo, alignment_scales, angular_separation_arcsec, group_targets, map_spws,
)


def _t(ms: str, field: str, ra: float, dec: float) -> dict:
    return {"ms": ms, "field": field, "ra_deg": ra, "dec_deg": dec}


def test_separation() -> None:
    assert angular_separation_arcsec(150.0, 40.0, 150.0, 40.001) == pytest.approx(3.6, rel=1e-6)
    assert angular_separation_arcsec(10.0, 60.0, 10.002, 60.0) == pytest.approx(7.2 * 0.5, rel=1e-3)


def test_group_by_name_and_position() -> None:
    ts = [_t("eb1", "A", 150.0, 40.0), _t("eb1", "B", 150.0, 41.0), _t("eb2", "A", 150.0, 40.0001),
          _t("eb2", "B2", 150.0, 41.0002), _t("eb3", "A", 150.2, 40.0)]
    assert group_targets(ts, "name") == [[0, 2, 4], [1], [3]]
    assert group_targets(ts, "position", 1.0) == [[0, 2], [1, 3], [4]]
    assert group_targets(ts, "position", 0.5) == [[0, 2], [1], [3], [4]]
    # two fields of one MS never join one group, even when close
    assert group_targets([_t("eb1", "A", 150, 40), _t("eb1", "A2", 150, 40)], "position") == [[0], [1]]
    with pytest.raises(ValueError, match="group"):
        group_targets(ts, "scan")
    with pytest.raises(ValueError, match="tolerance"):
        group_targets(ts, "position", 0)


def test_spw_map_different_numbering_and_channels() -> None:
    eb1 = [SpwInfo(0, 4.936e9, 128e6, 64), SpwInfo(1, 5.064e9, 128e6, 64)]
    eb2 = [SpwInfo(7, 5.064e9, 128e6, 32), SpwInfo(2, 4.936e9, 128e6, 128), SpwInfo(3, 6.0e9, 128e6, 64)]
    m = map_spws([eb1, eb2])
    assert m == [{0: 0, 1: 1}, {2: 0, 7: 1, 3: 2}]
    with pytest.raises(ValueError, match="both match"):
        map_spws([eb1, [SpwInfo(0, 4.93e9, 128e6, 8), SpwInfo(1, 4.94e9, 128e6, 8)]])


def test_alignment_scales_keep_weighted_mean() -> None:
    # EB2 5 % brighter in visibility amplitude -> gains sqrt(1.05)
    g = [1.0, math.sqrt(1.05)]
    s = alignment_scales(g, [1.0, 1.0])
    assert s[1] / s[0] == pytest.approx(math.sqrt(1.05))
    assert (s[0] ** 2 + s[1] ** 2) / 2 == pytest.approx(1.0)
    assert alignment_scales([2.0], [3.0]) == [1.0]
    for bad in ([0.0, 1.0], [float("nan"), 1.0]):
        with pytest.raises(ValueError):
            alignment_scales(bad, [1, 1])
    with pytest.raises(ValueError):
        alignment_scales([1.0], [1.0, 2.0])
