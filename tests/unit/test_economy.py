"""Pure rules of the ladder-image economies (selfcal_batch.imaging.economy); no programs run."""
from __future__ import annotations

import math

import numpy as np
import pytest

from selfcal_batch.imaging import economy


def test_good_fft_size_is_even_and_smooth():
    assert economy.good_fft_size(256) == 256
    assert economy.good_fft_size(257) == 270  # 2*3^3*5
    assert economy.good_fft_size(499) == 500
    for n in (33, 101, 777, 1000):
        m = economy.good_fft_size(n)
        assert m >= n and m % 2 == 0
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        assert k == 1


def _image(n=512, sources=((0, 0, 1.0),), noise=1e-3, seed=1):
    rng = np.random.default_rng(seed)
    img = rng.normal(0, noise, (n, n))
    for dx, dy, f in sources:
        img[n // 2 + dy, n // 2 + dx] += f
    return img


def test_emission_radius_finds_farthest_source():
    img = _image(sources=((0, 0, 1.0), (30, 40, 0.05)))
    assert economy.emission_radius_px(img) == pytest.approx(50.0)


def test_emission_radius_nan_without_emission_or_data():
    assert math.isnan(economy.emission_radius_px(_image(sources=())))
    assert math.isnan(economy.emission_radius_px(np.full((64, 64), np.nan)))
    assert math.isnan(economy.emission_radius_px(np.zeros((64, 64))))


def test_ladder_size_margin_rounding_and_limits():
    # 2 x (50 + max(16, 8 x 3)) = 148 -> at least min_size
    assert economy.ladder_size(50.0, 1024, beam_px=3.0, min_size=256) == 256
    # 2 x (232.6 + 16) = 497.2 -> 500
    assert economy.ladder_size(232.6, 1024, beam_px=2.0, min_size=256) == 500
    assert economy.ladder_size(600.0, 1024, beam_px=2.0, min_size=256) == 1024
    assert economy.ladder_size(math.nan, 1024, beam_px=2.0, min_size=256) == 1024
    assert economy.ladder_size(10.0, 256, beam_px=2.0, min_size=256) == 256  # economy cannot apply


def test_channels_out_from_fractional_bandwidth():
    c_band = [{"freq_min": 5.888e9, "freq_max": 5.984e9, "chan_width": 32e6},
              {"freq_min": 6.016e9, "freq_max": 6.112e9, "chan_width": 32e6}]
    fbw = economy.fractional_bandwidth(c_band)
    assert fbw == pytest.approx(0.256e9 / 6e9, rel=1e-6)
    assert economy.ladder_channels_out(fbw, 6) == 1
    wide = [{"freq_min": 4e9, "freq_max": 8e9}]
    assert economy.ladder_channels_out(economy.fractional_bandwidth(wide), 6) == 6
    assert economy.ladder_channels_out(math.nan, 4) == 4
    assert math.isnan(economy.fractional_bandwidth([]))


def test_crop_centre_keeps_the_phase_centre():
    data = np.zeros((1, 1, 1024, 1024))
    data[..., 512, 512] = 1.0
    hdr = {"CRPIX1": 513.0, "CRPIX2": 513.0, "NAXIS1": 1024, "NAXIS2": 1024}
    out, h = economy.crop_centre(data, hdr, 256)
    assert out.shape == (1, 1, 256, 256)
    assert out[0, 0, 128, 128] == 1.0
    assert (h["CRPIX1"], h["CRPIX2"], h["NAXIS1"]) == (129.0, 129.0, 256)
    with pytest.raises(ValueError):
        economy.crop_centre(data, hdr, 2048)
    with pytest.raises(ValueError):
        economy.crop_centre(data, hdr, 255)


def test_clean_mask_for_a_smaller_ladder_image(tmp_path):
    from astropy.io import fits

    from selfcal_batch.imaging.masks import make_clean_mask

    img = _image(n=512, sources=((10, -20, 1.0),))[None, None]
    hdr = fits.Header({"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CRPIX1": 257.0, "CRPIX2": 257.0,
                       "CDELT1": -1e-4, "CDELT2": 1e-4, "CRVAL1": 150.0, "CRVAL2": 40.0})
    fits.PrimaryHDU(img, hdr).writeto(tmp_path / "im.fits")
    res = make_clean_mask(tmp_path / "im.fits", tmp_path / "m.fits", 6.0, 0, size=256)
    with fits.open(res.path) as h:
        m = h[0].data
        assert m.shape[-2:] == (256, 256)
        assert h[0].header["CRPIX1"] == 129.0
    assert m[0, 0, 128 - 20, 128 + 10] == 1.0 and m.sum() == 1


def test_settings_signature_shares_only_plain_data_images():
    from selfcal_batch.imaging.reuse import settings_signature
    from selfcal_batch.imaging.wsclean import WSCleanOptions

    a = WSCleanOptions(name="/x/test_image", size=256, scale="1arcsec", multiscale=True, channels_out=4)
    assert settings_signature(a) == settings_signature(a.replace(name="/x/guard_before", temp_dir="/t"))
    assert settings_signature(a) != settings_signature(a.replace(robust=0.5))
    assert settings_signature(a) != settings_signature(a.replace(niter=10))
    assert settings_signature(a.replace(data_column="CORRECTED_DATA")) is None
    assert settings_signature(a.replace(update_model=True)) is None
    assert settings_signature(a.replace(fits_mask="/m.fits")) is None


def test_fixed_restoring_beam_only_for_undersampled_measured_beams():
    # Measured: 1.0" cells at X band, test beam 1.82" x 1.59" -> the ladder's fits failed.
    assert economy.fixed_restoring_beam(1.8213, 1.5949, 40.5, 1.0) == (1.8213, 1.5949, 40.5)
    assert economy.fixed_restoring_beam(5.0, 4.0, 10.0, 1.0) is None  # 4 px across: fits itself
    assert economy.fixed_restoring_beam(0.17, 0.16, 0.0, 1.0) is None  # the test image's own fit failed
    assert economy.fixed_restoring_beam(float("nan"), 1.5, 0.0, 1.0) is None
    assert economy.fixed_restoring_beam(2.0, 1.8, float("nan"), 1.0) == (2.0, 1.8, 0.0)
