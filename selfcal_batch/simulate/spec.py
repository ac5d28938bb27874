"""``SimSpec``: everything that defines a simulated MS (frozen, validated, JSON round-trip).

Time layout: ``n_scans`` scans of ``duration_s / n_scans`` on source each (rounded to whole
integrations), separated by ``scan_gap_s``, centred on the source's transit on
``start_date`` (UTC). Spectral windows: ``n_spw`` contiguous windows of
``spw_bandwidth_hz`` (band default) centred on ``centre_freq_hz`` (band default), each of
``n_chan`` channels. ``missing_spw``: that spw is absent (no rows) from every other scan
(scans 2, 4, ...). ``dead_antenna``: the antenna's visibilities are pure noise, not
flagged. ``fields`` (empty by default): several fields with their own skies and scan
intents, scans interleaved in time (an execution block; see :mod:`.fields`); then
``components``, ``source_name`` and ``ra_deg``/``dec_deg`` only define the reference centre.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from selfcal_batch.errors import SimulationError
from . import arrays
from .fields import FieldSpec, as_fields, field_scan_plan
from .sky import Component, default_components

#: Field -> CLI option, used in error messages.
CLI_OPTION = {
    "instrument": "--preset", "band": "--preset", "array_config": "--array-config",
    "duration_s": "--duration", "integration_s": "--integration", "n_scans": "--n-scans",
    "scan_gap_s": "--scan-gap", "n_spw": "--n-spw", "n_chan": "--n-chan",
    "correlations": "--correlations", "phase_rms_deg": "--phase-rms",
    "phase_timescale_s": "--phase-timescale", "spw_phase_rms_deg": "--spw-phase-rms",
    "amp_rms": "--amp-rms", "delay_rms_ns": "--delay-rms", "dead_antenna": "--dead-antenna", "missing_spw": "--missing-spw",
    "noise_jy": "--noise", "seed": "--seed", "ra_deg": "--ra", "dec_deg": "--dec",
    "write_model": "--write-model",
}
CORRELATIONS = ("RR LL", "RR RL LR LL", "XX YY", "XX XY YX YY")
MIN_ELEVATION_DEG = 10.0
#: Default thermal noise (Jy, per real/imag part of one visibility).
DEFAULT_NOISE_JY = 0.05


def _name(f: str) -> str:
    opt = CLI_OPTION.get(f)
    return f"{f} ({opt})" if opt else f


def _fail(f: str, problem: str, value: Any) -> SimulationError:
    return SimulationError(f"{_name(f)} {problem}, got {value!r}")


@dataclass(frozen=True)
class SimSpec:
    """Specification of one synthetic MS. See the module docstring for the time/spw layout."""

    instrument: str = "VLA"
    band: str = "C"
    array_config: str | None = "B"
    preset: str | None = None
    duration_s: float = 1200.0
    integration_s: float = 10.0
    n_scans: int = 1
    scan_gap_s: float = 60.0
    n_spw: int = 2
    n_chan: int = 8
    centre_freq_hz: float | None = None
    spw_bandwidth_hz: float | None = None
    correlations: str = "RR LL"
    components: tuple[Component, ...] = field(default_factory=tuple)
    ref_freq_hz: float | None = None
    phase_rms_deg: float = 0.0
    phase_timescale_s: float = 300.0
    spw_phase_rms_deg: float = 0.0
    amp_rms: float = 0.0
    #: Rms (ns) of constant per-antenna instrumental delays (phase 2 pi nu tau_ant): raw,
    #: uncalibrated data.
    delay_rms_ns: float = 0.0
    dead_antenna: int | None = None
    missing_spw: int | None = None
    noise_jy: float = DEFAULT_NOISE_JY
    seed: int = 1
    ra_deg: float = 150.0
    dec_deg: float = 40.0
    source_name: str = "TARGET"
    start_date: str = "2024-01-01"
    write_model: bool = False
    #: Several fields (an execution block), see :mod:`.fields`; empty: one field.
    fields: tuple[FieldSpec, ...] = field(default_factory=tuple)
    #: Attenuate the sky by the VLA primary beam (sky.vla_primary_beam); VLA only.
    primary_beam: bool = False

    # -- validation ---------------------------------------------------------------------
    def __post_init__(self) -> None:
        s = object.__setattr__
        if self.instrument not in arrays.INSTRUMENTS:
            raise _fail("instrument", f"must be one of {', '.join(arrays.INSTRUMENTS)}", self.instrument)
        bands = arrays.BANDS[self.instrument]
        if self.band not in bands:
            raise _fail("band", f"must be one of {', '.join(bands)} for {self.instrument}", self.band)
        if self.instrument == "VLA":
            if self.array_config not in arrays.VLA_MAX_BASELINE_M:
                raise _fail("array_config", "must be one of A, B, C, D for the VLA", self.array_config)
        elif self.array_config is not None:
            raise _fail("array_config", f"applies to the VLA only (not {self.instrument})", self.array_config)
        for f in ("duration_s", "integration_s", "phase_timescale_s"):
            s(self, f, self._num(f, minimum=0.0, strict=True))
        for f in ("scan_gap_s", "phase_rms_deg", "spw_phase_rms_deg", "amp_rms", "delay_rms_ns", "noise_jy"):
            s(self, f, self._num(f, minimum=0.0))
        for f in ("centre_freq_hz", "spw_bandwidth_hz", "ref_freq_hz"):
            if getattr(self, f) is not None:
                s(self, f, self._num(f, minimum=0.0, strict=True))
        s(self, "ra_deg", self._num("ra_deg", minimum=0.0) % 360.0)
        s(self, "dec_deg", self._num("dec_deg"))
        if not -90.0 <= self.dec_deg <= 90.0:
            raise _fail("dec_deg", "must be within [-90, 90]", self.dec_deg)
        if self.amp_rms >= 1.0:
            raise _fail("amp_rms", "must be < 1 (fractional amplitude rms)", self.amp_rms)
        s(self, "n_scans", self._int("n_scans", 1, 1000))
        s(self, "n_spw", self._int("n_spw", 1, 64))
        s(self, "n_chan", self._int("n_chan", 1, 4096))
        s(self, "seed", self._int("seed", 0, 2**32 - 1))
        corr = " ".join(str(self.correlations).replace(",", " ").upper().split())
        if corr not in CORRELATIONS:
            raise _fail("correlations", f"must be one of {', '.join(repr(c) for c in CORRELATIONS)}", self.correlations)
        s(self, "correlations", corr)
        comps = self.components
        if not isinstance(comps, (list, tuple)):
            raise _fail("components", "must be a list of components", comps)
        s(self, "components", tuple(c if isinstance(c, Component) else Component.from_dict(c) for c in comps))
        s(self, "fields", as_fields(self.fields))
        if not isinstance(self.write_model, bool):
            raise _fail("write_model", "must be true or false", self.write_model)
        if not isinstance(self.primary_beam, bool):
            raise _fail("primary_beam", "must be true or false", self.primary_beam)
        if self.primary_beam and self.instrument != "VLA":
            raise _fail("primary_beam", "is modelled for the VLA only", self.instrument)
        if not str(self.source_name).strip():
            raise _fail("source_name", "must not be empty", self.source_name)
        try:
            _dt.date.fromisoformat(str(self.start_date))
        except ValueError:
            raise _fail("start_date", "must be an ISO date YYYY-MM-DD", self.start_date) from None
        n_ant = arrays.n_antennas(self.instrument)
        if self.dead_antenna is not None:
            s(self, "dead_antenna", self._int("dead_antenna", 0, n_ant - 1))
        if self.missing_spw is not None:
            s(self, "missing_spw", self._int("missing_spw", 0, self.n_spw - 1))
            if self.n_spw < 2:
                raise _fail("n_spw", "must be >= 2 with missing_spw (scans would be empty)", self.n_spw)
            if self.n_scans < 2:
                raise _fail("n_scans", "must be >= 2 with missing_spw (it is absent from every other scan)", self.n_scans)
        if self.integration_s > self.duration_s / self.n_scans:
            raise _fail("integration_s", f"must be <= duration_s / n_scans = {self.duration_s / self.n_scans:g} s",
                        self.integration_s)
        if self.n_integrations_per_scan * self.n_scans > 200_000:
            raise _fail("duration_s", "gives more than 200000 integrations (raise --integration)", self.duration_s)
        lowest = self.spw_edges_hz[0][0]
        if lowest <= 0:
            raise _fail("spw_bandwidth_hz", "puts the lowest frequency <= 0", self.spw_bandwidth_hz)
        lat = arrays.SITES[self.instrument][1]
        ha_deg = 15.0 * (self.time_span_s / 2.0) / 3600.0
        el = arrays.source_elevation_deg(lat, self.dec_deg, min(ha_deg, 180.0))
        if el < MIN_ELEVATION_DEG:
            raise SimulationError(
                f"{_name('dec_deg')}/{_name('duration_s')}: source at dec {self.dec_deg:g} reaches elevation "
                f"{el:.1f} deg at the ends of the observation (need >= {MIN_ELEVATION_DEG:g})"
            )

    def _num(self, f: str, minimum: float | None = None, strict: bool = False) -> float:
        v = getattr(self, f)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _fail(f, "must be a finite number", v)
        v = float(v)
        if minimum is not None and (v <= minimum if strict else v < minimum):
            raise _fail(f, f"must be {'>' if strict else '>='} {minimum:g}", v)
        return v

    def _int(self, f: str, lo: int, hi: int) -> int:
        v = getattr(self, f)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise _fail(f, "must be an integer", v)
        if not lo <= int(v) <= hi:
            raise _fail(f, f"must be in [{lo}, {hi}]", v)
        return int(v)

    # -- derived quantities ---------------------------------------------------------------
    @property
    def band_info(self) -> arrays.Band:
        return arrays.BANDS[self.instrument][self.band]

    @property
    def centre_hz(self) -> float:
        return float(self.centre_freq_hz or self.band_info.centre_hz)

    @property
    def spw_bw_hz(self) -> float:
        return float(self.spw_bandwidth_hz or self.band_info.spw_bandwidth_hz)

    @property
    def reference_frequency_hz(self) -> float:
        """Frequency at which component fluxes are given (default: centre frequency)."""
        return float(self.ref_freq_hz or self.centre_hz)

    @property
    def spw_edges_hz(self) -> list[tuple[float, float]]:
        lo = self.centre_hz - self.n_spw * self.spw_bw_hz / 2.0
        return [(lo + k * self.spw_bw_hz, lo + (k + 1) * self.spw_bw_hz) for k in range(self.n_spw)]

    def chan_freqs(self, spw: int) -> np.ndarray:
        """Channel centre frequencies (Hz) of ``spw``."""
        lo, hi = self.spw_edges_hz[spw]
        width = (hi - lo) / self.n_chan
        return lo + width * (np.arange(self.n_chan) + 0.5)

    @property
    def n_integrations_per_scan(self) -> int:
        return max(1, int(round(self.duration_s / self.n_scans / self.integration_s)))

    @property
    def scan_length_s(self) -> float:
        return self.n_integrations_per_scan * self.integration_s

    @property
    def time_span_s(self) -> float:
        if self.fields:
            plan = field_scan_plan(self.fields, self.n_scans, self.n_integrations_per_scan,
                                   self.integration_s, self.scan_gap_s)
            return plan[-1]["ha_stop_s"]
        return self.n_scans * self.scan_length_s + (self.n_scans - 1) * self.scan_gap_s

    def scan_plan(self) -> list[dict[str, Any]]:
        """Scans: number, hour-angle start/stop (s from transit), spws present."""
        start = -self.time_span_s / 2.0
        if self.fields:
            plan = field_scan_plan(self.fields, self.n_scans, self.n_integrations_per_scan,
                                   self.integration_s, self.scan_gap_s)
            for k, sc in enumerate(plan):
                spws = [s for s in range(self.n_spw) if not (s == self.missing_spw and k % 2 == 1)]
                sc.update(ha_start_s=start + sc["ha_start_s"], ha_stop_s=start + sc["ha_stop_s"], spws=spws)
            return plan
        out = []
        for k in range(self.n_scans):
            t0 = start + k * (self.scan_length_s + self.scan_gap_s)
            spws = list(range(self.n_spw))
            if self.missing_spw is not None and k % 2 == 1:
                spws.remove(self.missing_spw)
            out.append({"scan": k + 1, "ha_start_s": t0, "ha_stop_s": t0 + self.scan_length_s, "spws": spws})
        return out

    def antennas(self) -> list[arrays.Antenna]:
        return arrays.antennas_for(self.instrument, self.array_config)

    @property
    def corr_list(self) -> list[str]:
        return self.correlations.split()

    # -- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["components"] = [c.to_dict() for c in self.components]
        if self.fields:
            d["fields"] = [f.to_dict() for f in self.fields]
        else:
            del d["fields"]  # single-field specs serialise exactly as before
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SimSpec":
        from .sky import checked_fields  # lazy: loaded only on this path

        d = checked_fields(cls, d, "simulation spec")
        return cls(**d)

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> "SimSpec":
        try:
            d = json.loads(Path(path).read_text())
        except OSError as exc:
            raise SimulationError(f"cannot read spec file {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise SimulationError(f"spec file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> "SimSpec":
        """Copy with ``changes`` (validated)."""
        return replace(self, **changes)


def spec_from_preset(
    name: str,
    *,
    flux_jy: float = 0.1,
    extended_flux_jy: float = 0.0,
    **overrides: Any,
) -> SimSpec:
    """A full SimSpec from a preset name, with ``overrides`` (SimSpec fields).

    Without ``components`` in ``overrides`` the sky is :func:`sky.default_components`
    (target of ``flux_jy`` at the phase centre etc.) laid out in units of the beam.
    """
    if name not in arrays.PRESETS:
        raise SimulationError(f"unknown preset {name!r} (choose from: {', '.join(arrays.PRESETS)})")
    unknown = sorted(set(overrides) - {f.name for f in fields(SimSpec)})
    if unknown:
        raise SimulationError(f"unknown simulation spec key(s): {', '.join(unknown)}")
    for f, v in (("flux", flux_jy), ("extended_flux", extended_flux_jy)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise SimulationError(f"{f} (--{f.replace('_', '-')}) must be a number >= 0, got {v!r}")
    params = {**arrays.PRESETS[name], **overrides}
    if "components" in overrides:
        return SimSpec(**params)
    spec = SimSpec(**params)
    beam = arrays.beam_arcsec(spec.centre_hz, arrays.max_baseline_m(spec.antennas()))
    return spec.replace(components=default_components(float(flux_jy), float(extended_flux_jy), beam))
