"""``selfcal-batch apply`` on a pipeline run over a time- and channel-averaged copy (issue 19).

The pipeline calibrates a copy averaged with ``timebin``/``chanbin``; ``apply`` writes the
accepted gain chain onto a new full-resolution copy of the input. Both are imaged with one
fixed recipe and compared with the simulator's truth; the input must stay untouched, and
apply must still work after the output directory is moved.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import types
from pathlib import Path

import pytest

from selfcal_batch.campaign.apply import apply_outputs
from selfcal_batch.config import PipelineConfig
from selfcal_batch.ms.checksum import tree_checksums, tree_diff
from selfcal_batch.pipeline.runner import run_dataset
from selfcal_batch.simulate import load_truth, simulate_ms_isolated, spec_from_preset
from selfcal_batch.simulate.evaluate import error_vs_truth

pytestmark = pytest.mark.integration


def _image(ms: Path, column: str, prefix: Path, cell: float) -> Path:
    """One fixed WSClean recipe (128 px, robust 0.5, auto-mask 3 / threshold 1)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["wsclean", "-quiet", "-name", str(prefix), "-size", "128", "128", "-scale", f"{cell:.5g}arcsec",
                    "-weight", "briggs", "0.5", "-niter", "10000", "-mgain", "0.8", "-auto-mask", "3",
                    "-auto-threshold", "1", "-data-column", column, "-no-update-model-required", "-j", "1",
                    "-temp-dir", str(prefix.parent), str(ms)], check=True, capture_output=True, text=True)
    return Path(f"{prefix}-image.fits")


def test_apply_to_original_resolution(tmp_path: Path) -> None:
    spec = spec_from_preset("vla-c", flux_jy=0.08, phase_rms_deg=50.0, phase_timescale_s=600.0, duration_s=1200,
                            integration_s=10, n_spw=2, n_chan=8, seed=191)
    ms = simulate_ms_isolated(spec, tmp_path / "in.ms")
    truth = load_truth(ms)
    before = tree_checksums(ms)
    cfg = PipelineConfig.from_dict({"imsize": 128, "threads": 1, "plots": False, "timebin": "30s", "chanbin": 2,
                                    "solint": {"extend_ladder": False}})
    out = tmp_path / "out"
    res = run_dataset("avg", ms, cfg, out)
    assert res.status == "finished", (res.status, res.error, res.reason)
    t0 = time.monotonic()
    rows = apply_outputs(out)
    apply_s = time.monotonic() - t0
    assert [r["status"] for r in rows] == ["applied"], rows
    root = out / "datasets" / "avg"
    gt = json.loads((root / "gain_tables.json").read_text())["apply_to_original"]
    assert gt["kwargs"]["vis"] == "datasets/avg/applied.ms"
    assert all(not t.startswith("/") for t in gt["kwargs"]["gaintable"])
    assert tree_diff(before, tree_checksums(ms)) == []
    from casacore.tables import table

    with table(str(root / "applied.ms"), ack=False) as t, table(str(root / "final.ms"), ack=False) as f:
        n_applied, n_final = t.nrows(), f.nrows()
        assert "CORRECTED_DATA" in t.colnames()
    with table(str(root / "applied.ms/SPECTRAL_WINDOW"), ack=False) as t:
        assert list(t.getcol("NUM_CHAN")) == [8, 8]  # full channel resolution
    assert n_applied == truth["nrows"] and n_applied > 2.5 * n_final  # full time resolution
    from astropy.io import fits

    cell = abs(fits.getheader(root / "final-image.fits")["CDELT2"]) * 3600
    e_avg = error_vs_truth(_image(root / "final.ms", "DATA", tmp_path / "img" / "avg", cell), truth)
    e_full = error_vs_truth(_image(root / "applied.ms", "CORRECTED_DATA", tmp_path / "img" / "full", cell), truth)
    e_raw = error_vs_truth(_image(root / "applied.ms", "DATA", tmp_path / "img" / "raw", cell), truth)
    # Moved output directory: apply again from the new place.
    moved = tmp_path / "moved"
    shutil.move(str(out), str(moved))
    rows2 = apply_outputs(moved, ["avg"])
    report = {"err_averaged": e_avg, "err_full_applied": e_full, "err_full_uncalibrated": e_raw,
              "rows_full": n_applied, "rows_averaged": n_final, "apply_s": round(apply_s, 1),
              "moved": rows2[0]["status"]}
    print("APPLY " + json.dumps(report))
    assert rows2[0]["status"] == "applied" and (moved / "datasets/avg/applied.ms/table.dat").exists(), rows2
    assert tree_diff(before, tree_checksums(ms)) == []
    assert e_full["err"] <= 1.1 * e_avg["err"], report
    assert e_full["err"] < 0.5 * e_raw["err"], report
    # apply --in-place (documented) writes CORRECTED_DATA into the input: its own write is
    # recorded, so the next dry run sees no input change and a plain apply is not refused.
    from selfcal_batch.campaign.preflight import input_change_messages
    from selfcal_batch.ms.checksum import input_fingerprint

    rows3 = apply_outputs(moved, ["avg"], in_place=True)
    assert rows3[0]["status"] == "applied", rows3
    assert tree_diff(before, tree_checksums(ms)) != []  # really written
    st = json.loads((moved / "datasets/avg/state.json").read_text())
    assert st["input_fingerprint"] == input_fingerprint(ms)
    assert st["input_writes"][-1]["by"] == "apply --in-place"

    # the fields input_change_messages reads from a manifest.DatasetSpec
    spec = types.SimpleNamespace(name="avg", ms=ms, ok=True, config=cfg)
    assert input_change_messages([spec], moved) == {}
    rows4 = apply_outputs(moved, ["avg"])
    assert rows4[0]["status"] == "applied", rows4
