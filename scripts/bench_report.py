"""Report building at survey scale (issue 17): time and peak memory of
``selfcal-batch report`` on 100 and 1000 synthetic finished datasets cloned from a real
campaign output (tests/survey_clone.py), plus the summary page's size.

    .venv/bin/python scripts/bench_report.py SRC_OUT [--sizes 100 1000] [--out bench-out/report]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from survey_clone import clone  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="a finished campaign (or run-one) output directory")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--out", type=Path, default=REPO / "bench-out" / "report")
    a = ap.parse_args(argv)
    rows = []
    for n in a.sizes:
        dest = a.out / f"x{n}"
        shutil.rmtree(dest, ignore_errors=True)
        clone(a.src, n, dest)
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "selfcal_batch.cli", "report", str(dest)], check=True,
                       capture_output=True)
        wall = time.monotonic() - t0
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        page = dest / "survey" / "report.html"
        rows.append({"datasets": n, "wall_s": round(wall, 1), "peak_rss_mb_max_so_far": round(rss_mb),
                     "summary_kb": round(page.stat().st_size / 1024)})
        print(f"{n:5d} datasets: report {wall:6.1f} s, peak RSS <= {rss_mb:6.0f} MB, summary page "
              f"{page.stat().st_size / 1024:.0f} kB")
    (a.out / "bench-report.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
