#!/usr/bin/env python
"""Quality against the known truth for pipeline variants (the guard for imaging economies).

An economy (fewer WSClean runs) is only worth having if the calibration does not get worse.
This script simulates datasets with known gains and sky, runs the pipeline once per variant
(configuration overrides) on each, and compares against the truth:

- residual antenna phase rms (deg) of the accepted gain chain against the injected phases
  (common phase per time removed), over all antennas;
- final peak / true peak, final dynamic range, final rms / thermal noise;
- WSClean runs and wall time.

Usage::

    .venv/bin/python scripts/bench_quality.py --variants shared,initial,final --out bench-out/quality
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: name -> (point flux Jy, extended Gaussian flux Jy, phase rms deg, seed)
DATASETS: dict[str, tuple[float, float, float, int]] = {
    "std100+30ext": (0.100, 0.030, 60.0, 11),
    "standard_1": (0.028, 0.007, 50.0, 102),
    "standard_2": (0.056, 0.014, 55.0, 105),
    "bright": (0.120, 0.030, 60.0, 101),
    "faint": (0.012, 0.003, 45.0, 103),
}
#: variant name -> PipelineConfig overrides
VARIANTS: dict[str, dict[str, Any]] = {
    "shared": {"ladder_imaging": "shared"},
    "initial": {"ladder_imaging": "initial"},
    "final": {"ladder_imaging": "final"},
    "template": {"ladder_imaging": "template"},
}


def simulate(out: Path, name: str, duration: float) -> Path:
    """The dataset's MS (made once, reused)."""
    from selfcal_batch.simulate import simulate_ms_isolated, spec_from_preset

    point, ext, phase, seed = DATASETS[name]
    ms = out / "data" / f"{name}.ms"
    if not (ms / "table.dat").exists():
        ms.parent.mkdir(parents=True, exist_ok=True)
        spec = spec_from_preset("vla-c", flux_jy=point, extended_flux_jy=ext, phase_rms_deg=phase,
                                phase_timescale_s=300.0, duration_s=duration, seed=seed)
        simulate_ms_isolated(spec, ms)
    return ms


def run_variant(out: Path, ms: Path, name: str, variant: str, threads: int, imsize: int) -> dict[str, Any]:
    """Run the pipeline in a fresh interpreter; return result.json."""
    cfg = dict(VARIANTS[variant], imsize=imsize, plots=False)
    root = out / "runs" / variant
    code = ("import json,sys; from selfcal_batch.config import PipelineConfig; "
            "from selfcal_batch.pipeline import run_dataset; "
            f"r = run_dataset({name!r}, {str(ms)!r}, PipelineConfig.from_dict(json.loads(sys.argv[1])), "
            f"{str(root)!r}, threads={threads}, restart=True); print(r.status, r.error)")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True, cwd=REPO)
    res = json.loads((root / "datasets" / name / "result.json").read_text())
    res["_wall"] = time.monotonic() - t0
    res["_stdout"] = proc.stdout[-300:] + proc.stderr[-300:]
    return res


def phase_error_deg(root: Path, truth: dict[str, Any]) -> float:
    """Residual antenna phase rms of the accepted chain against the truth (spw 0, pol 0)."""
    from casacore.tables import table

    from selfcal_batch.simulate import truth_phase_deg

    state = json.loads((root / "state.json").read_text())
    times = np.asarray(truth["gains"]["times"])
    names = [a["name"] for a in truth["antennas"]]
    total = {n: np.zeros(len(times)) for n in names}
    for entry in state.get("chain") or []:
        with table(entry["table"], ack=False) as t:
            tt, a1, spw = t.getcol("TIME"), t.getcol("ANTENNA1"), t.getcol("SPECTRAL_WINDOW_ID")
            g, fl = t.getcol("CPARAM")[:, 0, 0], t.getcol("FLAG")[:, 0, 0]
        for aid, n in enumerate(names):
            sel = (a1 == aid) & (spw == spw.min()) & ~fl
            if sel.sum() == 0:
                total[n][:] = np.nan
                continue
            order = np.argsort(tt[sel])
            total[n] += np.degrees(np.interp(times, tt[sel][order], np.unwrap(np.angle(g[sel][order]))))
    diff = np.array([np.radians(total[n] - truth_phase_deg(truth, n, spw=0)) for n in names])
    diff = diff[np.all(np.isfinite(diff), axis=1)]
    if diff.size == 0:
        return math.nan
    common = np.angle(np.exp(1j * diff).mean(axis=0))
    resid = np.degrees(np.angle(np.exp(1j * (diff - common))))
    return float(np.sqrt(np.mean(resid ** 2)))


def metrics(out: Path, ms: Path, name: str, variant: str, res: dict[str, Any]) -> dict[str, Any]:
    from selfcal_batch.simulate import load_truth

    truth = load_truth(ms)
    root = out / "runs" / variant / "datasets" / name
    state = json.loads((root / "state.json").read_text())
    thermal = (state.get("msinfo") or {}).get("thermal_noise_jy") or math.nan
    point = DATASETS[name][0]
    return {
        "dataset": name, "variant": variant, "status": res["status"], "error": res.get("error", ""),
        "template": f"{res.get('template_initial')}->{res.get('template_final')}",
        "accepted": ",".join(res.get("steps_accepted") or []),
        "phase_err_deg": round(phase_error_deg(root, truth), 2),
        "peak_ratio": round((res.get("peak_final") or math.nan) / point, 4),
        "dr_final": round(res.get("dr_final") or math.nan, 1),
        "rms_over_thermal": round((res.get("rms_final") or math.nan) / thermal, 3),
        "wsclean_runs": res.get("wsclean_runs"), "wall_s": round(res["_wall"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "bench-out" / "quality")
    p.add_argument("--variants", default="shared,final")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--duration", type=float, default=1200.0)
    p.add_argument("--imsize", type=int, default=256)
    p.add_argument("--parallel", type=int, default=2, help="pipelines at once (1 thread each)")
    a = p.parse_args(argv)
    variants = [v for v in a.variants.split(",") if v]
    names = [n for n in a.datasets.split(",") if n]
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for n in names:
        ms = simulate(out / n, n, a.duration)
        jobs += [(out / n, ms, n, v) for v in variants]
    threads = max(1, 2 // a.parallel)
    with ThreadPoolExecutor(a.parallel) as pool:
        results = list(pool.map(lambda j: metrics(j[0], j[1], j[2], j[3], run_variant(*j, threads, a.imsize)), jobs))
    (out / "quality.json").write_text(json.dumps(results, indent=1))
    cols = ["dataset", "variant", "template", "accepted", "phase_err_deg", "peak_ratio", "dr_final",
            "rms_over_thermal", "wsclean_runs", "wall_s"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols) + (f"  FAILED {r['error']}" if r["status"] != "finished" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
