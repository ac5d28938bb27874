#!/usr/bin/env python
"""Per-dataset cost at the seed's own settings (issue 16): two 1024^2 datasets, one at a time.

* ``bright_c``: 30-min VLA C-config C band, 150 mJy point source, phases scrambled (80 deg rms,
  300 s timescale), cell 1.5 arcsec;
* ``standard_x``: 24-min VLA C-config X band, 25 mJy, 50 deg phase rms and 10% amplitude
  errors, cell 1.0 arcsec;

both 2 spw x 4 channels, 10 s integrations, 1024^2 images, ``threads`` (default 2) for the
dataset. Each run is a fresh interpreter with the benchmarked code first on PYTHONPATH
(``--rev`` pins a git revision via ``git archive``, as ``scripts/bench`` does). Reported per
dataset: wall time beside the seed's (831 s / 598 s), WSClean / CASA wall and CPU seconds
(from ``logs/tools.jsonl``), WSClean imaging runs and predicts, CASA child starts, the
decisions (templates, accepted / reverted steps), error vs truth of the final image
(:func:`selfcal_batch.simulate.evaluate.error_vs_truth`), residual antenna phase vs the injected
phases, and the load average at start and end (the machine is shared).

Usage::

    .venv/bin/python scripts/bench_speed.py --label before --rev a551c6c
    .venv/bin/python scripts/bench_speed.py --label after
    .venv/bin/python scripts/bench_speed.py --table bench-out/speed/before.json bench-out/speed/after.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

#: name -> (preset, flux Jy, phase rms deg, amp rms, duration s, cell, seed, seed script wall s)
DATASETS: dict[str, tuple[str, float, float, float, float, str, int, float]] = {
    "bright_c": ("vla-c", 0.150, 80.0, 0.0, 1800.0, "1.5arcsec", 301, 831.0),
    "standard_x": ("vla-x", 0.025, 50.0, 0.10, 1440.0, "1.0arcsec", 302, 598.0),
}
PRESET_CONFIG = {"vla-c": {"instrument": "VLA", "band": "C"}, "vla-x": {"instrument": "VLA", "band": "X"}}


def simulate(out: Path, name: str) -> Path:
    """The dataset's MS under OUT/data (made once, reused)."""
    from selfcal_batch.simulate import simulate_ms_isolated, spec_from_preset

    preset, flux, phase, amp, duration, _, seed, _ = DATASETS[name]
    ms = out / "data" / f"{name}.ms"
    if not (ms / "table.dat").exists():
        ms.parent.mkdir(parents=True, exist_ok=True)
        spec = spec_from_preset(preset, flux_jy=flux, phase_rms_deg=phase, phase_timescale_s=300.0,
                                amp_rms=amp, duration_s=duration, n_spw=2, n_chan=4, integration_s=10.0,
                                array_config="C", seed=seed)
        simulate_ms_isolated(spec, ms)
    return ms


def tool_costs(path: Path) -> dict[str, float]:
    """Wall and CPU seconds and runs per category from a dataset's logs/tools.jsonl (pure read)."""
    out: dict[str, float] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        r = json.loads(line)
        cat = r["category"]
        out[f"{cat}_s"] = out.get(f"{cat}_s", 0.0) + float(r.get("seconds") or 0.0)
        out[f"{cat}_cpu_s"] = out.get(f"{cat}_cpu_s", 0.0) + float(r.get("cpu_s") or math.nan)
        out[f"{cat}_n"] = out.get(f"{cat}_n", 0) + 1
    return out


def run(out: Path, code_dir: Path, name: str, threads: int, label: str) -> dict[str, Any]:
    """One dataset in a fresh interpreter; returns the row."""
    ms = simulate(out, name)
    preset, cell, seed_wall = DATASETS[name][0], DATASETS[name][5], DATASETS[name][7]
    cfg = dict(PRESET_CONFIG[preset], imsize=1024, cell=cell, plots=False)
    root = out / "runs" / label
    shutil.rmtree(root / "datasets" / name, ignore_errors=True)
    code = ("import json,sys; from selfcal_batch.config import PipelineConfig; "
            "from selfcal_batch.pipeline.runner import run_dataset; "
            f"r = run_dataset({name!r}, {str(ms)!r}, PipelineConfig.from_dict(json.loads(sys.argv[1])), "
            f"{str(root)!r}, threads={threads}, restart=True); print(r.status, r.error)")
    env = dict(os.environ, PYTHONPATH=str(code_dir))
    la0 = os.getloadavg()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True,
                          cwd=str(code_dir), env=env, check=False)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    la1 = os.getloadavg()
    droot = root / "datasets" / name
    res = json.loads((droot / "result.json").read_text())
    row: dict[str, Any] = {"dataset": name, "label": label, "status": res["status"], "error": res.get("error", ""),
                           "process_wall_s": round(wall, 1), "wall_s": res.get("wall_s"),
                           "seed_wall_s": seed_wall, "ratio_to_seed": round(wall / seed_wall, 3),
                           "cpu_tree_s": round((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime), 1),
                           "load_start": [round(x, 2) for x in la0], "load_end": [round(x, 2) for x in la1],
                           "wsclean_runs": res.get("wsclean_runs"), "wsclean_predicts": res.get("wsclean_predicts"),
                           "template": f"{res.get('template_initial')}->{res.get('template_final')}",
                           "accepted": res.get("steps_accepted"), "reverted": res.get("steps_reverted"),
                           "dr_final": res.get("dr_final"), "stdout": proc.stdout[-300:] + proc.stderr[-500:]}
    row.update({k: round(v, 1) if isinstance(v, float) else v for k, v in tool_costs(droot / "logs" / "tools.jsonl").items()})
    row.update(truth_metrics(ms, droot))
    return row


def truth_metrics(ms: Path, droot: Path) -> dict[str, Any]:
    """Error of the final image vs the true sky, residual antenna phase vs the injected phases."""
    from selfcal_batch.simulate import load_truth
    from selfcal_batch.simulate.evaluate import error_vs_truth, residual_phase_rms_deg

    truth = load_truth(ms)
    out: dict[str, Any] = {}
    img = droot / "final-image.fits"
    if img.exists():
        e = error_vs_truth(img, truth)
        out.update(err_vs_truth=round(e["err"], 5), flux_ratio=round(e["flux_ratio"], 4))
    state = json.loads((droot / "state.json").read_text())
    tables = [c["table"] for c in state.get("chain") or []]
    out["phase_err_deg"] = round(residual_phase_rms_deg(tables, truth, plane=True)[0], 2) if tables else None
    return out


COLS = ["dataset", "label", "status", "process_wall_s", "seed_wall_s", "ratio_to_seed", "wsclean_s", "wsclean_cpu_s",
        "casa_s", "casa_cpu_s", "casa_n", "cpu_tree_s", "wsclean_runs", "wsclean_predicts", "template", "accepted",
        "reverted", "err_vs_truth", "flux_ratio", "phase_err_deg", "dr_final", "load_start", "load_end"]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
    for r in rows:
        cells = []
        for c in COLS:
            v = r.get(c)
            cells.append(";".join(v) if isinstance(v, list) and v and isinstance(v[0], str) else
                         (f"{v:.4g}" if isinstance(v, float) else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "bench-out" / "speed")
    p.add_argument("--label", default="after")
    p.add_argument("--rev", default="", help="git revision to benchmark (default: this checkout)")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table", nargs="*", type=Path, help="print the table of earlier result files only")
    a = p.parse_args(argv)
    if a.table:
        rows = [r for f in a.table for r in json.loads(f.read_text())]
        print(table(rows))
        return 0
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    code_dir = REPO
    if a.rev:
        import bench_selfcal

        code_dir, _ = bench_selfcal.pin_code(out, a.rev)
    rows = []
    for name in [n for n in a.datasets.split(",") if n]:
        rows.append(run(out, code_dir, name, a.threads, a.label))
        (out / f"{a.label}.json").write_text(json.dumps(rows, indent=1))
        print(table(rows[-1:]), flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
