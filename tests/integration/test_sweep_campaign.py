"""A real template sweep: 4 generated datasets x 3 variants through ``selfcal-batch``.

The report must show the matrix and a threshold proposal, and the matrix must equal the
per-run ``result.json`` values; ``--only NAME__VARIANT`` reruns one pair (a no-op resume).
Small settings (128 px, 10-min tracks, the short ladder p0 p1) keep it to a few minutes.
"""
from __future__ import annotations

import json
import subprocess
import textwrap
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration

FLUXES = {"s4": 0.004, "s15": 0.015, "s40": 0.04, "s150": 0.15}
VARIANTS = ["auto", "faint", "bright"]


def _manifest(tmp: Path) -> Path:
    text = textwrap.dedent(f"""
        [campaign]
        name = "sweep"
        output_dir = "out"
        variants = {json.dumps(VARIANTS)}
        [defaults]
        imsize = 128
        plots = false
        steps = ["startup", "save_init_flags", "test_image", "select_refant", "p0", "p1", "split_trial_1"]
        solint = {{ extend_ladder = false }}
        [cluster]
        workers = 2
        threads_per_dataset = 1
        dashboard = false
        """)
    for i, (name, flux) in enumerate(FLUXES.items()):
        text += textwrap.dedent(f"""
            [[datasets]]
            name = "{name}"
            ms = "data/{name}.ms"
            [datasets.simulate]
            preset = "vla-c"
            flux_jy = {flux}
            phase_rms_deg = 40.0
            phase_timescale_s = 200.0
            duration_s = 600.0
            n_spw = 1
            n_chan = 4
            seed = {41 + i}
            """)
    p = tmp / "sweep.toml"
    p.write_text(text)
    return p


def test_sweep_4_datasets_x_3_variants(tmp_path, subprocess_env, python_exe):
    manifest = _manifest(tmp_path)
    t0 = time.monotonic()
    res = subprocess.run([python_exe, "-m", "selfcal_batch.cli", str(manifest)], env=subprocess_env,
                         capture_output=True, text=True, timeout=3600, cwd=tmp_path)
    print(res.stdout[-6000:], res.stderr[-3000:])
    print(f"sweep 4 x 3: {time.monotonic() - t0:.0f} s")
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "out"
    survey = out / "survey"
    m = pd.read_csv(survey / "sweep_matrix.csv").set_index("dataset")
    assert sorted(m.index) == sorted(FLUXES)
    for base in FLUXES:
        for v in VARIANTS:
            r = json.loads((out / "datasets" / f"{base}__{v}" / "result.json").read_text())
            assert r["status"] != "failed", r["error"]
            dr = r["dr_final"]
            assert m.loc[base, f"dr_{v}"] == pytest.approx(dr), (base, v)
            assert m.loc[base, f"rms_thermal_{v}"] == pytest.approx(r["rms_final"] / r["thermal_noise_jy"])
            assert m.loc[base, f"status_{v}"] == r["status"]
            if v != "auto":
                assert r["template_final"] == v or r["status"] != "finished"
        best = max(VARIANTS, key=lambda v: m.loc[base, f"dr_{v}"])
        assert m.loc[base, "winner"] == best
    html = (survey / "report.html").read_text()
    assert 'id="sweep-matrix"' in html and html.count('class="sweep-row"') == len(FLUXES)
    assert "template_thresholds_mjy = [" in html
    proposed = tomllib.loads((survey / "proposed_thresholds.toml").read_text())
    assert len(proposed["defaults"]["template_thresholds_mjy"]) == 4
    print(m.to_string())
    print((survey / "proposed_thresholds.toml").read_text())
    print(pd.read_csv(survey / "sweep_bins.csv").to_string())

    # --only one (dataset, variant): a no-op resume of that pair only
    res = subprocess.run([python_exe, "-m", "selfcal_batch.cli", str(manifest), "--only", "s40__faint",
                          "--quiet"], env=subprocess_env, capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "s40__faint" in res.stdout and "s40__bright" not in res.stdout
    r = json.loads((out / "datasets" / "s40__faint" / "result.json").read_text())
    assert r["n_attempts"] == 2 and r["dr_final"] == pytest.approx(m.loc["s40", "dr_faint"])
