"""Disk left per dataset under each keep_products policy (issue 17: survey-scale storage).

Simulates one VLA C-band dataset (20 min, 2 spw x 4 channels, 80 mJy, 40 deg phase errors),
runs the full default pipeline at the given image size once per policy with real WSClean
and CASA, and reports bytes and FITS files left under <out>/datasets/<name>/.

    .venv/bin/python scripts/bench_disk.py [--imsize 256] [--out bench-out/disk]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tree_size(root: Path) -> tuple[int, int, int]:
    """(bytes, files, FITS files) under ``root`` (links not followed)."""
    total = files = fits = 0
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_symlink():
                continue
            total += p.stat().st_size
            files += 1
            fits += n.endswith(".fits")
    return total, files, fits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imsize", type=int, default=256)
    ap.add_argument("--out", type=Path, default=REPO / "bench-out" / "disk")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "selfcal_batch.cli"]
    ms = a.out / "disk.ms"
    if not ms.exists():
        subprocess.run(exe + ["simulate", "--preset", "vla-c", "--out", str(ms), "--flux", "0.08",
                              "--phase-rms", "40", "--n-spw", "2", "--n-chan", "4"], check=True)
    rows = []
    for policy in ("all", "default"):
        cfg = a.out / f"{policy}.toml"
        cfg.write_text(f'imsize = {a.imsize}\nthreads = 2\nkeep_products = "{policy}"\n')
        out = a.out / f"run-{policy}"
        t0 = time.monotonic()
        subprocess.run(exe + ["run-one", str(ms), "--out", str(out), "--config", str(cfg)], check=True,
                       capture_output=True)
        wall = time.monotonic() - t0
        res = json.loads((out / "datasets" / "disk" / "result.json").read_text())
        size, files, fits = tree_size(out / "datasets" / "disk")
        root = out / "datasets" / "disk"
        parts = {p.name: tree_size(p)[0] if p.is_dir() else p.stat().st_size for p in root.iterdir()}
        rows.append({"policy": policy, "bytes": size, "files": files, "fits": fits, "wall_s": round(wall, 1),
                     "status": res["status"], "dr_final": res.get("dr_final"), "parts": parts})
    ratio = rows[0]["bytes"] / max(1, rows[1]["bytes"])
    print(f"{'policy':8} {'MB':>8} {'files':>6} {'FITS':>5} {'wall s':>7} status    DR final")
    for r in rows:
        print(f"{r['policy']:8} {r['bytes'] / 1e6:8.1f} {r['files']:6d} {r['fits']:5d} {r['wall_s']:7.1f} "
              f"{r['status']:9} {r['dr_final']}")
    print(f"default keeps {ratio:.1f}x less than 'all' at {a.imsize}^2")
    for r in rows:
        big = sorted(r["parts"].items(), key=lambda kv: -kv[1])[:8]
        print(f"{r['policy']:8} " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in big))
    no_ms = [r["bytes"] - r["parts"].get("final.ms", 0) for r in rows]
    print(f"without the final.ms deliverable: {no_ms[0] / 1e6:.1f} -> {no_ms[1] / 1e6:.1f} MB "
          f"({no_ms[0] / max(1, no_ms[1]):.1f}x)")
    (a.out / "bench-disk.json").write_text(json.dumps({"imsize": a.imsize, "rows": rows, "ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
