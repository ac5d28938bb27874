"""Sky model of the simulator: point and elliptical Gaussian components, predicted by DFT.

Conventions (checked against ``casatools.simulator.predict`` with a component list, and
by imaging with WSClean):

* A component's offset ``(dra_arcsec, ddec_arcsec)`` is its direction cosine ``(l, m)``
  from the phase centre in arcsec (SIN projection; ``l`` grows towards east = larger RA).
  :func:`lm_to_radec` gives the exact RA/Dec, which the truth JSON records.
* ``V(u, v, w) = sum_k S_k(nu) G_k(u, v) exp(+2 pi i (u l_k + v m_k + w (n_k - 1)))`` with
  ``(u, v, w)`` the MS UVW column in wavelengths (CASA's simulator UVW sign convention).
* ``S_k(nu) = flux_jy * (nu / ref_freq) ** spectral_index``.
* Gaussian: FWHM ``major_arcsec`` / ``minor_arcsec``, ``pa_deg`` of the major axis east of
  north: ``G = exp(-pi^2 / (4 ln 2) (maj^2 u_maj^2 + min^2 u_min^2))`` with
  ``u_maj = u sin(pa) + v cos(pa)``, ``u_min = u cos(pa) - v sin(pa)``.
* Sources are unpolarised: parallel hands (RR, LL or XX, YY) get ``V``, cross hands 0.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

import numpy as np

from selfcal_batch.errors import SimulationError
from .arrays import C_LIGHT

_ARCSEC = math.pi / 180.0 / 3600.0
KINDS = ("point", "gaussian")


@dataclass(frozen=True)
class Component:
    """One sky component. Offsets are direction cosines (l, m) in arcsec."""

    kind: str = "point"
    flux_jy: float = 0.1
    dra_arcsec: float = 0.0
    ddec_arcsec: float = 0.0
    major_arcsec: float = 0.0
    minor_arcsec: float = 0.0
    pa_deg: float = 0.0
    spectral_index: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SimulationError(f"component kind must be one of {', '.join(KINDS)} (got {self.kind!r})")
        for f in fields(self):
            if f.name != "kind":
                v = getattr(self, f.name)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise SimulationError(f"component {f.name} must be a finite number (got {v!r})")
                object.__setattr__(self, f.name, float(v))
        if abs(self.dra_arcsec) > 3600.0 or abs(self.ddec_arcsec) > 3600.0:
            raise SimulationError("component offset (dra_arcsec/ddec_arcsec) must be within 1 degree")
        if self.kind == "gaussian":
            if self.major_arcsec <= 0 or self.minor_arcsec <= 0:
                raise SimulationError("gaussian component needs major_arcsec > 0 and minor_arcsec > 0")
            if self.minor_arcsec > self.major_arcsec:
                raise SimulationError(
                    f"gaussian component minor_arcsec ({self.minor_arcsec}) > major_arcsec ({self.major_arcsec})"
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Component":
        return cls(**checked_fields(cls, d, "component"))


def checked_fields(cls: type, d: Any, what: str) -> dict[str, Any]:
    """``d`` if it is a mapping whose keys are all fields of dataclass ``cls``; else a
    one-line SimulationError naming the unknown keys."""
    if not isinstance(d, dict):
        raise SimulationError(f"{what} must be a mapping (got {type(d).__name__})")
    known = {f.name for f in fields(cls)}
    extra = sorted(set(d) - known)
    if extra:
        raise SimulationError(f"unknown {what} key(s): {', '.join(extra)} (known: {', '.join(sorted(known))})")
    return d


def lm_to_radec(l: float, m: float, ra0_deg: float, dec0_deg: float) -> tuple[float, float]:
    """Direction cosines (rad) around (ra0, dec0) -> (RA, Dec) in degrees (SIN projection)."""
    ra0, dec0 = math.radians(ra0_deg), math.radians(dec0_deg)
    n = math.sqrt(max(0.0, 1.0 - l * l - m * m))
    dec = math.asin(m * math.cos(dec0) + n * math.sin(dec0))
    ra = ra0 + math.atan2(l, n * math.cos(dec0) - m * math.sin(dec0))
    return math.degrees(ra) % 360.0, math.degrees(dec)


def component_truth(comp: Component, ra0_deg: float, dec0_deg: float, ref_freq_hz: float) -> dict[str, Any]:
    """Truth record of a component: its parameters plus exact RA/Dec and reference frequency."""
    ra, dec = lm_to_radec(comp.dra_arcsec * _ARCSEC, comp.ddec_arcsec * _ARCSEC, ra0_deg, dec0_deg)
    return {**comp.to_dict(), "ra_deg": ra, "dec_deg": dec, "ref_freq_hz": ref_freq_hz}


#: The VLA primary beam the simulator applies with ``primary_beam = true``: the published
#: polynomial CASA uses for telescope 'VLA' (PBMath ``VLA`` common beam, a unit-peak refit
#: of Napier & Rots), coded here independently of the pipeline's
#: :mod:`selfcal_batch.imaging.primary_beam` (which evaluates the beam with CASA itself):
#: ``PB = 1 + a1 x^2 + a2 x^4 + a3 x^6``, ``x = r[arcmin] nu[GHz]``, 0 beyond x = 43.
VLA_PB_COEFFS = (1.0, -1.300633e-03, 6.480550e-07, -1.267928e-10)


def vla_primary_beam(offset_arcsec: float, freqs_hz: np.ndarray) -> np.ndarray:
    """Power attenuation (shape (nchan,)) of the VLA beam at ``offset_arcsec`` from the
    pointing centre, per frequency (see :data:`VLA_PB_COEFFS`)."""
    x = offset_arcsec / 60.0 * np.asarray(freqs_hz, dtype=np.float64) / 1e9
    pb = sum(c * x ** (2 * i) for i, c in enumerate(VLA_PB_COEFFS))
    return np.where(x <= 43.0, np.clip(pb, 0.0, 1.0), 0.0)


def component_offset_arcsec(comp: Component) -> float:
    """Angular distance (arcsec) of a component from the phase centre (l, m -> angle)."""
    l, m = comp.dra_arcsec * _ARCSEC, comp.ddec_arcsec * _ARCSEC
    return math.asin(min(1.0, math.hypot(l, m))) / _ARCSEC


def predict(
    uvw_m: np.ndarray,
    freqs_hz: np.ndarray,
    components: Iterable[Component],
    ref_freq_hz: float,
    primary_beam: bool = False,
) -> np.ndarray:
    """Model visibilities (complex64, shape (nrow, nchan)) of ``components``.

    ``uvw_m`` has shape (nrow, 3) (metres, MS UVW); ``freqs_hz`` shape (nchan,).
    ``primary_beam``: attenuate each component by :func:`vla_primary_beam` at its offset,
    per channel (the apparent sky a VLA dish sees; the components' fluxes stay the truth).
    """
    uvw_m = np.asarray(uvw_m, dtype=np.float64)
    freqs = np.asarray(freqs_hz, dtype=np.float64)
    nrow, nchan = uvw_m.shape[0], freqs.shape[0]
    out = np.zeros((nrow, nchan), dtype=np.complex64)
    comps = list(components)
    if not comps or nrow == 0:
        return out
    scale = freqs / C_LIGHT  # wavelengths per metre, per channel
    u, v, w = uvw_m[:, 0:1], uvw_m[:, 1:2], uvw_m[:, 2:3]
    for comp in comps:
        l = comp.dra_arcsec * _ARCSEC
        m = comp.ddec_arcsec * _ARCSEC
        n = math.sqrt(1.0 - l * l - m * m)
        # Phase per metre (rows) times wavelengths per metre (chans): float64 for accuracy.
        turns = (u * l + v * m + w * (n - 1.0)) * scale[None, :]
        spec = comp.flux_jy * (freqs / ref_freq_hz) ** comp.spectral_index
        if primary_beam:
            spec = spec * vla_primary_beam(component_offset_arcsec(comp), freqs)
        spec = spec.astype(np.float32)
        vis = np.exp(2j * np.pi * turns).astype(np.complex64)
        if comp.kind == "gaussian":
            pa = math.radians(comp.pa_deg)
            a, b = comp.major_arcsec * _ARCSEC, comp.minor_arcsec * _ARCSEC
            u_maj = (u * math.sin(pa) + v * math.cos(pa)) * scale[None, :]
            u_min = (u * math.cos(pa) - v * math.sin(pa)) * scale[None, :]
            k = math.pi**2 / (4.0 * math.log(2.0))
            vis *= np.exp(-k * (a * a * u_maj**2 + b * b * u_min**2)).astype(np.float32)
        vis *= spec[None, :]
        out += vis
    return out


def default_components(flux_jy: float, extended_flux_jy: float, beam_arcsec: float) -> tuple[Component, ...]:
    """The default sky, laid out in units of the synthesised beam ``beam_arcsec``.

    * the target: a point source of ``flux_jy`` at the phase centre (spectral index -0.7);
    * a fainter point source (10 % of ``flux_jy``) at (+8, +5) beams (index -0.7);
    * if ``extended_flux_jy`` > 0, an elliptical Gaussian of that flux at (-6, -4) beams,
      FWHM 3 x 1.5 beams, PA 30 deg (index -0.8).
    """
    b = float(beam_arcsec)
    r = lambda x: round(x, 4)  # noqa: E731
    comps = [
        Component("point", flux_jy, 0.0, 0.0, spectral_index=-0.7),
        Component("point", 0.1 * flux_jy, r(8 * b), r(5 * b), spectral_index=-0.7),
    ]
    if extended_flux_jy > 0:
        comps.append(
            Component("gaussian", extended_flux_jy, r(-6 * b), r(-4 * b), r(3 * b), r(1.5 * b), 30.0, -0.8)
        )
    return tuple(comps)
