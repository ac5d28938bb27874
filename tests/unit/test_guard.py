"""The final guard, honest outcomes and decorrelation check (pure numbers, nothing run)."""
import math

import numpy as np
import pytest

from selfcal_batch.selfcal import guard
from selfcal_batch.selfcal import outcome
from selfcal_batch.config import PipelineConfig
from selfcal_batch.errors import ConfigError

BEAM_PX = 5.0
AREA = math.pi / (4 * math.log(2)) * BEAM_PX**2


def _sky(n=128, peak=1.0, noise=1e-3, artefact=0.0, seed=0):
    """A Gaussian source (restoring beam) in smooth correlated noise, and its residual."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    s = BEAM_PX / (2 * math.sqrt(2 * math.log(2)))
    src = peak * np.exp(-((xx - n / 2) ** 2 + (yy - n / 2) ** 2) / (2 * s * s))
    white = rng.standard_normal((n, n))
    res = ndimage.gaussian_filter(white, s)
    res *= noise / res.std()
    if artefact:
        res += artefact * np.sin(xx / 3.0) * np.exp(-((xx - n / 2) ** 2 + (yy - n / 2) ** 2) / (2 * (6 * s) ** 2))
    return src + res, res, src > 0.05 * peak


def _metrics(img, res, mask):
    reg = guard.regions(img.shape, mask, BEAM_PX)
    return guard.image_metrics(img, res, AREA, reg)


def test_regions_are_disjoint_and_fixed():
    _, _, mask = _sky()
    reg = guard.regions((128, 128), mask, BEAM_PX)
    assert reg["source"].sum() == mask.sum()
    assert not (reg["near"] & reg["source"]).any() and not (reg["far"] & reg["near"]).any()
    assert reg["far"].sum() > 10 * reg["near"].sum() / 10  # both populated
    empty = guard.regions((64, 64), np.zeros((64, 64), bool), BEAM_PX)
    assert empty["near"].any() and not empty["source"].any()


def test_rms_uncertainty_follows_number_of_beams():
    img, res, mask = _sky(noise=1e-3)
    m = _metrics(img, res, mask)
    rms, sig = m["rms_far"]
    n_beams = guard.regions(img.shape, mask, BEAM_PX)["far"].sum() / AREA
    assert sig == pytest.approx(rms / math.sqrt(2 * (n_beams - 1)))
    assert m["peak"][1] == pytest.approx(m["rms_near"][0])
    assert m["peak"][0] == pytest.approx(1.0, abs=0.01)
    assert m["flux"][0] == pytest.approx(1.0, rel=0.05)  # 1 Jy/beam point = 1 Jy


def test_identical_images_are_not_delivered():
    img, res, mask = _sky()
    m = _metrics(img, res, mask)
    d = guard.judge(m, m)
    assert not d.deliver and "no metric improved" in d.reason


def test_noise_level_change_is_not_an_improvement():
    """Another noise realisation of the same rms: within the metric noise, not delivered."""
    a = _metrics(*_sky(seed=1))
    b = _metrics(*_sky(seed=2))
    d = guard.judge(a, b, sigma=3.0)
    assert not d.deliver
    assert all(abs(z) < 3.0 for _b, _a, z in d.changes.values())


def test_artefacts_removed_are_delivered():
    before = _metrics(*_sky(artefact=0.02, seed=3))
    after = _metrics(*_sky(artefact=0.0, seed=3))
    d = guard.judge(before, after)
    assert d.deliver, d.reason
    assert d.changes["rms_near"][2] > 3


def test_artefacts_added_are_refused():
    before = _metrics(*_sky(artefact=0.0, seed=4))
    after = _metrics(*_sky(artefact=0.02, seed=4))
    d = guard.judge(before, after)
    assert not d.deliver and "worse: rms_near" in d.reason


def test_flux_loss_beyond_noise_and_tolerance_is_harm():
    before = {"rms_far": (1e-3, 1e-5), "peak": (1.0, 1e-3), "flux": (1.2, 5e-3)}
    lower_rms = {"rms_far": (0.9e-3, 1e-5), "peak": (1.0, 1e-3)}
    d = guard.judge(before, dict(lower_rms, flux=(1.1, 5e-3)))  # -8 %, 14 sigma
    assert not d.deliver and "worse: flux" in d.reason
    d = guard.judge(before, dict(lower_rms, flux=(1.19, 5e-3)))  # -0.8 %: within tolerance
    assert d.deliver and "rms_far" in d.reason
    # A flux rise alone is not an improvement.
    d = guard.judge(before, dict(before, flux=(1.5, 5e-3)))
    assert not d.deliver


def test_nan_metrics_are_ignored_and_nothing_measurable_is_refused():
    nan = (math.nan, math.nan)
    d = guard.judge({"peak": nan}, {"peak": nan})
    assert not d.deliver and "no metric" in d.reason
    d = guard.judge({"peak": (1.0, 0.01), "flux": nan}, {"peak": (1.2, 0.01), "flux": nan})
    assert d.deliver and set(d.changes) == {"peak"}


def test_detection():
    assert outcome.detection(50.0, 5.0) == (True, "")
    ok, why = outcome.detection(4.2, 5.0)
    assert not ok and "no source above 5 sigma" in why and "4.2" in why
    assert not outcome.detection(math.nan, 5.0)[0]
    # Sidelobe-limited image (4 antennas): peak/rms 3.6 but 150x the thermal noise.
    assert outcome.detection(3.6, 5.0, peak=0.072, thermal_jy=0.00047) == (True, "")
    ok, why = outcome.detection(3.6, 5.0, peak=0.004, thermal_jy=0.00047)
    assert not ok and "8.5 x the thermal noise" in why


def _vis(delay_ns=0.0, n_bl=20, nrow_per=30, nchan=16, width=8e6, amp=1.0, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    freqs = 6e9 + width * np.arange(nchan)
    bl = np.repeat(np.arange(n_bl), nrow_per)
    taus = rng.normal(0, delay_ns, n_bl) * 1e-9 if delay_ns else np.zeros(n_bl)
    atm = rng.uniform(-np.pi, np.pi, bl.size)  # a random common phase per row
    v = amp * np.exp(1j * (atm[:, None] + 2 * np.pi * taus[bl][:, None] * freqs[None, :]))
    data = np.stack([v, v], axis=-1) + noise * (rng.standard_normal((bl.size, nchan, 2))
                                                + 1j * rng.standard_normal((bl.size, nchan, 2)))
    return data.astype(np.complex64), np.zeros(data.shape, bool), bl, width


def test_calibrated_data_do_not_decorrelate():
    r = outcome.band_decorrelation(*_vis())
    assert r["n_measured"] == 20 and r["median_loss"] < 0.02
    assert outcome.looks_uncalibrated([r], 0.3) == (False, "")


def test_delays_decorrelate_and_are_reported():
    r = outcome.band_decorrelation(*_vis(delay_ns=6.0))
    assert r["n_measured"] >= 15 and r["median_loss"] > 0.3
    assert r["median_delay_ns"] == pytest.approx(6.0 * 0.6745, rel=0.6)  # median |N(0, 6)|
    bad, why = outcome.looks_uncalibrated([r], 0.3)
    assert bad and "uncalibrated" in why and "ns" in why
    # 1 ns delays: a 128 MHz window loses little, a 1 GHz band (channel average) most.
    r = outcome.band_decorrelation(*_vis(delay_ns=1.0, seed=2))
    assert r["median_loss"] < 0.3 and not outcome.looks_uncalibrated([r], 0.3)[0]
    assert outcome.looks_uncalibrated([r], 0.3, band_hz=1e9)[0]


def test_noise_only_data_cannot_claim_decorrelation():
    r = outcome.band_decorrelation(*_vis(amp=0.0, noise=1.0))
    assert r["n_measured"] <= 1
    assert outcome.looks_uncalibrated([r], 0.3) == (False, "")


def test_single_channel_is_not_measured():
    data, flags, bl, w = _vis(nchan=1)
    assert outcome.band_decorrelation(data, flags, bl, w)["n_measured"] == 0


def test_final_status():
    assert outcome.final_status(None, "finished") == ("finished", "")
    assert outcome.final_status({"status": "unchanged", "reason": "r"}, "finished") == ("unchanged", "r")
    assert outcome.final_status({"status": "unchanged", "reason": "r"}, "failed") == ("failed", "")
    assert set(outcome.SUCCESS_STATUSES) < set(outcome.ALL_STATUSES)


def test_config_keys_validated():
    cfg = PipelineConfig.from_dict({"guard": {"sigma": 2.5}, "detection_sigma": 6, "decorrelation_limit": 0.4,
                                    "gate": {"improve_sigma": 1.0}, "solnorm_type": "mean"})
    assert cfg.guard.sigma == 2.5 and cfg.detection_sigma == 6.0 and cfg.gate.improve_sigma == 1.0
    for bad, key in (({"guard": {"tolerance": 2}}, "guard.tolerance"), ({"decorrelation_limit": 1.5}, "decorrelation_limit"),
                     ({"solnorm_type": "max"}, "solnorm_type"), ({"guard": {"sigmaa": 1}}, "guard.sigmaa")):
        with pytest.raises(ConfigError, match=key):
            PipelineConfig.from_dict(bad)


def test_antenna_flag_verdict():
    better = guard.GuardDecision(True, ("better: peak 1 -> 1.1 (+5.0 sigma)",))
    same = guard.GuardDecision(False, ("no metric improved beyond 3 sigma",))
    assert outcome.antenna_flag_verdict(30.0, 30.6, better, 0.05) == (True, better.reason)
    kept, why = outcome.antenna_flag_verdict(30.0, 37.5, better, 0.05)  # issue 14: +25 % beam
    assert not kept and "beam area changed +25.0%" in why
    kept, why = outcome.antenna_flag_verdict(30.0, 30.0, same, 0.05)
    assert not kept and "no metric improved" in why


def test_common_mask_flux_compares_the_same_pixels(tmp_path):
    """A less noisy image has a larger own mask (more faint emission above 6 sigma): its own
    masked flux rises although the sky did not change; over the common mask it does not."""
    from astropy.io import fits

    from selfcal_batch.imaging import imstats

    n, fwhm = 128, 5.0
    yy, xx = np.mgrid[0:n, 0:n]
    s = fwhm / (2 * math.sqrt(2 * math.log(2)))
    sky = np.exp(-((xx - 64) ** 2 + (yy - 64) ** 2) / (2 * s * s))  # 1 Jy point
    sky += 0.05 * np.exp(-((xx - 40) ** 2 + (yy - 80) ** 2) / (2 * (3 * s) ** 2))  # faint extended
    hdr = fits.Header()
    for i, (ct, crpix, crval, cd) in enumerate([("RA---SIN", 65, 150.0, -1 / 3600), ("DEC--SIN", 65, 30.0, 1 / 3600)], 1):
        hdr[f"CTYPE{i}"], hdr[f"CRPIX{i}"], hdr[f"CRVAL{i}"], hdr[f"CDELT{i}"], hdr[f"CUNIT{i}"] = ct, crpix, crval, cd, "deg"
    hdr["BMAJ"] = hdr["BMIN"] = fwhm / 3600
    hdr["BPA"] = 0.0
    rng = np.random.default_rng(0)
    paths = []
    for k, noise in enumerate((8e-3, 1e-3)):
        p = tmp_path / f"im{k}-image.fits"
        fits.PrimaryHDU((sky + noise * rng.standard_normal(sky.shape)).astype(np.float32), hdr).writeto(p)
        paths.append(str(p))
    own = [imstats.image_statistics(p)["total_flux_mask"] for p in paths]
    assert own[1] / own[0] > 1.1  # the own-mask comparison sees a "flux change"
    a, b = outcome.common_mask_flux(*paths)
    assert b / a == pytest.approx(1.0, abs=0.05)


def test_signal_free_antenna_flag_kept_unless_worse():
    same = guard.GuardDecision(False, ("no metric improved beyond 3 sigma",))
    worse = guard.GuardDecision(False, ("worse: rms_far 5.5e-05 -> 6.9e-05 (-6.1 sigma)",))
    kept, why = outcome.antenna_flag_verdict(30.0, 32.5, same, 0.05, signal_free=True)  # dead antenna: +8.3 % beam
    assert kept and "without signal" in why
    kept, why = outcome.antenna_flag_verdict(30.0, 30.0, worse, 0.05, signal_free=True)
    assert not kept and "worse: rms_far" in why


def test_phase_only_chain_flux_drop_is_not_harm() -> None:
    """The uncalibrated image's CLEAN flux includes modelled artefacts (bench_disk, 80 mJy with
    40 deg phase errors: 0.111 Jy in the union mask -> 0.087 Jy after, truth 0.08): phase-only
    gains cannot change the flux scale, so the drop must not veto a 23x better image."""
    from selfcal_batch.selfcal import guard

    before = {"rms_far": (7.96e-4, 2e-5), "rms_near": (9e-4, 3e-5), "peak": (0.0388, 9e-4),
              "flux": (0.1109, 0.004), "min_pixel": (-0.004, 8e-4)}
    after = {"rms_far": (6.9e-5, 2e-6), "rms_near": (7e-5, 3e-6), "peak": (0.0778, 7e-5),
             "flux": (0.0870, 0.0005), "min_pixel": (-3e-4, 7e-5)}
    assert guard.judge(before, after, amplitude=False).deliver
    dec = guard.judge(before, after, amplitude=True)
    assert not dec.deliver and "flux" in dec.reason
    assert "flux" in guard.judge(before, after, amplitude=False).changes  # still recorded


def test_flux_is_summed_over_the_flux_region() -> None:
    import numpy as np

    from selfcal_batch.selfcal import guard

    img = np.zeros((64, 64))
    img[30:34, 30:34] = 1.0   # the source
    img[5:9, 5:9] = 1.0       # an artefact the uncalibrated image modelled
    src = img > 0
    flux_mask = np.zeros_like(src)
    flux_mask[30:34, 30:34] = True
    reg = guard.regions(img.shape, src, 2.0, flux_mask=flux_mask)
    m = guard.image_metrics(img, np.zeros_like(img) + 1e-3 * np.random.default_rng(1).normal(size=img.shape),
                            1.0, reg)
    assert m["flux"][0] == 16.0
    reg_union = guard.regions(img.shape, src, 2.0)
    assert guard.image_metrics(img, np.zeros_like(img), 1.0, reg_union)["flux"][0] == 32.0


@pytest.mark.parametrize("status, steps, delivered, said", [
    ("finished", ["startup", "test_image"], False, "ends at test_image"),
    ("finished", ["startup"], False, "ends at startup"),
    ("finished", ["startup", "test_image", "p0", "split_calibrated"], False, ""),  # the guard's own reason
    ("finished", ["startup", "test_image"], True, ""),
    ("unchanged", ["startup", "test_image"], False, ""),
    ("failed", ["startup"], False, ""),
])
def test_undelivered_reason(status: str, steps: list[str], delivered: bool, said: str) -> None:
    """A diagnostics-only steps list ends 'finished' with nothing delivered: the result says so."""
    got = outcome.undelivered_reason(status, steps, delivered)
    assert (said in got and got.startswith("diagnostics only")) if said else got == ""
