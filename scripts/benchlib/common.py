"""Constants of the benchmark: data sets, seed reference numbers, paths."""
from __future__ import annotations

from pathlib import Path



REPO = Path(__file__).resolve().parents[2]
#: The benchmark's entry point (children re-run it with --_run-one).
SCRIPT = REPO / "scripts" / "bench_selfcal.py"
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
