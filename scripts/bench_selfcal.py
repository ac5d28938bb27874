#!/usr/bin/env python
"""selfcal-batch performance benchmark: generates its own data, writes JSON and prints tables.

Run through ``bash scripts/bench [--quick]``. Sections (``--sections``):

* ``campaigns`` -- 8 datasets (2 with --quick) spanning the templates, run as campaigns through
  the CLI with workers x threads = 1x2 and 2x1. Per dataset: wall split into WSClean / CASA /
  own Python / Dask overhead (task wall from campaign.log minus pipeline wall), WSClean runs;
  per campaign: throughput, CPU utilisation while datasets remain queued (system-wide
  ``psutil.cpu_percent`` and the campaign's own process tree), peak RSS per Dask worker
  and, separately, of its WSClean / CASA children.
* ``variants`` -- seed-like settings (ladder_imaging='template', test_imaging='seed'),
  solint.extend_ladder=false and ladder_imaging='template' alone, as a 2x1 campaign: WSClean
  runs vs the defaults and the seed's counts.
* ``scaling`` -- one dataset with 1x / 2x / 4x visibilities in time (integration) and in
  channels (noise scaled by sqrt(k) so the image SNR, and hence the ladder, stay the same);
  fitted exponent of time vs visibilities.
* ``opt`` -- pipeline before/after on the same dataset: WSClean w-stacking vs wgridder,
  time/channel averaging (DR and expected smearing), optionally parallel gridding /
  deconvolution (--opt-all).
* ``micro`` -- the pipeline's own WSClean commands replayed with one flag changed
  (-use-wgridder, -parallel-gridding 2, -parallel-deconvolution, without -fits-mask, 1024^2),
  imstats / mask / plot cost per image, CASA child start-up cost, smearing limits.

Timing numbers are wall clock on a shared machine: every section records the load average.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib/ beside this file

from benchlib.common import (  # noqa: E402, F401 (re-exported: tests/unit/test_bench_smoke.py)
    EXTENDED_FRACTION,
    EXTRA_SETS,
    OMEGA_EARTH,
    QUICK_SETS,
    REPO,
    SCRIPT,
    SECTIONS,
    SEED_REFERENCE,
    SEED_RUNS,
    TEMPLATE_SETS,
    VENV_BIN,
)
from benchlib.report import (  # noqa: E402, F401 (re-exported: tests/unit/test_bench_smoke.py)
    _extended,
    _log_time,
    _n,
    _tmpl,
    bandwidth_smearing,
    code_versions,
    evaluate_targets,
    fit_exponent,
    fmt,
    format_table,
    imaging_runs,
    json_clean,
    n_extension,
    parse_campaign_log,
    pct,
    render_report,
    smearing_table,
    time_smearing,
    tree_utilisation,
    window_mean,
    write_json,
)
from benchlib.machinery import (  # noqa: E402, F401 (re-exported: tests/unit/test_bench_smoke.py)
    Bench,
    CODE,
    child_env,
    code_version,
    dataset_extras,
    ensure_ms,
    now_iso,
    pin_code,
    sim_spec,
)
from benchlib.campaigns import (  # noqa: E402, F401 (re-exported: tests/unit/test_bench_smoke.py)
    _child_run_one,
    run_one,
)
from benchlib.sections import (  # noqa: E402, F401 (re-exported: tests/unit/test_bench_smoke.py)
    _scaling_cfg,
    edit_argv,
    section_campaigns,
    section_micro,
    section_opt,
    section_scaling,
    section_variants,
    smearing_rows,
)


# ======================================================================================

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~5-10 min smoke version: 2 datasets, 10-min tracks, "
                   "campaigns + micro only")
    p.add_argument("--out", default=str(REPO / "bench-out"), help="output directory (data cached in OUT/data)")
    p.add_argument("--json", default="", help="JSON path (default OUT/bench.json, OUT/bench-quick.json)")
    p.add_argument("--sections", default="", help=f"comma list of {', '.join(SECTIONS)} (default: all; "
                   "quick: campaigns,micro)")
    p.add_argument("--imsize", type=int, default=256)
    p.add_argument("--duration", type=float, default=0.0, help="track length in s (default 1200; quick 600)")
    p.add_argument("--n-chan", type=int, default=4, help="channels per spw (2 spws)")
    p.add_argument("--threads", type=int, default=0, help="cores (default: all of this machine)")
    p.add_argument("--repeats", type=int, default=0, help="repeats of each micro measurement (default 2; quick 1)")
    p.add_argument("--opt-all", action="store_true", help="also run parallel gridding/deconvolution, "
                   "ladder=template and plots=false as whole pipelines")
    p.add_argument("--merge", action="store_true", help="update the sections run now in an existing JSON "
                   "(keep the others)")
    p.add_argument("--code", default="HEAD", help="git revision of selfcal_batch to benchmark, exported to "
                   "OUT/code/<sha> so edits made meanwhile do not leak in (default HEAD); 'worktree' = live tree")
    p.add_argument("--report", action="store_true", help="only print the tables of an existing JSON")
    p.add_argument("--_run-one", dest="run_one", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.run_one:
        return _child_run_one(a.run_one)
    a.threads = a.threads or (os.cpu_count() or 1)
    a.duration = a.duration or (600.0 if a.quick else 1200.0)
    a.repeats = a.repeats or (1 if a.quick else 2)
    sections = [s for s in (a.sections or ("campaigns,micro" if a.quick else ",".join(SECTIONS))).split(",") if s]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {bad}; choose from {SECTIONS}")
    bench = Bench(a)
    if not a.report:
        if a.code == "worktree":
            CODE.update(dir=str(REPO), version="")
        else:
            code_dir, sha = pin_code(bench.out, a.code)
            CODE.update(dir=str(code_dir), version=sha)
        sys.path.insert(0, CODE["dir"])
        os.environ["PYTHONPATH"] = child_env()["PYTHONPATH"]  # simulator / CASA children of this process
    if a.report:
        res = json.loads(bench.json_path.read_text())
        res["targets"] = evaluate_targets(res)
        print(render_report(res))
        return 0
    bench.out.mkdir(parents=True, exist_ok=True)
    if a.merge and bench.json_path.exists():
        bench.res = json.loads(bench.json_path.read_text())
        bench.res.setdefault("meta", {})
    import psutil

    now = dict(started=now_iso(), git=code_version(), sections=sections, argv=sys.argv)
    if a.merge and bench.res["meta"].get("started"):
        run_meta = now
        bench.res["meta"].setdefault("merged_runs", []).append(run_meta)
    else:
        run_meta = bench.res["meta"]
        run_meta.update(mode="quick" if a.quick else "full", cores=os.cpu_count(),
                        mem_gb=psutil.virtual_memory().total / 2**30, host=platform.node(), imsize=a.imsize,
                        duration_s=a.duration, n_chan=a.n_chan, threads=a.threads,
                        seed_reference=SEED_REFERENCE, **now)
    bench.load("start")
    t_all = time.monotonic()
    sets = QUICK_SETS if a.quick else TEMPLATE_SETS + EXTRA_SETS
    if "campaigns" in sections:
        print("== campaigns", flush=True)
        section_campaigns(bench, sets)
        bench.save()
    if "variants" in sections:
        print("== variants (seed-like, no extension, ladder=template)", flush=True)
        section_variants(bench)
        bench.save()
    base_row = None
    if "scaling" in sections:
        print("== scaling", flush=True)
        nm, f, ph, sd = TEMPLATE_SETS[2]
        ms = ensure_ms(bench, "scale-base", sim_spec(nm, f, ph, sd, a))
        base_row = run_one(bench, "scale-base", ms, _scaling_cfg(a), a.threads)
        section_scaling(bench, base_row)
        bench.save()
    if "opt" in sections:
        print("== optimisations (pipeline before/after)", flush=True)
        base_row = section_opt(bench, base_row)
        bench.save()
    if "micro" in sections:
        print("== micro (WSClean replays, Python costs)", flush=True)
        root, per_run = _micro_source(bench, base_row)
        if root is None:
            nm, f, ph, sd = TEMPLATE_SETS[2]
            ms = ensure_ms(bench, "scale-base", sim_spec(nm, f, ph, sd, a))
            base_row = run_one(bench, "scale-base", ms, _scaling_cfg(a), a.threads)
            root, per_run = _micro_source(bench, base_row)
        if root is not None:
            section_micro(bench, root, per_run)
            if "smearing" not in bench.res.get("opt", {}) and base_row is not None:
                bench.res.setdefault("opt", {})["smearing"] = smearing_rows(base_row, [], a)
            elif "smearing" not in bench.res.get("opt", {}):
                _quick_smearing(bench, root)
        bench.save()
    bench.load("end")
    run_meta.update(finished=now_iso(), total_s=time.monotonic() - t_all)
    bench.save()
    print()
    print(render_report(bench.res))
    print(f"\nJSON: {bench.json_path}")
    return 0


def _micro_source(bench: Bench, base_row: dict[str, Any] | None) -> tuple[Path | None, float]:
    """A finished dataset directory that still has work.ms (keep_work_ms) to replay WSClean on."""
    cands: list[dict[str, Any]] = []
    if base_row is not None:
        cands.append(base_row)
    cands += [r for r in bench.res.get("opt", {}).get("runs", [])[:1] + bench.res.get("scaling", {}).get("points", [])[:1]
              if r.get("root")]
    for c in bench.res.get("campaigns", {}).values():
        for r in c["datasets"]:
            cands.append(dict(r, root=str(Path(c["out_dir"]) / "datasets" / r["name"])))
    for r in cands:
        root = Path(r["root"])
        if r.get("status") == "finished" and (root / "work.ms").exists():
            runs = r.get("wsclean_runs") or 0
            return root, (r["time_wsclean_s"] / runs if runs else math.nan)
    return None, math.nan


def _quick_smearing(bench: Bench, root: Path) -> None:
    ex = dataset_extras(root)
    row = {"msinfo_spws": ex.get("msinfo_spws"), "integration_s": ex.get("integration_s"), "cell": ex.get("cell"),
           "root": str(root)}
    bench.res.setdefault("opt", {})["smearing"] = smearing_rows(row, [], bench.args)


if __name__ == "__main__":
    sys.exit(main())
