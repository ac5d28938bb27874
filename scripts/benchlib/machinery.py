"""Measurement machinery: pinned code versions, the Bench record, simulated inputs, per-dataset extras and the resource sampler."""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from benchlib.common import EXTENDED_FRACTION, REPO
from benchlib.report import _n, evaluate_targets, pct, write_json


#: Set by main(): the directory holding the benchmarked ``selfcal_batch`` and its version label.
CODE: dict[str, str] = {"dir": str(REPO), "version": ""}


def pin_code(out: Path, rev: str) -> tuple[Path, str]:
    """Export ``selfcal_batch/`` at git ``rev`` to OUT/code/<sha>/ (the repository changes under us)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True, text=True,
                         check=True).stdout.strip()
    dest = out / "code" / sha
    if not (dest / "selfcal_batch" / "__init__.py").exists():
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "selfcal_batch"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest, sha


def child_env() -> dict[str, str]:
    """Environment for every child (campaign CLI, Dask workers, pipeline runs, CASA children)."""
    env = dict(os.environ)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    parts = [CODE["dir"]] + [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x and x != CODE["dir"]]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


def code_version() -> str:
    """The pinned commit, or short HEAD plus a digest of uncommitted changes under selfcal_batch/."""
    if CODE["version"]:
        return CODE["version"]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout

    head = git("rev-parse", "--short", "HEAD").strip()
    status = git("status", "--porcelain", "--", "selfcal_batch")
    if not status.strip():
        return head
    diff = git("diff", "HEAD", "--", "selfcal_batch") + status
    return f"{head}+dirty:{hashlib.sha256(diff.encode()).hexdigest()[:8]}"


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


class Bench:
    """Holds the results dict, the output paths and the load log; saves after each section."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = Path(args.out).resolve()
        self.data = self.out / "data"
        self.json_path = Path(args.json).resolve() if args.json else self.out / (
            "bench-quick.json" if args.quick else "bench.json")
        self.res: dict[str, Any] = {"meta": {}}

    def load(self, label: str) -> tuple[float, float, float]:
        la = os.getloadavg()
        self.res["meta"].setdefault("load_samples", []).append({"at": label, "time": now_iso(), "load": list(la)})
        return la

    def save(self) -> None:
        self.res["targets"] = evaluate_targets(self.res)
        write_json(self.res, self.json_path)


def sim_spec(name: str, flux: float, phase: float, seed: int, args: argparse.Namespace, **over: Any) -> Any:
    from selfcal_batch.simulate import spec_from_preset

    kw: dict[str, Any] = dict(phase_rms_deg=phase, phase_timescale_s=300.0, duration_s=float(args.duration),
                              n_chan=args.n_chan, n_spw=2, integration_s=10.0, seed=seed)
    kw.update(over)
    return spec_from_preset("vla-c", flux_jy=(1 - EXTENDED_FRACTION) * flux,
                            extended_flux_jy=EXTENDED_FRACTION * flux, **kw)


def ensure_ms(bench: Bench, name: str, spec: Any) -> Path:
    """Generate (or reuse from bench-out/data/) the MS for ``spec``."""
    from selfcal_batch.simulate import simulate_ms_isolated

    h = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:10]
    ms = bench.data / f"{name}-{h}.ms"
    if not (ms / "table.dat").exists():
        bench.data.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(ms, ignore_errors=True)
        t0 = time.monotonic()
        simulate_ms_isolated(spec, ms)
        print(f"  generated {ms.name} in {time.monotonic() - t0:.1f} s", flush=True)
    return ms


def n_visibilities(spec: Any) -> int:
    n_ant = len(spec.antennas())
    return (n_ant * (n_ant - 1) // 2 * spec.n_integrations_per_scan * spec.n_scans * spec.n_spw * spec.n_chan
            * len(spec.corr_list))


def dataset_extras(root: Path) -> dict[str, Any]:
    """Counts and sub-timings from a dataset's logs and state.json."""
    out: dict[str, Any] = {}
    logs = root / "logs"
    try:
        text = (logs / "casa-child.log").read_text(errors="replace")
        out["casa_starts"] = sum(1 for ln in text.splitlines() if ln.startswith("$ "))
    except OSError:
        pass
    try:
        text = (logs / "casa.log").read_text(errors="replace")
        out["gaincal_calls"] = len(re.findall(r"selfcal-batch call \d+: gaincal\(", text))
    except OSError:
        pass
    try:
        text = (logs / "wsclean.log").read_text(errors="replace")
        secs = [float(x) for x in re.findall(r"^# wsclean: exit 0 after ([\d.]+) s", text, re.M)]
        out["wsclean_run_s"] = secs
        out["wsclean_images"] = [m.group(1).rsplit("/", 1)[-1] + (" (predict)" if m.group(2) else "")
                                 for m in re.finditer(r"^\$ \S*wsclean -name (\S+)( -predict)?", text, re.M)]
    except OSError:
        pass
    try:
        st = json.loads((root / "state.json").read_text())
        steps = st.get("steps", {})
        out["step_s"] = {k: v.get("seconds") for k, v in steps.items() if isinstance(v, dict)}
        out["plots_s"] = (steps.get("report_results") or {}).get("seconds")
        out["cell"] = st.get("cell")
        out["msinfo_spws"] = (st.get("msinfo") or {}).get("spws")
        out["integration_s"] = (st.get("msinfo") or {}).get("integration_s")
        out["nrows"] = (st.get("msinfo") or {}).get("nrows")
    except (OSError, ValueError):
        pass
    return out


def row_from_result(res: dict[str, Any], root: Path) -> dict[str, Any]:
    r = {k: res.get(k) for k in ("name", "status", "error", "template_initial", "template_final", "wall_s",
                                 "time_wsclean_s", "time_casa_s", "time_python_s", "wsclean_runs",
                                 "wsclean_predicts", "dr_initial",
                                 "dr_final", "snr_initial", "snr_final", "peak_final", "steps_run",
                                 "steps_accepted", "steps_reverted")}
    for k in ("wall_s", "time_wsclean_s", "time_casa_s", "time_python_s", "dr_initial", "dr_final",
              "snr_initial", "snr_final", "peak_final"):
        r[k] = _n(r[k])
    r["wsclean_runs"] = int(_n(r["wsclean_runs"])) if not math.isnan(_n(r["wsclean_runs"])) else None
    for k in ("steps_run", "steps_accepted", "steps_reverted"):
        if isinstance(r[k], str):
            r[k] = [s for s in r[k].split(";") if s]
    r.update(dataset_extras(root))
    r["wsclean_pct"] = pct(r["time_wsclean_s"], r["wall_s"])
    r["casa_pct"] = pct(r["time_casa_s"], r["wall_s"])
    r["python_pct"] = pct(r["time_python_s"], r["wall_s"])
    r["peak_mjy"] = 1000 * r["peak_final"] if not math.isnan(r["peak_final"]) else math.nan
    return r


# -------------------------------------------------------------------------- sampling

def _hwm_kb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _runnable_threads(pid: int) -> int:
    """Threads of ``pid`` in state R (running or waiting for a CPU) right now."""
    n = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as fh:
                    if fh.read().rpartition(")")[2].split()[0] == "R":
                        n += 1
            except (OSError, IndexError):
                continue
    except OSError:
        pass
    return n


class Sampler(threading.Thread):
    """Every second: system CPU % (psutil.cpu_percent(interval=1)), load, and for the process
    tree under ``root_pid``: total CPU seconds and RSS of Dask workers and their children."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[dict[str, Any]] = []
        self.root_pid: int | None = None
        self.stop_event = threading.Event()
        self.mem: dict[int, dict[str, float]] = {}
        self._cmd: dict[int, str] = {}

    def run(self) -> None:
        import psutil

        psutil.cpu_percent(None)
        while not self.stop_event.is_set():
            cpu = psutil.cpu_percent(interval=1.0)
            s: dict[str, Any] = {"t": time.time(), "cpu": cpu, "load1": os.getloadavg()[0]}
            if self.root_pid:
                try:
                    s["tree_cpu_s"], runnable = self._tree(psutil)
                    ncores = os.cpu_count() or 1
                    s["runnable"] = runnable
                    s["demand_pct"] = 100.0 * min(runnable, ncores) / ncores
                except psutil.Error:
                    pass
            self.samples.append(s)

    def _cmdline(self, p: Any) -> str:
        if p.pid not in self._cmd:
            try:
                self._cmd[p.pid] = " ".join(p.cmdline())
            except Exception:  # noqa: BLE001 - process gone
                self._cmd[p.pid] = ""
        return self._cmd[p.pid]

    def _tree(self, psutil: Any) -> tuple[float, int]:
        """(CPU seconds of the tree incl. reaped children, threads running or runnable now)."""
        root = psutil.Process(self.root_pid)
        procs = [root] + root.children(recursive=True)
        total = 0.0
        runnable = 0
        for p in procs:
            try:
                ct = p.cpu_times()
                total += ct.user + ct.system + ct.children_user + ct.children_system
            except psutil.Error:
                continue
            runnable += _runnable_threads(p.pid)
        for w in (p for p in procs if "spawn_main" in self._cmdline(p)):
            try:
                if w.ppid() != root.pid:
                    continue
                rec = self.mem.setdefault(w.pid, {"peak_rss_mb": 0.0, "peak_children_mb": 0.0,
                                                  "peak_wsclean_mb": 0.0, "peak_casa_mb": 0.0,
                                                  "peak_total_mb": 0.0})
                rss = max(w.memory_info().rss / 2**20, _hwm_kb(w.pid) / 1024)
                rec["peak_rss_mb"] = max(rec["peak_rss_mb"], rss)
                kids_sum = 0.0
                for k in w.children(recursive=True):
                    try:
                        krss = k.memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    kids_sum += krss
                    cmd = self._cmdline(k)
                    cat = "wsclean" if "wsclean" in cmd.split(" ")[0] else "casa" if "casa_runner" in cmd else ""
                    if cat:
                        key = f"peak_{cat}_mb"
                        rec[key] = max(rec[key], krss, _hwm_kb(k.pid) / 1024)
                rec["peak_children_mb"] = max(rec["peak_children_mb"], kids_sum)
                rec["peak_total_mb"] = max(rec["peak_total_mb"], kids_sum + w.memory_info().rss / 2**20)
            except psutil.Error:
                continue
        return total, runnable

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)
