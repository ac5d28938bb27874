"""Tests of selfcal_batch.selfcal.refant and selfcal_batch.selfcal.spwmap (pure functions)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from selfcal_batch.selfcal.refant import RefantStat, rank_refants, refant_stats, refant_warning
from selfcal_batch.selfcal.spwmap import (ambiguous_spws, build_spwmap, chain_spwmaps, spw_groups,
                                  spwmap_for)

NAMES28 = [f"ea{i + 1:02d}" for i in range(28)]  # names[id] = 'ea<id+1>'


def _table(ant_ids, nsol, nchan=1, npol=2):
    """antenna1 + all-unflagged flags [nrow, nchan, npol] with nsol rows per antenna."""
    antenna1 = np.repeat(np.asarray(ant_ids), nsol)
    flags = np.zeros((antenna1.size, nchan, npol), dtype=bool)
    return antenna1, flags


def _rows(antenna1, aid):
    return np.nonzero(antenna1 == aid)[0]


# ------------------------------------------------------------------------------- refant
def test_refant_ids_with_gaps_use_names_by_id():
    antenna1, flags = _table([0, 2, 5, 7], nsol=10)
    # flag fractions: id0 50%, id2 0%, id5 20%, id7 10%
    for aid, nbad in ((0, 5), (5, 2), (7, 1)):
        flags[_rows(antenna1, aid)[:nbad], :, :] = True
    names = rank_refants(antenna1, flags, NAMES28)
    assert names == ["ea03", "ea08", "ea06", "ea01"]
    # the seed bug would have used positions 1, 3, 2, 0 of the unique list -> ea02, ea04, ...
    assert "ea02" not in names and "ea04" not in names
    assert len(names) == 4  # antennas absent from the table are dropped


def test_refant_uses_all_correlations_and_channels():
    antenna1, flags = _table([1, 3], nsol=4, nchan=3, npol=2)
    # antenna 1: only the second correlation flagged everywhere -> the seed ([0,0,:]) saw 100%
    flags[_rows(antenna1, 1), :, 1] = True
    # antenna 3: one element flagged in channel 2 of corr 0 for one row
    flags[_rows(antenna1, 3)[0], 2, 0] = True
    stats = refant_stats(antenna1, flags, NAMES28)
    assert [s.name for s in stats] == ["ea04", "ea02"]
    assert stats[0].good_fraction == pytest.approx(23 / 24)
    assert stats[1].good_fraction == pytest.approx(0.5)
    assert stats[0].n_solutions == 24


def test_refant_casatools_layout_and_1d():
    antenna1, flags = _table([0, 2, 5], nsol=3, nchan=1, npol=2)
    flags[_rows(antenna1, 0), 0, 0] = True
    casatools = np.transpose(flags, (2, 1, 0))  # [npol, nchan, nrow]
    assert casatools.shape == (2, 1, 9)
    expect = rank_refants(antenna1, flags, NAMES28)
    assert rank_refants(antenna1, casatools, NAMES28) == expect
    assert expect[-1] == "ea01"
    one_d = flags[:, 0, 0]
    assert rank_refants(antenna1, one_d, NAMES28)[-1] == "ea01"
    # explicit row axis
    assert rank_refants(antenna1, casatools, NAMES28, row_axis=2) == expect


def test_refant_ties_broken_by_snr_then_id():
    antenna1, flags = _table([4, 1, 9, 6], nsol=5)
    snr = np.ones(flags.shape) * 10.0
    snr[_rows(antenna1, 9)] = 30.0
    snr[_rows(antenna1, 4)] = 20.0
    # flagged solutions with huge SNR must not count
    flags[_rows(antenna1, 6)[0]] = True
    snr[_rows(antenna1, 6)[0]] = 1e6
    names = rank_refants(antenna1, flags, NAMES28, snr)
    assert names == ["ea10", "ea05", "ea02", "ea07"]
    # without SNR: all-good antennas tie -> by id
    assert rank_refants(antenna1, flags, NAMES28) == ["ea02", "ea05", "ea10", "ea07"]
    # equal fractions and SNR -> by id
    assert rank_refants(antenna1, flags, NAMES28, np.ones(flags.shape)) == \
        ["ea02", "ea05", "ea10", "ea07"]


def test_refant_fully_flagged_last_and_nan_snr():
    antenna1, flags = _table([0, 1, 2], nsol=2)
    flags[_rows(antenna1, 0)] = True
    snr = np.full(flags.shape, np.nan)
    snr[_rows(antenna1, 2)] = 5.0
    stats = refant_stats(antenna1, flags, NAMES28, snr)
    assert [s.antenna_id for s in stats] == [2, 1, 0]
    assert stats[-1].good_fraction == 0.0
    assert np.isnan(stats[1].mean_snr) and np.isnan(stats[2].mean_snr)
    assert isinstance(stats[0], RefantStat)


def test_refant_errors():
    antenna1, flags = _table([0, 30], nsol=2)
    with pytest.raises(ValueError, match="30"):
        rank_refants(antenna1, flags, NAMES28)
    antenna1, flags = _table([0, 1], nsol=2)
    with pytest.raises(ValueError, match="nrow"):
        rank_refants(antenna1, flags[:3], NAMES28)
    with pytest.raises(ValueError):
        rank_refants(antenna1, flags, NAMES28, snr=np.ones((4, 2, 2)))
    assert rank_refants([], np.zeros((0, 1, 2), bool), NAMES28) == []


def test_refant_warning():
    assert refant_warning([0.95, 0.5]) is None
    assert refant_warning([0.9]) is None
    msg = refant_warning([0.85, 0.2])
    assert msg and "flex" in msg and "85.0%" in msg
    assert "flex" in refant_warning([])
    with pytest.raises(ValueError):
        refant_warning([95.0])
    antenna1, flags = _table([0, 1], nsol=10)
    flags[:, :, :] = True
    flags[0] = False
    assert "flex" in refant_warning(refant_stats(antenna1, flags, NAMES28))


# ------------------------------------------------------------------------------- spwmap
def test_spwmap_one_group():
    assert build_spwmap([list(range(16))] * 5, 16) == [0] * 16
    assert build_spwmap([[0, 1, 2, 3]], [0, 1, 2, 3]) == [0, 0, 0, 0]


def test_spwmap_casa_labels_lowest_spw_per_scan():
    # {0,1,2,3} and {1,2,3}: solutions labelled 0 and 1; spw 0 only in group A
    scans = [[0, 1, 2, 3]] * 2 + [[1, 2, 3]] * 5
    assert build_spwmap(scans, 4) == [0, 1, 1, 1]  # 1..3 appear more often in group {1,2,3}
    scans = [[0, 1, 2, 3]] * 5 + [[1, 2, 3]] * 2
    assert build_spwmap(scans, 4) == [0, 0, 0, 0]
    assert ambiguous_spws(scans) == {1: {0: 5, 1: 2}, 2: {0: 5, 1: 2}, 3: {0: 5, 1: 2}}


def test_spwmap_tie_goes_to_lower_label():
    scans = [[0, 1, 2, 3], [1, 2, 3]]
    assert build_spwmap(scans, 4) == [0, 0, 0, 0]


def test_spwmap_disjoint_groups_emerlin():
    # e-MERLIN style heterogeneous scans: {0..3} and {4..7} in different scans
    scans = [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3], [4, 5, 6, 7]]
    assert build_spwmap(scans, 8) == [0, 0, 0, 0, 4, 4, 4, 4]
    assert ambiguous_spws(scans) == {}
    # overlapping sets: {0,1,2} x3, {2,3} x1, {3,4,5} x2
    scans = [[0, 1, 2]] * 3 + [[2, 3]] + [[3, 4, 5]] * 2
    assert build_spwmap(scans, 6) == [0, 0, 0, 3, 3, 3]
    assert set(ambiguous_spws(scans)) == {2, 3}


def test_spwmap_spw_missing_from_some_scans():
    # spw 3 only present in some scans: groups {0,1,2,3} and {0,1,2}, both labelled 0
    scans = [[0, 1, 2, 3], [0, 1, 2], [0, 1, 2]]
    assert build_spwmap(scans, 4) == [0, 0, 0, 0]
    assert ambiguous_spws(scans) == {}
    # a spw never observed maps to itself
    assert build_spwmap([[0, 1]], 4) == [0, 0, 2, 3]


def test_spwmap_ids_not_from_zero_and_non_contiguous():
    assert build_spwmap([[2, 3, 4, 5]] * 3, [2, 3, 4, 5]) == [0, 1, 2, 2, 2, 2]
    assert build_spwmap([[1, 3, 8], [3, 8, 1]], [1, 3, 8]) == [0, 1, 2, 1, 4, 5, 6, 7, 1]
    # duplicates / unsorted inputs and numpy ints
    assert build_spwmap([np.array([5, 3, 3])], np.array([3, 5])) == [0, 1, 2, 3, 4, 3]


def test_spwmap_errors_and_edge_cases():
    with pytest.raises(ValueError, match=r"\[4\]"):
        build_spwmap([[0, 1, 4]], 4)
    with pytest.raises(ValueError):
        build_spwmap([[0, -1]], 4)
    with pytest.raises(ValueError):
        build_spwmap([[0, 1.5]], 4)
    assert build_spwmap([], 3) == [0, 1, 2]
    assert build_spwmap([[]], 2) == [0, 1]
    assert build_spwmap([], 0) == []
    assert spw_groups([[1, 0], [0, 1], [2]]) == {(0, 1): 2, (2,): 1}


def test_spwmap_logs_ambiguity(caplog):
    with caplog.at_level(logging.WARNING, logger="selfcal_batch.selfcal.spwmap"):
        build_spwmap([[0, 1], [1]], 2)
    assert "spw 1" in caplog.text


def test_spwmap_for():
    scans = [[0, 1, 2, 3]]
    assert spwmap_for("", scans, 4) == []
    assert spwmap_for("scan", scans, 4) == []
    assert spwmap_for("spw", scans, 4) == [0, 0, 0, 0]
    assert spwmap_for("scan,spw", scans, 4) == [0, 0, 0, 0]
    assert spwmap_for(" scan , spw ", scans, 4) == [0, 0, 0, 0]


def test_chain_spwmaps():
    p1 = []
    p2 = [0, 0, 0, 0]
    out = chain_spwmaps([p1, p2, None], tables=["p1.tb", "p2.tb", "ap1.tb"])
    assert out == [[], [0, 0, 0, 0], []]
    assert out[1] is not p2
    out[1].append(9)
    assert p2 == [0, 0, 0, 0]
    assert chain_spwmaps([]) == []
    with pytest.raises(ValueError, match="2 spwmap entries for 3 gain tables"):
        chain_spwmaps([[], []], tables=["a", "b", "c"])
    with pytest.raises(ValueError):
        chain_spwmaps([0])
    with pytest.raises(ValueError):
        chain_spwmaps(["0,0"])
