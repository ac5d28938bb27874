"""The configuration schema: how a setting is declared, the value types, and ONE validator.

Every setting of the pipeline (:mod:`selfcal_batch.config`), the campaign and cluster tables
(:mod:`selfcal_batch.campaign_config`) and the template overrides
(:class:`selfcal_batch.selfcal.templates.StepParams`) is a dataclass field declared once with
:func:`setting`: its default, one-line help, unit, choices or range and, for strings with a
grammar, a :class:`TextType` (angle, duration, solution interval, memory, walltime, address).
:func:`build` turns a TOML table into the dataclass (unknown keys with a did-you-mean hint,
wrong types) and :func:`check` validates every declared constraint of an instance; both
raise a one-line :class:`ConfigError` that starts with the dotted key (``wsclean.mgain: ...``)
so the manifest loader can point at the line. The docs (``docs/configuration.md``,
``selfcal-batch config``) are generated from the same declarations
(:mod:`selfcal_batch.config_docs`).

Adding a key is one line in its dataclass::

    my_key: float = setting(1.5, "What it does, in one line.", unit="s", ge=0)

then ``selfcal-batch config --markdown > docs/configuration.md``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from selfcal_batch.errors import ConfigError
from selfcal_batch.selfcal.solint import parse_solint
from selfcal_batch.selfcal.solint import solint_seconds as interval_seconds

SCHEMA_KEY = "selfcal_batch.schema"

# ----------------------------------------------------------------------------------------
# value types: strings with a grammar


_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
#: Angle units accepted by every angle setting, in arcsec. All are units WSClean 3.1's
#: angle parser (aocommon ``units::Angle::Parse``) understands, so a valid value is passed
#: to WSClean unchanged.
ANGLE_UNITS: dict[str, float] = {"arcsec": 1.0, "asec": 1.0, "arcmin": 60.0, "amin": 60.0,
                                 "deg": 3600.0, "mas": 1e-3}
#: Duration units (CASA quantity strings), in seconds.
TIME_UNITS: dict[str, float] = {"s": 1.0, "min": 60.0}
#: Solution-interval words of CASA gaincal: one integration, one scan.
SOLINT_WORDS = ("int", "inf")
_ANGLE_RE = re.compile(rf"^({_NUM})({'|'.join(ANGLE_UNITS)})$")
_MEM_RE = re.compile(r"^\d+(\.\d+)?\s*(B|[KMGTP]i?B|[KMGTP])$", re.IGNORECASE)
_WALLTIME_RE = re.compile(r"^(\d+-)?\d+(:\d{2}){0,2}$")
_ADDRESS_RE = re.compile(r"^[a-z]+://[^\s]+$|^[^\s:/]+:\d+$")


def angle_arcsec(text: str) -> float:
    """``'0.1arcsec'``, ``'0.1asec'``, ``'6arcmin'``, ``'1e-3deg'``, ``'50mas'`` -> arcsec (> 0).

    Raises ValueError naming the accepted form (units: :data:`ANGLE_UNITS`)."""
    m = _ANGLE_RE.match(str(text).strip())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"expected an angle '<n><unit>' (n > 0, unit {'|'.join(ANGLE_UNITS)}), "
                         f"e.g. '0.1arcsec', got {text!r}")
    return float(m.group(1)) * ANGLE_UNITS[m.group(2)]


def duration_seconds(text: str) -> float:
    """``'20s'``, ``'1.5min'`` -> seconds (> 0). The solint words are refused (ValueError).
    Parsed by the package's one interval grammar, :func:`selfcal_batch.selfcal.solint.parse_solint`."""
    t = str(text).strip()
    try:
        p = parse_solint(t, words=False, unit_required=True)
    except ValueError:
        p = None
    if p is None or not p.seconds or p.seconds <= 0:
        extra = " ('int'/'inf' are solution intervals, not durations)" if t in SOLINT_WORDS else ""
        raise ValueError(f"expected a duration '<n>s' or '<n>min' (n > 0), got {text!r}{extra}")
    return float(p.seconds)


def solint_seconds(text: str, integration_s: float, scan_s: float) -> float:
    """A CASA solution interval -> seconds: 'int' = ``integration_s``, 'inf' = ``scan_s``
    (one scan), else a duration with its unit (:func:`duration_seconds`). ValueError naming
    the accepted forms when invalid; the value comes from :func:`selfcal.solint.solint_seconds`."""
    t = str(text).strip()
    if t not in SOLINT_WORDS:
        try:
            duration_seconds(t)
        except ValueError:
            raise ValueError(f"solint must be 'int', 'inf', '<n>s' or '<n>min' (n > 0), "
                             f"got {text!r}") from None
    return interval_seconds(t, integration_s, scan_s)


def _check_solint(text: str) -> None:
    solint_seconds(text, 1.0, 1.0)


def _check_pattern(rx: re.Pattern, example: str) -> Callable[[str], None]:
    def check(text: str) -> None:
        if not rx.match(text.strip()):
            raise ValueError(f"expected e.g. {example!r}, got {text!r}")
    return check


@dataclass(frozen=True)
class TextType:
    """A string setting with a grammar: ``check(text)`` raises ValueError with the problem."""

    name: str
    doc: str
    check: Callable[[str], Any]


ANGLE = TextType("angle", f"'<n><unit>', unit one of {', '.join(ANGLE_UNITS)} (e.g. '0.1arcsec')",
                 angle_arcsec)
DURATION = TextType("duration", "'<n>s' or '<n>min' (e.g. '20s'); not 'int'/'inf'",
                    duration_seconds)
SOLINT = TextType("solint", "'int' (one integration), 'inf' (one scan), '<n>s' or '<n>min'",
                  _check_solint)
MEMORY = TextType("memory", "'<n><unit>', e.g. '16GiB', '4000MB'", _check_pattern(_MEM_RE, "16GiB"))
WALLTIME = TextType("walltime", "[D-]HH[:MM[:SS]], e.g. '04:00:00'",
                    _check_pattern(_WALLTIME_RE, "04:00:00"))
ADDRESS = TextType("address", "'tcp://host:port' or 'host:port'",
                   _check_pattern(_ADDRESS_RE, "tcp://host:8786"))


# ----------------------------------------------------------------------------------------
# declaration


@dataclass(frozen=True)
class Setting:
    """What the schema knows about one field (stored in the field's metadata)."""

    help: str
    unit: str = ""
    #: Allowed values (strings); a list field checks each item.
    choices: tuple[str, ...] = ()
    #: Also accepted besides ``choices`` / ``text`` (e.g. '' = unset, 'auto').
    also: tuple[str, ...] = ()
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    text: TextType | None = None
    #: Extra check of the whole value: returns '' or the problem (for ``key: problem``).
    check: Callable[[Any], str] | None = None
    #: Applied to a well-typed value before its checks (e.g. strip, canonical spelling).
    normalise: Callable[[Any], Any] | None = None
    #: Choices compared case-insensitively.
    ignore_case: bool = False
    #: Documentation of a value with no single default (e.g. a template value).
    default_doc: str = ""
    #: What one value is called in errors ("unknown step 'p9'").
    noun: str = "value"


def setting(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field carrying its :class:`Setting` (``kw``: the Setting's attributes).

    Mutable defaults (dict, list) become a ``default_factory``."""
    if not help:
        raise TypeError("every setting needs one line of help")
    meta = {SCHEMA_KEY: Setting(help=help, **kw)}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def spec(f: dataclasses.Field) -> Setting:
    """The Setting of field ``f`` (a bare help-less one when it was not declared)."""
    return f.metadata.get(SCHEMA_KEY) or Setting(help="(undocumented)")


def fields_of(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved type) pairs of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def hint(value: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when ``value`` is close to a choice, else
    `` (choose from: ...)``."""
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(value), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (choose from: {', '.join(choices)})"


def did_you_mean(key: str, msg: str, value: str, choices: Iterable[str]) -> ConfigError:
    """ConfigError ``key: msg (did you mean 'x'?)`` or ``key: msg (choose from: a, b)``."""
    text = f"{msg}{hint(value, choices)}"
    return ConfigError(f"{key}: {text}" if key else text)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# ----------------------------------------------------------------------------------------
# the validator


def build(cls: type, data: Any, where: str = "") -> Any:
    """Dataclass ``cls`` from a TOML table: unknown keys (did-you-mean), types, constraints.

    Nested dataclass fields take a sub-table. Raises ConfigError ``where.key: problem``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(data).__name__}")
    known = {f.name: (f, tp) for f, tp in fields_of(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = _join(where, key)
        if key not in known:
            raise did_you_mean(dotted, "unknown key", key, sorted(known))
        f, tp = known[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value, dotted)
        else:
            kwargs[key] = check_value(f, tp, value, dotted)
    return cls(**kwargs)


def check(obj: Any, where: str = "") -> None:
    """Check every declared field of dataclass instance ``obj`` (recursively)."""
    for f, tp in fields_of(type(obj)):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(tp):
            check(value, _join(where, f.name))
        else:
            check_value(f, tp, value, _join(where, f.name))


def check_value(f: dataclasses.Field, tp: Any, value: Any, dotted: str) -> Any:
    """Type-check, normalise and constrain one value; returns it coerced (int -> float,
    list -> tuple) and normalised. Raises ConfigError ``dotted: problem``."""
    s = spec(f)
    value = _coerce(tp, value, dotted)
    if s.normalise is not None:
        value = s.normalise(value)
    for v in value if isinstance(value, tuple) else (value,):
        _constrain(s, v, dotted)
    if s.check is not None:
        problem = s.check(value)
        if problem:
            raise ConfigError(f"{dotted}: {problem}")
    return value


def _constrain(s: Setting, v: Any, dotted: str) -> None:
    if isinstance(v, str):
        if v in s.also:
            return
        if s.choices:
            ok = (v.lower() in [c.lower() for c in s.choices]) if s.ignore_case else v in s.choices
            if not ok:
                raise did_you_mean(dotted, f"unknown {s.noun} {v!r}", v,
                                   (*s.choices, *(a for a in s.also if a)))
        if s.text is not None:
            try:
                s.text.check(v)
            except ValueError as exc:
                raise ConfigError(f"{dotted}: {exc}") from None
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        problem = range_problem(s, v)
        if problem:
            raise ConfigError(f"{dotted}: {problem}")


def range_problem(s: Setting, v: float) -> str:
    """'' when ``v`` is within the declared range, else 'must be within [a, b], got v'."""
    lo = s.ge if s.ge is not None else s.gt
    hi = s.le if s.le is not None else s.lt
    ok = ((s.ge is None or v >= s.ge) and (s.gt is None or v > s.gt)
          and (s.le is None or v <= s.le) and (s.lt is None or v < s.lt))
    if ok:
        return ""
    return f"must be {range_text(s)}, got {v:g}" if lo is not None or hi is not None else ""


def range_text(s: Setting) -> str:
    """'within [-2, 2]', '>= 0', '> 0', 'within (0, 1)' or ''."""
    lo = s.ge if s.ge is not None else s.gt
    hi = s.le if s.le is not None else s.lt
    if lo is not None and hi is not None:
        return (f"within {'[' if s.ge is not None else '('}{lo:g}, {hi:g}"
                f"{']' if s.le is not None else ')'}")
    if lo is not None:
        return f"{'>=' if s.ge is not None else '>'} {lo:g}"
    if hi is not None:
        return f"{'<=' if s.le is not None else '<'} {hi:g}"
    return ""


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        if isinstance(value, bool) or not finite:
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType) or tp is Any:
        return value
    raise TypeError(f"{key}: the schema cannot check type {tp!r}")


def type_name(tp: Any, s: Setting) -> str:
    """A reader's name of a field's type: 'integer', 'angle', 'list of strings', ..."""
    if s.text is not None:
        return s.text.name
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in names:
        return names[tp]
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        return f"list of {names.get(inner, 'value')}s"
    if typing.get_origin(tp) is dict or tp is dict:
        return "table"
    return getattr(tp, "__name__", str(tp))
