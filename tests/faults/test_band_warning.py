"""A band that does not match the MS's frequencies is said at startup (log and console
notice): a 36.3 GHz MS ran as the default C band without a word."""
from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import MSFactory, quick_config, read_state, run_pipeline

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("band, said", [("L", True), ("C", False)])
def test_band_mismatch_is_said(ms_factory: MSFactory, tmp_path: Path, band: str, said: bool) -> None:
    ms = ms_factory.get("nonfinite", duration_s=240, n_spw=2, n_chan=4, integration_s=10.0, flux_jy=0.05)  # vla-c
    res = run_pipeline("b", ms.path, tmp_path / "out", quick_config(steps=["startup"], band=band))
    assert res["status"] == "finished", res["error"]
    # Nothing was calibrated nor delivered: the result says so instead of reading like a delivery.
    assert not res.get("final_ms")
    assert res["reason"].startswith("diagnostics only: the steps list ends at startup"), res["reason"]
    notes = [n["text"] for n in read_state(tmp_path / "out" / "datasets" / "b").get("notices", [])]
    hit = [t for t in notes if "(VLA C band) but band = 'L'" in t]
    assert bool(hit) == said, notes
    assert ms.changes() == []
