"""WSClean argv building (pure; no WSClean run)."""
import pytest

from selfcal_batch.imaging.wsclean import WSCleanOptions, build_argv, expected_products


def _opts(**kw):
    base = dict(name="/d/img/p1_post", size=256, scale="0.2arcsec", threads=2)
    base.update(kw)
    return WSCleanOptions(**base)


def test_basic_argv_has_31_syntax_and_threads():
    a = build_argv(_opts(update_model=True), "/d/work.ms")
    assert a[0] == "wsclean" and a[-1] == "/d/work.ms"
    assert "-use-wgridder" in a and "-gridder" not in a
    assert a[a.index("-j") + 1] == "2"
    assert a[a.index("-weight") + 1: a.index("-weight") + 3] == ["briggs", "0"]
    assert "-update-model-required" in a
    assert a[a.index("-data-column") + 1] == "DATA"


def test_model_update_requires_mgain_below_one():
    with pytest.raises(ValueError, match="mgain"):
        build_argv(_opts(update_model=True, mgain=1.0), "x.ms")


def test_local_rms_with_multiscale_refused():
    with pytest.raises(ValueError, match="local-rms"):
        build_argv(_opts(local_rms=True, multiscale=True), "x.ms")


def test_deconvolution_channels_never_above_channels_out():
    a = build_argv(_opts(channels_out=4, deconvolution_channels=16, fit_spectral_pol=6), "x.ms")
    assert "-deconvolution-channels" not in a
    assert a[a.index("-fit-spectral-pol") + 1] == "4"
    a = build_argv(_opts(channels_out=6, deconvolution_channels=3), "x.ms")
    assert a[a.index("-deconvolution-channels") + 1] == "3"


def test_multiscale_mask_taper_negative():
    a = build_argv(_opts(multiscale=True, fits_mask="/m.fits", taper_gaussian="0.6arcsec", negative=False), "x.ms")
    assert "-multiscale" in a and "-multiscale-max-scales" in a
    assert a[a.index("-fits-mask") + 1] == "/m.fits"
    assert a[a.index("-taper-gaussian") + 1] == "0.6arcsec"
    assert "-no-negative" in a and "-no-update-model-required" in a


def test_products_mfs_and_single_channel():
    assert expected_products(_opts(channels_out=3)).image.endswith("p1_post-MFS-image.fits")
    assert expected_products(_opts(channels_out=1)).image.endswith("p1_post-image.fits")


def test_predict_argv():
    a = build_argv(_opts(predict=True, channels_out=3), "x.ms")
    assert "-predict" in a and "-channels-out" in a and "-niter" not in a


def test_one_channel_predict_reorders():
    a = build_argv(_opts(predict=True, channels_out=1), "x.ms")
    assert "-reorder" in a and "-channels-out" not in a


def test_channel_division_frequencies_one_channel_per_segment():
    cut = (6.064e9,)
    a = build_argv(_opts(channels_out=2, channel_division_hz=cut, update_model=True), "x.ms")
    assert a[a.index("-channel-division-frequencies") + 1] == "6064000000"
    p = build_argv(_opts(channels_out=2, channel_division_hz=cut, predict=True), "x.ms")
    assert p[p.index("-channel-division-frequencies") + 1] == "6064000000"
    # one output channel (a ladder economy image, a single-channel predict): no cuts passed
    assert "-channel-division-frequencies" not in build_argv(_opts(channels_out=1, channel_division_hz=cut), "x.ms")
    assert "-channel-division-frequencies" not in build_argv(_opts(channels_out=3), "x.ms")
    with pytest.raises(ValueError, match="channels_out = 2"):
        build_argv(_opts(channels_out=4, channel_division_hz=cut), "x.ms")
    # the cuts are part of what the image looks like; no cuts keeps the old key
    assert _opts(channels_out=2).imaging_key() != _opts(channels_out=2, channel_division_hz=cut).imaging_key()
    assert len(_opts(channels_out=2).imaging_key()) == len(_opts(channels_out=3).imaging_key())
