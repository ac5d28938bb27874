"""band_of_frequency / band_mismatch: a wrong (default) band is said (pure)."""
from __future__ import annotations

import pytest

from selfcal_batch.selfcal.bands import _GHZ, band_mismatch, band_of_frequency
from selfcal_batch.selfcal.templates import BANDS


@pytest.mark.parametrize("inst", sorted(_GHZ))
def test_every_band_centre_maps_back_and_is_a_known_band(inst):
    for name, lo, hi in _GHZ[inst]:
        assert name in BANDS[inst]
        centre = 0.5 * (lo + hi) * 1e9
        assert band_of_frequency(inst, centre) == name
        assert band_mismatch(inst, name, centre - 1e6, centre + 1e6) == ""
        other = next(b for b, _lo, _hi in _GHZ[inst] if b != name)
        why = band_mismatch(inst, other, centre - 1e6, centre + 1e6)
        assert f"({inst} {name} band) but band = {other!r}" in why and f"set band = {name!r}" in why


def test_the_reported_case_and_out_of_range():
    why = band_mismatch("VLA", "C", 36.0e9, 36.6e9)
    assert why.startswith("the MS is at 36.3 GHz (VLA Ka band) but band = 'C'")
    assert band_of_frequency("VLA", 100e9) is None and band_mismatch("VLA", "C", 100e9, 101e9) == ""
    assert band_of_frequency("ALMA", 36e9) is None
