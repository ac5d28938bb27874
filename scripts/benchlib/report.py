"""Pure helpers of the benchmark: fits, smearing, log parsing, tables, JSON, targets and the text report (unit-tested in tests/unit/test_bench_smoke.py)."""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from benchlib.common import OMEGA_EARTH, SEED_REFERENCE


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
    pat_t = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ selfcal_batch\.campaign(?:\.\w+)?: "
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


def imaging_runs(r: dict[str, Any]) -> int:
    """WSClean runs that made an image (predict-only runs excluded)."""
    return int(r.get("wsclean_runs") or 0) - int(r.get("wsclean_predicts") or 0)


def n_extension(r: dict[str, Any]) -> int:
    """Extension phase steps (p3, p4, ...) a dataset ran."""
    return sum(1 for s in (r.get("steps_run") or []) if re.fullmatch(r"p[3-9]\d*", s))


def _extended(r: dict[str, Any]) -> bool:
    return n_extension(r) > 0
