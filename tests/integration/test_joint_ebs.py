"""Joint execution blocks end to end (issue 18, item 2): two EBs of one target self-calibrated
together, against each EB run alone; a missing and a damaged EB; a killed joint run resumed.

Real casatools (simulator child), WSClean and CASA. The two EBs (tests/integration/
survey_data.py ``joint_eb_specs``) see the same sky with different antenna phase errors
(seeds), different spw numbering (EB2's data in spw ids {1, 2} of 3) and EB2's flux scale
5 % high. err = rms(image - truth) / truth peak (selfcal_batch.simulate.evaluate), against
EB1's truth (the nominal flux scale).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from selfcal_batch.ms.checksum import tree_checksums
from selfcal_batch.simulate import load_truth
from selfcal_batch.simulate.evaluate import error_vs_truth, fitted_flux_vs_truth

from tests.faults.conftest import REPO, kill_tree, one_line, quick_config, read_state
from tests.integration.survey_data import QUICK_TOML, drop_spw_rows, joint_eb_specs, make

pytestmark = pytest.mark.integration

#: Runs ``run_dataset`` with ``ebs`` and prints the result (argv: name out config-json ebs-json).
RUNNER = """
import json, sys
from selfcal_batch.config import PipelineConfig
from selfcal_batch.pipeline.runner import run_dataset
name, out, cfg, ebs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
res = run_dataset(name, ebs[0], PipelineConfig.from_dict(cfg), out, ebs=ebs)
print("RESULT " + json.dumps(res.to_dict()), flush=True)
"""


#: The must-show's sky: 10 mJy + 1.2 mJy (JOINT_SKY x 0.2), a target too faint for one EB
#: alone to self-calibrate (each EB alone is delivered unchanged: solution SNR < 3), which is
#: where joint EBs matter. Measured on the 50 mJy sky (x 1.0, bright enough for each EB
#: alone): best single / joint error 1.01 (the EBs' solutions do not gain SNR from each
#: other; only the model and the final image's noise do). See the closing note of issue 18.
FAINT = 0.2


def _make_ebs(d: Path, flux_scale: float, **kw: Any) -> tuple[Path, Path]:
    s1, s2 = joint_eb_specs(flux_scale=flux_scale, **kw)
    eb1 = make(s1, d / "eb1.ms")
    eb2 = d / "eb2.ms"
    if not eb2.exists():
        make(s2, eb2)
        drop_spw_rows(eb2, 0)
    return eb1, eb2


@pytest.fixture(scope="module")
def faint_ebs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _make_ebs(tmp_path_factory.mktemp("faint_ebs"), FAINT)


@pytest.fixture(scope="module")
def ebs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The 50 mJy sky: every ladder step runs (the kill lands in p1)."""
    return _make_ebs(tmp_path_factory.mktemp("ebs"), 1.0)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _damaged_copy(src: Path, dest: Path) -> Path:
    """A copy of ``src`` whose main-table data file is cut to half (a truncated transfer)."""
    shutil.copytree(src, dest)
    data = max((p for p in dest.glob("table.f*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(data, "r+b") as fh:
        fh.truncate(data.stat().st_size // 2)
    return dest


def test_joint_ebs_against_each_alone(faint_ebs: tuple[Path, Path], tmp_path: Path) -> None:
    """One campaign: the joint dataset, each EB alone, a joint dataset with a missing EB and
    one with a damaged EB. The two faulty ones fail with one line naming the EB; the others
    finish; the joint run's per-EB records, final MSs and error against the truth."""
    ebs = faint_ebs
    eb1, eb2 = ebs
    damaged = _damaged_copy(eb2, tmp_path / "eb2_damaged.ms")
    before = {p: tree_checksums(p) for p in ebs}
    m = tmp_path / "c.toml"
    # The ladder's default shorter-interval extension (QUICK_TOML turns it off for speed): the
    # joint data support 30 s (measured solution SNR of p0: 9.4 at 60 s), which the flux needs.
    quick = QUICK_TOML.replace("solint = { extend_ladder = false }\n", "")
    assert quick != QUICK_TOML
    m.write_text(quick + f'[[datasets]]\nname = "joint"\nms = ["{eb1}", "{eb2}"]\n'
                 f'[[datasets]]\nms = "{eb1}"\n[[datasets]]\nms = "{eb2}"\n'
                 f'[[datasets]]\nname = "missing"\nms = ["{eb1}", "{tmp_path / "nope.ms"}"]\n'
                 f'[[datasets]]\nname = "damaged"\nms = ["{eb1}", "{damaged}"]\n')
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "selfcal_batch.cli", "run", str(m), "--workers", "2",
                          "--threads-per-dataset", "1", "--quiet"], capture_output=True, text=True, env=_env(),
                         timeout=1200)
    wall = time.monotonic() - t0
    assert res.returncode != 0, res.stdout[-3000:] + res.stderr[-3000:]  # two datasets failed
    out = tmp_path / "out" / "datasets"
    rows = {r["name"]: r for r in (json.loads((out / n / "result.json").read_text())
                                   for n in ("joint", "eb1", "eb2"))}
    # each EB alone is too faint to self-calibrate: delivered unchanged (the final image is of
    # its input data); the joint dataset self-calibrates
    assert rows["joint"]["status"] == "finished", rows["joint"]["error"]
    assert {rows[n]["status"] for n in ("eb1", "eb2")} <= {"finished", "unchanged"}, rows
    with open(tmp_path / "out" / "survey" / "datasets.csv", newline="") as fh:
        survey = {r["name"]: r for r in csv.DictReader(fh)}
    assert f"ms not found: {tmp_path / 'nope.ms'} (execution block 2 of 2)" in survey["missing"]["error"]
    assert str(damaged) in survey["damaged"]["error"] and one_line(survey["damaged"]["error"])
    assert one_line(survey["missing"]["error"])
    assert {p: tree_checksums(p) for p in ebs} == before  # inputs untouched

    joint = rows["joint"]
    assert [e["ms"] for e in joint["ebs"]] == [str(eb1), str(eb2)]
    assert [e["input_spws"] for e in joint["ebs"]] == [[0, 1], [1, 2]]  # EB2's own numbering
    assert all(Path(e["final_ms"]).is_dir() and e["flagged_fraction"] is not None for e in joint["ebs"])
    state = json.loads((out / "joint" / "state.json").read_text())
    align = state["steps"]["align_ebs"]
    assert align["status"] == "done" and len(align["per_eb"]) == 2
    assert align["accepted"], align  # the joint model makes one solution per EB worth it
    assert state["chain"][0]["step"] == "align_ebs"  # kept in front of the ladder's tables
    # The joint flux scale is kept: the EBs' visibility factors average to 1 (equal weights:
    # the EBs have equal row counts); each EB moves by a few per cent at most.
    factors = [e["align_flux_factor"] for e in joint["ebs"]]
    assert sum(1 / f for f in factors) / 2 == pytest.approx(1.0, abs=1e-4), factors
    assert all(abs(f - 1) < 0.1 for f in factors), factors

    truth = load_truth(eb1)
    err = {n: error_vs_truth(out / n / "final-image.fits", truth) for n in rows}
    best_single = min(err["eb1"]["err"], err["eb2"]["err"])
    ratio = best_single / err["joint"]["err"]
    # The image's flux as a source fit measures it (position free): self-calibration keeps the
    # position of its first model, here ~0.17" (0.2 beam) off the truth, which a fixed truth
    # region counts as missing flux (about 1.5 %) and as most of err (near the source: residual
    # rms 0.45 mJy at the truth position, 0.11 mJy with the shift fitted; measured).
    fit = {n: fitted_flux_vs_truth(out / n / "final-image.fits", truth) for n in rows}
    flux_off = abs(fit["joint"]["flux_ratio_fit"] - 1)
    print(f"joint EBs: err joint {err['joint']['err']:.5f}, eb1 {err['eb1']['err']:.5f}, eb2 "
          f"{err['eb2']['err']:.5f}; best single / joint = {ratio:.3f}; flux ratio (fixed region) joint "
          f"{err['joint']['flux_ratio']:.4f}, eb1 {err['eb1']['flux_ratio']:.4f}, eb2 "
          f"{err['eb2']['flux_ratio']:.4f}; fitted flux ratio / shift joint {fit['joint']['flux_ratio_fit']:.4f} / "
          f"{fit['joint']['shift_arcsec']:.3f}\"; status eb1/eb2 {rows['eb1']['status']}/{rows['eb2']['status']}; "
          f"align {[(e['align_flux_factor'], e['align_phase_rms_deg']) for e in joint['ebs']]} "
          f"{align.get('flux_significance')} {[(p.get('gain'), p.get('amp_error')) for p in align['per_eb']]}"
          f"; campaign wall {wall:.0f} s; load {os.getloadavg()}")
    assert ratio >= 1.5, err  # issue 18 must-show: joint error <= (better EB alone) / 1.5
    # Issue 18 must-show: the joint image's flux within 3 % of the truth. Before the gate's paired
    # noise (selfcal.acceptance.paired_metric_noise) and the measured solution SNR
    # (selfcal.solint.MeasuredSNR) it was 5.8 % low (fitted 0.942): one solution per 60 s scan
    # leaves the phases (50 deg rms, 150 s time scale) decorrelated inside each scan (coherence
    # 0.919 / 0.927 from the truth gains); the 30 s extension step the data support was not
    # planned (estimated SNR 4.3 < 6, CASA's own 9.5) nor kept (+6 % SNR seen as < 2 sigma).
    assert flux_off <= 0.03, fit["joint"]


def _start(name: str, out: Path, ebs: tuple[Path, Path]) -> subprocess.Popen[str]:
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", RUNNER, name, str(out), json.dumps(quick_config()),
                             json.dumps([str(p) for p in ebs])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), start_new_session=True)


def _tool_runs(root: Path) -> Counter[tuple[str, str]]:
    """(step, tool) -> number of WSClean/CASA runs recorded in logs/tools.jsonl."""
    rows = [json.loads(ln) for ln in (root / "logs" / "tools.jsonl").read_text().splitlines() if ln.strip()]
    return Counter((r.get("step", ""), r.get("tool", "")) for r in rows)


def test_killed_joint_run_resumes_without_redoing(ebs: tuple[Path, Path], tmp_path: Path) -> None:
    """SIGKILL the joint run while p1 runs; the resumed run redoes no finished step (no new
    WSClean or CASA run of startup .. p0) and finishes."""
    out, name = tmp_path / "out", "joint"
    root = out / "datasets" / name
    proc = _start(name, out, ebs)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 600:
            assert proc.poll() is None, "the joint run ended before p1:\n" + proc.communicate()[1][-3000:]
            if read_state(root).get("current_step") == "p1":
                break
            time.sleep(0.05)
        else:
            pytest.fail("p1 not reached within 600 s")
    finally:
        kill_tree(proc)
    killed = read_state(root)
    done_before = [s for s, r in killed["steps"].items() if r.get("status") in ("done", "skipped")]
    assert "align_ebs" in done_before and "p0" in done_before and killed["steps"]["p1"]["status"] == "running"
    runs_before = _tool_runs(root)
    proc = _start(name, out, ebs)
    stdout, stderr = proc.communicate(timeout=900)
    res = json.loads(next(ln[7:] for ln in stdout.splitlines() if ln.startswith("RESULT ")))
    assert res["status"] == "finished", res["error"]
    # 60 s scans: p1's template '60s' would repeat p0's one solution per scan; it runs at the
    # next equal split of the scan (selfcal.solint.scan_limited_solint), also when resumed
    p1 = read_state(root)["steps"]["p1"]
    assert p1["solint"] == "30s" and "in 60 s scans" in p1["solint_reason"], p1
    runs_after = _tool_runs(root)
    redone = {k: (runs_before[k], runs_after[k]) for k in runs_after
              if k[0] in done_before and runs_after[k] != runs_before[k]}
    print(f"joint kill/resume: runs per (step, tool) before the kill {dict(runs_before)}; "
          f"after the resume {dict(runs_after)}; load {os.getloadavg()}")
    assert not redone, redone
    assert res["attempts"][-1]["steps"][0] == "p1", res["attempts"][-1]["steps"]
    assert len(res["ebs"]) == 2 and all(Path(e["final_ms"]).is_dir() for e in res["ebs"])


#: Steps of the alignment measurement: the joint working copy, its test image, the refant and
#: the alignment itself (no ladder).
ALIGN_ONLY = ["startup", "save_init_flags", "test_image", "select_refant", "align_ebs"]


def test_alignment_factors_only_above_their_noise(ebs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory,
                                                  tmp_path: Path) -> None:
    """Tester s6 G2, on the 50 mJy sky: (1) two EBs of EQUAL flux scale, EB2 with 80 deg phase
    errors against EB1's 50 deg (it decorrelates more inside one solution per EB): the
    measured factors are within the noise of 1 and none is applied; (2) the 5 % pair (``ebs``):
    the factors are applied and EB1 / EB2 = 1.05 within 1 %. Both runs in parallel."""
    equal = _make_ebs(tmp_path_factory.mktemp("equal_ebs"), 1.0, flux_offset=1.0, phase_rms2_deg=80.0)
    cfg = quick_config(steps=ALIGN_ONLY)
    t0 = time.monotonic()
    procs = {}
    for label, pair in (("equal", equal), ("offset", ebs)):
        out = tmp_path / label
        out.mkdir()
        procs[label] = subprocess.Popen([sys.executable, "-c", RUNNER, label, str(out), json.dumps(cfg),
                                         json.dumps([str(p) for p in pair])], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True)
    rec = {}
    for label, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=1200)
        assert proc.returncode == 0, stderr[-3000:]
        rec[label] = read_state(tmp_path / label / "datasets" / label)["steps"]["align_ebs"]
        assert rec[label]["status"] == "done", rec[label]
    wall = time.monotonic() - t0

    def show(r: dict) -> str:
        return "; ".join(f"EB{k + 1} gain {p['gain']:.4f} +- {p['amp_error']:.4f} (z {p['z']:+.1f}), measured "
                         f"x{1 / p['measured_scale'] ** 2:.4f}, applied x{1 / p['scale'] ** 2:.4f}"
                         for k, p in enumerate(r["per_eb"])) + f"; {r['flux_significance']}; {r['amplitude_phases']}"
    print(f"align equal: {show(rec['equal'])}\nalign 5 %: {show(rec['offset'])}\nwall {wall:.0f} s; "
          f"load {os.getloadavg()}")
    eq, off = rec["equal"]["per_eb"], rec["offset"]["per_eb"]
    assert rec["equal"]["amplitude_phases"].split()[0] != "none"  # short phases were pre-applied
    assert all(p["scale"] == 1.0 and "within their noise" in p["not_applied"] for p in eq), eq
    assert all(abs(1 / p["measured_scale"] ** 2 - 1) < 0.015 for p in eq), eq
    assert rec["offset"]["flux_significance"]["p"] < 0.0027 and not any(p.get("not_applied") for p in off), off
    ratio = (1 / off[0]["scale"] ** 2) / (1 / off[1]["scale"] ** 2)
    assert ratio == pytest.approx(1.05, abs=0.01), (ratio, off)
