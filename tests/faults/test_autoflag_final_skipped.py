"""autoflag_final when nothing was kept (breaker: no generated test of this path).

A real run (simulated MS, CASA, WSClean) whose acceptance gate keeps nothing (improve_sigma
= 1e6) delivers the input unchanged; then the same command with autoflag_final added runs
only that step. It must be recorded as skipped with the reason, and final.ms (every file,
bytes and modification times) and final-image.fits must be exactly as delivered: no flag
written, no flag version saved, no image remade.
"""
from __future__ import annotations

import numpy as np
import pytest

from selfcal_batch.ms.checksum import tree_checksums
from tests.faults.conftest import GuardedMS, MSFactory, quick_config, read_state, run_pipeline

pytestmark = pytest.mark.integration

STEPS = ["startup", "save_init_flags", "test_image", "select_refant", "p0", "split_calibrated"]


def test_autoflag_final_leaves_an_unchanged_delivery_alone(tmp_path, base_ms: GuardedMS) -> None:
    from casacore.tables import table

    ms = MSFactory.copy(base_ms, tmp_path / "in.ms")
    out = tmp_path / "out"
    cfg = quick_config(steps=STEPS, gate={"improve_sigma": 1e6})
    first = run_pipeline("d", ms, out, cfg)
    assert first["status"] == "unchanged", first
    root = out / "datasets" / "d"
    final_ms, final_img = root / "final.ms", root / "final-image.fits"
    before = tree_checksums(final_ms)
    img_before = tree_checksums(final_img)

    second = run_pipeline("d", ms, out, {**cfg, "steps": [*STEPS, "autoflag_final"]})
    assert second["status"] == "unchanged", second
    rec = read_state(root)["steps"]["autoflag_final"]
    assert rec["status"] == "skipped", rec
    assert "final.ms is the input delivered unchanged: not flagged" in str(rec), rec
    assert [a["steps"] for a in second["attempts"]][-1] == ["autoflag_final"]  # nothing else redone
    assert tree_checksums(final_ms) == before  # not one byte or time stamp changed
    assert tree_checksums(final_img) == img_before
    assert not (root / "final.ms.flagversions").exists()
    with table(str(final_ms), ack=False) as t, table(str(ms), ack=False) as i:
        assert np.array_equal(t.getcol("FLAG"), i.getcol("FLAG"))  # the input's flags, as delivered


def test_autoflag_final_is_judged_and_reverted_on_clean_data(tmp_path, base_ms: GuardedMS) -> None:
    """Tester finding F11: autoflag_final ran after the guard and was never judged; on data
    without interference it flagged 29 % of final.ms and the delivered image got worse. Now
    its image is compared with the accepted final image; not better -> final.ms's flags and
    final-image.fits are exactly as the guard accepted them."""
    from casacore.tables import table

    ms = MSFactory.copy(base_ms, tmp_path / "in.ms")
    out = tmp_path / "out"
    cfg = quick_config(steps=STEPS)
    input_sums = tree_checksums(ms)
    first = run_pipeline("d", ms, out, cfg)
    assert first["status"] == "finished", first
    root = out / "datasets" / "d"
    final_ms, final_img = root / "final.ms", root / "final-image.fits"
    with table(str(final_ms), ack=False) as t:
        flags_before = t.getcol("FLAG")
    img_before = tree_checksums(final_img)

    second = run_pipeline("d", ms, out, {**cfg, "steps": [*STEPS, "autoflag_final"]})
    assert second["status"] == "finished", second
    rec = read_state(root)["steps"]["autoflag_final"]
    assert rec["status"] == "done" and rec["accepted"] is False, rec
    assert rec["reason"].startswith("flags not kept: image not better beyond its noise"), rec
    assert rec["flagged_fraction"] > flags_before.mean()  # it did flag before the revert
    with table(str(final_ms), ack=False) as t:
        assert np.array_equal(t.getcol("FLAG"), flags_before)
    assert tree_checksums(final_img) == img_before
    assert tree_checksums(ms) == input_sums


def test_autoflag_final_kept_when_it_removes_interference(tmp_path, base_ms: GuardedMS) -> None:
    """The other branch: narrow-band interference (one channel, 2 Jy, in 10 % of the rows)
    left in the data; rflag/tfcrop remove it, the image is better beyond its noise, and the
    flags and the new final image are delivered."""
    from casacore.tables import table

    ms = MSFactory.copy(base_ms, tmp_path / "in.ms")
    with table(str(ms), readonly=False, ack=False) as t:
        data, scan = t.getcol("DATA"), t.getcol("SCAN_NUMBER")
        rng = np.random.default_rng(7)
        rows = rng.random(len(scan)) < 0.1
        data[rows, 1, :] += 2.0 * np.exp(2j * np.pi * rng.random((int(rows.sum()), data.shape[2])))
        t.putcol("DATA", data)
    out = tmp_path / "out"
    cfg = quick_config(steps=[*STEPS, "autoflag_final"])
    res = run_pipeline("d", ms, out, cfg)
    rec = read_state(out / "datasets" / "d")["steps"].get("autoflag_final") or {}
    assert res["status"] == "finished", res
    assert rec["status"] == "done" and rec["accepted"] is True, rec
    assert rec["snr_post"] > rec["snr_pre"], rec
