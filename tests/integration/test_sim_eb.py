"""The simulator's multi-field "execution block" (real casatools child; read with casacore)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selfcal_batch.simulate import load_truth, predict
from selfcal_batch.simulate.fields import field_truth

from tests.integration.survey_data import CALIBRATOR, TARGETS, eb_spec, make

tables = pytest.importorskip("casacore.tables")
pytestmark = pytest.mark.integration


def test_eb_fields_intents_and_skies(tmp_path: Path) -> None:
    spec = eb_spec(noise_jy=0.0, phase_rms_deg=0.0, duration_s=80.0, n_scans=2)
    ms = make(spec, tmp_path / "eb.ms")
    names = [CALIBRATOR.name] + [t[0] for t in TARGETS]
    with tables.table(str(ms / "FIELD"), ack=False) as t:
        assert list(t.getcol("NAME")) == names
        dirs = t.getcol("PHASE_DIR")[:, 0, :]
    assert np.allclose(np.degrees(dirs[:, 1]), [38.5, 40.0, 41.0, 42.0])
    with tables.table(str(ms / "STATE"), ack=False) as t:
        modes = list(t.getcol("OBS_MODE"))
    assert modes[0].startswith("CALIBRATE_BANDPASS#UNSPECIFIED,CALIBRATE_PHASE#")
    assert modes[1:] == ["OBSERVE_TARGET#UNSPECIFIED"] * 3
    with tables.table(str(ms), ack=False) as t:
        fid, sid, scan = t.getcol("FIELD_ID"), t.getcol("STATE_ID"), t.getcol("SCAN_NUMBER")
        sel = np.nonzero(fid == 3)[0][:50]
        uvw = t.getcol("UVW")[sel]
        data = t.getcol("DATA")[sel][:, :, 0]
        ddid = t.getcol("DATA_DESC_ID")[sel]
    assert np.array_equal(fid, sid)  # one STATE row per field
    # time-interleaved: field of each scan cycles cal, t1, t2, t3
    order = [int(np.unique(fid[scan == s])[0]) for s in np.unique(scan)]
    assert order == [0, 1, 2, 3, 0, 1, 2, 3]
    truth = load_truth(ms)
    tt = field_truth(truth, TARGETS[2][0])
    assert abs(tt["phase_centre"]["dec_deg"] - 42.0) < 1e-9 and len(tt["components"]) == 2
    spw0 = ddid == 0
    expect = predict(uvw[spw0], spec.chan_freqs(0), spec.fields[3].components, spec.reference_frequency_hz)
    np.testing.assert_allclose(data[spw0], expect, rtol=1e-4, atol=1e-6)
