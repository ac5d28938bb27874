"""Which receiver band an MS's frequencies belong to (pure), to catch a wrong ``band``.

``band`` picks the template values, the cell and the taper; it defaults to C. A 36.3 GHz MS
run as C band gets C-band cells and tapers without a word. Frequency ranges (GHz): VLA from
the NRAO VLA Observational Status Summary, "Receivers" table (4 0.058-0.084, P 0.23-0.47,
L 1-2, S 2-4, C 4-8, X 8-12, Ku 12-18, K 18-26.5, Ka 26.5-40, Q 40-50); e-MERLIN from the
e-MERLIN Technical Capabilities page (L 1.25-1.77, C 4.5-7.5, K 21.5-24.5, widened here to
the VLA-like 1-2, 4-8, 18-26.5 so that edge channels are not misread).
"""
from __future__ import annotations

__all__ = ["band_of_frequency", "band_mismatch"]

_GHZ: dict[str, tuple[tuple[str, float, float], ...]] = {
    "VLA": (("4", 0.058, 0.084), ("P", 0.23, 0.47), ("L", 1.0, 2.0), ("S", 2.0, 4.0), ("C", 4.0, 8.0),
            ("X", 8.0, 12.0), ("Ku", 12.0, 18.0), ("K", 18.0, 26.5), ("Ka", 26.5, 40.0), ("Q", 40.0, 50.0)),
    "eMERLIN": (("L", 1.0, 2.0), ("C", 4.0, 8.0), ("K", 18.0, 26.5)),
}


def band_of_frequency(instrument: str, hz: float) -> str | None:
    """The band of ``instrument`` ('VLA' / 'eMERLIN', canonical) containing ``hz``; None
    when no band does (or the instrument is unknown)."""
    ghz = float(hz) / 1e9
    for name, lo, hi in _GHZ.get(instrument, ()):
        if lo <= ghz <= hi:
            return name
    return None


def band_mismatch(instrument: str, band: str, freq_min_hz: float, freq_max_hz: float) -> str:
    """'' or one line saying that the MS's centre frequency lies outside ``band`` (and which
    band it is in). Pure."""
    centre = 0.5 * (float(freq_min_hz) + float(freq_max_hz))
    found = band_of_frequency(instrument, centre)
    if found is None or found == band:
        return ""
    return (f"the MS is at {centre / 1e9:.3g} GHz ({instrument} {found} band) but band = {band!r}: "
            f"the templates, cell and taper are {band}-band values; set band = {found!r}")
