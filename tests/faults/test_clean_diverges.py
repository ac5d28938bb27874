"""WSClean's clean diverging to an infinite peak ('Iteration N, scale 0 px : inf KJy' printed
forever; found with 15 of 27 antennas fully flagged): the watcher stops WSClean at the first
such line and the step fails with one line, long before wsclean.timeout_s, with a bounded log."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from casacore.tables import table

from .conftest import MSFactory, one_line, quick_config, run_pipeline

pytestmark = pytest.mark.integration


def test_infinite_clean_is_stopped(ms_factory: MSFactory, tmp_path: Path) -> None:
    src = ms_factory.get("antflag", duration_s=240, n_spw=2, n_chan=4, integration_s=10.0, flux_jy=0.05,
                         seed=7, phase_rms_deg=40.0, phase_timescale_s=200.0, n_scans=2)
    ms = MSFactory.copy(src, tmp_path / "antflag.ms")
    t = table(str(ms), readonly=False, ack=False)
    try:
        a1, a2, f = t.getcol("ANTENNA1"), t.getcol("ANTENNA2"), t.getcol("FLAG")
        f[np.isin(a1, range(15)) | np.isin(a2, range(15))] = True
        t.putcol("FLAG", f)
    finally:
        t.close()
    timeout = 600
    t0 = time.monotonic()
    res = run_pipeline("antflag", ms, tmp_path / "out",
                       quick_config(steps=["startup", "test_image"], wsclean={"timeout_s": timeout}))
    took = time.monotonic() - t0
    print(f"\nantflag: {res['status']} in {took:.0f} s: {res['error']}")
    if res["status"] != "failed":
        pytest.fail(f"WSClean did not diverge on this input ({res['status']}): the test lost its case")
    assert "clean diverged: Iteration" in res["error"] and one_line(res["error"]), res["error"]
    assert res["error"].startswith("test_image: ")
    assert took < timeout / 2
    log = tmp_path / "out" / "datasets" / "antflag" / "logs" / "wsclean.log"
    assert log.stat().st_size < 5_000_000
