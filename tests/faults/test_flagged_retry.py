"""A first phase step whose solutions fail for lack of SNR is tried once more at one
solution per scan (tester finding F7), real WSClean + CASA on generated data.

90 % of the samples flagged at random (every row keeps ~10 %): at the template's 96 s
interval too many solutions fall below minsnr, and the whole ladder used to stop there
with the input delivered unchanged, although the data support one solution per scan.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selfcal_batch.ms.checksum import tree_checksums
from tests.faults.conftest import MSFactory, quick_config, read_state, run_pipeline

pytestmark = pytest.mark.integration


def test_p0_retried_at_one_solution_per_scan(ms_factory: MSFactory, tmp_path: Path) -> None:
    from casacore.tables import table

    base = ms_factory.get("flag90", duration_s=900, n_scans=3, n_spw=2, n_chan=8, phase_rms_deg=40, seed=5)
    ms = MSFactory.copy(base, tmp_path / "flag90.ms")
    rng = np.random.default_rng(9)
    with table(str(ms), readonly=False, ack=False) as t:
        f = t.getcol("FLAG")
        t.putcol("FLAG", f | (rng.random(f.shape) < 0.9))
    sums = tree_checksums(ms)
    res = run_pipeline("f", ms, tmp_path / "out", quick_config(steps=["startup", "save_init_flags", "test_image",
                                                                      "select_refant", "p0", "split_calibrated"]))
    p0 = read_state(tmp_path / "out" / "datasets" / "f")["steps"]["p0"]
    first = p0.get("first_try") or {}
    print("RETRY", {k: p0.get(k) for k in ("solint", "accepted", "reason", "flagged_solutions")}, first)
    assert "solutions flagged" in str(first.get("reason")), p0      # the first try failed on its solutions
    assert p0["solint"] == "inf" and p0["flagged_solutions"] < first["flagged_solutions"], p0
    assert p0["accepted"] and res["status"] == "finished", (p0, res)
    assert tree_checksums(ms) == sums
