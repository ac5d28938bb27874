"""uv-range syntax, WSClean conversion and the automatic minimum baseline (pure)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from selfcal_batch.config import PipelineConfig
from selfcal_batch.errors import ConfigError
from selfcal_batch.imaging.wsclean import WSCleanOptions, build_argv
from selfcal_batch.selfcal import uvrange as U
from selfcal_batch.selfcal.templates import template_params


@pytest.mark.parametrize("text,low,high,unit,casa", [
    (">500lambda", 500, math.inf, "lambda", ">500lambda"),
    ("<50klambda", 0, 50e3, "lambda", "0~50000lambda"),
    ("0~5km", 0, 5000, "m", "0~5000m"),
    ("100 ~ 2000m", 100, 2000, "m", "100~2000m"),
    (">1.5Mlambda", 1.5e6, math.inf, "lambda", ">1.5e+06lambda"),
])
def test_parse(text, low, high, unit, casa):
    r = U.parse_uvrange(text)
    assert (r.low, r.high, r.unit) == (low, high, unit)
    assert U.casa_uvrange(r) == casa


@pytest.mark.parametrize("bad", [">500", "500lambda", "5~1km", "abc", ">-3m", "1~2 parsec", "auto"])
def test_parse_rejects(bad):
    with pytest.raises(ValueError):
        U.parse_uvrange(bad)


def test_auto_and_empty():
    assert U.parse_uvrange("") is None
    assert U.parse_uvrange("auto", allow_auto=True) is None
    assert U.casa_uvrange(None) == ""


def test_wsclean_limits_convert_metres_at_band_centre():
    low, high, note = U.wsclean_limits(U.parse_uvrange("0~5km"), 6e9)
    assert low == 0 and high == pytest.approx(5000 * 6e9 / U.C_LIGHT)
    assert "converted" in note and "6 GHz" in note
    low, high, note = U.wsclean_limits(U.parse_uvrange(">500lambda"), 6e9)
    assert (low, high, note) == (500, 0.0, "")
    argv = build_argv(WSCleanOptions(name="x", size=64, scale="1arcsec", minuv_l=500, maxuv_l=2e4), "a.ms")
    assert argv[argv.index("-minuv-l") + 1] == "500" and argv[argv.index("-maxuv-l") + 1] == "20000"
    assert "-minuv-l" not in build_argv(WSCleanOptions(name="x", size=64, scale="1arcsec"), "a.ms")


def test_config_validation_names_the_key():
    assert PipelineConfig.from_dict({"uvrange_cal": "auto", "uvrange_image": ">1klambda"}).uvrange_cal == "auto"
    with pytest.raises(ConfigError, match="^ds.uvrange_image: .*'auto'"):
        PipelineConfig.from_dict({"uvrange_image": "auto"}, where="ds")
    with pytest.raises(ConfigError, match="^uvrange_cal: "):
        PipelineConfig.from_dict({"uvrange_cal": "500m"})
    with pytest.raises(ConfigError, match="pb_cutoff"):
        PipelineConfig.from_dict({"pb_cutoff": 0.0})
    p = template_params("bright", "VLA", "C", {"p1": {"uvrange_cal": ">2klambda"}})
    assert p["p1"].uvrange_cal == ">2klambda" and p["p0"].uvrange_cal == ""
    with pytest.raises(ConfigError, match=r"templates\.bright\.p1\.uvrange_image"):
        template_params("bright", "VLA", "C", {"p1": {"uvrange_image": "9 furlongs"}})


def _bins(data, model, err=0.001, count=100):
    n = len(data)
    return dict(edges_lambda=np.linspace(0, 10_000, n + 1), data_amp=data, model_amp=model,
                err=[err] * n, counts=[count] * n)


def test_auto_min_uv_excludes_short_baselines_where_model_misses_flux():
    # Extended emission: data 1.0 + 0.5 on the first 3 bins, model holds only the core.
    data = [1.5, 1.3, 1.12, 1.01, 1.0, 1.0, 0.99, 1.0, 1.0, 1.0]
    model = [1.0] * 10
    c = U.auto_min_uv(**_bins(data, model))
    assert c.min_uv_lambda == pytest.approx(3000.0)
    assert c.excluded_fraction == pytest.approx(0.3)
    assert "below 3000 lambda" in c.reason


def test_auto_min_uv_no_limit_when_model_agrees_or_within_noise():
    assert U.auto_min_uv(**_bins([1.0] * 10, [1.0] * 10)).min_uv_lambda == 0.0
    # A 20% deficit that is within 3 sigma of a noisy bin does not count.
    assert U.auto_min_uv(**_bins([1.2, 1.0, 1.0], [1.0] * 3, err=0.1)).min_uv_lambda == 0.0
    # Empty bins are ignored.
    b = _bins([5.0, 1.0, 1.0], [1.0] * 3)
    b["counts"] = [0, 100, 100]
    assert U.auto_min_uv(**b).min_uv_lambda == 0.0


def test_auto_min_uv_refuses_to_exclude_more_than_max_excluded():
    data = [1.5, 1.3, 1.12, 1.01, 1.0, 1.0, 0.99, 1.0, 1.0, 1.0]
    c = U.auto_min_uv(**_bins(data, [1.0] * 10), max_excluded=0.2)
    assert c.min_uv_lambda == 0.0 and "would exclude 30%" in c.reason


def test_auto_min_uv_on_measured_bins():
    """Bins measured on the generated dataset of tests/integration/test_uvrange.py (a 1 Jy
    Gaussian outside the field, model from the data with 40 deg phase errors): only the
    shortest bin holds the unmodelled emission; the model is 1-20% low elsewhere."""
    edges = [2265, 5087, 7953, 10986, 13297, 16315, 19033, 22367, 24940, 28013, 31237, 34697, 37932, 41314,
             45676, 52158, 69317]
    data = [0.2597, 0.0494, 0.0497, 0.0506, 0.0494, 0.0502, 0.0500, 0.0503, 0.0501, 0.0502, 0.0505, 0.0500,
            0.0500, 0.0501, 0.0498, 0.0499]
    model = [0.0415, 0.0412, 0.0408, 0.0403, 0.0400, 0.0398, 0.0398, 0.0402, 0.0409, 0.0417, 0.0428, 0.0443,
             0.0456, 0.0468, 0.0492, 0.0490]
    c = U.auto_min_uv(edges, data, model, [0.0017] + [0.0008] * 15, [42120] * 16)
    assert c.min_uv_lambda == pytest.approx(5087) and c.excluded_fraction == pytest.approx(1 / 16)


def test_auto_min_uv_rejects_inconsistent_lengths():
    with pytest.raises(ValueError):
        U.auto_min_uv([0, 1], [1, 2], [1], [1], [1])


def test_binned_amplitudes_debias_noise():
    rng = np.random.default_rng(1)
    n = 200_000
    uv = rng.uniform(0, 1000, n)
    sigma = 0.5
    signal = np.where(uv < 500, 2.0, 1.0)
    data = signal * np.exp(1j * rng.uniform(0, 2 * np.pi, n)) + sigma * (rng.normal(size=n) + 1j * rng.normal(size=n))
    model = np.ones(n, complex)
    d, m, e, c = U.binned_amplitudes(uv, data, model, np.full(n, 1 / sigma**2), np.array([0, 500, 1000.0]))
    assert d == pytest.approx([2.0, 1.0], rel=0.01)  # phases do not matter, noise removed
    assert m == pytest.approx([1.0, 1.0]) and c.sum() == n and (e < 0.02).all()


def test_auto_min_uv_matches_the_model_scale_on_long_baselines_first():
    # A model 25% low everywhere (made from decorrelated data) plus missing extended flux
    # on the two shortest bins: only the scale-dependent excess counts.
    data = [2.0, 1.3, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    c = U.auto_min_uv(**_bins(data, [0.75] * 10))
    assert c.min_uv_lambda == pytest.approx(2000.0) and "x1.33" in c.reason
    assert U.auto_min_uv(**_bins([1.0] * 10, [0.75] * 10)).min_uv_lambda == 0.0


@pytest.mark.parametrize("data, why", [
    # a point source whose model is a little low on the longest baselines (breaker's case:
    # the last bin set the limit and the reason read "would exclude 100% of the data")
    ([1.0] * 9 + [1.3], "misses some only beyond 9000 lambda"),
    ([1.0, 1.0, 1.0, 1.0, 1.0, 1.3, 1.3, 1.0, 1.0, 1.0], "misses some only beyond 5000 lambda"),
])
def test_auto_min_uv_flux_missed_only_on_long_baselines_is_no_limit(data, why):
    c = U.auto_min_uv(**_bins(data, [1.0] * 10))
    assert c.min_uv_lambda == 0.0 and c.excluded_fraction == 0.0
    assert why in c.reason and "no limit" in c.reason and "100%" not in c.reason


def test_auto_min_uv_limit_is_the_leading_run_only():
    # short baselines miss flux (extended emission) and, separately, the longest bin
    c = U.auto_min_uv(**_bins([1.5, 1.3, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.4], [1.0] * 10))
    assert c.min_uv_lambda == pytest.approx(2000.0) and c.excluded_fraction == pytest.approx(0.2)
    assert "misses up to 33% of the flux below 2000 lambda (20.0% of the visibilities excluded)" in c.reason
    # an empty shortest bin: the run starts at the first populated one
    b = _bins([9.0, 1.5, 1.0, 1.0], [1.0] * 4)
    b["counts"] = [0, 100, 100, 100]
    c = U.auto_min_uv(**b)
    assert c.min_uv_lambda == pytest.approx(5000.0) and c.excluded_fraction == pytest.approx(1 / 3)
