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

    .venv/bin/python scripts/bench_quality.py --variants initial,shared --out bench-out/quality
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

#: name -> (point flux Jy, extended Gaussian flux Jy, phase rms deg, seed[, simulator preset])
DATASETS: dict[str, tuple[Any, ...]] = {
    "std100+30ext": (0.100, 0.030, 60.0, 11),
    "standard_1": (0.028, 0.007, 50.0, 102),
    "standard_2": (0.056, 0.014, 55.0, 105),
    "bright": (0.120, 0.030, 60.0, 101),
    "faint": (0.012, 0.003, 45.0, 103),
    "calm": (0.030, 0.010, 5.0, 201),            # already well calibrated: must not get worse
    "extended_faint": (0.006, 0.010, 30.0, 202),
    "emerlin": (0.050, 0.010, 50.0, 203, "emerlin-c"),
}
#: simulator preset -> pipeline settings
PRESET_CONFIG = {"vla-c": {"instrument": "VLA", "band": "C"}, "emerlin-c": {"instrument": "eMERLIN", "band": "C"}}
#: variant name -> PipelineConfig overrides
VARIANTS: dict[str, dict[str, Any]] = {
    "initial": {"ladder_imaging": "initial"},
    "shared": {"ladder_imaging": "shared"},
    "template": {"ladder_imaging": "template"},
    "no_extension": {"solint": {"extend_ladder": False}},
    # issue 16: the default with the ladder-image economy and the long-lived CASA child off
    "no_economy": {"ladder_economy": False, "casa_persistent": False},
}


def simulate(out: Path, name: str, duration: float) -> Path:
    """The dataset's MS (made once, reused)."""
    from selfcal_batch.simulate import simulate_ms_isolated, spec_from_preset

    point, ext, phase, seed = DATASETS[name][:4]
    ms = out / "data" / f"{name}.ms"
    if not (ms / "table.dat").exists():
        ms.parent.mkdir(parents=True, exist_ok=True)
        spec = spec_from_preset(_preset(name), flux_jy=point, extended_flux_jy=ext, phase_rms_deg=phase,
                                phase_timescale_s=300.0, duration_s=duration, seed=seed)
        simulate_ms_isolated(spec, ms)
    return ms


def _preset(name: str) -> str:
    return DATASETS[name][4] if len(DATASETS[name]) > 4 else "vla-c"


def run_variant(out: Path, ms: Path, name: str, variant: str, threads: int, imsize: int) -> dict[str, Any]:
    """Run the pipeline in a fresh interpreter; return result.json."""
    cfg = dict(VARIANTS[variant], **PRESET_CONFIG[_preset(name)], imsize=imsize, plots=False)
    root = out / "runs" / variant
    code = ("import json,sys; from selfcal_batch.config import PipelineConfig; "
            "from selfcal_batch.pipeline.runner import run_dataset; "
            f"r = run_dataset({name!r}, {str(ms)!r}, PipelineConfig.from_dict(json.loads(sys.argv[1])), "
            f"{str(root)!r}, threads={threads}, restart=True); print(r.status, r.error)")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg)], capture_output=True, text=True, cwd=REPO)
    res = json.loads((root / "datasets" / name / "result.json").read_text())
    res["_wall"] = time.monotonic() - t0
    res["_stdout"] = proc.stdout[-300:] + proc.stderr[-300:]
    return res


def phase_error_deg(root: Path, truth: dict[str, Any], plane: bool = False) -> float:
    """Residual antenna phase rms (deg) of the accepted chain against the truth; ``plane``:
    without the image shift self-calibration cannot determine (see simulate.evaluate)."""
    from selfcal_batch.simulate.evaluate import residual_phase_rms_deg

    state = json.loads((root / "state.json").read_text())
    return residual_phase_rms_deg([c["table"] for c in state.get("chain") or []], truth, plane=plane)[0]


def position_error_arcsec(image: str, truth: dict[str, Any]) -> float:
    """Distance of the final image's peak from the brightest true component."""
    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(image) as hdul:
        data = np.squeeze(hdul[0].data)
        wcs = WCS(hdul[0].header).celestial
    y, x = np.unravel_index(np.nanargmax(data), data.shape)
    got = wcs.pixel_to_world(x, y)
    comp = max(truth["components"], key=lambda c: c["flux_jy"] if c["kind"] == "point" else 0.0)
    want = SkyCoord(comp["ra_deg"], comp["dec_deg"], unit="deg")
    return float(got.separation(want).arcsec)


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
        "phase_err_noshift_deg": round(phase_error_deg(root, truth, plane=True), 2),
        "pos_err_arcsec": round(position_error_arcsec(str(root / "final-image.fits"), truth), 3)
        if (root / "final-image.fits").exists() else math.nan,  # a failed run has no final image
        "peak_ratio": round((res.get("peak_final") or math.nan) / point, 4),
        "dr_final": round(res.get("dr_final") or math.nan, 1),
        "rms_over_thermal": round((res.get("rms_final") or math.nan) / thermal, 3),
        "wsclean_runs": res.get("wsclean_runs"), "wall_s": round(res["_wall"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "bench-out" / "quality")
    p.add_argument("--variants", default="initial,shared")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--duration", type=float, default=1200.0)
    p.add_argument("--imsize", type=int, default=256)
    p.add_argument("--parallel", type=int, default=2, help="pipelines at once (1 thread each)")
    p.add_argument("--report", action="store_true", help="recompute the metrics of existing runs only")
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
    def one(j: tuple[Path, Path, str, str]) -> dict[str, Any]:
        if a.report:
            res = json.loads((j[0] / "runs" / j[3] / "datasets" / j[2] / "result.json").read_text())
            res["_wall"] = res.get("wall_s") or math.nan
        else:
            res = run_variant(*j, threads, a.imsize)
        return metrics(j[0], j[1], j[2], j[3], res)

    with ThreadPoolExecutor(a.parallel) as pool:
        results = list(pool.map(one, jobs))
    (out / "quality.json").write_text(json.dumps(results, indent=1))
    cols = ["dataset", "variant", "template", "accepted", "phase_err_deg", "phase_err_noshift_deg",
            "pos_err_arcsec", "peak_ratio", "dr_final",
            "rms_over_thermal", "wsclean_runs", "wall_s"]
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols) + (f"  FAILED {r['error']}" if r["status"] != "finished" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
