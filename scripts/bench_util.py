#!/usr/bin/env python
"""CPU utilisation of a 4-dataset campaign (issue 16): 2 workers x 1 core and 1 worker x 2 cores.

Four generated datasets of the benchmark (scripts/benchlib: faint, standard_1, standard_2,
bright; 20-min VLA C tracks, 2 spw x 4 channels) run as two campaigns through the CLI while
``benchlib.machinery.Sampler`` samples every second. Reported per campaign, over the time
datasets were running and while some were still queued (``queued``): the campaign's own
process tree's CPU seconds as % of all cores (``tree``), the system-wide busy % (``sys``,
includes other users of the machine), the campaign's runnable threads capped at the core count
(``demand``: what it asked for, independent of others' load), wall, and the load average.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_util.py [--imsize 256] [--out bench-out/util]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

DATASETS = ("faint", "standard_1", "standard_2", "bright")
KEYS = ("wall_s", "span_s", "cpu_tree_queued_pct", "cpu_tree_all_pct", "cpu_sys_queued_pct", "cpu_sys_all_pct",
        "cpu_demand_queued_pct", "cpu_demand_all_pct", "load1_mean", "load_start", "load_end", "n_finished")


def main(argv: list[str] | None = None) -> int:
    from benchlib import campaigns
    from benchlib.common import TEMPLATE_SETS
    from benchlib.machinery import Bench, ensure_ms, sim_spec

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "bench-out" / "util"))
    p.add_argument("--imsize", type=int, default=256)
    p.add_argument("--duration", type=float, default=1200.0)
    p.add_argument("--n-chan", type=int, default=4)
    p.add_argument("--layouts", default="2x1,1x2", help="workers x cores per dataset, comma list")
    a = p.parse_args(argv)
    a.quick, a.json = False, str(Path(a.out) / "util.json")
    campaigns.VENV_BIN = Path(sys.executable).parent  # the venv this script runs in
    bench = Bench(a)
    sets = [s for s in TEMPLATE_SETS if s[0] in DATASETS]
    datasets = [(nm, ensure_ms(bench, nm, sim_spec(nm, f, ph, sd, a)), {}) for nm, f, ph, sd in sets]
    out = {}
    for layout in a.layouts.split(","):
        w, t = (int(x) for x in layout.split("x"))
        res = campaigns.run_campaign(bench, layout, datasets, {"imsize": a.imsize, "plots": False}, w, t)
        out[layout] = {k: res.get(k) for k in KEYS}
        out[layout]["datasets"] = [{k: r.get(k) for k in ("name", "status", "wall_s", "wsclean_runs")}
                                   for r in res["datasets"]]
        print(json.dumps({layout: out[layout]}, default=str), flush=True)
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
