"""Campaign and single-dataset runs of the benchmark (through the CLI / a child process)."""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from benchlib.common import SCRIPT, VENV_BIN
from benchlib.report import parse_campaign_log, pct, tree_utilisation, window_mean
from benchlib.machinery import Bench, Sampler, child_env, code_version, row_from_result


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
    proc = subprocess.run([sys.executable, str(SCRIPT), "--_run-one", str(req)],
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
