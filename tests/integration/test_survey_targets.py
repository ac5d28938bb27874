"""Target expansion end to end (issue 18): one EB MS -> one dataset per science target.

Real casatools (simulator child), WSClean and CASA. The EB holds a calibrator and three
targets (tests/integration/survey_data.py); each target is also simulated alone with the
same sky, time on source, noise and phase-error level, and both are run with the same
quick settings. Must show: each expanded target's final image is as close to the truth
(err = rms(image - truth) / truth peak, selfcal_batch.simulate.evaluate) as the same
target run alone, within 20 %.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from selfcal_batch.campaign.manifest import load_manifest
from selfcal_batch.simulate import load_truth
from selfcal_batch.simulate.evaluate import error_vs_truth
from selfcal_batch.simulate.fields import field_truth

from tests.integration.survey_data import TARGETS, alone_spec, eb_spec, make

pytestmark = pytest.mark.integration

QUICK_TOML = """
[defaults]
imsize = 128
threads = 1
plots = false
solint = { extend_ladder = false }
"""


def _run(manifest: Path, env: dict[str, str], *args: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfcal_batch.cli", str(manifest), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_dry_run_lists_targets_and_skips_short_and_calibrator(tmp_path: Path, subprocess_env) -> None:
    make(eb_spec(short=TARGETS[1][0], duration_s=240.0), tmp_path / "eb2.ms")
    m = tmp_path / "c.toml"
    m.write_text(QUICK_TOML + '[[datasets]]\nms = "eb2.ms"\ntargets = "science"\nmin_target_time_s = 60\n')
    res = _run(m, subprocess_env, "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "datasets (2):" in res.stdout
    assert f"  - eb2__{TARGETS[0][0]}\n" in res.stdout and f"  - eb2__{TARGETS[2][0]}\n" in res.stdout
    assert f"eb2.ms: {TARGETS[1][0]}: 40 s on source < min_target_time_s = 60 s" in res.stdout
    assert "J0959+3830: not a science target (intents CALIBRATE_AMPLI, CALIBRATE_BANDPASS" in res.stdout


def test_eb_targets_match_targets_alone(tmp_path: Path, subprocess_env) -> None:
    make(eb_spec(), tmp_path / "eb1.ms")
    for name, _dd, _c in TARGETS:
        make(alone_spec(name), tmp_path / "alone" / f"{name}.ms")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "eb1.ms").rglob("*")}
    m = tmp_path / "c.toml"
    m.write_text(QUICK_TOML + '[campaign]\noutput_dir = "out"\n'
                 '[[datasets]]\nms = "eb1.ms"\ntargets = "science"\n'
                 '[[datasets]]\nms = "alone/*.ms"\n')
    camp = load_manifest(m)
    names = [d.name for d in camp.datasets]
    assert names[:3] == [f"eb1__{t[0]}" for t in TARGETS] and len(names) == 6
    assert [d.target["field"] for d in camp.datasets[:3]] == [t[0] for t in TARGETS]
    # selected by field id (a field name made of digits would be read by CASA as an id)
    assert [d.config.field for d in camp.datasets[:3]] == [str(d.target["field_id"]) for d in camp.datasets[:3]]
    res = _run(m, subprocess_env, "--workers", "2", "--threads-per-dataset", "1", "--quiet")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    truth_eb, errs = load_truth(tmp_path / "eb1.ms"), {}
    for name, _dd, _c in TARGETS:
        out_eb = tmp_path / "out" / "datasets" / f"eb1__{name}"
        out_alone = tmp_path / "out" / "datasets" / name
        r_eb = json.loads((out_eb / "result.json").read_text())
        assert r_eb["status"] == "finished", r_eb
        e_eb = error_vs_truth(out_eb / "final-image.fits", field_truth(truth_eb, name))
        # the whole multi-field truth: the imaged field's sky is chosen by the image centre (G7)
        assert error_vs_truth(out_eb / "final-image.fits", truth_eb) == e_eb
        e_al = error_vs_truth(out_alone / "final-image.fits", load_truth(tmp_path / "alone" / f"{name}.ms"))
        errs[name] = (e_eb["err"], e_al["err"], e_eb["flux_ratio"])
    print("err eb / alone / eb flux ratio:", json.dumps(errs))
    for name, (e_eb, e_al, ratio) in errs.items():
        assert e_eb <= 1.2 * e_al, f"{name}: err {e_eb:.4g} in the EB vs {e_al:.4g} alone"
        assert 0.9 < ratio < 1.1, f"{name}: flux ratio {ratio:.3f}"
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "eb1.ms").rglob("*")}
    assert after == before  # the EB was read only through the private view
