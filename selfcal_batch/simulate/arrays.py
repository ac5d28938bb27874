"""Antenna layouts, observing bands and presets of the simulator (pure numpy, no CASA).

VLA: a Y of 27 antennas (arms at azimuths 5, 125 and 245 deg, 9 pads per arm placed with
the VLA's power-law spacing ``r_n ~ n**1.716``), scaled so the longest baseline is about
36 km (A), 11 km (B), 3.4 km (C) or 1.0 km (D). e-MERLIN: the seven telescopes at their
approximate geodetic positions (Cambridge-Knockin ~217 km).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

C_LIGHT = 299_792_458.0

#: WGS84 ellipsoid.
_WGS84_A = 6_378_137.0
_WGS84_F = 1.0 / 298.257223563

#: VLA array centre (geodetic lon, lat in deg; height in m).
VLA_SITE = (-107.6184, 34.0790, 2124.0)
#: Longest baseline (m) of each VLA configuration.
VLA_MAX_BASELINE_M = {"A": 36_400.0, "B": 11_100.0, "C": 3_400.0, "D": 1_030.0}
VLA_ARM_AZIMUTHS_DEG = {"N": 5.0, "E": 125.0, "W": 245.0}
VLA_DISH_M = 25.0

#: e-MERLIN telescopes: name -> (station, lon deg, lat deg, height m, true dish diameter m).
EMERLIN_SITES: dict[str, tuple[str, float, float, float, float]] = {
    "Lo": ("Lovell", -2.30715, 53.23625, 120.0, 76.0),
    "Mk2": ("Mark2", -2.30390, 53.23375, 120.0, 25.0),
    "Pi": ("Pickmere", -2.44530, 53.28818, 90.0, 25.0),
    "Da": ("Darnhall", -2.53563, 53.15634, 110.0, 25.0),
    "Kn": ("Knockin", -2.99723, 52.79097, 120.0, 25.0),
    "De": ("Defford", -2.14398, 52.10166, 80.0, 25.0),
    "Cm": ("Cambridge", 0.03758, 52.16697, 70.0, 32.0),
}
#: Dish diameter written to the MS ANTENNA table for every antenna. casatools'
#: simulator crashes (predict) on arrays with unequal diameters; the true ones are in
#: the truth JSON.
MS_DISH_M = 25.0

INSTRUMENTS = ("VLA", "eMERLIN")
TELESCOPE_NAMES = {"VLA": "VLA", "eMERLIN": "e-MERLIN"}
SITES = {"VLA": VLA_SITE, "eMERLIN": (-2.30715, 53.23625, 120.0)}


@dataclass(frozen=True)
class Band:
    """An observing band: centre frequency and the width of one spectral window."""

    name: str
    centre_hz: float
    spw_bandwidth_hz: float
    low_hz: float
    high_hz: float


def _band(name: str, centre_ghz: float, spw_mhz: float, low_ghz: float, high_ghz: float) -> Band:
    return Band(name, centre_ghz * 1e9, spw_mhz * 1e6, low_ghz * 1e9, high_ghz * 1e9)


#: Bands per instrument. Spectral windows are contiguous and centred on ``centre_hz``.
BANDS: dict[str, dict[str, Band]] = {
    "VLA": {
        "L": _band("L", 1.5, 64.0, 1.0, 2.0),
        "S": _band("S", 3.0, 128.0, 2.0, 4.0),
        "C": _band("C", 6.0, 128.0, 4.0, 8.0),
        "X": _band("X", 10.0, 128.0, 8.0, 12.0),
        "Ku": _band("Ku", 15.0, 128.0, 12.0, 18.0),
        "K": _band("K", 22.0, 128.0, 18.0, 26.5),
        "Ka": _band("Ka", 33.0, 128.0, 26.5, 40.0),
        "Q": _band("Q", 45.0, 128.0, 40.0, 50.0),
    },
    "eMERLIN": {
        "L": _band("L", 1.51, 64.0, 1.254, 1.766),
        "C": _band("C", 5.07, 128.0, 4.816, 5.328),
    },
}

#: Presets: partial SimSpecs (field -> value). VLA presets use configuration B (beam
#: ~1" at C band; the pipeline images at beam/5 with 256-512 pixels, so any works).
PRESETS: dict[str, dict[str, object]] = {
    **{
        f"vla-{b.lower()}": {
            "preset": f"vla-{b.lower()}",
            "instrument": "VLA",
            "band": b,
            "array_config": "B",
            "ra_deg": 150.0,
            "dec_deg": 40.0,
        }
        for b in BANDS["VLA"]
    },
    **{
        f"emerlin-{b.lower()}": {
            "preset": f"emerlin-{b.lower()}",
            "instrument": "eMERLIN",
            "band": b,
            "array_config": None,
            "ra_deg": 150.0,
            "dec_deg": 50.0,
        }
        for b in BANDS["eMERLIN"]
    },
}


@dataclass(frozen=True)
class Antenna:
    """One antenna: MS id, name, station, ITRF position (m), true dish diameter (m)."""

    id: int
    name: str
    station: str
    position_m: tuple[float, float, float]
    dish_m: float

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "station": self.station,
            "position_m": [round(float(x), 4) for x in self.position_m],
            "dish_diameter_m": self.dish_m,
            "ms_dish_diameter_m": MS_DISH_M,
        }


def geodetic_to_ecef(lon_deg: float, lat_deg: float, height_m: float) -> np.ndarray:
    """WGS84 geodetic -> ITRF/ECEF (m)."""
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    e2 = _WGS84_F * (2.0 - _WGS84_F)
    n = _WGS84_A / np.sqrt(1.0 - e2 * np.sin(lat) ** 2)
    return np.array(
        [
            (n + height_m) * np.cos(lat) * np.cos(lon),
            (n + height_m) * np.cos(lat) * np.sin(lon),
            (n * (1.0 - e2) + height_m) * np.sin(lat),
        ]
    )


def enu_to_ecef(east: np.ndarray, north: np.ndarray, up: np.ndarray, site: tuple[float, float, float]) -> np.ndarray:
    """Local east/north/up offsets (m) around ``site`` -> ECEF positions, shape (n, 3)."""
    lon, lat = np.radians(site[0]), np.radians(site[1])
    x0 = geodetic_to_ecef(*site)
    sl, cl, sp, cp = np.sin(lon), np.cos(lon), np.sin(lat), np.cos(lat)
    dx = -sl * east - sp * cl * north + cp * cl * up
    dy = cl * east - sp * sl * north + cp * sl * up
    dz = cp * north + sp * up
    return x0[None, :] + np.stack([dx, dy, dz], axis=1)


def vla_layout(config: str) -> list[Antenna]:
    """27 VLA antennas in configuration ``config`` (A/B/C/D), named ea01..ea27."""
    arm = VLA_MAX_BASELINE_M[config] / np.sqrt(3.0)
    east, north, stations = [], [], []
    for arm_name, az in VLA_ARM_AZIMUTHS_DEG.items():
        for n in range(1, 10):
            # Power-law pad spacing; the +0.5 keeps the innermost D pads > 1 dish apart.
            r = arm * ((n + 0.5) / 9.5) ** 1.716
            east.append(r * np.sin(np.radians(az)))
            north.append(r * np.cos(np.radians(az)))
            stations.append(f"{arm_name}{n:02d}")
    e, nn = np.array(east), np.array(north)
    xyz = enu_to_ecef(e, nn, np.zeros_like(e), VLA_SITE)
    return [
        Antenna(i, f"ea{i + 1:02d}", stations[i], tuple(float(v) for v in xyz[i]), VLA_DISH_M)
        for i in range(len(stations))
    ]


def emerlin_layout() -> list[Antenna]:
    """The seven e-MERLIN telescopes (Lo, Mk2, Pi, Da, Kn, De, Cm)."""
    out = []
    for i, (name, (station, lon, lat, h, dish)) in enumerate(EMERLIN_SITES.items()):
        xyz = geodetic_to_ecef(lon, lat, h)
        out.append(Antenna(i, name, station, tuple(float(v) for v in xyz), dish))
    return out


def antennas_for(instrument: str, array_config: str | None) -> list[Antenna]:
    """Antenna list of an instrument (``array_config`` is used for the VLA only)."""
    if instrument == "VLA":
        return vla_layout(array_config or "B")
    if instrument == "eMERLIN":
        return emerlin_layout()
    raise ValueError(f"unknown instrument {instrument!r}")


def n_antennas(instrument: str) -> int:
    """Number of antennas of an instrument."""
    return {"VLA": 27, "eMERLIN": len(EMERLIN_SITES)}[instrument]


def max_baseline_m(antennas: list[Antenna]) -> float:
    """Longest baseline (m) of an antenna list."""
    xyz = np.array([a.position_m for a in antennas])
    d = np.sqrt(((xyz[:, None, :] - xyz[None, :, :]) ** 2).sum(-1))
    return float(d.max())


def beam_arcsec(freq_hz: float, baseline_m: float) -> float:
    """Approximate synthesised beam (lambda / B_max) in arcsec."""
    return float(np.degrees(C_LIGHT / freq_hz / baseline_m) * 3600.0)


def source_elevation_deg(lat_deg: float, dec_deg: float, hour_angle_deg: float) -> float:
    """Elevation (deg) of a source at declination ``dec_deg`` and hour angle."""
    lat, dec, ha = np.radians([lat_deg, dec_deg, hour_angle_deg])
    s = np.sin(lat) * np.sin(dec) + np.cos(lat) * np.cos(dec) * np.cos(ha)
    return float(np.degrees(np.arcsin(np.clip(s, -1.0, 1.0))))
