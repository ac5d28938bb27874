"""Flags of a channel-averaged MS carried onto the same rows at full resolution, and the
full-resolution copy's spwmaps (DESIGN.md "Mixed channel counts"): tiny MSs made with
python-casacore's ``default_ms`` (no program runs)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from selfcal_batch.ms.flagcarry import carry_flags, expanded
from selfcal_batch.pipeline.steps_fullres import composed_spwmaps


def _ms(path: Path, nchan: list[int], dd: list[int], spw_of_dd: list[int], flags: list[np.ndarray] | None = None,
        times: list[float] | None = None, obs: list[int] | None = None) -> Path:
    from casacore.tables import default_ms, table  # test data only

    shutil.rmtree(path, ignore_errors=True)
    t = default_ms(str(path))
    t.addrows(len(dd))
    t.putcol("TIME", np.asarray(times if times is not None else np.arange(len(dd)), dtype=float))
    t.putcol("ANTENNA1", np.zeros(len(dd), int))
    t.putcol("ANTENNA2", np.ones(len(dd), int))
    t.putcol("DATA_DESC_ID", np.asarray(dd))
    t.putcol("OBSERVATION_ID", np.asarray(obs if obs is not None else np.zeros(len(dd), int)))
    for r, d in enumerate(dd):
        t.putcell("FLAG", r, flags[r] if flags is not None else np.zeros((nchan[spw_of_dd[d]], 2), bool))
    t.close()
    with table(str(path / "DATA_DESCRIPTION"), readonly=False, ack=False) as d:
        d.addrows(len(spw_of_dd))
        d.putcol("SPECTRAL_WINDOW_ID", np.asarray(spw_of_dd))
    return path


def test_expanded_repeats_each_averaged_channel() -> None:
    f = np.zeros((1, 2, 2), bool)
    f[0, 1, 0] = True
    assert expanded(f, 4)[0, :, 0].tolist() == [False, False, True, True] and not expanded(f, 4)[0, :, 1].any()
    assert (expanded(f, 2) == f).all()
    with pytest.raises(ValueError, match="not a whole multiple"):
        expanded(f, 3)


def test_carry_flags_and_spw_map(tmp_path: Path) -> None:
    """Averaged: EB1 rows in spw 0 (2 ch), EB2's rows merged into the same spws 0/1 (2 ch);
    full resolution: EB2's rows in spws 2, 3 of 4 channels (concat kept them apart)."""
    avg_flags = [np.zeros((2, 2), bool) for _ in range(4)]
    avg_flags[0][0, :] = True  # EB1 row: channel 0, both correlations
    avg_flags[3][1, 0] = True  # EB2 row: averaged channel 1, first correlation
    avg = _ms(tmp_path / "avg.ms", [2, 2], [0, 1, 0, 1], [0, 1], avg_flags, obs=[0, 0, 1, 1])
    full = _ms(tmp_path / "full.ms", [2, 2, 4, 4], [0, 1, 2, 3], [0, 1, 2, 3], obs=[0, 0, 1, 1])
    out = carry_flags(avg, full, avg)
    assert out["spw_map"] == {0: 0, 1: 1, 2: 0, 3: 1} and out["rows"] == 4
    # each EB's own fine spws (its final is split with them; the joint spws 0/1 are shared)
    assert out["spws_per_observation"] == {0: [0, 1], 1: [2, 3]}
    from casacore.tables import table  # test check only

    with table(str(full), ack=False) as t:
        assert t.getcell("FLAG", 0)[:, 0].tolist() == [True, False]
        assert not t.getcell("FLAG", 1).any() and not t.getcell("FLAG", 2).any()
        assert t.getcell("FLAG", 3)[:, 0].tolist() == [False, False, True, True] and not t.getcell("FLAG", 3)[:, 1].any()
    assert out["flagged_before"] == 0 and out["flagged_after"] == pytest.approx(4 / 24)
    assert composed_spwmaps(out["spw_map"], [[], [0, 0]]) == [[0, 1, 0, 1], [0, 0, 0, 0]]
    assert composed_spwmaps({1: 0, 3: 1}, [[]]) == [[0, 0, 0, 1]]  # spws without rows: 0


def test_rows_that_do_not_correspond_are_refused(tmp_path: Path) -> None:
    avg = _ms(tmp_path / "avg.ms", [2, 2], [0, 1], [0, 1])
    with pytest.raises(ValueError, match="rows differ in TIME"):
        carry_flags(avg, _ms(tmp_path / "t.ms", [2, 2], [0, 1], [0, 1], times=[0.0, 5.0]), avg)
    with pytest.raises(ValueError, match="rows averaged vs"):
        carry_flags(avg, _ms(tmp_path / "n.ms", [2], [0], [0]), avg)
    with pytest.raises(ValueError, match="full-resolution spw 0 holds rows of spws"):
        carry_flags(avg, _ms(tmp_path / "m.ms", [2], [0, 0], [0]), avg)
