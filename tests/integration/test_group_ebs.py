"""Targets of several EBs grouped per target (issue 18, item 2) and the up-front EB checks,
on generated EBs (calibrator + two targets each; tests/integration/survey_data.group_eb_spec).

* ``--dry-run`` of a grouped manifest lists one joint dataset per target with its EBs in
  order of observation (the list gives them in the other order); a name group at two
  positions, EBs at two pointings, EBs with different correlation products and a damaged EB
  are each one line naming the MS (and the separation); EBs of 4 and 8 channels per spw are
  listed with the averaging startup will do; the inputs are untouched.
* One grouped target runs for real (QUICK settings): finished, EBs in time order, one
  ``final/eb<k>.ms`` per EB, each EB's field taken by its own id.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfcal_batch.ms.checksum import tree_checksums

from tests.integration.survey_data import QUICK_TOML, group_eb_spec, make

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ebs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A observed after B (listed first), C with the second target 36" north, D with 8 channels
    per spw, F with full polarisation (RR RL LR LL, the others RR LL), a copy of B whose main-table data file is cut in half, and a copy of B with two
    damaged subtables."""
    d = tmp_path_factory.mktemp("group_ebs")
    out = {"A": make(group_eb_spec(41, "2024-01-03"), d / "ebA.ms"),
           "B": make(group_eb_spec(42, "2024-01-01"), d / "ebB.ms"),
           "C": make(group_eb_spec(43, "2024-01-05", shift_arcsec=36.0), d / "ebC.ms"),
           "D": make(group_eb_spec(44, "2024-01-07", n_chan=8), d / "ebD.ms"),
           "F": make(group_eb_spec(45, "2024-01-09", correlations="RR RL LR LL"), d / "ebF.ms")}
    bad = d / "ebB_damaged.ms"
    shutil.copytree(out["B"], bad)
    data = max((p for p in bad.glob("table.f*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size // 2)
    out["bad"] = bad
    two = d / "ebB_two_problems.ms"  # FEED missing and SPECTRAL_WINDOW without table.dat: was two lines
    shutil.copytree(out["B"], two)
    shutil.rmtree(two / "FEED")
    (two / "SPECTRAL_WINDOW" / "table.dat").unlink()
    out["two"] = two
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _entry(name: str, ms: list[Path], extra: str) -> str:
    return f'[[datasets]]\nname = "{name}"\nms = [{", ".join(json.dumps(str(p)) for p in ms)}]\n{extra}\n'


def test_grouped_dry_run_and_up_front_eb_checks(ebs: dict[str, Path], tmp_path: Path) -> None:
    a, b, c, d, bad = ebs["A"], ebs["B"], ebs["C"], ebs["D"], ebs["bad"]
    grouped = 'targets = "science"\ngroup = "name"\nmin_target_time_s = 10'
    m = tmp_path / "c.toml"
    m.write_text(QUICK_TOML + _entry("svy", [a, b], grouped) + _entry("shift", [a, c], grouped)
                 + _entry("ptg", [a, c], 'field = "J1003+4100"') + _entry("chan", [a, d], 'field = "J1001+4000"')
                 + _entry("damaged", [a, bad], 'field = "J1001+4000"')
                 + _entry("two", [a, ebs["two"]], 'field = "J1001+4000"')
                 + _entry("corr", [a, ebs["F"]], 'field = "J1001+4000"'))
    before = {p: tree_checksums(p) for p in ebs.values()}
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "selfcal_batch.cli", str(m), "--dry-run"], capture_output=True,
                         text=True, env=_env(), timeout=600)
    print(res.stdout + f"\n(dry run {time.monotonic() - t0:.1f} s, load {os.getloadavg()})")
    assert res.returncode == 2 and "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    for field, fid in (("J1001+4000", 1), ("J1003+4100", 2)):
        k = lines.index(f"  - svy__{field}")
        block = lines[k + 1:k + 5]
        assert block[1].endswith("(grouped by name, in order of observation):"), block
        assert block[2].startswith(f"        eb0  {b}  field {field} (id {fid}; ") and "start 2024-01-01" in block[2]
        assert block[3].startswith(f"        eb1  {a}  field {field} (id {fid}; ") and "start 2024-01-03" in block[3]
    assert "  - shift__J1001+4000" in lines  # the target at one position still groups

    def invalid(name: str) -> str:
        hit = [i for i, ln in enumerate(lines) if ln.startswith(f"  - {name}: INVALID -> will be reported failed: ")]
        assert len(hit) == 1, res.stdout
        assert not lines[hit[0] + 1].startswith("      "), "a second line: " + lines[hit[0] + 1]
        return lines[hit[0]]

    line = invalid("shift__J1003+4100")
    assert str(a) in line and str(c) in line and "36 arcsec apart" in line
    line = invalid("ptg")
    assert f"execution block 2 ({c}): phase centre 36 arcsec from execution block 1's ({a})" in line
    # tester s7 #6: offsets up to 0.36 % of the primary beam are re-phased in the working copy
    # (test_rephase_ebs.py); 36" is beyond (VLA C band: ~1.5") and stays refused
    assert "arcsec a joint run re-phases" in line and line.endswith("run them separately"), line
    line = invalid("corr")  # tester s6 G5: the startup's refusal, now also before the run
    assert f"different correlation products ({a}: RR,LL; {ebs['F']}: RR,RL,LR,LL)" in line, line
    # 4 vs 8 channels per spw: no longer refused, startup averages D x2 (DESIGN.md "Mixed channel counts")
    assert not any(ln.startswith("  - chan: INVALID") for ln in lines)
    k = lines.index("  - chan")
    assert "      channels  averaged to 4 channels per spw in the working copies (eb1 x2/2; " \
        "WSClean 3.1 needs one count); the per-EB final MSs at the input's resolution" in lines[k:k + 8], lines[k:k + 8]
    line = invalid("damaged")
    assert str(bad) in line and "(execution block 2 of 2)" in line and line.count(str(bad)) == 1
    line = invalid("two")  # one line naming the EB once, both problems
    assert line.endswith(f"{ebs['two']}: SPECTRAL_WINDOW table is damaged (no table.dat); FEED table is missing "
                         "(execution block 2 of 2)"), line
    assert {p: tree_checksums(p) for p in ebs.values()} == before


def test_one_grouped_target_runs_jointly(ebs: dict[str, Path], tmp_path: Path) -> None:
    a, b = ebs["A"], ebs["B"]
    m = tmp_path / "c.toml"
    m.write_text(QUICK_TOML + _entry("svy", [a, b], 'targets = "science"\ngroup = "name"\nmin_target_time_s = 10'))
    before = {p: tree_checksums(p) for p in (a, b)}
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "selfcal_batch.cli", str(m), "--only", "svy__J1001+4000",
                          "--workers", "1", "--threads-per-dataset", "1", "--quiet"],
                         capture_output=True, text=True, env=_env(), timeout=900)
    wall = time.monotonic() - t0
    root = tmp_path / "out" / "datasets" / "svy__J1001+4000"
    r = json.loads((root / "result.json").read_text())
    print(f"grouped joint run: {r['status']} {r['error']} steps kept {r['steps_accepted']}; "
          f"wall {wall:.0f} s; load {os.getloadavg()}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert r["status"] in ("finished", "unchanged"), r["error"]
    assert [e["ms"] for e in r["ebs"]] == [str(b), str(a)]  # time order, not the list's
    assert all(Path(e["final_ms"]).is_dir() for e in r["ebs"])
    # the target's row names its EBs (issue 18 item 3, tester s7 #12): result.json and datasets.csv
    assert r["eb_paths"] == [str(b), str(a)] and r["notes"] == []
    with open(tmp_path / "out" / "survey" / "datasets.csv", newline="") as fh:
        rows = {row["name"]: row for row in csv.DictReader(fh)}
    assert rows["svy__J1001+4000"]["eb_paths"] == f"{b};{a}"
    state = json.loads((root / "state.json").read_text())
    assert state["steps"]["align_ebs"]["status"] in ("done", "skipped")
    # each EB's working copy took the target's field by its own id (one field per EB)
    assert [e["ms"] for e in state["ebs"]] == [str(b), str(a)]
    assert all(e["time_on_source_s"] == pytest.approx(120.0, rel=0.1) for e in state["ebs"]), state["ebs"]
    assert {p: tree_checksums(p) for p in (a, b)} == before
