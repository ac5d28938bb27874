"""What the input meant survives into the private working copy and final.ms (never changing the
input), for three kinds that used to be delivered worse while the run said ``finished``:

* per-channel / per-correlation zero weights (WEIGHT_SPECTRUM 0, WEIGHT not 0): only those
  samples are flagged (one zero flagged the whole row, every channel: 50 % of a dataset lost
  for 12.5 % zero weights), and the warning's count is what was flagged;
* rows flagged only by FLAG_ROW (FLAG false): WSClean imaged them and final.ms delivered them
  unflagged; now FLAG_ROW is ORed into FLAG in the working copy;
* the target over two FIELD rows of one name and direction (what concat writes): WSClean
  imaged field 0 only, the rest got no model and p0 was reverted; now the rows are merged into
  one FIELD_ID in the working copy.

One MS with all three (each checked by its own test) and one quick run of the default steps.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from casacore.tables import makearrcoldesc, maketabdesc, table

from selfcal_batch.ms.checksum import tree_checksums, tree_diff

from .conftest import MSFactory, quick_config, read_state, run_pipeline

pytestmark = pytest.mark.integration


def _damage(ms: Path) -> dict[str, Any]:
    """WEIGHT_SPECTRUM 0 in spw 0 at (channel 0, first correlation) and (channel 1, every
    correlation); scan 2 garbage (x30, random phase per row) flagged by FLAG_ROW only; the last
    scan on a second FIELD row named like the first. Returns the expected counts."""
    rng = np.random.default_rng(7)
    with table(str(ms / "FIELD"), readonly=False, ack=False) as f:
        f.copyrows(f, startrowin=0, nrow=1)
        f.putcell("SOURCE_ID", 1, 1)
    with table(str(ms), readonly=False, ack=False) as t:
        if "WEIGHT_SPECTRUM" not in t.colnames():
            t.addcols(maketabdesc(makearrcoldesc("WEIGHT_SPECTRUM", 0.0, valuetype="float", ndim=2)))
        data, scans, dd = t.getcol("DATA"), t.getcol("SCAN_NUMBER"), t.getcol("DATA_DESC_ID")
        ws = np.ones(data.shape, dtype=np.float32)   # [nrow, nchan, ncorr]
        ws[dd == 0, 0, 0] = 0.0
        ws[dd == 0, 1, :] = 0.0
        t.putcol("WEIGHT_SPECTRUM", ws)
        bad = scans == sorted(set(scans))[1]
        data[bad] *= 30 * np.exp(1j * rng.uniform(-np.pi, np.pi, size=(int(bad.sum()), 1, 1)))
        t.putcol("DATA", data)
        t.putcol("FLAG_ROW", bad)
        fid = t.getcol("FIELD_ID")
        fid[scans == scans.max()] = 1
        t.putcol("FIELD_ID", fid)
        assert not t.getcol("FLAG").any()
        ncorr = data.shape[2]
        return {"flag_row_rows": int(bad.sum()), "flag_row_samples": int(bad.sum() * data.shape[1] * ncorr),
                "zero_samples": int(((dd == 0) & ~bad).sum() * (1 + ncorr)),
                "scan_flag_row": int(sorted(set(scans))[1]), "last_scan": int(scans.max())}


@pytest.fixture(scope="module")
def repaired(ms_factory: MSFactory, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    src = ms_factory.get("repairs", duration_s=600, n_scans=3, n_spw=2, n_chan=4, phase_rms_deg=40, seed=5)
    d = tmp_path_factory.mktemp("repairs")
    ms = MSFactory.copy(src, d / "repairs.ms")
    expect = _damage(ms)
    before = tree_checksums(ms)
    out = d / "out"
    res = run_pipeline("rep", ms, out, quick_config(field="TARGET"))
    root = out / "datasets" / "rep"
    with table(str(root / "final.ms"), ack=False) as t:
        final = {c: t.getcol(c) for c in ("FLAG", "FLAG_ROW", "SCAN_NUMBER", "DATA_DESC_ID", "FIELD_ID")}
    with table(str(root / "final.ms" / "FIELD"), ack=False) as f:
        final["field_rows"] = f.nrows()
    return {"res": res, "root": root, "expect": expect, "final": final, "state": read_state(root),
            "input_changes": tree_diff(before, tree_checksums(ms)),
            "log": (root / "logs" / "pipeline.log").read_text()}


def test_input_untouched_and_run_finished(repaired: dict[str, Any]) -> None:
    res = repaired["res"]
    print(f"\nrepairs: {res['status']} snr {res['snr_initial']} -> {res['snr_final']} "
          f"accepted {res['steps_accepted']} reverted {res['steps_reverted']} ({res['wall_s']:.0f} s)")
    assert repaired["input_changes"] == []
    assert res["status"] == "finished", res["error"]
    assert "p0" in res["steps_accepted"], res.get("decisions")


def test_zero_weight_channels_only_are_flagged(repaired: dict[str, Any]) -> None:
    e, fin = repaired["expect"], repaired["final"]
    repairs = repaired["state"]["msinfo"]["repairs"]
    assert repairs["zero_weight_flagged"] == e["zero_samples"]       # not whole rows
    m = re.search(r"([\d.]+)% of the unflagged samples have weight 0 \(or NaN/inf\): (\d+) samples flagged",
                  repaired["log"])
    assert m and int(m.group(2)) == e["zero_samples"], m
    assert float(m.group(1)) == pytest.approx(100 * e["zero_samples"] / repairs["unflagged_before"], rel=1e-2)
    spw0 = (fin["DATA_DESC_ID"] == 0) & (fin["SCAN_NUMBER"] != e["scan_flag_row"])
    fl = fin["FLAG"][spw0]      # [nrow, nchan, ncorr]
    assert fl[:, 0, 0].all() and fl[:, 1, :].all()    # the zero weights stay excluded in final.ms
    assert fl[:, 2:, :].mean() < 0.2 and fl[:, 0, 1:].mean() < 0.2   # the rest is delivered


def test_flag_row_is_honoured(repaired: dict[str, Any]) -> None:
    e, fin = repaired["expect"], repaired["final"]
    repairs = repaired["state"]["msinfo"]["repairs"]
    assert (repairs["flag_row_rows"], repairs["flag_row_flagged"]) == (e["flag_row_rows"], e["flag_row_samples"])
    assert f"{e['flag_row_rows']} rows are flagged by FLAG_ROW" in repaired["log"]
    assert fin["FLAG"][fin["SCAN_NUMBER"] == e["scan_flag_row"]].all()   # delivered flagged
    assert fin["FLAG"][fin["SCAN_NUMBER"] != e["scan_flag_row"]].mean() < 0.2


def test_two_field_rows_of_the_target_are_imaged_as_one(repaired: dict[str, Any]) -> None:
    e, fin = repaired["expect"], repaired["final"]
    assert fin["field_rows"] == 1 and not fin["FIELD_ID"].any()
    assert (fin["SCAN_NUMBER"] == e["last_scan"]).any()
    assert repaired["state"]["msinfo"]["repairs"]["field_rows_merged"] == 1
    assert "merged into one FIELD_ID" in repaired["log"]


def test_corrected_input_without_data_column(ms_factory: MSFactory, tmp_path: Path) -> None:
    """input_column = "corrected" on an MS with no DATA column (passed --dry-run, then failed at
    startup with "has no DATA column" although DATA is never read): the working copy is made."""
    src = ms_factory.get("nodata", duration_s=240, n_spw=1, n_chan=4)
    ms = MSFactory.copy(src, tmp_path / "nodata.ms")
    with table(str(ms), readonly=False, ack=False) as t:
        data = t.getcol("DATA")
        t.addcols(maketabdesc(makearrcoldesc("CORRECTED_DATA", 0j, valuetype="complex", ndim=2)))
        t.putcol("CORRECTED_DATA", data)
        t.removecols("DATA")
    before = tree_checksums(ms)
    out = tmp_path / "out"
    res = run_pipeline("nd", ms, out, quick_config(input_column="corrected", steps=["startup"], keep_work_ms=True))
    print(f"\nnodata: {res['status']} {res['error']!r} ({res['wall_s']:.0f} s)")
    assert res["status"] != "failed", res["error"]
    with table(str(out / "datasets" / "nd" / "work.ms"), ack=False) as t:
        assert np.array_equal(t.getcol("DATA"), data)     # the corrected column, now DATA of the copy
    assert tree_diff(before, tree_checksums(ms)) == []


JOINT_RUNNER = """
import json, sys
from selfcal_batch.config import PipelineConfig
from selfcal_batch.pipeline.runner import run_dataset
name, out, cfg, ebs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
res = run_dataset(name, ebs[0], PipelineConfig.from_dict(cfg), out, ebs=ebs)
print("RESULT " + json.dumps(res.to_dict()), flush=True)
"""


def test_joint_ebs_target_in_two_field_rows_is_merged(ms_factory: MSFactory, tmp_path: Path) -> None:
    """Two EBs whose target directions differ by 10 mas (two catalogues' rounding): CASA concat
    (dirtol 1 mas) keeps two FIELD rows named TARGET, of which WSClean imaged only the first.
    The joint working copy has one FIELD row and says so."""
    import json
    import subprocess

    from .conftest import PY, REPO

    eb1 = MSFactory.copy(ms_factory.get("jeb1", duration_s=240, n_spw=1, n_chan=4), tmp_path / "eb1.ms")
    eb2 = MSFactory.copy(ms_factory.get("jeb2", duration_s=240, n_spw=1, n_chan=4, seed=2,
                                        start_date="2024-01-02"), tmp_path / "eb2.ms")
    with table(str(eb2 / "FIELD"), readonly=False, ack=False) as f:
        for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
            v = f.getcol(col)
            v[..., 1] += np.radians(0.01 / 3600.0)      # Dec + 10 mas (merge tolerance here: 18 mas)
            f.putcol(col, v)
    with table(str(eb2), readonly=False, ack=False) as t:    # and its first 50 rows FLAG_ROW only
        fr = t.getcol("FLAG_ROW")
        fr[:50] = True
        t.putcol("FLAG_ROW", fr)
        flag_row_keys = set(zip(t.getcol("TIME")[:50], t.getcol("ANTENNA1")[:50], t.getcol("ANTENNA2")[:50], strict=True))
    before = [tree_checksums(eb1), tree_checksums(eb2)]
    out = tmp_path / "out"
    out.mkdir()
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    cfg = quick_config(steps=["startup"], keep_work_ms=True, field="TARGET")
    p = subprocess.run([PY, "-c", JOINT_RUNNER, "j", str(out), json.dumps(cfg), json.dumps([str(eb1), str(eb2)])],
                       capture_output=True, text=True, env=env, timeout=900)
    m = re.search(r"^RESULT (.*)$", p.stdout, re.M)
    assert m, p.stderr[-3000:]
    res = json.loads(m.group(1))
    assert res["status"] != "failed", res["error"]
    root = out / "datasets" / "j"
    with table(str(root / "work.ms" / "FIELD"), ack=False) as f:
        assert f.nrows() == 1
    with table(str(root / "work.ms"), ack=False) as t:
        assert not t.getcol("FIELD_ID").any() and len(set(t.getcol("OBSERVATION_ID"))) == 2
    assert read_state(root)["msinfo"]["field_rows_merged"] == 1     # concat had kept two
    log = (root / "logs" / "pipeline.log").read_text()
    assert "merged into one FIELD_ID" in log and "EB 2: 50 rows are flagged by FLAG_ROW" in log
    with table(str(root / "work.ms"), ack=False) as t:
        obs, fl = t.getcol("OBSERVATION_ID"), t.getcol("FLAG")
        keys = list(zip(t.getcol("TIME"), t.getcol("ANTENNA1"), t.getcol("ANTENNA2"), strict=True))
    eb2_rows = obs == obs.max()
    hit = eb2_rows & np.array([k in flag_row_keys for k in keys])
    assert hit.sum() == 50 and fl[hit].all() and fl[eb2_rows & ~hit].mean() < 0.2
    assert [tree_diff(b, tree_checksums(e)) for b, e in zip(before, (eb1, eb2), strict=True)] == [[], []]


def test_two_field_rows_apart_are_refused_in_one_line(ms_factory: MSFactory, tmp_path: Path) -> None:
    """Rows of one name 5 arcsec apart: not merged (the source would be smeared); one line."""
    from .conftest import one_line

    ms = MSFactory.copy(ms_factory.get("nodata", duration_s=240, n_spw=1, n_chan=4), tmp_path / "apart.ms")
    with table(str(ms / "FIELD"), readonly=False, ack=False) as f:
        f.copyrows(f, startrowin=0, nrow=1)
        v = f.getcol("PHASE_DIR")
        v[1, ..., 1] += np.radians(5.0 / 3600.0)
        f.putcol("PHASE_DIR", v)
    with table(str(ms), readonly=False, ack=False) as t:
        fid = t.getcol("FIELD_ID")
        fid[len(fid) // 2:] = 1     # the later half of the rows (time order) on the second row
        t.putcol("FIELD_ID", fid)
    res = run_pipeline("ap", ms, tmp_path / "out", quick_config(field="TARGET", steps=["startup"]))
    assert res["status"] == "failed" and one_line(res["error"]), res["error"]
    assert str(ms) in res["error"] and "directions differ by 5 arcsec" in res["error"], res["error"]


def test_apply_copy_gets_the_same_repairs(repaired: dict[str, Any]) -> None:
    """``apply`` splits the input again: its copy holds the FLAG_ROW rows and zero-weight
    channels flagged and one FIELD row, like final.ms (else applycal finds no solutions for
    the second FIELD row and the row flags are lost again)."""
    from selfcal_batch.campaign.apply import apply_outputs

    e = repaired["expect"]
    rows = apply_outputs(repaired["root"].parent.parent)
    assert [r["status"] for r in rows] == ["applied"], rows
    with table(str(repaired["root"] / "applied.ms"), ack=False) as t:
        fl, scans, dd = t.getcol("FLAG"), t.getcol("SCAN_NUMBER"), t.getcol("DATA_DESC_ID")
        fid = t.getcol("FIELD_ID")
    with table(str(repaired["root"] / "applied.ms" / "FIELD"), ack=False) as f:
        assert f.nrows() == 1 and not fid.any()
    assert fl[scans == e["scan_flag_row"]].all()
    spw0 = fl[(dd == 0) & (scans != e["scan_flag_row"])]
    assert spw0[:, 0, 0].all() and spw0[:, 1, :].all() and spw0[:, 2:, :].mean() < 0.2
