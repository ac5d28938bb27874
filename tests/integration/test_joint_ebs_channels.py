"""Joint EBs of different channel counts (issue 18, item 2; DESIGN.md "Mixed channel counts"):
EB2 with twice EB1's channels per spw (8 vs 4, same bands, aligned edges) is averaged x2 in
its working copy, self-calibrated jointly with EB1 and delivered at its own 8 channels; an
EB with 6 channels per spw (not a multiple of 4) and one with 8 channels shifted by one
(averaged, half a channel off EB1's) are refused in one line naming them, up front and in
``--dry-run``.

Real casatools (simulator child), WSClean and CASA. The EBs are those of test_joint_ebs.py
(survey_data.joint_eb_specs, 50 mJy sky: different phase errors, EB2's data in spw ids {1, 2}
of 3, EB2's flux scale 5 % high), EB2 simulated with 8 or 6 channels per spw. One campaign
runs the mixed pair and the equal-count pair side by side (2 workers, 1 thread each).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfcal_batch.ms.checksum import tree_checksums
from selfcal_batch.simulate import load_truth
from selfcal_batch.simulate.evaluate import error_vs_truth

from tests.faults.conftest import REPO, one_line
from tests.integration.survey_data import QUICK_TOML, drop_spw_rows, joint_eb_specs, make

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ebs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """EB1 (2 spw x 4 ch) and EB2 with 4, 8 and 6 channels per spw (its spw 0 without rows),
    and with 8 channels shifted by one of them."""
    d = tmp_path_factory.mktemp("chan_ebs")
    s1, s2 = joint_eb_specs(flux_scale=1.0)
    out = {"eb1": make(s1, d / "eb1.ms")}
    for n in (4, 8, 6):
        p = d / f"eb2x{n}.ms"
        if not p.exists():
            make(s2.replace(n_chan=n), p)
            drop_spw_rows(p, 0)
        out[f"x{n}"] = p
    shifted = d / "eb2x8_shifted.ms"  # 8 channels, one fine channel up: averaged x2, half a channel off EB1's
    if not shifted.exists():
        make(s2.replace(n_chan=8, centre_freq_hz=s2.centre_hz + s2.spw_bw_hz / 8), shifted)
        drop_spw_rows(shifted, 0)
    out["shifted"] = shifted
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _n_spw(ms: Path) -> int:
    """Rows of ``ms``'s SPECTRAL_WINDOW table (our own output MS)."""
    from casacore.tables import table  # test check only: reads a delivered MS

    with table(str(ms / "SPECTRAL_WINDOW"), ack=False) as t:
        return t.nrows()


def _nchan(ms: Path) -> list[int]:
    """Channels per spw holding rows of ``ms`` (our own output MS; python-casacore)."""
    from casacore.tables import table  # test check only: reads a delivered MS

    with table(str(ms), ack=False) as t:
        dds = sorted(set(t.getcol("DATA_DESC_ID").tolist()))
    with table(str(ms / "DATA_DESCRIPTION"), ack=False) as t:
        spws = [int(t.getcell("SPECTRAL_WINDOW_ID", d)) for d in dds]
    with table(str(ms / "SPECTRAL_WINDOW"), ack=False) as t:
        return [int(t.getcell("NUM_CHAN", s)) for s in spws]


def _compare_full_to_averaged(full: Path, avg: Path, obs: int, factor: int) -> tuple[float, int]:
    """(largest |full averaged by ``factor`` - averaged| / rms of the averaged DATA, number of
    flags of ``avg`` missing at full resolution) over the rows of observation ``obs``
    (our own output MSs; python-casacore)."""
    import numpy as np  # test check only
    from casacore.tables import table  # test check only: reads delivered MSs

    worst, missing = 0.0, 0
    with table(str(full), ack=False) as f, table(str(avg), ack=False) as a0, \
            a0.query(f"OBSERVATION_ID=={obs}") as a:
        for d_full, d_avg in zip(sorted(set(f.getcol("DATA_DESC_ID"))), sorted(set(a.getcol("DATA_DESC_ID"))),
                                 strict=True):
            with f.query(f"DATA_DESC_ID=={d_full}") as fd, a.query(f"DATA_DESC_ID=={d_avg}") as ad:
                assert (fd.getcol("TIME") == ad.getcol("TIME")).all()
                x, y = fd.getcol("DATA"), ad.getcol("DATA")
                xa = x.reshape(x.shape[0], -1, factor, x.shape[2]).mean(axis=2)
                worst = max(worst, float(np.abs(xa - y).max() / np.sqrt(np.mean(np.abs(y) ** 2))))
                missing += int((np.repeat(ad.getcol("FLAG"), factor, axis=1) & ~fd.getcol("FLAG")).sum())
    return worst, missing


def test_mixed_channel_counts_run_jointly(ebs: dict[str, Path], tmp_path: Path) -> None:
    eb1, x4, x8, x6 = ebs["eb1"], ebs["x4"], ebs["x8"], ebs["x6"]
    m = tmp_path / "c.toml"
    m.write_text(QUICK_TOML + f'[[datasets]]\nname = "mixed"\nms = ["{eb1}", "{x8}"]\n'
                 f'[[datasets]]\nname = "equal"\nms = ["{eb1}", "{x4}"]\n'
                 f'[[datasets]]\nname = "refused"\nms = ["{eb1}", "{x6}"]\n'
                 f'[[datasets]]\nname = "shifted"\nms = ["{eb1}", "{ebs["shifted"]}"]\n')
    before = {p: tree_checksums(p) for p in ebs.values()}
    dry = subprocess.run([sys.executable, "-m", "selfcal_batch.cli", str(m), "--dry-run"], capture_output=True,
                         text=True, env=_env(), timeout=600)
    lines = dry.stdout.splitlines()
    assert dry.returncode == 2 and "Traceback" not in dry.stdout + dry.stderr, dry.stdout + dry.stderr
    block = lines[lines.index("  - mixed") + 1:lines.index("  - equal")]
    assert ("      channels  averaged to 4 channels per spw in the working copies (eb1 x2/2; WSClean 3.1 needs "
            "one count); the per-EB final MSs at the input's resolution") in block, block
    assert not any("channels  " in ln for ln in lines[lines.index("  - equal"):])
    refused = next(ln for ln in lines if ln.startswith("  - refused: INVALID -> will be reported failed: "))
    # named by the input's spw ids (EB2's data are in spws 1, 2)
    assert f"{eb1}: 4,4; {x6}: 6,6" in refused and f"{x6} spw 1 has 6 channels, not a multiple of 4" in refused, refused
    shifted = next(ln for ln in lines if ln.startswith("  - shifted: INVALID -> will be reported failed: "))
    assert (f"{ebs['shifted']} spw 1 averaged x2: its channel edges are 0.50 of a channel off execution block 1's "
            "spw 0") in shifted, shifted

    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "selfcal_batch.cli", "run", str(m), "--workers", "2",
                          "--threads-per-dataset", "1", "--quiet"], capture_output=True, text=True, env=_env(),
                         timeout=1200)
    wall = time.monotonic() - t0
    out = tmp_path / "out" / "datasets"
    rows = {n: json.loads((out / n / "result.json").read_text()) for n in ("mixed", "equal", "refused", "shifted")}
    assert rows["shifted"]["status"] == "failed" and "0.50 of a channel off" in rows["shifted"]["error"]
    assert rows["refused"]["status"] == "failed" and one_line(rows["refused"]["error"])
    assert f"{x6} spw 2 has 6 channels, not a multiple of 4" in rows["refused"]["error"]
    assert res.returncode != 0 and "Traceback" not in res.stderr[-3000:]  # the refused dataset failed
    for n in ("mixed", "equal"):
        assert rows[n]["status"] == "finished", rows[n]["error"]
    assert {p: tree_checksums(p) for p in ebs.values()} == before  # inputs byte-identical

    mixed = rows["mixed"]["ebs"]
    assert [e["channel_averaging"] for e in mixed] == [
        {"input_nchan": [4, 4], "chanbin": 1, "factor": [1, 1], "delivered_nchan": [4, 4]},
        {"input_nchan": [8, 8], "chanbin": 1, "factor": [2, 2], "delivered_nchan": [8, 8],
         "delivered_resolution": "input"}]
    assert [e["input_spws"] for e in mixed] == [[0, 1], [1, 2]] and [e["nchan"] for e in mixed] == [[4, 4]] * 2
    for e in mixed:  # the delivered per-EB finals hold the recorded channel counts, and only their own spws
        assert _nchan(Path(e["final_ms"])) == e["channel_averaging"]["delivered_nchan"]
        assert _n_spw(Path(e["final_ms"])) == len(e["input_spws"]) and e["final_spws"] == [0, 1], e
    log = (out / "mixed" / "logs" / "pipeline.log").read_text()
    assert "WARNING selfcal_batch.pipeline: mixed: EB 2: spws averaged x2/2 (8,8 -> 4 channels)" in log
    # EB2 at full resolution holds what the joint copy calibrated: averaged x2 it is final.ms's
    # EB2 (same rows), and its flags include final.ms's (carried onto both fine channels)
    rel, missing = _compare_full_to_averaged(Path(mixed[1]["final_ms"]), out / "mixed" / "final.ms", 1, 2)
    assert rel < 1e-5 and missing == 0, (rel, missing)

    truth = load_truth(eb1)
    err = {n: error_vs_truth(out / n / "final-image.fits", truth) for n in ("mixed", "equal")}
    print(f"mixed channel counts: err mixed {err['mixed']['err']:.5f} (flux {err['mixed']['flux_ratio']:.4f}), "
          f"equal {err['equal']['err']:.5f} (flux {err['equal']['flux_ratio']:.4f}); campaign wall {wall:.0f} s, "
          f"load {os.getloadavg()}")
    # EB2 averaged x2 keeps its data (4 channels of 2 x the width, same bands): the joint result
    # is as good as with equal counts (measured: 0.00977 vs 0.01007, flux 0.966 vs 0.970)
    assert err["mixed"]["err"] <= 1.2 * err["equal"]["err"], err
    assert abs(err["mixed"]["flux_ratio"] - err["equal"]["flux_ratio"]) < 0.02, err
