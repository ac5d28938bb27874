"""Tests of selfcal_batch.selfcal.templates against the seed facts (morphen-selfcal-facts.md §2, §3)."""
from __future__ import annotations

import dataclasses
import math

import pytest

from selfcal_batch.selfcal import templates as T
from selfcal_batch.errors import ConfigError

KEYS = ("robust", "solint", "sigma_mask", "combine", "gaintype", "calmode", "minsnr",
        "nsigma_automask", "nsigma_autothreshold", "uvtaper", "with_multiscale", "scales",
        "uvrange_cal", "uvrange_image")


def full(robust, solint, sigma_mask, combine, gaintype, calmode, minsnr, am, at, uvtaper, ms):
    return dict(zip(KEYS, (robust, solint, sigma_mask, combine, gaintype, calmode, minsnr,
                           am, at, uvtaper, ms, "", "", ""), strict=True))


# (template, instrument, band, step) -> every value, transcribed from facts §3.6
FULL_CASES = [
    (("bright", "VLA", "C", "p0"),
     full(-1.0, "48s", 60.0, "", "G", "p", 3.0, 6.0, 3.0, "", False)),
    (("bright", "VLA", "K", "p0"),
     full(-0.5, "48s", 60.0, "", "G", "p", 3.0, 6.0, 3.0, "", False)),
    (("bright", "eMERLIN", "C", "p1"),
     full(0.0, "60s", 15.0, "spw", "T", "p", 1.0, 4.0, 1.5, "0.05arcsec", True)),
    (("bright", "VLA", "L", "p1"), full(-0.5, "24s", 60.0, "", "G", "p", 3.0, 6.0, 3.0, "", True)),
    (("bright", "VLA", "X", "p2"), full(0.0, "24s", 25.0, "", "G", "p", 3.0, 4.0, 1.5, "", True)),
    (("bright", "VLA", "L", "ap1"), full(0.5, "36s", 15.0, "", "G", "ap", 3.0, 3.0, 1.5, "", True)),
    (("bright", "eMERLIN", "L", "ap1"),
     full(0.5, "96s", 8.0, "spw", "T", "ap", 1.0, 3.0, 1.5, "", True)),
    (("very_faint", "eMERLIN", "L", "p0"),
     full(0.5, "96s", 6.0, "spw", "T", "p", 0.75, 3.0, 1.5, "", False)),
    (("very_faint", "VLA", "L", "p0"),
     full(0.5, "60s", 12.0, "spw", "T", "p", 1.0, 3.0, 1.5, "", False)),
    (("very_faint", "VLA", "L", "ap1"),
     full(1.0, "60s", 6.0, "spw", "T", "ap", 1.0, 3.0, 1.5, "", True)),
    (("very_faint", "VLA", "C", "ap1"),
     full(1.0, "60s", 6.0, "spw", "T", "ap", 1.0, 3.0, 1.5, "0.6arcsec", True)),
    (("very_faint", "VLA", "Ku", "ap1"),
     full(1.0, "96s", 6.0, "spw", "T", "ap", 1.0, 3.0, 1.5, "0.2arcsec", False)),
    (("very_faint", "eMERLIN", "L", "ap1"),
     full(1.0, "96s", 6.0, "spw", "T", "ap", 0.75, 3.0, 1.5, "0.2arcsec", False)),
    (("faint", "VLA", "L", "p0"),
     full(0.0, "60s", 20.0, "spw", "T", "p", 1.5, 5.0, 2.5, "", False)),
    (("faint", "eMERLIN", "C", "p0"),
     full(0.0, "120s", 12.0, "spw", "T", "p", 1.0, 5.0, 2.5, "", False)),
    (("faint", "VLA", "X", "p1"),
     full(0.5, "60s", 12.0, "spw", "T", "p", 1.0, 3.0, 1.5, "0.4arcsec", True)),
    (("faint", "VLA", "S", "p1"), full(0.5, "60s", 12.0, "", "T", "p", 1.0, 3.0, 1.5, "", True)),
    (("faint", "VLA", "X", "p2"), full(1.0, "36s", 8.0, "", "T", "p", 1.0, 3.0, 1.5, "", True)),
    (("faint", "VLA", "Ka", "p2"), full(1.0, "72s", 8.0, "spw", "T", "p", 1.0, 3.0, 1.5, "", True)),
    (("faint", "eMERLIN", "C", "ap1"),
     full(0.5, "inf", 6.0, "spw", "T", "ap", 1.0, 3.0, 1.5, "", True)),
    (("faint", "VLA", "C", "ap1"), full(0.5, "120s", 6.0, "", "T", "ap", 1.0, 3.0, 1.5, "", True)),
    (("standard_1", "VLA", "K", "p1"),
     full(0.5, "60s", 50.0, "", "T", "p", 1.0, 4.0, 1.0, "", False)),
    (("standard_1", "VLA", "C", "p1"),
     full(-0.5, "60s", 50.0, "", "G", "p", 1.5, 4.0, 1.0, "", False)),
    (("standard_1", "eMERLIN", "L", "p1"),
     full(0.5, "120s", 15.0, "spw", "G", "p", 1.5, 4.0, 1.0, "", False)),
    (("standard_1", "VLA", "Ku", "p0"),
     full(-1.0, "96s", 50.0, "spw", "T", "p", 2.0, 5.0, 2.5, "", False)),
    (("standard_1", "VLA", "Ka", "p0"),
     full(-0.5, "96s", 50.0, "spw", "T", "p", 1.0, 5.0, 2.5, "", False)),
    (("standard_1", "VLA", "X", "p2"),
     full(0.5, "48s", 25.0, "", "T", "p", 1.5, 3.0, 1.0, "0.4arcsec", True)),
    (("standard_1", "eMERLIN", "C", "p2"),
     full(0.5, "48s", 12.0, "", "T", "p", 1.5, 3.0, 1.0, "", False)),
    (("standard_1", "VLA", "S", "ap1"),
     full(0.5, "60s", 8.0, "", "G", "ap", 1.5, 3.0, 1.0, "", True)),
    (("standard_2", "VLA", "Ku", "p0"),
     full(0.0, "96s", 50.0, "", "T", "p", 1.0, 6.0, 3.0, "", False)),
    (("standard_2", "VLA", "C", "p0"),
     full(-0.5, "96s", 50.0, "", "T", "p", 3.0, 6.0, 3.0, "", False)),
    (("standard_2", "eMERLIN", "L", "p1"),
     full(0.0, "60s", 18.0, "spw", "T", "p", 1.0, 3.0, 1.5, "0.2arcsec", True)),
    (("standard_2", "VLA", "X", "p1"),
     full(-0.5, "60s", 35.0, "", "G", "p", 3.0, 3.0, 1.5, "", True)),
    (("standard_2", "VLA", "L", "p2"),
     full(1.0, "36s", 12.0, "", "T", "p", 3.0, 3.0, 1.5, "", True)),
    (("standard_2", "eMERLIN", "C", "p2"),
     full(0.0, "60s", 12.0, "spw", "T", "p", 1.0, 3.0, 1.5, "", True)),
    (("standard_2", "eMERLIN", "C", "ap1"),
     full(0.5, "120s", 6.0, "spw", "G", "ap", 1.0, 3.0, 1.5, "", True)),
]


@pytest.mark.parametrize("where,expected", FULL_CASES, ids=lambda x: "-".join(x)
                         if isinstance(x, tuple) else "")
def test_exact_values(where, expected):
    name, inst, band, step = where
    p = T.template_params(name, inst, band)[step]
    assert p.as_dict() == expected


def test_brief_spot_checks():
    p = T.template_params("bright", "VLA", "C")["p0"]
    assert (p.solint, p.gaintype, p.minsnr, p.sigma_mask) == ("48s", "G", 3.0, 60.0)
    p = T.template_params("very_faint", "eMERLIN", "L")["p0"]
    assert (p.sigma_mask, p.minsnr, p.solint) == (6.0, 0.75, "96s")
    p = T.template_params("standard_1", "VLA", "K")["p1"]
    assert (p.robust, p.gaintype) == (0.5, "T")
    p = T.template_params("faint", "VLA", "X")["p1"]
    assert (p.uvtaper, p.combine) == ("0.4arcsec", "spw")


def test_every_combination_builds_and_types():
    for name in T.TEMPLATE_NAMES:
        for inst, bands in T.BANDS.items():
            for band in bands:
                params = T.template_params(name, inst, band)
                assert list(params) == T.template_steps(name)
                for step, p in params.items():
                    assert isinstance(p, T.StepParams)
                    for k in ("robust", "sigma_mask", "minsnr", "nsigma_automask",
                              "nsigma_autothreshold"):
                        assert type(getattr(p, k)) is float
                    assert isinstance(p.with_multiscale, bool)
                    assert p.scales == ""
                    assert p.calmode == ("ap" if step == "ap1" else "p")
                    # every seed value passes the override validator unchanged
                    again = T.template_params(name, inst, band, {step: p.as_dict()})[step]
                    assert again == p


def test_steps_and_ladders():
    assert T.TEMPLATE_NAMES == ("very_faint", "faint", "standard_1", "standard_2", "bright")
    assert T.template_steps("very_faint") == ["p0", "ap1"]
    assert T.template_steps("faint") == ["p0", "p1", "p2", "ap1"]
    assert T.ladder_for("very_faint") == ["p0", "ap1"]
    assert T.ladder_for("faint") == ["p0", "p1", "ap1"]
    for n in ("standard_1", "standard_2", "bright"):
        assert T.ladder_for(n) == ["p0", "p1", "p2", "ap1"]
    lad = T.ladder_for("bright")
    lad.append("x")
    assert T.ladder_for("bright") == ["p0", "p1", "p2", "ap1"]
    with pytest.raises(ConfigError, match="nope"):
        T.ladder_for("nope")
    with pytest.raises(ConfigError, match="very_faint"):
        T.template_params("nope", "VLA", "C")


@pytest.mark.parametrize("flux,name", [
    (0.0, "very_faint"), (9.99, "very_faint"), (10, "faint"), (10.0, "faint"),
    (19.99, "faint"), (20, "standard_1"), (49.99, "standard_1"), (50, "standard_2"),
    (99.99, "standard_2"), (100, "bright"), (1e6, "bright"),
    (float("nan"), "very_faint"), (-5.0, "very_faint"), (float("inf"), "bright"),
])
def test_select_template(flux, name):
    assert T.select_template(flux) == name


def test_select_template_custom_thresholds():
    assert T.select_template(4.9, (5, 20, 50, 100)) == "very_faint"
    assert T.select_template(5.0, (5, 20, 50, 100)) == "faint"
    for bad in [(10, 10, 50, 100), (10, 20, 15, 100), (10, 20, 50), (10, float("nan"), 50, 100)]:
        with pytest.raises(ConfigError):
            T.select_template(30, bad)


def test_normalise():
    assert T.normalise_instrument("EVLA") == "VLA"
    assert T.normalise_instrument("vla") == "VLA"
    assert T.normalise_instrument("eM") == "eMERLIN"
    assert T.normalise_instrument("e-MERLIN") == "eMERLIN"
    assert T.normalise_instrument("EMERLIN") == "eMERLIN"
    with pytest.raises(ValueError, match="ALMA"):
        T.normalise_instrument("ALMA")
    assert T.normalise_band("ku") == "Ku"
    assert T.normalise_band("KA", "EVLA") == "Ka"
    assert T.normalise_band("c", "eM") == "C"
    with pytest.raises(ValueError, match=r"'X'.*L, C, K"):
        T.normalise_band("X", "eMERLIN")
    with pytest.raises(ValueError, match=r"'W'.*4, P, L, S, C, X, Ku, K, Ka, Q"):
        T.normalise_band("W")
    # aliases work through template_params
    assert T.template_params("bright", "evla", "c") == T.template_params("bright", "VLA", "C")


def test_band_defaults():
    assert T.band_defaults("VLA", "C") == T.BandDefaults("0.06arcsec", "0.6arcsec", 6)
    assert T.band_defaults("VLA", "L") == T.BandDefaults("0.2arcsec", "1.0arcsec", 6)
    assert T.band_defaults("VLA", "S") == T.BandDefaults("0.1arcsec", "0.8arcsec", 6)
    assert T.band_defaults("VLA", "X") == T.BandDefaults("0.04arcsec", "0.4arcsec", 4)
    assert T.band_defaults("VLA", "Ku") == T.BandDefaults("0.02arcsec", "0.2arcsec", 4)
    assert T.band_defaults("VLA", "K") == T.BandDefaults("0.01arcsec", "0.03arcsec", 4)
    assert T.band_defaults("VLA", "Ka") == T.BandDefaults("0.06arcsec", "0.07arcsec", 4)
    assert T.band_defaults("eM", "L") == T.BandDefaults("0.03arcsec", "0.2arcsec", 3)
    assert T.band_defaults("eMERLIN", "C") == T.BandDefaults("0.008arcsec", "0.05arcsec", 3)


def test_every_vla_band_and_emerlin_k():
    """Every VLA receiver band (4, P, L, S, C, X, Ku, K, Ka, Q) and e-MERLIN L, C, K resolve
    to complete templates; Q follows Ka's high-frequency choices, 4/P follow L's."""
    assert T.BANDS["VLA"] == ("4", "P", "L", "S", "C", "X", "Ku", "K", "Ka", "Q")
    assert T.BANDS["eMERLIN"] == ("L", "C", "K")
    assert T.normalise_band("q") == "Q" and T.normalise_band("p") == "P" and T.normalise_band("4") == "4"
    for band in T.BANDS["VLA"]:
        d = T.band_defaults("VLA", band)
        assert d.cell.endswith("arcsec") and d.taper.endswith("arcsec") and d.nc in (4, 6)
        for name in T.TEMPLATE_NAMES:
            assert T.template_params(name, "VLA", band)
    assert T.band_defaults("VLA", "Q") == T.BandDefaults("0.005arcsec", "0.015arcsec", 4)
    assert T.band_defaults("VLA", "P").nc == 6
    for name in T.TEMPLATE_NAMES:
        assert T.template_params(name, "VLA", "Q") == {
            step: p if p.uvtaper != T.band_defaults("VLA", "Ka").taper else
            T.StepParams(**{**p.as_dict(), "uvtaper": T.band_defaults("VLA", "Q").taper})
            for step, p in T.template_params(name, "VLA", "Ka").items()}
        assert T.template_params(name, "VLA", "P") == {
            step: p if p.uvtaper != T.band_defaults("VLA", "L").taper else
            T.StepParams(**{**p.as_dict(), "uvtaper": T.band_defaults("VLA", "P").taper})
            for step, p in T.template_params(name, "VLA", "L").items()}
    assert T.template_params("bright", "eMERLIN", "K")


def test_cell_from_baseline():
    # VLA A-config C band: B=36.4 km, 6 GHz -> lambda/B ~ 0.283", /5 ~ 0.057"
    cell = T.cell_from_baseline(36_400.0, 6e9)
    assert cell == pytest.approx(0.0499654 / 36_400 * 206264.806 / 5, rel=1e-4)
    assert cell == pytest.approx(0.0566, abs=5e-4)
    assert T.cell_from_baseline(36_400.0, 6e9, pixels_per_beam=2.5) == pytest.approx(2 * cell)
    for bad in [(0, 6e9), (-1, 6e9), (1000, 0), (1000, float("nan"))]:
        with pytest.raises(ValueError):
            T.cell_from_baseline(*bad)


def test_faint_rules():
    assert T.test_image_faint_reimage(6.0, 0.0, "") is None
    assert T.test_image_faint_reimage(5.0, 0.0, "") is None
    assert T.test_image_faint_reimage(4.99, 0.0, "") == {"robust": 0.5, "uvtaper": ""}
    assert T.test_image_faint_reimage(1.0, 0.0, [""]) == {"robust": 0.5, "uvtaper": ""}
    assert T.test_image_faint_reimage(1.0, 0.0, "0.6arcsec") == {"robust": 0.0,
                                                                  "uvtaper": "0.6arcsec"}
    assert T.test_image_faint_reimage(float("nan"), 0.0, None) == {"robust": 0.5, "uvtaper": ""}
    assert T.post_p0_faint_reimage(9.99) == 1.0
    assert T.post_p0_faint_reimage(10.0) is None
    assert T.post_p0_faint_reimage(float("nan")) == 1.0
    assert T.measurement_sigma("test_image", 10.0) == 8.0
    assert T.measurement_sigma("test_image", 50.0) == 8.0
    assert T.measurement_sigma("test_image", 50.1) == 25.0
    assert T.measurement_sigma("p0", 500.0) == 8.0
    assert T.measurement_sigma("p1", 5.0) == 6.0
    assert T.measurement_sigma("selfcal_test_0") == 6.0


def test_minblperant():
    assert T.minblperant("p0", "VLA") == 3
    assert T.minblperant("p2", "eM") == 3
    assert T.minblperant("ap1", "VLA") == 4
    assert T.minblperant("ap1", "EVLA") == 4
    assert T.minblperant("ap1", "eMERLIN") == 3
    with pytest.raises(ValueError):
        T.minblperant("test_image", "VLA")


def test_overrides_apply_and_coerce():
    p = T.template_params("bright", "VLA", "C",
                          {"p0": {"solint": "30s", "robust": 0, "minsnr": 2},
                           "ap1": {"uvtaper": "0.5arcsec", "with_multiscale": False,
                                   "scales": "0, 5, 20", "combine": "scan,spw"}})
    assert p["p0"].solint == "30s" and p["p0"].robust == 0.0 and type(p["p0"].robust) is float
    assert p["p0"].minsnr == 2.0
    assert p["p0"].gaintype == "G"  # untouched
    assert p["ap1"].uvtaper == "0.5arcsec" and p["ap1"].with_multiscale is False
    assert p["ap1"].scales == "0,5,20" and p["ap1"].combine == "scan,spw"
    for ok in ("int", "inf", "1.5min", "12s"):
        assert T.template_params("bright", "VLA", "C", {"p1": {"solint": ok}})["p1"].solint == ok


@pytest.mark.parametrize("overrides,where", [
    ({"p3": {"robust": 0.0}}, "templates.bright.p3.robust"),
    ({"p0": {"refant": "ea01"}}, "templates.bright.p0.refant"),
    ({"p0": {"spwmap": []}}, "templates.bright.p0.spwmap"),
    ({"p0": {"robust": "0.5"}}, "templates.bright.p0.robust"),
    ({"p0": {"robust": 2.5}}, "templates.bright.p0.robust"),
    ({"p0": {"robust": -2.01}}, "templates.bright.p0.robust"),
    ({"p0": {"robust": True}}, "templates.bright.p0.robust"),
    ({"p0": {"robust": float("nan")}}, "templates.bright.p0.robust"),
    ({"p0": {"minsnr": -0.1}}, "templates.bright.p0.minsnr"),
    ({"p0": {"solint": 60}}, "templates.bright.p0.solint"),
    ({"p0": {"solint": "60"}}, "templates.bright.p0.solint"),
    ({"p0": {"solint": "0s"}}, "templates.bright.p0.solint"),
    ({"p0": {"solint": "-5s"}}, "templates.bright.p0.solint"),
    ({"p0": {"solint": "5h"}}, "templates.bright.p0.solint"),
    ({"p1": {"calmode": "x"}}, "templates.bright.p1.calmode"),
    ({"p1": {"gaintype": "K"}}, "templates.bright.p1.gaintype"),
    ({"p1": {"combine": "spw,foo"}}, "templates.bright.p1.combine"),
    ({"p1": {"uvtaper": "0.6"}}, "templates.bright.p1.uvtaper"),
    ({"p1": {"uvtaper": ["0.6arcsec"]}}, "templates.bright.p1.uvtaper"),
    ({"p1": {"with_multiscale": 1}}, "templates.bright.p1.with_multiscale"),
    ({"p1": {"scales": "0,a"}}, "templates.bright.p1.scales"),
    ({"p1": {"sigma_mask": 0}}, "templates.bright.p1.sigma_mask"),
    ({"p1": 5}, "templates.bright.p1"),
])
def test_override_errors(overrides, where):
    with pytest.raises(ConfigError) as ei:
        T.template_params("bright", "VLA", "C", overrides)
    assert where in str(ei.value)


def test_unknown_step_for_template():
    with pytest.raises(ConfigError, match="templates.very_faint.p1"):
        T.template_params("very_faint", "VLA", "C", {"p1": {"robust": 0.0}})
    # faint has p2 in its data, so it can be overridden even though it never runs
    assert T.template_params("faint", "VLA", "C", {"p2": {"robust": 0.0}})["p2"].robust == 0.0


def test_immutability():
    a = T.template_params("very_faint", "VLA", "C")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a["p0"].robust = 2.0  # type: ignore[misc]
    a["p0"] = dataclasses.replace(a["p0"], robust=2.0)
    del a["ap1"]
    b = T.template_params("very_faint", "VLA", "C")
    assert b["p0"].robust == 0.5 and "ap1" in b
    assert a is not b
    ov = {"p0": {"robust": -1.0}}
    c = T.template_params("very_faint", "VLA", "C", ov)
    assert c["p0"].robust == -1.0
    assert ov == {"p0": {"robust": -1.0}}  # overrides not mutated
    assert T.template_params("very_faint", "VLA", "C")["p0"].robust == 0.5


def test_rows_and_describe():
    rows = T.template_rows("faint", "EVLA", "x")
    assert [r["step"] for r in rows] == ["p0", "p1", "p2", "ap1"]
    assert [r["runs"] for r in rows] == [True, True, False, True]
    assert rows[1]["uvtaper"] == "0.4arcsec" and rows[0]["instrument"] == "VLA"
    text = T.describe("faint", "VLA", "X")
    assert "faint" in text and "(p2)" in text and "0.4arcsec" in text
    assert T.TEMPLATE_TABLE_VERSION in text
    assert len(text.splitlines()) == 3 + len(KEYS) + 1
    assert isinstance(T.TEMPLATE_TABLE_VERSION, str) and T.TEMPLATE_TABLE_VERSION
    assert not math.isnan(T.template_params("bright", "VLA", "C")["p0"].robust)
