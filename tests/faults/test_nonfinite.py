"""Non-finite visibilities (NaN/inf in DATA or WEIGHT, unflagged) in the input: flagged in the
private working copy at startup (never in the input), counted in the log, the console notice
and msinfo.repairs, and the pipeline runs on (it used to fail the test image with
``internal error TypeError: float() argument must be ... 'NoneType'``: a NaN thermal noise)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from casacore.tables import table

from selfcal_batch.ms.checksum import tree_checksums, tree_diff

from .conftest import MSFactory, quick_config, read_state, run_pipeline

pytestmark = pytest.mark.integration

#: (column, value) damaged in a disjoint 1 % of the rows each: the generated kinds.
KINDS = (("DATA", np.nan), ("DATA", np.inf), ("DATA", complex(np.nan, 0.0)), ("WEIGHT", np.nan))


def _damage(ms: Path) -> tuple[int, int]:
    """Put each kind into its own 1 % of the rows; the numbers of unflagged samples with bad
    DATA and with a bad weight."""
    t = table(str(ms), readonly=False, ack=False)
    try:
        flags = t.getcol("FLAG")  # [nrow, nchan, ncorr]
        rows = np.random.default_rng(3).permutation(t.nrows())
        per = max(1, t.nrows() // 100)
        bad = {"DATA": np.zeros(flags.shape, bool), "WEIGHT": np.zeros(flags.shape, bool)}
        for i, (col, value) in enumerate(KINDS):
            sel = np.sort(rows[i * per:(i + 1) * per])
            # a bad weight is bad in both weight columns (CASA's split reads WEIGHT_SPECTRUM)
            for c in [col] + (["WEIGHT_SPECTRUM"] if col == "WEIGHT" and "WEIGHT_SPECTRUM" in t.colnames() else []):
                vals = t.getcol(c)
                vals[sel] = value
                t.putcol(c, vals)
            bad[col][sel] = True
    finally:
        t.close()
    return int((bad["DATA"] & ~flags).sum()), int((bad["WEIGHT"] & ~flags).sum())


def test_nonfinite_visibilities_flagged_in_working_copy(ms_factory: MSFactory, tmp_path: Path) -> None:
    src = ms_factory.get("nonfinite", duration_s=240, n_spw=2, n_chan=4, integration_s=10.0, flux_jy=0.05)
    ms = MSFactory.copy(src, tmp_path / "nan.ms")
    n_data, n_weight = _damage(ms)
    n_bad = n_data + n_weight
    assert n_data > 0 and n_weight > 0
    before = tree_checksums(ms)
    out = tmp_path / "out"
    res = run_pipeline("nan", ms, out, quick_config(steps=["startup", "test_image"], keep_work_ms=True))
    print(f"\nnan: {res['status']} {res['error']}")
    assert res["status"] != "failed", res["error"]
    assert np.isfinite(res["thermal_noise_jy"]) and res["thermal_noise_jy"] > 0
    root = out / "datasets" / "nan"
    st = read_state(root)
    # NaN/inf DATA: found in the copy; NaN weights: in the input (CASA split rewrites WEIGHT
    # from SIGMA, so the copy has lost them), matched row by row like zero weights
    repairs = st["msinfo"]["repairs"]
    assert (repairs["nonfinite_flagged"], repairs["zero_weight_flagged"]) == (n_data, n_weight)
    notes = [n["text"] for n in st.get("notices", [])]
    assert any(f"{n_data} unflagged visibilities" in t and "NaN/inf" in t for t in notes), notes
    assert any(f"{n_weight} samples flagged" in t and "NaN/inf" in t for t in notes), notes
    assert f"{n_data} unflagged visibilities" in (root / "logs" / "pipeline.log").read_text()
    t = table(str(root / "work.ms"), ack=False)
    try:
        d, w, f = t.getcol("DATA"), t.getcol("WEIGHT"), t.getcol("FLAG")
    finally:
        t.close()
    assert np.isfinite(d).all() and np.isfinite(w).all()   # no reader meets a NaN, flagged or not
    assert f.sum() == n_bad   # the simulated input had no flags
    assert tree_diff(before, tree_checksums(ms)) == []      # the input is never touched
