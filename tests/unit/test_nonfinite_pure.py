"""nonfinite_mask: which samples of the working copy are flagged as non-finite (pure)."""
from __future__ import annotations

import numpy as np
import pytest

from selfcal_batch.ms.nonfinite import nonfinite_mask
from selfcal_batch.numeric import float_or_nan
from selfcal_batch.selfcal.acceptance import improvement_z, metric_noise


REAL = [np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("where, value", [*[("data", v) for v in [*REAL, complex(np.nan, 1), complex(1, np.inf)]],
                                          *[(w, v) for w in ("weight", "weight_spectrum") for v in REAL]])
def test_every_nonfinite_kind_is_masked(value, where):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(4, 3, 10)) + 1j * rng.normal(size=(4, 3, 10))
    wt, ws = np.ones((4, 10)), np.ones((4, 3, 10))
    expect = np.zeros(data.shape, bool)
    if where == "data":
        data[1, 2, 5] = value
        expect[1, 2, 5] = True
    elif where == "weight":
        wt[2, 7] = value
        expect[2, :, 7] = True          # a row's weight covers all its channels
    else:
        ws[0, 1, 3] = value
        expect[0, 1, 3] = True
    assert np.array_equal(nonfinite_mask(data, wt, ws), expect)
    assert not nonfinite_mask(np.ones((4, 3, 10), complex)).any()


@pytest.mark.parametrize("missing", [None, "", "text", float("nan")])
def test_optional_measured_numbers_become_nan(missing):
    """The kind behind the TypeError: float(x.get(k, nan)) fails when k is present as None."""
    assert np.isnan(float_or_nan({"thermal_noise_jy": missing}.get("thermal_noise_jy")))


KEYS = ("snr", "rms_offsource", "rms_near", "offsource_beams", "near_beams", "peak", "total_flux_mask")


@pytest.mark.parametrize("missing", [None, "", float("nan")])
@pytest.mark.parametrize("key", KEYS)
def test_gate_metrics_tolerate_a_missing_measured_number(key, missing):
    """Each image statistic present as None/''/NaN (JSON null of a NaN measurement) gives NaN
    uncertainties, never a TypeError in the gate."""
    good = {"snr": 50.0, "rms_offsource": 1e-4, "rms_near": 1.2e-4, "offsource_beams": 400.0,
            "near_beams": 40.0, "peak": 5e-3, "total_flux_mask": 6e-3}
    bad = {**good, key: missing}
    for pre, post in ((good, bad), (bad, good)):
        z = improvement_z(pre, post)
        assert set(z) == {"snr", "rms_offsource", "rms_near"}
    noise = metric_noise(bad)
    if key in ("snr", "offsource_beams"):
        assert np.isnan(noise["snr"])
