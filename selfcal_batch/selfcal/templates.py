"""Self-calibration templates of the seed pipeline (morphen_dev ``selfcal/config.py``) as data.

The seed keeps five parameter dictionaries (``params_very_faint`` ... ``params_bright``) whose
values depend on the instrument (VLA / e-MERLIN) and the receiver band.  Here every value is
either a constant or a :class:`_Cond` -- ``_if(predicate, value_if_true, value_if_false)`` --
whose predicate is a small function of ``(instrument, band)``.  Predicates test the band alone,
exactly like the seed tests ``receiver`` alone (the seed's e-MERLIN had only L and C; its
K band, allowed here, takes the K predicates like the VLA's; VLA Q goes with K/Ka).  ``TAPER`` stands for the band's taper size (facts §3.2).

Deliberate departures from the seed:

* the unused keys ``spwmap`` and ``compare_solints`` are dropped; ``uvtaper`` is a string
  (``''`` = no taper) instead of ``['']``; ``scales`` ``'None'`` becomes ``''`` (automatic);
  the wsclean ``nsigma_*`` strings are floats;
* :func:`template_params` always returns fresh objects (the seed's shallow ``.copy()`` let the
  inner step dictionaries be mutated);
* NaN fluxes are treated as faint everywhere (the seed's ``NaN < 5`` is False).
"""
from __future__ import annotations

import math
import re
from functools import partial
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

from selfcal_batch.errors import ConfigError
from selfcal_batch.selfcal.uvrange import uvrange_problem
from selfcal_batch.schema import ANGLE, SOLINT, check_value, did_you_mean, fields_of, setting

__all__ = [
    "TEMPLATE_TABLE_VERSION", "TEMPLATE_NAMES", "INSTRUMENTS", "BANDS",
    "StepParams", "BandDefaults", "normalise_instrument", "normalise_band", "template_params",
    "template_rows", "select_template", "ladder_for", "template_steps", "band_defaults",
    "cell_from_baseline", "test_image_faint_reimage", "post_p0_faint_reimage",
    "measurement_sigma", "minblperant", "describe",
]

#: Identifies the transcription; bump when any value in the table changes.
TEMPLATE_TABLE_VERSION = "morphen_dev@51f30f7 selfcal/config.py (d785aa7), transcription 1"

TEMPLATE_NAMES: tuple[str, ...] = ("very_faint", "faint", "standard_1", "standard_2", "bright")
INSTRUMENTS: tuple[str, ...] = ("VLA", "eMERLIN")
BANDS: dict[str, tuple[str, ...]] = {
    "VLA": ("4", "P", "L", "S", "C", "X", "Ku", "K", "Ka", "Q"),
    "eMERLIN": ("L", "C", "K"),
}
DEFAULT_THRESHOLDS: tuple[float, float, float, float] = (10.0, 20.0, 50.0, 100.0)

_INSTRUMENT_ALIASES = {
    "vla": "VLA", "evla": "VLA", "jvla": "VLA",
    "emerlin": "eMERLIN", "e-merlin": "eMERLIN", "e_merlin": "eMERLIN", "em": "eMERLIN",
}

_SCALES_RE = re.compile(r"^\d+(?:,\d+)*$")
_COMBINE_TOKENS = {"scan", "spw", "field", "obs", "corr"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------------------------
# Data types
# --------------------------------------------------------------------------------------------
def _combine(v: str) -> str:
    bad = [t for t in v.split(",") if t and t not in _COMBINE_TOKENS]
    return f"combine tokens must be in {sorted(_COMBINE_TOKENS)}; got {v!r}" if bad else ""


def _scales(v: str) -> str:
    ok = not v or _SCALES_RE.match(v)
    return "" if ok else f"scales must be '' or comma-separated integers; got {v!r}"


def _norm_combine(v: str) -> str:
    return ",".join(t.strip() for t in v.split(",") if t.strip())


def _norm_scales(v: str) -> str:
    return "" if v.strip().lower() == "none" else v.replace(" ", "")


def _key(help: str, **kw: Any) -> Any:
    """A template key: no single default (the template's value for the instrument and band);
    strings are stripped before their checks."""
    return setting(help=help, default_doc="the template's value for the instrument and band "
                   "(survey/templates.csv)", **{"normalise": str.strip, **kw})


@dataclass(frozen=True)
class StepParams:
    """Imaging + gaincal parameters of one self-cal step (one column of a seed template).

    Each field is also a template override key (``[templates.<name>.<step>] key = value``),
    declared with its help and constraints for the one validator (:mod:`selfcal_batch.schema`).
    """

    robust: float = _key("Briggs robust of the step's image.", ge=-2, le=2, normalise=None)
    solint: str = _key("gaincal solution interval.", text=SOLINT)
    sigma_mask: float = _key("Mask threshold for the step's image statistics.", unit="sigma", gt=0,
                             normalise=None)
    combine: str = _key("gaincal combine: comma list of scan, spw, field, obs, corr ('' = none).",
                        check=_combine, normalise=_norm_combine)
    gaintype: str = _key("gaincal gaintype (T: one solution for both polarisations).",
                         choices=("G", "T"))
    calmode: str = _key("gaincal calmode: phase, amplitude+phase, amplitude.",
                        choices=("p", "ap", "a"))
    minsnr: float = _key("gaincal minsnr: solutions below it are flagged.", ge=0, normalise=None)
    nsigma_automask: float = _key("WSClean -auto-mask.", unit="sigma", gt=0, normalise=None)
    nsigma_autothreshold: float = _key("WSClean -auto-threshold.", unit="sigma", gt=0,
                                       normalise=None)
    uvtaper: str = _key("WSClean -taper-gaussian of the step's image ('' = no taper).", text=ANGLE,
                        also=("",))
    with_multiscale: bool = _key("Multiscale clean for the step's image.", normalise=None)
    scales: str = _key("-multiscale-scales, comma-separated pixels ('' or 'None' = automatic).",
                       check=_scales, normalise=_norm_scales)
    uvrange_cal: str = setting("", "gaincal uv range of this step ('' = the dataset's uvrange_cal).",
                               check=partial(uvrange_problem, allow_auto=True), normalise=str.strip)
    uvrange_image: str = setting("", "WSClean uv range of this step's images ('' = the dataset's "
                                 "uvrange_image); syntax of uvrange_image.", check=uvrange_problem,
                                 normalise=str.strip)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict copy of the values."""
        return asdict(self)


STEP_KEYS: tuple[str, ...] = tuple(f.name for f in fields(StepParams))
_STEP_FIELDS = {f.name: (f, tp) for f, tp in fields_of(StepParams)}


@dataclass(frozen=True)
class BandDefaults:
    """Seed cell size, taper size (facts §3.2) and wsclean channel count ``nc`` (§3.1)."""

    cell: str
    taper: str
    nc: int


# --------------------------------------------------------------------------------------------
# Instrument / band
# --------------------------------------------------------------------------------------------
def normalise_instrument(instrument: str) -> str:
    """'VLA'/'EVLA'/'JVLA' -> 'VLA'; 'eMERLIN'/'e-MERLIN'/'eM' -> 'eMERLIN' (case-insensitive)."""
    key = str(instrument).strip().lower()
    if key not in _INSTRUMENT_ALIASES:
        raise ValueError(
            f"unknown instrument {instrument!r}; allowed: VLA (EVLA, JVLA), eMERLIN (e-MERLIN, eM)")
    return _INSTRUMENT_ALIASES[key]


def normalise_band(band: str, instrument: str = "VLA") -> str:
    """Canonical band name ('ku' -> 'Ku'); ValueError if the instrument does not have it."""
    inst = normalise_instrument(instrument)
    allowed = BANDS[inst]
    key = str(band).strip().lower()
    for b in allowed:
        if b.lower() == key:
            return b
    raise ValueError(f"unknown {inst} band {band!r}; allowed: {', '.join(allowed)}")


# Facts §3.2.  Ka 0.06arcsec is the seed value (sic).
_CELL_TAPER: dict[str, dict[str, tuple[str, str]]] = {
    "VLA": {
        "L": ("0.2arcsec", "1.0arcsec"),
        "S": ("0.1arcsec", "0.8arcsec"),
        "C": ("0.06arcsec", "0.6arcsec"),
        "X": ("0.04arcsec", "0.4arcsec"),
        "Ku": ("0.02arcsec", "0.2arcsec"),
        "K": ("0.01arcsec", "0.03arcsec"),
        "Ka": ("0.06arcsec", "0.07arcsec"),
        # Bands the seed did not list: its nearest band's values scaled by wavelength
        # (4 and P from L, Q from K), rounded.
        "4": ("4arcsec", "20arcsec"),
        "P": ("1arcsec", "4arcsec"),
        "Q": ("0.005arcsec", "0.015arcsec"),
    },
    "eMERLIN": {
        "L": ("0.03arcsec", "0.2arcsec"),
        "C": ("0.008arcsec", "0.05arcsec"),
        "K": ("0.002arcsec", "0.012arcsec"),  # C scaled by wavelength (not in the seed)
    },
}


def band_defaults(instrument: str, band: str) -> BandDefaults:
    """Seed cell/taper (VLA values assume A configuration) and ``nc`` (VLA 4/P/L/S/C 6, other
    VLA bands 4, eM 3). Bands the seed lacks (VLA 4, P, Q; e-MERLIN K) scale the nearest seed
    band's cell and taper by wavelength."""
    inst = normalise_instrument(instrument)
    b = normalise_band(band, inst)
    cell, taper = _CELL_TAPER[inst][b]
    if inst == "eMERLIN":
        nc = 3
    else:
        nc = 6 if b in ("4", "P", "L", "S", "C") else 4
    return BandDefaults(cell=cell, taper=taper, nc=nc)


_C_M_S = 299_792_458.0
_RAD_TO_ARCSEC = 180.0 / math.pi * 3600.0


def cell_from_baseline(max_baseline_m: float, freq_hz: float,
                       pixels_per_beam: float = 5.0) -> float:
    """Cell size in arcsec: beam ~ lambda / B_max (rad), divided by ``pixels_per_beam``."""
    for label, v in (("max_baseline_m", max_baseline_m), ("freq_hz", freq_hz),
                     ("pixels_per_beam", pixels_per_beam)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{label} must be a positive finite number, got {v!r}")
    wavelength = _C_M_S / freq_hz
    return wavelength / max_baseline_m * _RAD_TO_ARCSEC / pixels_per_beam


# --------------------------------------------------------------------------------------------
# Declarative template table
# --------------------------------------------------------------------------------------------
class _Pred:
    """A named predicate of (instrument, band); ``|`` combines with OR."""

    def __init__(self, fn: Callable[[str, str], bool], text: str):
        self.fn = fn
        self.text = text

    def __call__(self, instrument: str, band: str) -> bool:
        return bool(self.fn(instrument, band))

    def __or__(self, other: _Pred) -> _Pred:
        return _Pred(lambda i, b: self(i, b) or other(i, b), f"{self.text} or {other.text}")


def _band_in(*bands: str) -> _Pred:
    return _Pred(lambda i, b: b in bands, "band in (" + ",".join(bands) + ")")


EM = _Pred(lambda i, b: i == "eMERLIN", "eM")
# Q (not in the seed) behaves like the seed's highest bands K/Ka.
KKA = _band_in("K", "Ka", "Q")
KKAKU = _band_in("K", "Ka", "Ku", "Q")
XKKAKU = _band_in("X", "K", "Ka", "Ku", "Q")


class _Taper:
    def __repr__(self) -> str:
        return "TAPER"


TAPER = _Taper()  # the band's taper size from band_defaults()


@dataclass(frozen=True)
class _Cond:
    pred: _Pred
    yes: Any
    no: Any

    def resolve(self, instrument: str, band: str) -> Any:
        return self.yes if self.pred(instrument, band) else self.no


def _if(pred: _Pred, yes: Any, no: Any) -> _Cond:
    return _Cond(pred, yes, no)


def _step(robust, solint, sigma_mask, combine, gaintype, calmode, minsnr, automask,
          autothreshold, uvtaper, with_multiscale, scales="") -> dict[str, Any]:
    return dict(robust=robust, solint=solint, sigma_mask=sigma_mask, combine=combine,
                gaintype=gaintype, calmode=calmode, minsnr=minsnr, nsigma_automask=automask,
                nsigma_autothreshold=autothreshold, uvtaper=uvtaper,
                with_multiscale=with_multiscale, scales=scales)


# Facts §3.6.  Columns: robust, solint, sigma_mask, combine, gaintype, calmode, minsnr,
# nsigma_automask, nsigma_autothreshold, uvtaper, with_multiscale.
_TEMPLATES: dict[str, dict[str, dict[str, Any]]] = {
    "very_faint": {
        "p0": _step(0.5, _if(KKAKU | EM, "96s", "60s"), _if(EM, 6.0, 12.0), "spw", "T", "p",
                    _if(EM, 0.75, 1.0), 3.0, 1.5, "", False),
        "ap1": _step(1.0, _if(KKAKU | EM, "96s", "60s"), 6.0, "spw", "T", "ap",
                     _if(EM, 0.75, 1.0), 3.0, 1.5,
                     _if(_band_in("C", "X", "Ku", "K", "Ka", "Q") | EM, TAPER, ""),
                     _if(KKAKU | EM, False, True)),
    },
    "faint": {
        "p0": _step(0.0, _if(KKAKU | EM, "120s", "60s"), _if(EM, 12.0, 20.0), "spw", "T", "p",
                    _if(EM, 1.0, 1.5), 5.0, 2.5, "", False),
        "p1": _step(0.5, _if(KKAKU | EM, "120s", "60s"), 12.0, _if(XKKAKU | EM, "spw", ""),
                    "T", "p", 1.0, 3.0, 1.5, _if(XKKAKU | EM, TAPER, ""), True),
        "p2": _step(1.0, _if(KKAKU | EM, "72s", "36s"), 8.0, _if(KKAKU | EM, "spw", ""),
                    "T", "p", 1.0, 3.0, 1.5, "", True),
        "ap1": _step(0.5, _if(EM, "inf", "120s"), 6.0, _if(XKKAKU | EM, "spw", ""),
                     "T", "ap", 1.0, 3.0, 1.5, "", True),
    },
    "standard_1": {
        "p0": _step(_if(KKA | EM, -0.5, -1.0), "96s", _if(EM, 15.0, 50.0),
                    _if(KKAKU | EM, "spw", ""), "T", "p", _if(KKA | EM, 1.0, 2.0),
                    5.0, 2.5, "", False),
        "p1": _step(_if(KKA | EM, 0.5, -0.5), _if(EM, "120s", "60s"), _if(EM, 15.0, 50.0),
                    _if(EM, "spw", ""), _if(KKA, "T", "G"), "p", _if(KKA, 1.0, 1.5),
                    4.0, 1.0, "", False),
        "p2": _step(0.5, "48s", _if(EM, 12.0, 25.0), "", "T", "p", 1.5, 3.0, 1.0,
                    _if(_band_in("X", "Ku", "K", "Ka", "Q"), TAPER, ""),  # no eM clause (sic)
                    _if(KKAKU | EM, False, True)),
        "ap1": _step(0.5, "60s", 8.0, _if(EM, "spw", ""), "G", "ap", 1.5, 3.0, 1.0, "",
                     _if(KKAKU | EM, False, True)),
    },
    "standard_2": {
        "p0": _step(_if(KKAKU | EM, 0.0, -0.5), "96s", _if(EM, 25.0, 50.0), _if(EM, "spw", ""),
                    "T", "p", _if(KKAKU | EM, 1.0, 3.0), 6.0, 3.0, "", False),
        "p1": _step(_if(KKAKU | EM, 0.0, -0.5), "60s", _if(EM, 18.0, 35.0), _if(EM, "spw", ""),
                    _if(EM, "T", "G"), "p", _if(EM, 1.0, 3.0), 3.0, 1.5, _if(EM, TAPER, ""),
                    True),
        "p2": _step(_if(EM, 0.0, 1.0), _if(EM, "60s", "36s"), 12.0, _if(EM, "spw", ""),
                    "T", "p", _if(EM, 1.0, 3.0), 3.0, 1.5, "", True),
        "ap1": _step(0.5, _if(EM, "120s", "36s"), 6.0, _if(EM, "spw", ""), "G", "ap",
                     _if(EM, 1.0, 3.0), 3.0, 1.5, "", True),
    },
    "bright": {
        "p0": _step(_if(KKA, -0.5, -1.0), _if(EM, "96s", "48s"), 60.0, "", "G", "p", 3.0,
                    6.0, 3.0, "", False),
        "p1": _step(_if(KKA | EM, 0.0, -0.5), _if(EM, "60s", "24s"), _if(EM, 15.0, 60.0),
                    _if(EM, "spw", ""), _if(EM, "T", "G"), "p", _if(EM, 1.0, 3.0),
                    _if(EM, 4.0, 6.0), _if(EM, 1.5, 3.0), _if(EM, TAPER, ""), True),
        "p2": _step(0.0, "24s", _if(EM, 12.0, 25.0), "", "G", "p", 3.0, 4.0, 1.5, "", True),
        "ap1": _step(0.5, _if(EM, "96s", "36s"), _if(EM, 8.0, 15.0), _if(EM, "spw", ""),
                     _if(EM, "T", "G"), "ap", _if(EM, 1.0, 3.0), 3.0, 1.5, "", True),
    },
}


def _check_name(name: str) -> str:
    if name not in _TEMPLATES:
        raise ConfigError(f"unknown template {name!r}; allowed: {', '.join(TEMPLATE_NAMES)}")
    return name


def template_steps(name: str) -> list[str]:
    """Steps present in the seed data of template ``name`` (faint includes p2)."""
    return list(_TEMPLATES[_check_name(name)])


def ladder_for(name: str) -> list[str]:
    """Steps the seed actually runs: p2 is never run for names containing 'faint'."""
    return [s for s in template_steps(name) if not (s == "p2" and "faint" in name)]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def _resolve(value: Any, instrument: str, band: str) -> Any:
    if isinstance(value, _Cond):
        value = value.resolve(instrument, band)
    if value is TAPER:
        value = band_defaults(instrument, band).taper
    return value


def template_params(name: str, instrument: str, band: str,
                    overrides: Mapping[str, Mapping[str, object]] | None = None
                    ) -> dict[str, StepParams]:
    """Resolved step parameters of template ``name`` for ``instrument``/``band``.

    ``overrides`` maps step -> {key: value}; values replace the seed values after validation
    (errors are :class:`ConfigError` naming ``templates.<name>.<step>.<key>``).  The returned
    dict and its objects are new on every call.
    """
    _check_name(name)
    inst = normalise_instrument(instrument)
    b = normalise_band(band, inst)
    resolved = {step: {k: _resolve(v, inst, b) for k, v in table.items()}
                for step, table in _TEMPLATES[name].items()}
    for step, changes in (overrides or {}).items():
        if step not in resolved:
            first = next(iter(changes), None) if isinstance(changes, Mapping) else None
            where = f"templates.{name}.{step}" + (f".{first}" if first is not None else "")
            raise ConfigError(f"{where}: unknown step {step!r} for template {name!r}; "
                              f"allowed: {', '.join(resolved)}")
        if not isinstance(changes, Mapping):
            raise ConfigError(f"templates.{name}.{step}: expected a table of key = value, "
                              f"got {type(changes).__name__}")
        for key, value in changes.items():
            where = f"templates.{name}.{step}.{key}"
            if key not in _STEP_FIELDS:
                raise did_you_mean(where, "unknown key", key, STEP_KEYS)
            resolved[step][key] = check_value(*_STEP_FIELDS[key], value, where)
    return {step: StepParams(**vals) for step, vals in resolved.items()}


def template_rows(name: str, instrument: str, band: str,
                  overrides: Mapping[str, Mapping[str, object]] | None = None
                  ) -> list[dict[str, Any]]:
    """One flat dict per step (for ``templates.csv``): template, instrument, band, step, values."""
    inst = normalise_instrument(instrument)
    b = normalise_band(band, inst)
    params = template_params(name, inst, b, overrides)
    return [{"template": name, "instrument": inst, "band": b, "step": step,
             "runs": step in ladder_for(name), **p.as_dict()} for step, p in params.items()]


def select_template(total_flux_mjy: float,
                    thresholds: tuple[float, float, float, float] = DEFAULT_THRESHOLDS) -> str:
    """Seed ``select_parameters``: <10 very_faint, <20 faint, <50 standard_1, <100 standard_2,
    else bright (mJy, lower bounds inclusive).  NaN or negative flux -> 'very_faint'."""
    th = tuple(thresholds)
    if len(th) != 4 or not all(_is_number(t) for t in th):
        raise ConfigError(f"template thresholds: expected 4 finite numbers, got {thresholds!r}")
    if any(b <= a for a, b in zip(th, th[1:], strict=False)):
        raise ConfigError(f"template thresholds must be strictly increasing, got {thresholds!r}")
    s = float(total_flux_mjy)
    if math.isnan(s) or s < 0:
        return "very_faint"
    for name, cut in zip(TEMPLATE_NAMES, th, strict=False):
        if s < cut:
            return name
    return TEMPLATE_NAMES[-1]


def _no_taper(taper: str | list | tuple | None) -> str:
    """Normalise a taper given the seed way (``['']``) or as a string; '' = none."""
    if taper is None:
        return ""
    if isinstance(taper, (list, tuple)):
        taper = taper[0] if taper else ""
    return str(taper).strip()


def test_image_faint_reimage(total_flux_mjy: float, robust: float,
                             taper: str | None = "") -> dict[str, Any] | None:
    """Seed §2.7.3: test-image flux < 5 mJy (or NaN) -> re-image parameters, else None.

    With a taper: same robust, that taper; without: robust + 0.5 and no taper.  The returned
    robust replaces the p0 robust (seed ``modified_robust``).
    """
    s = float(total_flux_mjy)
    if not (math.isnan(s) or s < 5.0):
        return None
    t = _no_taper(taper)
    if t:
        return {"robust": float(robust), "uvtaper": t}
    return {"robust": float(robust) + 0.5, "uvtaper": ""}


# Keep pytest from collecting the function above as a test when imported into a test module.
test_image_faint_reimage.__test__ = False  # type: ignore[attr-defined]


def post_p0_faint_reimage(total_flux_mjy: float) -> float | None:
    """Seed §2.9 step 12: ``selfcal_test_0`` flux < 10 mJy (or NaN) -> re-image at robust 1.0."""
    s = float(total_flux_mjy)
    return 1.0 if (math.isnan(s) or s < 10.0) else None


def measurement_sigma(step: str, total_flux_mjy: float | None = None) -> float:
    """σ of the statistics mask when no step sigma_mask is given (seed ``compute_image_stats``):
    test_image above 50 mJy 25.0; test_image / p0 8.0; anything else 6.0."""
    if step == "test_image" and total_flux_mjy is not None and float(total_flux_mjy) > 50.0:
        return 25.0
    if step in ("test_image", "p0"):
        return 8.0
    return 6.0


def minblperant(step: str, instrument: str) -> int:
    """gaincal minblperant: 3 for phase steps (p*), ap steps 3 for e-MERLIN and 4 for VLA."""
    inst = normalise_instrument(instrument)
    if re.fullmatch(r"p\d+", step):
        return 3
    if re.fullmatch(r"ap\d+", step):
        return 3 if inst == "eMERLIN" else 4
    raise ValueError(f"unknown self-cal step {step!r}; expected p<n> or ap<n>")


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return repr(v) if v == "" else v
    return str(v)


def describe(name: str, instrument: str, band: str,
             overrides: Mapping[str, Mapping[str, object]] | None = None) -> str:
    """Plain-text table of the resolved template (for logs)."""
    inst = normalise_instrument(instrument)
    b = normalise_band(band, inst)
    params = template_params(name, inst, b, overrides)
    steps = list(params)
    runs = ladder_for(name)
    header = ["key"] + [s if s in runs else f"({s})" for s in steps]
    rows = [[k] + [_fmt(getattr(params[s], k)) for s in steps] for k in STEP_KEYS]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    out = [f"template {name} ({inst} {b}; {TEMPLATE_TABLE_VERSION})"
           + ("; overrides applied" if overrides else ""),
           line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    if len(runs) != len(steps):
        out.append("(steps in parentheses are in the seed data but never run)")
    return "\n".join(out)
