"""Measurement sets as they really come (issue 13): one generated MS per kind of layout.

Each MS is the shared 10-minute simulation (``base_ms``: VLA C, 2 spws x 8 channels, RR LL,
0.1 Jy, 30 deg phase rms) changed with a CASA task (split, mstransform, concat) in a child
process or with python-casacore. Each run either self-calibrates -- its residual antenna
phases against the simulator's truth within 20% of the unchanged MS's -- or stops at
startup in under 10 s with one line naming the MS and the condition. All runs are started
together (two at a time, ``background`` pool) when the module's first test asks for them.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from selfcal_batch.casa.calibration import run_casa, task
from selfcal_batch.simulate import load_truth, truth_path_for
from selfcal_batch.simulate.evaluate import residual_phase_rms_deg

from .conftest import REPO, GuardedMS, MSFactory, one_line, quick_config, read_state, run_pipeline

pytestmark = pytest.mark.integration

STEPS = ["startup", "test_image", "select_refant", "p0", "p1", "split_trial_1"]
#: "As good as the clean equivalent dataset, within 20%" (issue 13).
TOLERANCE = 1.2
STARTUP_LIMIT_S = 10.0


def _casa(calls: list[dict[str, Any]], work: Path, label: str) -> None:
    run_casa(calls, workdir=work, label=label, log_path=work / "casa.log")


def _with_truth(src: Path, dest: Path) -> Path:
    shutil.copyfile(truth_path_for(src), truth_path_for(dest))
    return dest


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return _with_truth(src, dest)


def make_one_hand(base: Path, d: Path) -> Path:
    """RR only (CASA split correlation='RR')."""
    out = d / "one_hand.ms"
    _casa([task("split", vis=str(base), outputvis=str(out), datacolumn="data", correlation="RR")], d, "rr")
    return _with_truth(base, out)


def make_spw_shapes(base: Path, d: Path) -> Path:
    """spw 0 with 8 channels, spw 1 averaged to 2 (CASA split width=[1, 4]): same data."""
    out = d / "spw_shapes.ms"
    _casa([task("split", vis=str(base), outputvis=str(out), datacolumn="data", spw="0,1", width=[1, 4])],
          d, "shapes")
    return _with_truth(base, out)


def make_spw_ids(spw3: Path, d: Path) -> Path:
    """spw 0 defined without rows, data in spws 1 and 2 (mstransform spw='1,2', reindex=False)."""
    out = d / "spw_ids.ms"
    _casa([task("mstransform", vis=str(spw3), outputvis=str(out), datacolumn="data", spw="1,2",
                reindex=False)], d, "ids")
    return _with_truth(spw3, out)


def make_corr_mismatch(base: Path, d: Path) -> Path:
    """spw 0 holds only RR, spw 1 only LL (two splits, CASA concat)."""
    a, b, out = d / "mm_rr.ms", d / "mm_ll.ms", d / "corr_mismatch.ms"
    _casa([task("split", vis=str(base), outputvis=str(a), datacolumn="data", spw="0", correlation="RR"),
           task("split", vis=str(base), outputvis=str(b), datacolumn="data", spw="1", correlation="LL"),
           task("concat", vis=[str(a), str(b)], concatvis=str(out))], d, "mismatch")
    return out


def _edit(ms: Path, fn: Callable[[Any], None]) -> None:
    from casacore.tables import table

    with table(str(ms), readonly=False, ack=False) as t:
        fn(t)


def make_refant_flagged(base: Path, d: Path) -> Path:
    """ea01 and ea02 fully flagged (the configured refants)."""
    from casacore.tables import table

    out = _copy(base, d / "refant_flagged.ms")
    with table(str(out / "ANTENNA"), ack=False) as t:
        names = list(t.getcol("NAME"))
    bad = [names.index("ea01"), names.index("ea02")]

    def flag(t: Any) -> None:
        sel = np.isin(t.getcol("ANTENNA1"), bad) | np.isin(t.getcol("ANTENNA2"), bad)
        f = t.getcol("FLAG")
        f[sel] = True
        t.putcol("FLAG", f)
    _edit(out, flag)
    return out


def make_refant_partial(base: Path, d: Path) -> Path:
    """ea05 (the configured refant) flagged for the second half of the observation."""
    from casacore.tables import table

    out = _copy(base, d / "refant_partial.ms")
    with table(str(out / "ANTENNA"), ack=False) as t:
        a = list(t.getcol("NAME")).index("ea05")

    def flag(t: Any) -> None:
        tt = t.getcol("TIME")
        sel = (tt > np.median(np.unique(tt))) & ((t.getcol("ANTENNA1") == a) | (t.getcol("ANTENNA2") == a))
        f = t.getcol("FLAG")
        f[sel] = True
        t.putcol("FLAG", f)
    _edit(out, flag)
    return out


def make_zero_weights(base: Path, d: Path) -> Path:
    """30% of the unflagged cross-correlation rows with WEIGHT 0."""
    out = _copy(base, d / "zero_weights.ms")

    def zero(t: Any) -> None:
        rng = np.random.default_rng(3)
        w = t.getcol("WEIGHT")
        sel = (rng.random(t.nrows()) < 0.3) & (t.getcol("ANTENNA1") != t.getcol("ANTENNA2"))
        w[sel] = 0.0
        t.putcol("WEIGHT", w)
    _edit(out, zero)
    return out


def make_time_columns(base: Path, d: Path) -> Path:
    """INTERVAL and EXPOSURE 0.01 s while the TIME stamps are 10 s apart."""
    out = _copy(base, d / "time_columns.ms")

    def placeholder(t: Any) -> None:
        t.putcol("INTERVAL", np.full(t.nrows(), 0.01))
        t.putcol("EXPOSURE", np.full(t.nrows(), 0.01))
    _edit(out, placeholder)
    return out


def make_few_antennas(base: Path, d: Path) -> Path:
    """Only the rows of antennas 0-3 (the ANTENNA table still names all 27): absent
    antennas must not count as bad ones (they made the solution-SNR estimate 0)."""
    out = d / "few_antennas.ms"
    _casa([task("split", vis=str(base), outputvis=str(out), antenna="0~3&0~3", datacolumn="data",
                keepflags=True)], d, "few-antennas")
    _with_truth(base, out)
    return out


def make_flagged_spw(base: Path, d: Path) -> Path:
    """spw 1 fully flagged: WSClean writes all-NaN models for its output channels, which
    ``wsclean -predict`` refused ("non-finite values") after a revert or at ap1."""
    out = _copy(base, d / "flagged_spw.ms")

    def flag(t: Any) -> None:
        f = t.getcol("FLAG")
        f[t.getcol("DATA_DESC_ID") == 1] = True
        t.putcol("FLAG", f)
    _edit(out, flag)
    return out


#: case -> (how to make the MS from (base copy, other simulations, dir), pipeline config overrides).
CASES: dict[str, tuple[Callable[[Path, Path, Path], Path], dict[str, Any]]] = {
    "reference": (lambda base, sims, d: base, {}),  # base_ms itself (only the pipeline reads it)
    "one_hand": (lambda base, sims, d: make_one_hand(base, d), {}),
    "spw_shapes": (lambda base, sims, d: make_spw_shapes(base, d), {}),
    "spw_ids": (lambda base, sims, d: make_spw_ids(sims['spw3'], d), {}),
    "corr_mismatch": (lambda base, sims, d: make_corr_mismatch(base, d), {}),
    "refant_flagged": (lambda base, sims, d: make_refant_flagged(base, d), {"refant": "ea01,ea02"}),
    "refant_partial": (lambda base, sims, d: make_refant_partial(base, d), {"refant": "ea05"}),
    # The same MS with refantmode='strict' (gaincal flags the solutions without ea05), to p0 only.
    "refant_partial_strict": (lambda base, sims, d: Path(str(d / "refant_partial.ms")),
                              {"refant": "ea05", "refantmode": "strict", "steps": [*STEPS[:4], "split_trial_1"]}),
    "zero_weights": (lambda base, sims, d: make_zero_weights(base, d), {}),
    "time_columns": (lambda base, sims, d: make_time_columns(base, d), {}),
    "few_antennas": (lambda base, sims, d: make_few_antennas(base, d), {}),
    # Every default step (ap1 and a -predict after reverts), 6 output channels over 2 spws.
    "flagged_spw": (lambda base, sims, d: make_flagged_spw(base, d),
                    {"steps": ["startup", "save_init_flags", "test_image", "select_refant", "p0", "p1",
                               "p2", "ap1", "split_trial_1"], "channels_out": 4}),
    # The same observation simulated at VLA Q band (45 GHz): a band the seed did not list.
    "q_band": (lambda base, sims, d: sims["qband"], {"band": "Q"}),
}


def _run(case: str, ms: Path, out: Path, over: dict[str, Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    res = run_pipeline(case, ms, out, quick_config(**{"steps": STEPS, **over}))
    root = out / "datasets" / case
    st = read_state(root)
    err = math.nan
    if st.get("chain"):
        err, _ = residual_phase_rms_deg([c["table"] for c in st["chain"]], load_truth(ms))
    return {"res": res, "state": st, "root": root, "ms": ms, "err": err, "run_s": round(time.monotonic() - t0, 1)}


@pytest.fixture(scope="module")
def layouts(base_ms: GuardedMS, ms_factory: MSFactory, background: Any,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Make every case's MS, run them two at a time, return {case: run}."""
    d = tmp_path_factory.mktemp("layouts")
    sims = {"spw3": ms_factory.get("spw3", n_spw=3).path, "qband": ms_factory.get("qband", "vla-q").path}
    out = d / "out"
    out.mkdir()
    # CASA and casacore write table.lock into any table they open: derive from a copy.
    base = _copy(base_ms.path, d / "base_copy.ms")
    jobs = {}
    # SELFCAL_LAYOUT_CASES=a,b (developer loop with -k): only those cases and the reference.
    only = {c for c in os.environ.get("SELFCAL_LAYOUT_CASES", "").split(",") if c}
    for case, (make, over) in CASES.items():
        if only and case not in only | {"reference"}:
            continue
        ms = base_ms.path if case == "reference" else make(base, sims, d)
        jobs[case] = background.submit(_run, case, ms, out, over)
    runs = {c: f.result() for c, f in jobs.items()}
    print("\n" + json.dumps({c: (r["res"]["status"], round(r["err"], 2), r["run_s"], r["res"]["error"])
                             for c, r in runs.items()}))
    return runs


def _selfcal_as_good_as_reference(runs: dict[str, dict[str, Any]], case: str) -> dict[str, Any]:
    r, ref = runs[case], runs["reference"]
    res = r["res"]
    assert res["status"] == "finished", res["error"]
    assert "p0" in res["steps_accepted"], res.get("decisions")
    assert res["snr_final"] > 1.3 * res["snr_initial"], (res["snr_initial"], res["snr_final"])
    assert math.isfinite(ref["err"]) and math.isfinite(r["err"]), (ref["err"], r["err"])
    assert r["err"] <= TOLERANCE * ref["err"], (case, r["err"], ref["err"])
    return r


def _warnings(r: dict[str, Any]) -> list[str]:
    return [ln for ln in (r["root"] / "logs" / "pipeline.log").read_text().splitlines() if " WARNING " in ln]


def test_one_correlation_images_that_hand(layouts: dict[str, dict[str, Any]]) -> None:
    r = _selfcal_as_good_as_reference(layouts, "one_hand")
    info = r["state"]["msinfo"]
    assert info["polarisation"]["wsclean_pol"] == "rr" and set(info["ncorr"]) == {1}
    assert " -pol rr " in (r["root"] / "logs" / "wsclean.log").read_text()
    from casacore.tables import table

    with table(str(r["root"] / "caltables" / "p0.G"), ack=False) as t:
        assert t.getcol("CPARAM").shape[2] == 1 and not t.getcol("FLAG").all()  # gaintype T: one hand
    assert any("RR only" in w for w in _warnings(r))


def test_spws_of_different_shapes(layouts: dict[str, dict[str, Any]]) -> None:
    r = _selfcal_as_good_as_reference(layouts, "spw_shapes")
    assert [s["nchan"] for s in r["state"]["msinfo"]["spws"]] == [8, 2]


def test_spw_ids_with_an_unused_spw(layouts: dict[str, dict[str, Any]]) -> None:
    """spw 0 without rows: the working copy keeps the two spws with data (renumbered 0, 1)
    and both are calibrated."""
    r = _selfcal_as_good_as_reference(layouts, "spw_ids")
    info = r["state"]["msinfo"]
    assert [s["id"] for s in info["spws"]] == [0, 1] and info["spws_unused"] == []
    from casacore.tables import table

    with table(str(r["root"] / "caltables" / "p0.G"), ack=False) as t:
        spw, flag = t.getcol("SPECTRAL_WINDOW_ID"), t.getcol("FLAG")
    assert set(spw.tolist()) == {0, 1} or (set(spw.tolist()) == {0} and r["state"]["steps"]["p0"]["spwmap"])
    assert flag.mean() < 0.2


def test_no_common_correlation_stops_at_startup(layouts: dict[str, dict[str, Any]]) -> None:
    r = layouts["corr_mismatch"]
    res = r["res"]
    assert res["status"] == "failed"
    assert one_line(res["error"]) and res["error"].startswith("startup: "), res["error"]
    assert str(r["ms"]) in res["error"] and "spw 0: RR; spw 1: LL" in res["error"], res["error"]
    assert res["wall_s"] < STARTUP_LIMIT_S, res["wall_s"]


def test_configured_refants_fully_flagged(layouts: dict[str, dict[str, Any]]) -> None:
    r = _selfcal_as_good_as_reference(layouts, "refant_flagged")
    warns = _warnings(r)
    for a in ("ea01", "ea02"):
        assert sum(f"reference antenna {a} " in w for w in warns) == 1, warns
    assert any("none of the configured reference antennas" in w for w in warns), warns
    assert r["state"]["refant"].split(",")[0] not in ("ea01", "ea02")
    assert r["state"]["steps"]["p0"]["data_flagged_by_apply"] < 0.2


def test_refant_missing_for_part_of_the_time(layouts: dict[str, dict[str, Any]]) -> None:
    """refantmode 'flex' (default) keeps the solutions while ea05 is missing."""
    r = _selfcal_as_good_as_reference(layouts, "refant_partial")
    assert r["state"]["refant"].split(",")[0] == "ea05"
    assert r["state"]["steps"]["p0"]["data_flagged_by_apply"] < 0.05


def test_gate_counts_data_flagged_by_applycal(layouts: dict[str, dict[str, Any]]) -> None:
    """With refantmode 'strict' gaincal's own counts look clean (no solution below minsnr)
    but applycal flags half the data: the gate reverts p0, with the reason and a warning."""
    r = layouts["refant_partial_strict"]
    p0 = r["state"]["steps"]["p0"]
    assert r["res"]["status"] != "failed", r["res"]["error"]
    assert p0["flagged_solutions"] < 0.2 < p0["data_flagged_by_apply"], p0
    assert p0["accepted"] is False and "applying the solutions flagged" in p0["reason"], p0
    assert any("applying the solutions flagged" in w for w in _warnings(r))
    assert r["res"]["steps_accepted"] == []


def test_zero_weights_stay_excluded_in_final_ms(layouts: dict[str, dict[str, Any]]) -> None:
    from casacore.tables import table

    r = _selfcal_as_good_as_reference(layouts, "zero_weights")
    from selfcal_batch.ms.inspection import row_keys

    def keyed(ms: Path) -> tuple[np.ndarray, Any, Any]:
        with table(str(ms), ack=False) as t:
            k = row_keys(t.getcol("TIME"), t.getcol("ANTENNA1"), t.getcol("ANTENNA2")) * 64 + t.getcol("DATA_DESC_ID")
            return k, t.getcol("WEIGHT"), t.getcol("FLAG")
    k_in, w_in, _ = keyed(r["ms"])
    k_out, w_out, f_out = keyed(Path(r["res"]["final_ms"]))
    zero_keys = k_in[(w_in == 0).any(axis=1)]
    assert zero_keys.size > 0.2 * len(k_in)
    hit = np.isin(k_out, zero_keys)
    assert hit.sum() == zero_keys.size
    # every such visibility is flagged or has weight 0 in final.ms
    assert np.all(f_out[hit].all(axis=(1, 2)) | (w_out[hit] == 0).all(axis=1))
    assert not f_out[~hit].all()
    assert any("have weight 0" in w for w in _warnings(r))


def test_time_columns_that_disagree_with_time(layouts: dict[str, dict[str, Any]]) -> None:
    r = _selfcal_as_good_as_reference(layouts, "time_columns")
    ref = layouts["reference"]
    info = r["state"]["msinfo"]
    assert info["integration_s"] == pytest.approx(10.0)
    assert info["time_on_source_s"] == pytest.approx(ref["state"]["msinfo"]["time_on_source_s"])
    assert r["state"]["steps"]["p0"]["est_snr"] == pytest.approx(ref["state"]["steps"]["p0"]["est_snr"], rel=0.05)
    assert math.isfinite(r["res"]["snr_final"]) and r["res"]["snr_final"] > 0.8 * ref["res"]["snr_final"]
    assert any("do not match the TIME spacing" in w for w in _warnings(r))


def test_vla_q_band(layouts: dict[str, dict[str, Any]]) -> None:
    r = _selfcal_as_good_as_reference(layouts, "q_band")
    assert 40e9 < r["state"]["msinfo"]["spws"][0]["freq_min"] < 50e9


def test_symlinked_ms_is_named_after_the_link(base_ms: GuardedMS, tmp_path: Path) -> None:
    """run-one and the manifest name a dataset after the path given (the link's stem)."""
    from selfcal_batch.campaign.manifest import load_manifest

    link = tmp_path / "given_name.ms"
    link.symlink_to(base_ms.path)
    (tmp_path / "c.toml").write_text('[campaign]\nname = "c"\n[[datasets]]\nms = "given_name.ms"\n')
    assert [d.name for d in load_manifest(tmp_path / "c.toml").datasets] == ["given_name"]
    cfg = tmp_path / "quick.toml"
    cfg.write_text('imsize = 128\nthreads = 1\nplots = false\nsteps = ["startup"]\n')
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    exe = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" / "selfcal-batch"
    argv = [str(exe)] if exe.exists() else [str(Path(__import__("sys").executable).parent / "selfcal-batch")]
    proc = subprocess.run(argv + ["run-one", str(link), "--out", str(tmp_path / "out"), "--config", str(cfg)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "out" / "datasets" / "given_name" / "result.json").exists()
    assert not (tmp_path / "out" / "datasets" / base_ms.path.name[:-3]).exists()
    assert base_ms.changes() == []


def test_antennas_listed_without_data_are_not_bad(layouts: dict[str, dict[str, Any]]) -> None:
    """4 antennas with data of 27 named: absent antennas are not "bad" (they made every
    solution-SNR estimate 0), the sidelobe-limited test image still counts as a detection
    (peak 150x the thermal noise), a refant search where every solution fails is survived;
    the outcome is an honest status, not an internal error."""
    r = layouts["few_antennas"]
    res = r["res"]
    assert res["status"] != "failed", res["error"]
    assert r["state"]["msinfo"]["n_antennas_present"] == 4
    assert r["state"]["bad_antennas"] == []
    assert res["status"] != "no_detection", res.get("reason")
    p0 = r["state"]["steps"].get("p0", {})
    assert p0.get("est_snr", 0) > 3, p0


def test_fully_flagged_spw_runs_every_step(layouts: dict[str, dict[str, Any]]) -> None:
    r = layouts["flagged_spw"]
    res = r["res"]
    assert res["status"] in ("finished", "unchanged"), res["error"]
    assert "p0" in res["steps_accepted"] or res["status"] == "unchanged", res.get("decisions")
    assert Path(res["final_ms"]).exists()
