"""Nothing is ever written into an input MS: an output directory inside it is refused
before anything is written (run and dry run), and ``report``/``compare`` refuse folders
that are not campaign outputs. Plus the non-finite model repair. No pipeline runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from selfcal_batch.ms.checksum import tree_checksums, tree_diff
from selfcal_batch.campaign.preflight import output_inside_input


def test_output_inside_input_pure(tmp_path: Path) -> None:
    ms = tmp_path / "a.ms"
    ms.mkdir()
    assert output_inside_input(ms / "out", [ms]).startswith(f"output directory {ms / 'out'} is inside the input MS")
    assert output_inside_input(ms, [None, ms])
    assert output_inside_input(tmp_path / "out", [ms]) == ""
    link = tmp_path / "alias.ms"
    link.symlink_to(ms)
    assert output_inside_input(link / "x", [ms])  # resolved, not compared as text


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "selfcal_batch.cli", *args], capture_output=True, text=True,
                          cwd=str(cwd), timeout=300)


def test_campaign_output_inside_the_input_ms_is_refused_untouched(tiny_ms, tmp_path: Path) -> None:
    tiny_ms = tiny_ms(tmp_path / "in.ms")
    before = tree_checksums(tiny_ms)
    manifest = tmp_path / "c.toml"
    manifest.write_text(f'[campaign]\nname = "c"\noutput_dir = "{tiny_ms}/selfcal_out"\n'
                        f'[[datasets]]\nms = "{tiny_ms}"\n')
    for extra in (["--dry-run"], []):
        res = _cli(str(manifest), *extra, cwd=tmp_path)
        assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
        assert "is inside the input MS" in res.stdout + res.stderr
        assert tree_diff(before, tree_checksums(tiny_ms)) == []
    res = _cli("run-one", str(tiny_ms), "--out", str(tiny_ms / "o"), cwd=tmp_path)
    assert res.returncode == 2 and "is inside the input MS" in res.stdout + res.stderr
    assert tree_diff(before, tree_checksums(tiny_ms)) == []


def test_report_and_compare_refuse_what_is_not_a_campaign_output(tiny_ms, tmp_path: Path) -> None:
    tiny_ms = tiny_ms(tmp_path / "in.ms")
    before = tree_checksums(tiny_ms)
    res = _cli("report", str(tiny_ms), cwd=tmp_path)
    assert res.returncode == 2 and "is a measurement set, not a campaign output directory" in res.stderr + res.stdout
    other = tmp_path / "empty"
    other.mkdir()
    res = _cli("compare", str(other), str(other), cwd=tmp_path)
    assert res.returncode == 2 and "is not a campaign output directory" in res.stderr + res.stdout
    assert tree_diff(before, tree_checksums(tiny_ms)) == [] and list(other.iterdir()) == []


def test_nonfinite_models_become_zero(tmp_path: Path) -> None:
    from astropy.io import fits

    from selfcal_batch.imaging.wsclean import zero_nonfinite_models

    good, bad = tmp_path / "m-0000-model.fits", tmp_path / "m-0001-model.fits"
    fits.PrimaryHDU(np.ones((1, 1, 4, 4), np.float32)).writeto(good)
    fits.PrimaryHDU(np.full((1, 1, 4, 4), np.nan, np.float32)).writeto(bad)
    assert zero_nonfinite_models([str(good), str(bad)]) == [str(bad)]
    assert np.all(fits.getdata(bad) == 0) and np.all(fits.getdata(good) == 1)
