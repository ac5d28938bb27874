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
import csv
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
OMEGA_EARTH = 7.2921150e-5  # rad/s
#: WSClean runs of the seed per template, from its code (brief / morphen facts).
SEED_RUNS = {"very_faint": "8-10", "faint": "9-10", "standard_1": "11-13", "standard_2": "11-13",
             "bright": "11-13"}
SEED_REFERENCE = ("seed as-is on two synthetic 30-min VLA datasets, 1024^2 images: 11 WSClean runs and "
                  "5 gaincal calls each, 600-830 s per dataset on this kind of machine, 71% inside WSClean")
#: (name, total flux Jy, phase rms deg, seed): ~3 / 15 / 35 / 70 / 150 mJy, then 3 more for 8.
TEMPLATE_SETS = [("very_faint", 0.003, 40.0, 104), ("faint", 0.015, 45.0, 103),
                 ("standard_1", 0.035, 50.0, 102), ("standard_2", 0.070, 55.0, 105),
                 ("bright", 0.150, 60.0, 101)]
EXTRA_SETS = [("standard_1b", 0.040, 50.0, 106), ("faint_b", 0.012, 45.0, 107), ("very_faint_b", 0.004, 40.0, 108)]
QUICK_SETS = [("standard_1", 0.035, 50.0, 102), ("faint", 0.015, 45.0, 103)]
EXTENDED_FRACTION = 0.2  # of the total flux, in the simulator's Gaussian component
SECTIONS = ("campaigns", "variants", "scaling", "opt", "micro")


# ======================================================================================
# pure helpers (unit-tested in tests/unit/test_bench_smoke.py)

def fit_exponent(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log(y) against log(x) (NaN with < 2 usable points)."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y, strict=False) if a and b and a > 0 and b > 0]
    if len(pts) < 2:
        return math.nan
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return math.nan
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def bandwidth_smearing(frac_bw: float, radius_arcsec: float, beam_arcsec: float) -> float:
    """Peak response I/I0 for a square bandpass and a Gaussian beam (Bridle & Schwab 1999, 18-24)."""
    x = frac_bw * radius_arcsec / beam_arcsec
    if x <= 0:
        return 1.0
    a = math.sqrt(math.log(2.0)) * x
    return math.sqrt(math.pi) / (2.0 * a) * math.erf(a)


def time_smearing(tau_s: float, radius_arcsec: float, beam_arcsec: float) -> float:
    """Peak response after averaging tau_s (B&S 18-43, pole: 1 - 1.22e-9 (r/beam)^2 tau^2)."""
    loss = math.log(2.0) / 3.0 * (OMEGA_EARTH * tau_s * radius_arcsec / beam_arcsec) ** 2
    return max(0.0, 1.0 - loss)


def smearing_table(freq_hz: float, chan_width_hz: float, tau_s: float, radius_arcsec: float,
                   beam_arcsec: float) -> dict[str, float]:
    """Expected amplitude loss (percent) at ``radius_arcsec`` for one averaging choice."""
    bw = bandwidth_smearing(chan_width_hz / freq_hz, radius_arcsec, beam_arcsec)
    tm = time_smearing(tau_s, radius_arcsec, beam_arcsec)
    return {"chan_width_mhz": chan_width_hz / 1e6, "tau_s": tau_s, "radius_arcsec": radius_arcsec,
            "beam_arcsec": beam_arcsec, "bw_loss_pct": 100 * (1 - bw), "time_loss_pct": 100 * (1 - tm),
            "total_loss_pct": 100 * (1 - bw * tm)}


def parse_campaign_log(text: str) -> dict[str, dict[str, Any]]:
    """{name: {submitted, finished, status}} (epoch seconds) from a campaign.log."""
    out: dict[str, dict[str, Any]] = {}
    pat_t = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ selfcal_batch\.campaign(?:\.run)?: "
    for line in text.splitlines():
        m = re.match(pat_t + r"submitted (\S+) \(", line)
        if m:
            out.setdefault(m.group(2), {})["submitted"] = _log_time(m.group(1))
            continue
        m = re.match(pat_t + r"(\S+) (finished|failed|skipped)\b", line)
        if m:
            rec = out.setdefault(m.group(2), {})
            rec["finished"] = _log_time(m.group(1))
            rec["status"] = m.group(3)
    return out


def _log_time(s: str) -> float:
    return _dt.datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def window_mean(samples: Sequence[dict[str, Any]], key: str, t0: float, t1: float) -> float:
    """Mean of ``key`` over samples with t0 < t <= t1 (each sample covers the second before t)."""
    vals = [s[key] for s in samples if t0 < s["t"] <= t1 and s.get(key) is not None]
    return sum(vals) / len(vals) if vals else math.nan


def tree_utilisation(samples: Sequence[dict[str, Any]], t0: float, t1: float, ncores: int) -> float:
    """CPU used by the campaign's process tree between t0 and t1, as % of all cores."""
    pts = [(s["t"], s["tree_cpu_s"]) for s in samples if s.get("tree_cpu_s") is not None]
    a = [p for p in pts if p[0] <= t0 + 1.0]
    b = [p for p in pts if p[0] <= t1]
    if not a or not b or b[-1][0] - a[-1][0] < 1.0:
        return math.nan
    (ta, ca), (tb, cb) = a[-1], b[-1]
    return 100.0 * (cb - ca) / ((tb - ta) * ncores)


def pct(part: float | None, whole: float | None) -> float:
    try:
        return 100.0 * float(part) / float(whole)
    except (TypeError, ValueError, ZeroDivisionError):
        return math.nan


def fmt(v: Any, nd: int = 1) -> str:
    """Compact cell text: numbers rounded, None/NaN as '-'."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 1000:
            return f"{v:.0f}"
        return f"{v:.{nd}f}"
    return str(v)


def format_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]], nd: int = 1) -> str:
    """A plain-text table (right-aligned numbers)."""
    cells = [[fmt(c, nd) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells if i < len(r)]) for i, h in enumerate(headers)]
    sep = "  "
    lines = [title, sep.join(h.rjust(w) for h, w in zip(headers, widths, strict=True)),
             sep.join("-" * w for w in widths)]
    for r in cells:
        lines.append(sep.join(c.rjust(w) for c, w in zip(r, widths, strict=False)))
    return "\n".join(lines)


def json_clean(obj: Any) -> Any:
    """NaN/inf -> None, tuples -> lists, Paths -> str (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(bench: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_clean(bench), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def _n(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def evaluate_targets(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against what was measured (never raises for missing sections)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, target: str, ok: bool | None, note: str = "") -> None:
        out.append({"target": name, "measured": value, "goal": target,
                    "result": "n/a" if ok is None else ("PASS" if ok else "FAIL"), "note": note})

    camp = bench.get("campaigns", {})
    base = camp.get("1x2") or next(iter(camp.values()), None)
    if base:
        fr = [_n(r.get("py_dask_pct")) for r in base["datasets"] if r.get("status") == "finished"]
        fr = [f for f in fr if not math.isnan(f)]
        worst = max(fr) if fr else math.nan
        xp = [_n(r.get("py_dask_noplots_pct")) for r in base["datasets"] if r.get("status") == "finished"]
        xp = [f for f in xp if not math.isnan(f)]
        add("own Python + Dask overhead < 5% of dataset wall", f"max {fmt(worst)}% (mean "
            f"{fmt(sum(fr) / len(fr) if fr else math.nan)}%)", "< 5%", (worst < 5.0) if fr else None,
            f"campaign {base['label']}; without the plots step: max {fmt(max(xp) if xp else math.nan)}%")
        std = [r for r in base["datasets"] if str(r.get("template_final", "")).startswith("standard")]
        if std:
            mx = max(imaging_runs(r) for r in std)
            ladder = max(imaging_runs(r) - n_extension(r) for r in std)
            pred = max(int(r.get("wsclean_predicts") or 0) for r in std)
            add("WSClean imaging runs for a standard dataset", f"max {mx} over {len(std)} dataset(s)", "<= 7",
                mx <= 7, f"defaults, test + final images included; {ladder} without the gated extension steps "
                f"(p3+, one post image each); plus up to {pred} predict-only run(s) after a revert")
    for label, c in camp.items():
        u = _n(c.get("cpu_demand_queued_pct"))
        note = (f"system {fmt(_n(c.get('cpu_sys_queued_pct')))}% (all tenants), campaign tree "
                f"{fmt(_n(c.get('cpu_tree_queued_pct')))}%, load {fmt(_n(c.get('load1_mean')), 2)}")
        if math.isnan(u):
            add(f"CPU utilisation while queued ({label})", "-", ">= 85%", None, "no queued period")
        else:
            add(f"CPU utilisation while queued ({label})", f"{fmt(u)}% (runnable demand)", ">= 85%", u >= 85.0,
                note)
        peaks = [_n(w.get("peak_rss_mb")) for w in c.get("workers", [])]
        peaks = [p for p in peaks if not math.isnan(p)]
        if peaks:
            kids = max((_n(w.get("peak_children_mb")) for w in c["workers"]), default=math.nan)
            add(f"worker peak RSS ({label})", f"{fmt(max(peaks), 0)} MB", "< 2048 MB", max(peaks) < 2048,
                f"children (WSClean/CASA) peak {fmt(kids, 0)} MB, not counted by Dask")
    sc = bench.get("scaling", {}).get("exponents", {})
    for axis in ("time", "channels", "all"):
        e = _n(sc.get(axis, {}).get("wall_s"))
        if not math.isnan(e):
            add(f"time vs visibilities ({axis})", f"exponent {fmt(e, 2)}", "<= 1 (+0.05 noise)", e <= 1.05,
                f"WSClean {fmt(_n(sc[axis].get('time_wsclean_s')), 2)}, CASA {fmt(_n(sc[axis].get('time_casa_s')), 2)}")
    return out


def render_report(bench: dict[str, Any]) -> str:
    """All tables as text."""
    parts: list[str] = []
    m = bench.get("meta", {})
    parts.append(f"selfcal-batch benchmark ({m.get('mode', '?')}) {m.get('started', '')} .. {m.get('finished', '')}; "
                 f"{m.get('cores', '?')} cores, {fmt(_n(m.get('mem_gb')), 0)} GB; git {m.get('git', '?')}; "
                 f"imsize {m.get('imsize')}, {m.get('duration_s')} s tracks, {m.get('n_chan')} chan x 2 spw")
    la = m.get("load_samples", [])
    if la:
        parts.append("load average (1/5/15 min) during the run: "
                     + "; ".join(f"{s['at']} {s['load'][0]:.2f}/{s['load'][1]:.2f}/{s['load'][2]:.2f}" for s in la))
    for mr in (x for x in m.get("merged_runs", []) if isinstance(x, dict)):
        parts.append(f"sections {','.join(mr.get('sections', []))} re-run {mr.get('started', '')} .. "
                     f"{mr.get('finished', '')} (code {mr.get('git')})")
    versions = code_versions(bench)
    if len({x for v in versions.values() for x in v.split(", ")}) > 1:
        parts.append("WARNING: the package code changed during the benchmark (others commit/edit live); "
                     "code per section: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
    parts.append(f"seed reference: {SEED_REFERENCE}")
    for label, c in bench.get("campaigns", {}).items():
        rows = [(r["name"], _tmpl(r), r.get("wall_s"), r.get("time_wsclean_s"), r.get("wsclean_pct"),
                 r.get("time_casa_s"), r.get("casa_pct"), r.get("time_python_s"), r.get("plots_s"),
                 r.get("dask_s"), r.get("py_dask_pct"), r.get("py_dask_noplots_pct"), r.get("wsclean_runs"),
                 r.get("wsclean_predicts"), r.get("casa_starts"),
                 r.get("gaincal_calls"), r.get("dr_initial"), r.get("dr_final"))
                for r in c["datasets"]]
        parts.append(format_table(
            f"\nPer dataset, campaign {label} (workers x threads), load {fmt(_n(c.get('load1_mean')), 2)}",
            ["dataset", "template", "wall s", "WSClean s", "%", "CASA s", "%", "Python s", "plots s",
             "Dask s", "Py+Dask %", "w/o plots %", "WSC runs", "of them predict", "CASA starts", "gaincal", "DR init",
             "DR final"], rows))
    if bench.get("campaigns"):
        rows = []
        for label, c in bench["campaigns"].items():
            rows.append((label, c.get("n_finished"), c.get("span_s"), c.get("throughput_per_h"),
                         c.get("throughput_e2e_per_h"), c.get("queued_s"), c.get("cpu_sys_queued_pct"),
                         c.get("cpu_tree_queued_pct"), c.get("cpu_demand_queued_pct"), c.get("cpu_sys_all_pct"),
                         c.get("cpu_tree_all_pct"), c.get("cpu_demand_all_pct"), c.get("load1_mean"),
                         c.get("startup_s"), c.get("teardown_s")))
        parts.append(format_table("\nCampaign throughput and CPU utilisation (sys = whole machine incl. other "
                                  "tenants; tree = CPU used by the campaign's processes; demand = its running or "
                                  "runnable threads, capped at the cores; q = until the last dataset started)",
                                  ["campaign", "done", "span s", "ds/h", "ds/h e2e", "queued s", "sys% q",
                                   "tree% q", "demand% q", "sys% all", "tree% all", "demand% all", "load1",
                                   "start s", "end s"], rows))
        rows = []
        for label, c in bench["campaigns"].items():
            for w in c.get("workers", []):
                rows.append((label, w["pid"], w.get("peak_rss_mb"), w.get("peak_children_mb"),
                             w.get("peak_wsclean_mb"), w.get("peak_casa_mb"), w.get("peak_total_mb")))
        parts.append(format_table("\nPeak memory per Dask worker (MB; children = WSClean/CASA processes, "
                                  "not seen by Dask's memory monitor)",
                                  ["campaign", "worker pid", "worker RSS", "children", "WSClean", "CASA",
                                   "worker+children"], rows, nd=0))
    wr = bench.get("wsclean_runs", [])
    if wr:
        parts.append(format_table("\nWSClean runs per dataset (test + final images included); seed = from its code",
                                  ["dataset", "template", "default", "seed-like", "no extension",
                                   "ladder=template", "seed", "steps (default)"],
                                  [(r["name"], r.get("template"), r.get("default"), r.get("seed_like"),
                                    r.get("no_extension"), r.get("ladder_template"), r.get("seed"),
                                    r.get("steps_default")) for r in wr]))
    vr = bench.get("variants", {}).get("rows", [])
    if vr:
        parts.append(format_table("\nVariant runs (2x1 campaign) vs the same dataset with defaults in the 2x1 campaign",
                                  ["dataset", "variant", "template", "WSC runs", "wall s", "WSClean s",
                                   "default wall s", "default WSClean s", "DR final", "default DR"],
                                  [(r["name"], r["variant"], r.get("template"), r.get("wsclean_runs"),
                                    r.get("wall_s"), r.get("time_wsclean_s"), r.get("default_wall_s"),
                                    r.get("default_wsclean_s"), r.get("dr_final"), r.get("default_dr_final"))
                                   for r in vr]))
    sc = bench.get("scaling", {})
    if sc.get("points"):
        parts.append(format_table(f"\nScaling with visibilities (one dataset, threads {sc.get('threads')}, "
                                  "extend_ladder=false, noise x sqrt(k))",
                                  ["point", "visibilities", "k", "wall s", "WSClean s", "CASA s", "Python s",
                                   "WSC runs", "s/WSC run", "DR final", "load"],
                                  [(p["label"], p["nvis"], p["k"], p.get("wall_s"), p.get("time_wsclean_s"),
                                    p.get("time_casa_s"), p.get("time_python_s"), p.get("wsclean_runs"),
                                    p.get("s_per_wsclean_run"), p.get("dr_final"), p.get("load1"))
                                   for p in sc["points"]]))
        parts.append(format_table("Fitted exponent: time ~ visibilities^b",
                                  ["axis", "wall", "WSClean", "CASA", "Python", "per WSClean run"],
                                  [(ax, e.get("wall_s"), e.get("time_wsclean_s"), e.get("time_casa_s"),
                                    e.get("time_python_s"), e.get("s_per_wsclean_run"))
                                   for ax, e in sc.get("exponents", {}).items()], nd=2))
    op = bench.get("opt", {})
    if op.get("runs"):
        parts.append(format_table("\nPipeline before/after on the same dataset (threads "
                                  f"{op.get('threads')}, same settings otherwise)",
                                  ["variant", "wall s", "d wall %", "WSClean s", "CASA s", "Python s", "WSC runs",
                                   "steps", "DR final", "SNR final", "peak mJy", "load"],
                                  [(r["variant"], r.get("wall_s"), r.get("d_wall_pct"), r.get("time_wsclean_s"),
                                    r.get("time_casa_s"), r.get("time_python_s"), r.get("wsclean_runs"),
                                    r.get("steps"), r.get("dr_final"), r.get("snr_final"), r.get("peak_mjy"),
                                    r.get("load1")) for r in op["runs"]]))
    if op.get("smearing"):
        parts.append(format_table("\nExpected smearing (amplitude loss at the image edge / corner; Gaussian beam, "
                                  "square bandpass; time term at the pole, i.e. worst case)",
                                  ["averaging", "where", "chan MHz", "tau s", "radius\"", "beam\"", "bw loss %",
                                   "time loss %", "total %"],
                                  [(s["label"], s["where"], s["chan_width_mhz"], s["tau_s"], s["radius_arcsec"],
                                    s["beam_arcsec"], s["bw_loss_pct"], s["time_loss_pct"], s["total_loss_pct"])
                                   for s in op["smearing"]], nd=2))
    mi = bench.get("micro", {})
    if mi.get("wsclean"):
        parts.append(format_table("\nWSClean replays of the pipeline's own commands (min of repeats; one flag "
                                  "changed; speed-up vs the first row of the same image size)",
                                  ["image", "variant", "min s", "mean s", "speed-up", "peak RSS MB", "SNR", "rms uJy"],
                                  [(r["image"], r["variant"], r.get("min_s"), r.get("mean_s"), r.get("speedup"),
                                    r.get("peak_rss_mb"), r.get("snr"), r.get("rms_ujy")) for r in mi["wsclean"]],
                                  nd=2))
    if mi.get("python"):
        parts.append(format_table("\nOwn Python per call vs WSClean per run",
                                  ["what", "calls", "mean s", "per dataset s", "vs WSClean run %"],
                                  [(r["what"], r.get("calls"), r.get("mean_s"), r.get("per_dataset_s"),
                                    r.get("vs_wsclean_run_pct")) for r in mi["python"]], nd=3))
    tg = bench.get("targets", [])
    if tg:
        parts.append(format_table("\nTargets", ["target", "measured", "goal", "result", "note"],
                                  [(t["target"], t["measured"], t["goal"], t["result"], t["note"]) for t in tg]))
    return "\n".join(parts)


def code_versions(bench: dict[str, Any]) -> dict[str, str]:
    """{section: code version(s)} for every section that recorded one."""
    out: dict[str, set[str]] = {}
    for label, c in bench.get("campaigns", {}).items():
        out.setdefault(f"campaign {label}", set()).update(x for x in (c.get("code"), c.get("code_end")) if x)
    vc = bench.get("variants", {}).get("campaign", {})
    out.setdefault("variants", set()).update(x for x in (vc.get("code"), vc.get("code_end")) if x)
    for sec, rows in (("scaling", bench.get("scaling", {}).get("points", [])),
                      ("opt", bench.get("opt", {}).get("runs", []))):
        out.setdefault(sec, set()).update(r["code"] for r in rows if r.get("code"))
    return {k: ", ".join(sorted(v)) for k, v in out.items() if v}


def _tmpl(r: dict[str, Any]) -> str:
    a, b = r.get("template_initial") or "", r.get("template_final") or ""
    return a if a == b or not b else f"{a}->{b}"


# ======================================================================================
# measurement machinery

#: Set by main(): the directory holding the benchmarked ``selfcal_batch`` and its version label.
CODE: dict[str, str] = {"dir": str(REPO), "version": ""}


def pin_code(out: Path, rev: str) -> tuple[Path, str]:
    """Export ``selfcal_batch/`` at git ``rev`` to OUT/code/<sha>/ (the repository changes under us)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    dest = out / "code" / sha
    if not (dest / "selfcal_batch" / "__init__.py").exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "selfcal_batch"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest, sha


def child_env() -> dict[str, str]:
    """Environment for every child (campaign CLI, Dask workers, pipeline runs, CASA children)."""
    env = dict(os.environ)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    parts = [CODE["dir"]] + [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x and x != CODE["dir"]]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def code_version() -> str:
    """The pinned commit, or short HEAD plus a digest of uncommitted changes under selfcal_batch/."""
    if CODE["version"]:
        return CODE["version"]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip()
    status = git("status", "--porcelain", "--", "selfcal_batch")
    if not status.strip():
        return head
    diff = git("diff", "HEAD", "--", "selfcal_batch") + status
    return f"{head}+dirty:{hashlib.sha256(diff.encode()).hexdigest()[:8]}"


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


class Bench:
    """Holds the results dict, the output paths and the load log; saves after each section."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out).resolve()
        self.data = self.out / "data"
        self.json_path = Path(args.json).resolve() if args.json else self.out / (
            "bench-quick.json" if args.quick else "bench.json")
        self.res: dict[str, Any] = {"meta": {}}

    def load(self, label: str) -> tuple[float, float, float]:
        la = os.getloadavg()
        self.res["meta"].setdefault("load_samples", []).append({"at": label, "time": now_iso(), "load": list(la)})
        return la

    def save(self) -> None:
        self.res["targets"] = evaluate_targets(self.res)
        write_json(self.res, self.json_path)


def sim_spec(name: str, flux: float, phase: float, seed: int, args: argparse.Namespace, **over: Any) -> Any:
    from selfcal_batch.simulate import spec_from_preset

    kw: dict[str, Any] = dict(phase_rms_deg=phase, phase_timescale_s=300.0, duration_s=float(args.duration),
                              n_chan=args.n_chan, n_spw=2, integration_s=10.0, seed=seed)
    kw.update(over)
    return spec_from_preset("vla-c", flux_jy=(1 - EXTENDED_FRACTION) * flux,
                            extended_flux_jy=EXTENDED_FRACTION * flux, **kw)


def ensure_ms(bench: Bench, name: str, spec: Any) -> Path:
    """Generate (or reuse from bench-out/data/) the MS for ``spec``."""
    from selfcal_batch.simulate import simulate_ms_isolated

    h = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]
    ms = bench.data / f"{name}-{h}.ms"
    if not (ms / "table.dat").exists():
        bench.data.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(ms, ignore_errors=True)
        t0 = time.monotonic()
        simulate_ms_isolated(spec, ms)
        print(f"  generated {ms.name} in {time.monotonic() - t0:.1f} s", flush=True)
    return ms


def n_visibilities(spec: Any) -> int:
    n_ant = len(spec.antennas())
    return (n_ant * (n_ant - 1) // 2 * spec.n_integrations_per_scan * spec.n_scans * spec.n_spw * spec.n_chan
            * len(spec.corr_list))


def dataset_extras(root: Path) -> dict[str, Any]:
    """Counts and sub-timings from a dataset's logs and state.json."""
    out: dict[str, Any] = {}
    logs = root / "logs"
    try:
        text = (logs / "casa-child.log").read_text(errors="replace")
        out["casa_starts"] = sum(1 for ln in text.splitlines() if ln.startswith("$ "))
    except OSError:
        pass
    try:
        text = (logs / "casa.log").read_text(errors="replace")
        out["gaincal_calls"] = len(re.findall(r"selfcal-batch call \d+: gaincal\(", text))
    except OSError:
        pass
    try:
        text = (logs / "wsclean.log").read_text(errors="replace")
        secs = [float(x) for x in re.findall(r"^# wsclean: exit 0 after ([\d.]+) s", text, re.M)]
        out["wsclean_run_s"] = secs
        out["wsclean_images"] = [m.group(1).rsplit("/", 1)[-1] + (" (predict)" if m.group(2) else "")
                                 for m in re.finditer(r"^\$ \S*wsclean -name (\S+)( -predict)?", text, re.M)]
    except OSError:
        pass
    try:
        st = json.loads((root / "state.json").read_text())
        steps = st.get("steps", {})
        out["step_s"] = {k: v.get("seconds") for k, v in steps.items() if isinstance(v, dict)}
        out["plots_s"] = (steps.get("report_results") or {}).get("seconds")
        out["cell"] = st.get("cell")
        out["msinfo_spws"] = (st.get("msinfo") or {}).get("spws")
        out["integration_s"] = (st.get("msinfo") or {}).get("integration_s")
        out["nrows"] = (st.get("msinfo") or {}).get("nrows")
    except (OSError, ValueError):
        pass
    return out


def row_from_result(res: dict[str, Any], root: Path) -> dict[str, Any]:
    r = {k: res.get(k) for k in ("name", "status", "error", "template_initial", "template_final", "wall_s",
                                 "time_wsclean_s", "time_casa_s", "time_python_s", "wsclean_runs",
                                 "wsclean_predicts", "dr_initial",
                                 "dr_final", "snr_initial", "snr_final", "peak_final", "steps_run",
                                 "steps_accepted", "steps_reverted")}
    for k in ("wall_s", "time_wsclean_s", "time_casa_s", "time_python_s", "dr_initial", "dr_final",
              "snr_initial", "snr_final", "peak_final"):
        r[k] = _n(r[k])
    r["wsclean_runs"] = int(_n(r["wsclean_runs"])) if not math.isnan(_n(r["wsclean_runs"])) else None
    for k in ("steps_run", "steps_accepted", "steps_reverted"):
        if isinstance(r[k], str):
            r[k] = [s for s in r[k].split(";") if s]
    r.update(dataset_extras(root))
    r["wsclean_pct"] = pct(r["time_wsclean_s"], r["wall_s"])
    r["casa_pct"] = pct(r["time_casa_s"], r["wall_s"])
    r["python_pct"] = pct(r["time_python_s"], r["wall_s"])
    r["peak_mjy"] = 1000 * r["peak_final"] if not math.isnan(r["peak_final"]) else math.nan
    return r


# -------------------------------------------------------------------------- sampling

def _hwm_kb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _runnable_threads(pid: int) -> int:
    """Threads of ``pid`` in state R (running or waiting for a CPU) right now."""
    n = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as fh:
                    if fh.read().rpartition(")")[2].split()[0] == "R":
                        n += 1
            except (OSError, IndexError):
                continue
    except OSError:
        pass
    return n


class Sampler(threading.Thread):
    """Every second: system CPU % (psutil.cpu_percent(interval=1)), load, and for the process
    tree under ``root_pid``: total CPU seconds and RSS of Dask workers and their children."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[dict[str, Any]] = []
        self.root_pid: int | None = None
        self.stop_event = threading.Event()
        self.mem: dict[int, dict[str, float]] = {}
        self._cmd: dict[int, str] = {}

    def run(self) -> None:
        import psutil

        psutil.cpu_percent(None)
        while not self.stop_event.is_set():
            cpu = psutil.cpu_percent(interval=1.0)
            s: dict[str, Any] = {"t": time.time(), "cpu": cpu, "load1": os.getloadavg()[0]}
            if self.root_pid:
                try:
                    s["tree_cpu_s"], runnable = self._tree(psutil)
                    ncores = os.cpu_count() or 1
                    s["runnable"] = runnable
                    s["demand_pct"] = 100.0 * min(runnable, ncores) / ncores
                except psutil.Error:
                    pass
            self.samples.append(s)

    def _cmdline(self, p: Any) -> str:
        if p.pid not in self._cmd:
            try:
                self._cmd[p.pid] = " ".join(p.cmdline())
            except Exception:  # noqa: BLE001 - process gone
                self._cmd[p.pid] = ""
        return self._cmd[p.pid]

    def _tree(self, psutil: Any) -> tuple[float, int]:
        """(CPU seconds of the tree incl. reaped children, threads running or runnable now)."""
        root = psutil.Process(self.root_pid)
        procs = [root] + root.children(recursive=True)
        total = 0.0
        runnable = 0
        for p in procs:
            try:
                ct = p.cpu_times()
                total += ct.user + ct.system + ct.children_user + ct.children_system
            except psutil.Error:
                continue
            runnable += _runnable_threads(p.pid)
        for w in (p for p in procs if "spawn_main" in self._cmdline(p)):
            try:
                if w.ppid() != root.pid:
                    continue
                rec = self.mem.setdefault(w.pid, {"peak_rss_mb": 0.0, "peak_children_mb": 0.0,
                                                  "peak_wsclean_mb": 0.0, "peak_casa_mb": 0.0,
                                                  "peak_total_mb": 0.0})
                rss = max(w.memory_info().rss / 2**20, _hwm_kb(w.pid) / 1024)
                rec["peak_rss_mb"] = max(rec["peak_rss_mb"], rss)
                kids_sum = 0.0
                for k in w.children(recursive=True):
                    try:
                        krss = k.memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    kids_sum += krss
                    cmd = self._cmdline(k)
                    cat = "wsclean" if "wsclean" in cmd.split(" ")[0] else "casa" if "casa_runner" in cmd else ""
                    if cat:
                        key = f"peak_{cat}_mb"
                        rec[key] = max(rec[key], krss, _hwm_kb(k.pid) / 1024)
                rec["peak_children_mb"] = max(rec["peak_children_mb"], kids_sum)
                rec["peak_total_mb"] = max(rec["peak_total_mb"], kids_sum + w.memory_info().rss / 2**20)
            except psutil.Error:
                continue
        return total, runnable

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


# -------------------------------------------------------------------------- campaigns

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def write_manifest(path: Path, name: str, out_dir: Path, defaults: dict[str, Any],
                   datasets: Sequence[tuple[str, Path, dict[str, Any]]], workers: int, threads: int) -> Path:
    lines = ["[campaign]", f"name = {_toml_value(name)}", f"output_dir = {_toml_value(str(out_dir))}", "",
             "[defaults]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in defaults.items()]
    lines += ["", "[cluster]", 'kind = "local"', f"workers = {workers}", f"threads_per_dataset = {threads}",
              "retries = 1", "dashboard = false"]
    for nm, ms, over in datasets:
        lines += ["", "[[datasets]]", f"name = {_toml_value(nm)}", f"ms = {_toml_value(str(ms))}"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in over.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def run_campaign(bench: Bench, label: str, datasets: Sequence[tuple[str, Path, dict[str, Any]]],
                 defaults: dict[str, Any], workers: int, threads: int) -> dict[str, Any]:
    """Run a campaign through the CLI while sampling CPU and memory; return its summary."""
    out_dir = bench.out / f"campaign-{label}"
    shutil.rmtree(out_dir, ignore_errors=True)
    manifest = write_manifest(bench.out / "manifests" / f"{label}.toml", f"bench-{label}", out_dir, defaults,
                              datasets, workers, threads)
    env = child_env()
    argv = [str(VENV_BIN / "selfcal-batch"), str(manifest), "--workers", str(workers),
            "--threads-per-dataset", str(threads), "--quiet"]
    log_path = bench.out / "logs" / f"campaign-{label}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    la0 = bench.load(f"campaign {label} start")
    print(f"  campaign {label}: {len(datasets)} datasets, {workers} worker(s) x {threads} thread(s) "
          f"(load {la0[0]:.2f})", flush=True)
    code = code_version()
    sampler = Sampler()
    sampler.start()
    t_start = time.time()
    with open(log_path, "w") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(bench.out))
        sampler.root_pid = proc.pid
        rc = proc.wait()
    t_end = time.time()
    sampler.stop()
    la1 = bench.load(f"campaign {label} end")
    times: dict[str, dict[str, Any]] = {}
    try:
        times = parse_campaign_log((out_dir / "campaign.log").read_text(errors="replace"))
    except OSError:
        pass
    rows = read_campaign_rows(out_dir, [d[0] for d in datasets])
    for r in rows:
        t = times.get(r["name"], {})
        if "submitted" in t and "finished" in t:
            r["task_wall_s"] = t["finished"] - t["submitted"]
            r["dask_s"] = max(0.0, r["task_wall_s"] - (r["wall_s"] or 0.0))
        else:
            r["dask_s"] = math.nan
        own = (r["time_python_s"] or 0.0) + (0.0 if math.isnan(r["dask_s"]) else r["dask_s"])
        r["py_dask_pct"] = pct(own, r["wall_s"])
        r["py_dask_noplots_pct"] = pct(own - (r.get("plots_s") or 0.0), r["wall_s"])
    subs = sorted(t["submitted"] for t in times.values() if "submitted" in t)
    fins = sorted(t["finished"] for t in times.values() if "finished" in t)
    n_fin = sum(1 for r in rows if r.get("status") == "finished")
    ncores = os.cpu_count() or 1
    res: dict[str, Any] = {"label": label, "workers": workers, "threads": threads, "rc": rc,
                           "n_datasets": len(datasets), "n_finished": n_fin, "wall_s": t_end - t_start,
                           "load_start": list(la0), "load_end": list(la1), "log": str(log_path),
                           "out_dir": str(out_dir), "datasets": rows, "code": code, "code_end": code_version()}
    if subs and fins:
        t0, t_last_start, t1 = subs[0], subs[-1], fins[-1]
        span = t1 - t0
        res.update(span_s=span, throughput_per_h=3600.0 * n_fin / span if span > 0 else math.nan,
                   throughput_e2e_per_h=3600.0 * n_fin / (t_end - t_start), queued_s=t_last_start - t0,
                   startup_s=t0 - t_start, teardown_s=t_end - t1)
        if t_last_start - t0 >= 5.0:
            res["cpu_sys_queued_pct"] = window_mean(sampler.samples, "cpu", t0, t_last_start)
            res["cpu_tree_queued_pct"] = tree_utilisation(sampler.samples, t0, t_last_start, ncores)
            res["cpu_demand_queued_pct"] = window_mean(sampler.samples, "demand_pct", t0, t_last_start)
        res["cpu_sys_all_pct"] = window_mean(sampler.samples, "cpu", t0, t1)
        res["cpu_tree_all_pct"] = tree_utilisation(sampler.samples, t0, t1, ncores)
        res["cpu_demand_all_pct"] = window_mean(sampler.samples, "demand_pct", t0, t1)
        res["load1_mean"] = window_mean(sampler.samples, "load1", t0, t1)
    res["workers"] = [{"pid": pid, **{k: round(v, 1) for k, v in m.items()}} for pid, m in sampler.mem.items()]
    res["samples"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}
                      for s in sampler.samples]
    print(f"  campaign {label}: rc {rc}, {n_fin}/{len(datasets)} finished in {t_end - t_start:.0f} s", flush=True)
    return res


def read_campaign_rows(out_dir: Path, names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows from survey/datasets.csv (fallback: each dataset's result.json)."""
    found: dict[str, dict[str, Any]] = {}
    try:
        with open(out_dir / "survey" / "datasets.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                found[r["name"]] = r
    except OSError:
        pass
    rows = []
    for nm in names:
        raw = found.get(nm)
        if raw is None:
            try:
                raw = json.loads((out_dir / "datasets" / nm / "result.json").read_text())
            except (OSError, ValueError):
                raw = {"name": nm, "status": "failed", "error": "no result"}
        rows.append(row_from_result(raw, out_dir / "datasets" / nm))
    return rows


# -------------------------------------------------------------------------- single runs

def run_one(bench: Bench, label: str, ms: Path, cfg: dict[str, Any], threads: int) -> dict[str, Any]:
    """One pipeline run in a fresh child process (cold imports, like a new Dask worker)."""
    out_root = bench.out / "runs" / label
    shutil.rmtree(out_root, ignore_errors=True)
    out_root.mkdir(parents=True)
    req = out_root / "request.json"
    req.write_text(json.dumps({"name": label, "ms": str(ms), "config": cfg, "out": str(out_root),
                               "threads": threads}))
    la0 = bench.load(f"run {label} start")
    code = code_version()
    print(f"  run {label} (load {la0[0]:.2f}) ...", end="", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_run-one", str(req)],
                          capture_output=True, text=True, env=child_env())
    dt = time.monotonic() - t0
    la1 = os.getloadavg()
    root = out_root / "datasets" / label
    try:
        res = json.loads((root / "result.json").read_text())
    except (OSError, ValueError):
        res = {"name": label, "status": "failed", "error": (proc.stderr or "")[-500:]}
    row = row_from_result(res, root)
    row.update(process_s=dt, load1=(la0[0] + la1[0]) / 2, root=str(root), code=code)
    print(f" {row['status']} wall {row['wall_s']:.0f} s, {row['wsclean_runs']} WSClean runs", flush=True)
    return row


def _child_run_one(req_path: str) -> int:
    req = json.loads(Path(req_path).read_text())
    from selfcal_batch.config import PipelineConfig
    from selfcal_batch.pipeline.runner import run_dataset

    res = run_dataset(req["name"], req["ms"], PipelineConfig.from_dict(req["config"]), req["out"],
                      threads=req["threads"], restart=True)
    return 0 if res.status == "finished" else 1


# ======================================================================================
# sections

def section_campaigns(bench: Bench, sets: list[tuple[str, float, float, int]]) -> None:
    a = bench.args
    datasets = [(nm, ensure_ms(bench, nm, sim_spec(nm, f, ph, sd, a)), {}) for nm, f, ph, sd in sets]
    defaults = {"imsize": a.imsize}
    if a.quick:
        defaults["keep_work_ms"] = True  # the micro section replays WSClean on the 1x2 work.ms
    camps = bench.res.setdefault("campaigns", {})
    for w, t in ((1, a.threads), (a.threads, 1)):
        label = f"{w}x{t}"
        camps[label] = run_campaign(bench, label, datasets, defaults, w, t)
        bench.save()
    base = camps.get(f"1x{a.threads}")
    if base:
        bench.res["wsclean_runs"] = [
            {"name": r["name"], "template": _tmpl(r), "default": r.get("wsclean_runs"),
             "seed": SEED_RUNS.get(r.get("template_final") or "", "-"),
             "steps_default": " ".join(r.get("steps_run") or []), "extended": _extended(r)}
            for r in base["datasets"]]


def imaging_runs(r: dict[str, Any]) -> int:
    """WSClean runs that made an image (predict-only runs excluded)."""
    return int(r.get("wsclean_runs") or 0) - int(r.get("wsclean_predicts") or 0)


def n_extension(r: dict[str, Any]) -> int:
    """Extension phase steps (p3, p4, ...) a dataset ran."""
    return sum(1 for s in (r.get("steps_run") or []) if re.fullmatch(r"p[3-9]\d*", s))


def _extended(r: dict[str, Any]) -> bool:
    return n_extension(r) > 0


def section_variants(bench: Bench) -> None:
    """Seed-like / no-extension / ladder=template runs as one 2x1 campaign."""
    a = bench.args
    seed_like = {"ladder_imaging": "template", "test_imaging": "seed"}
    noext = {"solint": {"extend_ladder": False}}
    base = {r["name"]: r for r in bench.res.get("campaigns", {}).get(f"1x{a.threads}", {}).get("datasets", [])}
    other = {r["name"]: r for r in bench.res.get("campaigns", {}).get(f"{a.threads}x1", {}).get("datasets", [])}
    jobs: list[tuple[str, Path, dict[str, Any]]] = []
    meta: dict[str, tuple[str, str]] = {}
    for nm, f, ph, sd in TEMPLATE_SETS:
        ms = ensure_ms(bench, nm, sim_spec(nm, f, ph, sd, a))
        variants = [("seed_like", seed_like)]
        if nm not in base or _extended(base[nm]):
            variants.append(("no_extension", noext))
        if nm == "standard_1":
            variants.append(("ladder_template", {"ladder_imaging": "template"}))
        for vname, over in variants:
            jobs.append((f"{nm}--{vname}", ms, over))
            meta[f"{nm}--{vname}"] = (nm, vname)
    camp = run_campaign(bench, "variants-2x1", jobs, {"imsize": a.imsize}, a.threads, 1)
    rows = []
    for r in camp["datasets"]:
        nm, vname = meta[r["name"]]
        d = other.get(nm, {})
        rows.append({"name": nm, "variant": vname, "template": _tmpl(r), "wsclean_runs": r.get("wsclean_runs"),
                     "wall_s": r.get("wall_s"), "time_wsclean_s": r.get("time_wsclean_s"),
                     "default_wall_s": d.get("wall_s"), "default_wsclean_s": d.get("time_wsclean_s"),
                     "dr_final": r.get("dr_final"), "default_dr_final": d.get("dr_final"),
                     "steps": " ".join(r.get("steps_run") or [])})
    camp.pop("samples", None)
    bench.res["variants"] = {"campaign": camp, "rows": rows}
    table = {w["name"]: w for w in bench.res.setdefault("wsclean_runs", [])}
    for r in rows:
        w = table.setdefault(r["name"], {"name": r["name"], "template": r["template"],
                                         "seed": SEED_RUNS.get(r["template"].split("->")[-1], "-")})
        w[r["variant"]] = r["wsclean_runs"]
    for nm, w in table.items():
        if "no_extension" not in w and nm in base and not _extended(base[nm]):
            w["no_extension"] = f"={w.get('default')} (no ext. ran)"
    bench.res["wsclean_runs"] = list(table.values())


def _scaling_cfg(a: argparse.Namespace) -> dict[str, Any]:
    return {"imsize": a.imsize, "solint": {"extend_ladder": False}, "keep_work_ms": True}


def section_scaling(bench: Bench, base_row: dict[str, Any] | None) -> dict[str, Any]:
    a = bench.args
    nm, f, ph, sd = TEMPLATE_SETS[2]
    base_spec = sim_spec(nm, f, ph, sd, a)
    noise = base_spec.noise_jy
    points = [("base", 1, base_spec)]
    for k in (2, 4):
        points.append((f"time x{k}", k, base_spec.replace(integration_s=10.0 / k, noise_jy=noise * math.sqrt(k))))
    for k in (2, 4):
        points.append((f"chan x{k}", k, base_spec.replace(n_chan=a.n_chan * k, noise_jy=noise * math.sqrt(k))))
    out = []
    for label, k, spec in points:
        ms = ensure_ms(bench, f"scale-{label.replace(' ', '')}", spec)
        if label == "base" and base_row is not None:
            row = dict(base_row)
        else:
            row = run_one(bench, f"scale-{label.replace(' ', '')}", ms, _scaling_cfg(a), a.threads)
        row.update(label=label, k=k, nvis=n_visibilities(spec))
        runs = row.get("wsclean_runs") or 0
        row["s_per_wsclean_run"] = row["time_wsclean_s"] / runs if runs else math.nan
        out.append(row)
    exps: dict[str, dict[str, float]] = {}
    keys = ("wall_s", "time_wsclean_s", "time_casa_s", "time_python_s", "s_per_wsclean_run")
    for axis, sel in (("time", ("base", "time x2", "time x4")), ("channels", ("base", "chan x2", "chan x4")),
                      ("all", tuple(p[0] for p in points))):
        pts = [p for p in out if p["label"] in sel and p.get("status") == "finished"]
        exps[axis] = {k: fit_exponent([p["nvis"] for p in pts], [p[k] for p in pts]) for k in keys}
    sc = {"threads": a.threads, "points": [{k: v for k, v in p.items() if k not in ("msinfo_spws",)} for p in out],
          "exponents": exps}
    bench.res["scaling"] = sc
    return sc


def section_opt(bench: Bench, base_row: dict[str, Any] | None) -> dict[str, Any] | None:
    a = bench.args
    nm, f, ph, sd = TEMPLATE_SETS[2]
    ms = ensure_ms(bench, "scale-base", sim_spec(nm, f, ph, sd, a))
    cfg = _scaling_cfg(a)
    runs = []
    if base_row is None:
        base_row = run_one(bench, "scale-base", ms, cfg, a.threads)
    runs.append(dict(base_row, variant="base (defaults, no averaging)"))
    variants: list[tuple[str, dict[str, Any]]] = [
        ("w-stacking (use_wgridder=false)", {"wsclean": {"use_wgridder": False}}),
        ("timebin 20s + chanbin 2", {"timebin": "20s", "chanbin": 2}),
    ]
    if a.opt_all:
        from selfcal_batch.config import WSCleanConfig

        pg = 1 if WSCleanConfig().parallel_gridding > 1 else 2
        variants += [(f"parallel_gridding={pg}", {"wsclean": {"parallel_gridding": pg}}),
                     (f"parallel_deconvolution={a.imsize // 2}", {"wsclean": {"parallel_deconvolution": a.imsize // 2}}),
                     ("ladder_imaging=template", {"ladder_imaging": "template"}),
                     ("plots=false", {"plots": False})]
    for i, (vname, over) in enumerate(variants):
        row = run_one(bench, f"opt-{i + 1}", ms, {**cfg, **over}, a.threads)
        row["variant"] = vname
        runs.append(row)
    for r in runs:
        r["d_wall_pct"] = pct(r["wall_s"] - runs[0]["wall_s"], runs[0]["wall_s"])
        r["steps"] = " ".join(r.get("steps_run") or [])
    op = bench.res.setdefault("opt", {})
    op.update(threads=a.threads, runs=[{k: v for k, v in r.items() if k != "msinfo_spws"} for r in runs])
    op["smearing"] = smearing_rows(base_row, runs, a)
    return base_row


def smearing_rows(base_row: dict[str, Any], runs: list[dict[str, Any]], a: argparse.Namespace) -> list[dict[str, Any]]:
    """Expected edge/corner amplitude loss for the base data and for 20 s / chanbin 2."""
    spws = base_row.get("msinfo_spws") or []
    if not spws:
        return []
    fmin = min(s["freq_min"] for s in spws)
    width = spws[0]["chan_width"]
    tau = float(base_row.get("integration_s") or 10.0)
    cell = float(re.sub(r"[a-z]+$", "", str(base_row.get("cell") or "0.18arcsec")))
    beam = math.nan
    try:
        from astropy.io import fits

        h = fits.getheader(Path(base_row["root"]) / "final-image.fits")
        beam = 3600.0 * math.sqrt(float(h["BMAJ"]) * float(h["BMIN"]))
    except Exception:  # noqa: BLE001 - fall back to lambda / B_max
        beam = math.degrees(2.998e8 / fmin / 11100.0) * 3600.0
    edge = a.imsize / 2 * cell
    rows = []
    for label, w, t in (("none (as observed)", width, tau), ("timebin 20s + chanbin 2", 2 * width, max(tau, 20.0))):
        for where, r in (("edge", edge), ("corner", edge * math.sqrt(2))):
            rows.append({"label": label, "where": where, **smearing_table(fmin, w, t, r, beam)})
    return rows


def section_micro(bench: Bench, root: Path, wsclean_per_run: float) -> None:
    a = bench.args
    mi = bench.res.setdefault("micro", {})
    mi["source"] = str(root)
    print(f"  micro: replaying WSClean commands of {root}", flush=True)
    mi["wsclean"] = replay_wsclean(bench, root, a.repeats)
    bench.save()
    mi["python"] = python_costs(bench, root, wsclean_per_run)


def _wsclean_commands(root: Path) -> list[list[str]]:
    text = (root / "logs" / "wsclean.log").read_text(errors="replace")
    return [shlex.split(ln[2:]) for ln in text.splitlines() if ln.startswith("$ ")]


def edit_argv(argv: Sequence[str], name: str, drop: dict[str, int] | None = None,
              add: Sequence[str] = (), size: int | None = None) -> list[str]:
    """A WSClean argv with -name replaced, flags dropped ({flag: n_values}) and flags added."""
    drop = drop or {}
    out: list[str] = []
    i = 0
    argv = list(argv)
    while i < len(argv):
        tok = argv[i]
        if tok in drop:
            i += 1 + drop[tok]
            continue
        if tok == "-name":
            out += [tok, name]
            i += 2
            continue
        if tok == "-size" and size:
            out += [tok, str(size), str(size)]
            i += 3
            continue
        if tok == "-data-column":
            out += list(add)
        out.append(tok)
        i += 1
    return out


def toggle(argv: Sequence[str], flag: str, values: list[str], label_off: str,
           label_on: str) -> tuple[str, dict[str, int], list[str], None]:
    """A replay variant that removes ``flag`` if the pipeline used it, else adds it."""
    if flag in argv:
        return label_off, {flag: len(values)}, [], None
    return label_on, {}, [flag, *values], None


def run_measured(argv: Sequence[str], cwd: Path, threads: int, log: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS MB of the process, returncode) via os.wait4."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1")
    with open(log, "a") as fh:
        fh.write("\n$ " + shlex.join(argv) + "\n")
        fh.flush()
        t0 = time.monotonic()
        proc = subprocess.Popen(list(argv), cwd=str(cwd), stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        dt = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    return dt, ru.ru_maxrss / 1024.0, proc.returncode


def replay_wsclean(bench: Bench, root: Path, repeats: int) -> list[dict[str, Any]]:
    from selfcal_batch.imaging.imstats import image_statistics

    cmds = _wsclean_commands(root)
    ladder = next((c for c in cmds if "-fits-mask" in c and "CORRECTED_DATA" in c), None)
    final = next((c for c in cmds if c[c.index("-name") + 1].endswith("/final")), None)
    work = bench.out / "replay"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "replay.log"
    rows: list[dict[str, Any]] = []
    for image, argv in (("ladder (post, masked)", ladder), ("final (multiscale)", final)):
        if argv is None:
            continue
        size = int(argv[argv.index("-size") + 1])
        threads = int(argv[argv.index("-j") + 1])
        wg = "-use-wgridder" in argv
        flags = " ".join(f"{f} {argv[argv.index(f) + 1]}" for f in ("-parallel-gridding", "-parallel-deconvolution")
                         if f in argv)
        variants: list[tuple[str, dict[str, int], list[str], int | None]] = [
            (f"as run ({'wgridder' if wg else 'w-stacking'}{', ' + flags if flags else ''})", {}, [], None),
            toggle(argv, "-use-wgridder", [], "w-stacking (no -use-wgridder)", "-use-wgridder"),
            toggle(argv, "-parallel-gridding", ["2"], "without -parallel-gridding", "-parallel-gridding 2"),
            toggle(argv, "-parallel-deconvolution", [str(size // 2)], "without -parallel-deconvolution",
                   f"-parallel-deconvolution {size // 2}"),
        ]
        if "-fits-mask" in argv:
            variants.append(("without -fits-mask (auto-mask only)", {"-fits-mask": 1}, [], None))
        if image.startswith("final") and size < 1024 and not bench.args.quick:
            variants.append(("1024^2 (seed size, same cell)", {}, [], 1024))
            v = toggle(argv, "-use-wgridder", [], "w-stacking", "wgridder")
            variants.append((f"1024^2, {v[0]}", v[1], v[2], 1024))
        base_min: dict[int | None, float] = {}  # speed-up is relative to the first run of the same size
        for j, (vname, drop, add, sz) in enumerate(variants):
            prefix = work / f"{'L' if image.startswith('ladder') else 'F'}{j}"
            cmd = edit_argv(argv, str(prefix), drop, add, sz)
            secs, rss = [], []
            for _ in range(repeats):
                s, m, rc = run_measured(cmd, work, threads, log)
                if rc != 0:
                    break
                secs.append(s)
                rss.append(m)
            row: dict[str, Any] = {"image": image, "variant": vname, "argv": shlex.join(cmd),
                                   "min_s": min(secs) if secs else math.nan,
                                   "mean_s": sum(secs) / len(secs) if secs else math.nan,
                                   "peak_rss_mb": max(rss) if rss else math.nan, "load1": os.getloadavg()[0]}
            base_min.setdefault(sz, row["min_s"])
            row["speedup"] = base_min[sz] / row["min_s"] if row["min_s"] else math.nan
            tag = "-MFS" if "-channels-out" in cmd else ""
            try:
                st = image_statistics(f"{prefix}{tag}-image.fits", f"{prefix}{tag}-residual.fits")
                row.update(snr=st.get("snr"), rms_ujy=1e6 * st.get("rms_offsource", math.nan))
            except Exception as exc:  # noqa: BLE001 - a failed run has no image
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            print(f"    {image:24s} {vname:38s} {row['min_s']:.2f} s", flush=True)
    return rows


def python_costs(bench: Bench, root: Path, wsclean_per_run: float) -> list[dict[str, Any]]:
    """imstats / mask / plot cost per call, CASA child start-up, per dataset and vs a WSClean run."""
    from selfcal_batch.imaging import plots
    from selfcal_batch.casa.calibration import job, run_casa
    from selfcal_batch.imaging.imstats import image_statistics
    from selfcal_batch.imaging.masks import make_clean_mask

    st = json.loads((root / "state.json").read_text())
    rows_img = st.get("image_rows", [])
    n_images = len(rows_img)
    images = [root / r["path"] for r in rows_img if (root / r["path"]).exists()]
    tmp = bench.out / "micro-python"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out: list[dict[str, Any]] = []

    def timed(what: str, fn: Any, args_list: list[tuple], per_dataset_calls: int) -> None:
        ts = []
        for args in args_list:
            t0 = time.perf_counter()
            fn(*args)
            ts.append(time.perf_counter() - t0)
        mean = sum(ts) / len(ts) if ts else math.nan
        out.append({"what": what, "calls": per_dataset_calls, "mean_s": mean, "per_dataset_s": mean * per_dataset_calls,
                    "vs_wsclean_run_pct": pct(mean, wsclean_per_run)})

    pairs = [(str(p), str(p).replace("-image.fits", "-residual.fits")) for p in images]
    timed("imstats.image_statistics (image + residual)", image_statistics, pairs * 2, n_images)
    n_masks = len(list((root / "masks").glob("*.fits")))
    timed("masks.make_clean_mask", make_clean_mask,
          [(str(p), str(tmp / f"m{i}.fits"), 5.0, 2) for i, p in enumerate(images)], n_masks)
    tables = [rec["table"] for rec in st.get("steps", {}).values()
              if isinstance(rec, dict) and rec.get("table") and Path(rec["table"]).exists()]
    names = (st.get("msinfo") or {}).get("antenna_names")
    if tables:
        timed("plots.plot_solution_snr_hist", plots.plot_solution_snr_hist,
              [(t, tmp / f"s{i}.png", 1.0) for i, t in enumerate(tables)], len(tables))
        timed("plots.plot_gains", lambda t, o: plots.plot_gains(t, o, antenna_names=names),
              [(t, tmp / f"g{i}.png") for i, t in enumerate(tables)], len(tables))
    imgs = {"initial": (st.get("test_image") or {}).get("image"), "final": (st.get("final") or {}).get("image")}
    imgs = {k: v for k, v in imgs.items() if v and Path(v).exists()}
    timed("plots.plot_summary", plots.plot_summary, [(tmp / "summary.png", rows_img, imgs)] * 2, 1)
    if imgs:
        timed("plots.thumbnail", plots.thumbnail, [(v, tmp / f"t{k}.png") for k, v in imgs.items()], len(imgs))
    starts = dataset_extras(root).get("casa_starts", 0)
    timed("CASA child start-up (empty job)",
          lambda i: run_casa([job("rmtables", paths=[])], workdir=tmp, label=f"startup{i}",
                             log_path=tmp / "casa.log"),
          [(i,) for i in range(max(1, bench.args.repeats + 1))], starts)
    return out


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
