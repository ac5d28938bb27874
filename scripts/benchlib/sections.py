"""The benchmark's sections: campaigns, variants, scaling, opt, micro."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

from benchlib.common import SEED_RUNS, TEMPLATE_SETS
from benchlib.report import _extended, _tmpl, fit_exponent, pct, smearing_table
from benchlib.machinery import Bench, dataset_extras, ensure_ms, n_visibilities, sim_spec
from benchlib.campaigns import run_campaign, run_one


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
