"""Bright emission outside the imaged field (selfcal/outside.py): decision over generated numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from astropy.io import fits

from selfcal_batch.selfcal import outside as O
from selfcal_batch.selfcal.uvrange import binned_amplitudes

ARCSEC = math.pi / 180 / 3600


def _sky(seed: int, comps_data, comps_model, phase_rms_deg: float = 30.0, noise_jy: float = 0.01,
         n_ant: int = 27, n_time: int = 40, nbins: int = 8):
    """Binned (edges, data, model, err, counts) of a generated VLA-C-like uv coverage: ``comps_*``
    are (flux Jy, l arcsec, m arcsec[, gaussian fwhm arcsec]); antenna phase errors and noise
    (``noise_jy`` per real/imaginary part) on the data only."""
    rng = np.random.default_rng(seed)
    xy = rng.normal(0, 600.0, (n_ant, 2))  # metres
    a1, a2 = np.triu_indices(n_ant, 1)
    h = np.linspace(-0.5, 0.5, n_time)  # rad of hour angle: earth rotation
    lam = 0.06  # 5 GHz
    bx, by = (xy[a2, 0] - xy[a1, 0]) / lam, (xy[a2, 1] - xy[a1, 1]) / lam
    u = (bx[None, :] * np.cos(h)[:, None] - by[None, :] * np.sin(h)[:, None]).ravel()
    v = (bx[None, :] * np.sin(h)[:, None] + by[None, :] * np.cos(h)[:, None]).ravel() * 0.8

    def vis(comps):
        out = np.zeros(u.shape, complex)
        for c in comps:
            s, dl, dm = c[0], c[1] * ARCSEC, c[2] * ARCSEC
            taper = 1.0
            if len(c) > 3:  # gaussian of fwhm c[3]
                sig = c[3] * ARCSEC / 2.3548
                taper = np.exp(-2 * math.pi ** 2 * sig ** 2 * (u ** 2 + v ** 2))
            out += s * taper * np.exp(-2j * math.pi * (u * dl + v * dm))
        return out

    ph = np.deg2rad(rng.normal(0, phase_rms_deg, (n_time, n_ant)))
    g = np.exp(1j * (ph[:, a1] - ph[:, a2])).ravel()
    data = vis(comps_data) * g + noise_jy * (rng.normal(size=u.size) + 1j * rng.normal(size=u.size))
    weight = np.full(u.size, 1 / noise_jy ** 2)
    uvd = np.hypot(u, v)
    edges = np.quantile(uvd, np.linspace(0, 1, nbins + 1))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return (edges, *binned_amplitudes(uvd, data, vis(comps_model), weight, edges))


def test_fires_on_a_bright_source_outside_the_model():
    v = O.outside_emission(*_sky(1, [(0.03, 0, 0), (0.5, 45, 30)], [(0.03, 0, 0)]))
    assert v.fires and v.ratio > 10
    assert abs(v.data_jy - 0.5) < 0.05 and abs(v.model_jy - 0.03) < 0.005
    assert "outside the image" in v.reason and "0.03 Jy" in v.reason and "enlarge imsize" in v.reason


def test_quiet_when_the_model_holds_the_sky_despite_phase_errors():
    sky = [(0.03, 0, 0), (0.5, 5, 3)]
    v = O.outside_emission(*_sky(2, sky, sky, phase_rms_deg=60.0))
    assert not v.fires and v.reason == "" and 0.9 < v.ratio < 1.1


def test_quiet_on_a_resolved_source_inside_with_the_model_short_of_flux():
    # 1 Jy gaussian of 4" inside the field, the model (clean of the image) holds half of it
    v = O.outside_emission(*_sky(3, [(1.0, 0, 0, 4.0)], [(0.5, 0, 0, 4.0)]))
    assert not v.fires and 1.5 < v.ratio < 2.5


def test_quiet_on_noise_only_data_with_an_empty_model():
    v = O.outside_emission(*_sky(4, [], []))
    assert not v.fires and math.isinf(v.ratio)


def test_fires_on_significant_flux_with_an_empty_model_and_not_on_faint_flux():
    assert O.outside_emission(*_sky(5, [(0.2, 60, 0)], [])).fires
    assert not O.outside_emission(*_sky(5, [(0.0005, 60, 0)], [])).fires  # below 5 sigma of the bin


@pytest.mark.parametrize("ratio", [3.0, 20.0])
def test_ratio_threshold(ratio):
    v = O.outside_emission(*_sky(6, [(0.03, 0, 0), (0.5, 45, 30)], [(0.03, 0, 0)]), ratio=ratio)
    assert v.fires == (v.data_jy > ratio * v.model_jy)


def test_inconsistent_lengths_and_empty_bins():
    with pytest.raises(ValueError):
        O.outside_emission([0, 1, 2], [1.0], [1.0], [0.1], [1])
    assert not O.outside_emission([0, 1], [1.0], [0.0], [0.1], [0]).fires


def test_model_visibilities_phase_and_amplitude():
    u = np.array([0.0, 1000.0, 2500.0])
    v = np.array([0.0, 500.0, -300.0])
    l_, m_ = np.array([10 * ARCSEC]), np.array([-5 * ARCSEC])
    got = O.model_visibilities(u, v, l_, m_, np.array([2.0]), chunk=2)
    assert np.allclose(got, 2.0 * np.exp(-2j * math.pi * (u * l_[0] + v * m_[0])))


def test_model_components_reads_positions_and_fluxes(tmp_path):
    img = np.zeros((1, 1, 16, 16))
    img[0, 0, 8, 8] = 0.03   # reference pixel (CRPIX 9, 1-based)
    img[0, 0, 8, 4] = 0.5    # 4 pixels west... east of it: x smaller, CDELT1 < 0 -> l > 0
    h = fits.Header()
    h.update(CRPIX1=9.0, CRPIX2=9.0, CDELT1=-1 / 3600, CDELT2=1 / 3600)
    p = tmp_path / "m-model.fits"
    fits.PrimaryHDU(img, h).writeto(p)
    l_, m_, f = O.model_components(str(p))
    order = np.argsort(f)
    assert np.allclose(f[order], [0.03, 0.5])
    assert np.allclose(np.array(l_)[order] / ARCSEC, [0.0, 4.0]) and np.allclose(np.array(m_)[order], 0)
    l2, _, f2 = O.model_components(str(p), max_components=1)
    assert np.allclose(f2, [0.5]) and np.allclose(l2 / ARCSEC, [4.0])


def _delay_vis(geometric: bool, n_ant=20, nrow_per=10, nchan=16, width=8e6, seed=0):
    """Per-baseline phase slopes: antenna delays (4 ns rms, baseline delay = tau_j - tau_i) or a
    source 144" off-axis (baseline delay = b . s / c, grows with the length b)."""
    rng = np.random.default_rng(seed)
    xy = rng.normal(0, 800.0, (n_ant, 2))
    a1, a2 = np.triu_indices(n_ant, 1)
    b = xy[a2] - xy[a1]
    if geometric:
        s = np.array([120.0, 80.0]) * ARCSEC
        tau_bl = (b @ s) / 299_792_458.0
    else:
        tau = rng.normal(0, 4e-9, n_ant)
        tau_bl = tau[a2] - tau[a1]
    bl = np.repeat(np.arange(len(a1)), nrow_per)
    freqs = 6e9 + width * np.arange(nchan)
    atm = rng.uniform(-np.pi, np.pi, bl.size)
    v = np.exp(1j * (atm[:, None] + 2 * np.pi * tau_bl[bl][:, None] * freqs[None, :]))
    data = np.stack([v, v], -1) + 0.05 * (rng.standard_normal((bl.size, nchan, 2))
                                          + 1j * rng.standard_normal((bl.size, nchan, 2)))
    length = np.hypot(b[:, 0], b[:, 1])[bl]
    return data, np.zeros(data.shape, bool), bl, width, length


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delay_check_tells_a_source_off_axis_from_antenna_delays(seed):
    from selfcal_batch.selfcal import outcome

    d, f, bl, w, length = _delay_vis(geometric=False, seed=seed)
    r = outcome.band_decorrelation(d, f, bl, w, length_m=length)
    assert r["delay_length_ratio"] > outcome.GEOMETRIC_DELAY_RATIO
    bad, why = outcome.looks_uncalibrated([r], 0.3, band_hz=256e6)
    assert bad and "uncalibrated" in why
    d, f, bl, w, length = _delay_vis(geometric=True, seed=seed)
    r = outcome.band_decorrelation(d, f, bl, w, length_m=length)
    assert r["delay_length_ratio"] < outcome.GEOMETRIC_DELAY_RATIO
    assert outcome.looks_uncalibrated([{**r, "delay_length_ratio": math.nan}], 0.3, band_hz=1e9)[0]  # before
    bad, why = outcome.looks_uncalibrated([r], 0.3, band_hz=1e9)
    assert not bad and "away from the phase centre" in why


def test_slopes_geometric_needs_slopes_growing_with_baseline_length():
    from selfcal_batch.selfcal.decorrelation import slopes_geometric

    def away(rows, r):
        return slopes_geometric(rows, r)[:2]

    # measured rows (bench_harm / s5-break): bright 0.96/0.78, delays 1.02/1.03, conf 0.18/0.18
    rows = lambda *r: [{"n_measured": 351.0, "delay_length_ratio": x} for x in r]  # noqa: E731
    assert away(rows(0.182, 0.175), 0.5) == (True, pytest.approx(0.1785))
    assert not away(rows(0.957, 0.778), 0.5)[0]
    assert not away(rows(1.018, 1.027), 0.5)[0]
    # nothing measured (faint / noise-only data): no evidence, no claim
    geo, r = away([{"n_measured": 0.0, "delay_length_ratio": 0.1}, {"n_measured": 300.0}], 0.5)
    assert not geo and math.isnan(r)
    assert away([], 0.5)[0] is False


def _wide_vis(offset_arcsec, n_ant=27, nchan=4, width=32e6, n_time=60, seed=0, delays_ns=0.0, target=0.03):
    """Generated VLA-B-like coverage (27 antennas out to ~11 km, 600 s, 10 s integrations, 6 GHz,
    ``nchan`` x ``width``): a 30 mJy target at the centre and a source 20x brighter at
    ``offset_arcsec`` (position angle 53 deg), or (``delays_ns`` > 0) the target alone with
    antenna delays of that rms. MS sign convention, noise 0.01 Jy. Returns band_decorrelation's
    arguments."""
    rng = np.random.default_rng(seed)
    arm = np.array([[0, 1], [math.sin(math.radians(120)), math.cos(math.radians(120))],
                    [math.sin(math.radians(240)), math.cos(math.radians(240))]])
    r = 5400.0 * (np.arange(1, 10) / 9) ** 1.7  # metres along each of three arms (VLA-like)
    xy = np.concatenate([np.outer(r, a) for a in arm])
    a1, a2 = np.triu_indices(n_ant, 1)
    b = xy[a2] - xy[a1]
    h = np.linspace(-0.022, 0.022, n_time)
    u = (b[None, :, 0] * np.cos(h)[:, None] - b[None, :, 1] * np.sin(h)[:, None]).ravel()
    v = ((b[None, :, 0] * np.sin(h)[:, None] + b[None, :, 1] * np.cos(h)[:, None]) * 0.9).ravel()
    bl = np.tile(np.arange(len(a1)), n_time)
    t = np.repeat(np.arange(n_time) * 10.0, len(a1))
    freqs = 6e9 + width * (np.arange(nchan) - nchan / 2)
    s = offset_arcsec * ARCSEC
    lm = (s * math.sin(math.radians(53)), s * math.cos(math.radians(53)))
    ph = 2 * math.pi * (u * lm[0] + v * lm[1])[:, None] * freqs[None, :] / 299_792_458.0
    vis = target + (0.0 if delays_ns else 20 * target) * np.exp(1j * ph)
    if delays_ns:
        tau = rng.normal(0, delays_ns * 1e-9, n_ant)
        vis = vis * np.exp(2j * math.pi * (tau[a2] - tau[a1])[bl][:, None] * freqs[None, :])
    atm = np.exp(1j * rng.uniform(-np.pi, np.pi, (n_time, n_ant)))
    vis = vis * (atm[:, a1] * np.conj(atm[:, a2])).ravel()[:, None]
    data = np.stack([vis, vis], -1) + 0.01 * (rng.standard_normal((u.size, nchan, 2))
                                             + 1j * rng.standard_normal((u.size, nchan, 2)))
    uv = np.stack([u, v], 1)
    radius = 3 * 0.05 / 25.0
    return (data, np.zeros(data.shape, bool), bl, width), {"length_m": np.hypot(u, v), "uv_m": uv, "time_s": t,
                                                           "radius_rad": radius}


@pytest.mark.parametrize("offset", [54.0, 180.0, 500.0, 900.0])
def test_slopes_of_a_source_off_axis_are_geometric_at_every_offset(offset):
    """s6-harm: at 500" the longest baselines' phase step per channel is ~18 rad; the
    delay-length ratio wrapped to 0.79 (a false needs_calibration); one direction still fits."""
    from selfcal_batch.selfcal import decorrelation as D

    args, kw = _wide_vis(offset)
    r = D.band_decorrelation(*args, **kw)
    geo, _ratio, how = D.slopes_geometric([r])
    assert geo, (offset, r, how)
    assert r["geometric_fraction"] > 0.8 and abs(r["geometric_offset_arcsec"] - offset) < 2 * r["geometric_step_arcsec"]
    bad, why = D.looks_uncalibrated([r], 0.3, band_hz=256e6)
    assert not bad, why


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_antenna_delays_fit_no_direction(seed):
    from selfcal_batch.selfcal import decorrelation as D

    args, kw = _wide_vis(0.0, delays_ns=4.0, seed=seed)
    r = D.band_decorrelation(*args, **kw)
    # measured: the best direction gathers 0.61-0.67 of the (small, 1.1 rad rms) phase steps,
    # 36" away, the centre itself 0.5-0.6: no better than no slope at all
    gain = (r["geometric_fraction"] - r["geometric_fraction_centre"]) / (1 - r["geometric_fraction_centre"])
    assert gain < 0.5, r
    geo, _ratio, _how = D.slopes_geometric([r])
    assert not geo
    bad, why = D.looks_uncalibrated([r], 0.3, band_hz=256e6)
    assert bad and "uncalibrated" in why


def test_slope_direction_needs_enough_points():
    from selfcal_batch.selfcal.decorrelation import slope_direction

    z = np.ones(10, complex)
    assert all(math.isnan(x) for x in slope_direction(z, np.arange(10.0), np.arange(10.0), 1e6, 1e-3))


@pytest.mark.parametrize("data, model, peak, fires", [
    (1.0, 0.0438, 0.0444, True),   # s6-break2 G1: 1 Jy, 120 deg phase random walk: delivered 9" off
    (1.0, 0.0702, 0.0387, True),   # the same, another seed: 14x the model, 26x the peak
    (0.107, 0.0, 0.0709, False),   # 4 antennas: the test image cleaned nothing, its peak shows the source
    (0.467, 0.453, 0.0895, False),  # bench_harm resolved: extended, low peak, the model holds the flux
    (0.117, 0.0497, 0.0306, False),  # bench_harm bright (60 deg): 2.4x / 3.8x, calibrates well
    (0.1, 0.0, 0.0, True),         # nothing in the test image at all
    (1.0, 0.05, math.nan, True),   # no peak measured: the model decides
    (math.nan, 0.01, 0.01, False),
])
def test_scrambled_phases(data: float, model: float, peak: float, fires: bool) -> None:
    why = O.scrambled_reason(data, model, peak)
    assert bool(why) == fires
    if fires:
        assert why.startswith("phases too scrambled to self-calibrate") and "\n" not in why
