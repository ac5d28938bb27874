"""selfcal_batch.fileio (atomic writes) and selfcal_batch.numeric (loose numbers)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from selfcal_batch.fileio import atomic_write, atomic_write_json, atomic_write_text
from selfcal_batch.numeric import finite_or_nan, float_or_nan, seconds_text


def test_atomic_write_text_and_json_create_parents_and_replace(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.json"
    assert atomic_write_json(target, {"k": Path("/p"), "n": 1}) == target
    assert json.loads(target.read_text()) == {"k": "/p", "n": 1}
    atomic_write_text(target, "new\n", fsync=True)
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]  # no temporary left


def test_atomic_write_failure_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "plot.png"
    target.write_text("old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_atomic_write_temporary_keeps_the_suffix(tmp_path: Path) -> None:
    seen: list[Path] = []
    atomic_write(tmp_path / "sheet.png", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")))
    assert seen[0].suffix == ".png" and seen[0].name.startswith(".sheet.png.tmp")
    assert (tmp_path / "sheet.png").read_bytes() == b"x"


@pytest.mark.parametrize("v, loose, finite", [
    (1, 1.0, 1.0), ("2.5", 2.5, 2.5), (None, math.nan, math.nan), ("", math.nan, math.nan),
    ("abc", math.nan, math.nan), (float("inf"), math.inf, math.nan), ("-inf", -math.inf, math.nan),
    (float("nan"), math.nan, math.nan), ([1], math.nan, math.nan),
])
def test_float_or_nan_and_finite_or_nan(v: object, loose: float, finite: float) -> None:
    for got, want in ((float_or_nan(v), loose), (finite_or_nan(v), finite)):
        assert (math.isnan(got) and math.isnan(want)) or got == want, (v, got, want)


def test_seconds_text_never_says_zero_for_a_short_limit() -> None:

    assert seconds_text(600.0) == "600"
    assert seconds_text(7200.0) == "7200"
    assert seconds_text(0.5) == "0.5"
    assert seconds_text(0.25) == "0.25"
