"""Scheduler-side cost of a campaign of many short datasets (issue 17): N no-op dataset
tasks (tests/campaign_helpers.py:noop) through the real campaign layer (manifest, Dask
LocalCluster, throttled dispatch, progress, survey CSV, report) on this machine.

    .venv/bin/python scripts/bench_scheduler.py [--n 1000] [--workers 2] [--out bench-out/sched]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench-out" / "sched")
    a = ap.parse_args(argv)
    shutil.rmtree(a.out, ignore_errors=True)
    data = a.out / "data"
    for i in range(a.n):
        d = data / f"d{i:04d}.ms"
        d.mkdir(parents=True)
        (d / "table.dat").write_bytes(b"stand-in")
    (a.out / "c.toml").write_text(
        f'[campaign]\nname = "sched"\noutput_dir = "out"\n[cluster]\nworkers = {a.workers}\n'
        f'threads_per_dataset = 1\ndashboard = false\n[[datasets]]\nms = "data/*.ms"\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "selfcal_batch.cli", str(a.out / "c.toml"), "--quiet",
                          "--task", "campaign_helpers:noop"], env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        print(res.stdout[-2000:], res.stderr[-2000:])
        return 1
    camp = json.loads((a.out / "out" / "campaign.json").read_text())
    row = {"datasets": a.n, "workers": a.workers, "wall_s": round(wall, 1),
           "campaign_elapsed_s": camp.get("elapsed_s"), "per_task_ms": round(1000 * wall / a.n, 1)}
    print(f"{a.n} no-op datasets on {a.workers} local workers: {wall:.1f} s in all "
          f"({row['per_task_ms']} ms per dataset, start-up and report included)")
    (a.out / "bench-sched.json").write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
