"""Shared fixtures of the fault tests: session-scoped simulated MSs and pipeline runners.

Every MS is generated once per session (``simulate_ms_isolated``: casatools only in a
child). Pipeline runs that must be killable run in a subprocess (``python -c`` calling
``run_dataset``) in their own session; quick ones run in this process.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from selfcal_batch.ms.checksum import tree_checksums, tree_diff
from selfcal_batch.config import DEFAULT_STEPS

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
_VLA_NAME = "data/day2_TDEM0003_10s_norx_1src_1spw.ms.tar.gz"
#: shared/ sits beside the repository (CI clones it there); /work/shared on a developer machine.
VLA_TARBALL = next((p for p in (Path(__file__).resolve().parents[3] / "shared" / _VLA_NAME,
                                Path("/work/shared") / _VLA_NAME) if p.exists()),
                   Path(__file__).resolve().parents[3] / "shared" / _VLA_NAME)

#: Quick settings used by every run here (imsize 128, no ladder extension, no plots). One
#: thread: two runs share the 2 cores, and WSClean -j 1 is bit-reproducible (-j 2 is not:
#: threaded float32 sums differ by ~1e-8 Jy/pixel between identical runs, measured).
QUICK: dict[str, Any] = {"imsize": 128, "threads": 1, "plots": False, "solint": {"extend_ladder": False}}

#: Runs ``run_dataset`` and prints the result (argv: name ms out config-json).
RUNNER = """
import json, sys
from selfcal_batch.config import PipelineConfig
from selfcal_batch.pipeline.runner import run_dataset
name, ms, out, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
res = run_dataset(name, ms, PipelineConfig.from_dict(cfg), out)
print("RESULT " + json.dumps(res.to_dict()), flush=True)
"""


def quick_config(**over: Any) -> dict[str, Any]:
    """QUICK settings with ``over`` merged in (one level deep for tables)."""
    cfg = json.loads(json.dumps(QUICK))
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def start_pipeline(name: str, ms: Path, out: Path, cfg: dict[str, Any],
                   wrap: list[str] | None = None) -> subprocess.Popen[str]:
    """Start ``run_dataset`` in a child python in a new session (killable as a group);
    ``wrap``: argv that runs the child command given as its trailing arguments."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([*(wrap or []), PY, "-c", RUNNER, name, str(ms), str(out), json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(out.parent),
                            env=env, start_new_session=True)


def finish_pipeline(proc: subprocess.Popen[str], timeout: float = 900) -> dict[str, Any]:
    """Wait for a pipeline child and return its result dict (fails the test if it crashed)."""
    out, err = proc.communicate(timeout=timeout)
    m = re.search(r"^RESULT (.*)$", out, re.M)
    assert m, f"pipeline child exited {proc.returncode} without a result:\n{out[-2000:]}\n{err[-4000:]}"
    return json.loads(m.group(1))


def run_pipeline(name: str, ms: Path, out: Path, cfg: dict[str, Any], timeout: float = 900,
                 wrap: list[str] | None = None) -> dict[str, Any]:
    """Run ``run_dataset`` in a child python to the end."""
    out.mkdir(parents=True, exist_ok=True)
    return finish_pipeline(start_pipeline(name, ms, out, cfg, wrap), timeout)


# -- inspection helpers ----------------------------------------------------------------


def read_state(root: Path) -> dict[str, Any]:
    """state.json of a dataset ({} if absent)."""
    try:
        return json.loads((root / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def wsclean_commands(root: Path) -> int:
    """Number of WSClean command lines (``$ wsclean ...``) in logs/wsclean.log."""
    try:
        text = (root / "logs" / "wsclean.log").read_text()
    except OSError:
        return 0
    return sum(1 for ln in text.splitlines() if ln.startswith("$ ") and "wsclean" in ln.split()[1])


def casa_requests(root: Path) -> list[str]:
    """Names of the CASA request files written so far (one per CASA child)."""
    d = root / "casa_calls"
    return sorted(p.name for p in d.glob("*.json") if not p.name.endswith(".result.json")) if d.exists() else []


def one_line(error: str) -> bool:
    return bool(error) and "\n" not in error and "Traceback" not in error


# -- process-tree kill -------------------------------------------------------------------


def kill_tree(proc: subprocess.Popen[str]) -> list[int]:
    """SIGKILL the pipeline's process group first (so it cannot react), then every
    descendant's own group (WSClean and the CASA child run in their own sessions)."""
    import psutil

    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    killed = [proc.pid]
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for k in kids:
        try:
            os.killpg(os.getpgid(k.pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            k.kill()
        except psutil.NoSuchProcess:
            pass
        killed.append(k.pid)
    proc.communicate(timeout=30)
    psutil.wait_procs(kids, timeout=30)
    return killed


@dataclass
class KillPoint:
    """Where a run was killed and what the interrupted step had done by then."""

    label: str
    step: str
    wsclean_in_attempt: int
    seconds: float
    detail: str = ""


def run_until_killed(name: str, ms: Path, out: Path, cfg: dict[str, Any], label: str,
                     trigger: Callable[[dict[str, Any], list[Any], Path], str | None],
                     timeout: float = 600) -> KillPoint:
    """Start the pipeline, poll state.json and the process tree, SIGKILL when ``trigger``
    returns a description; fails if the run ends before the trigger fires."""
    import psutil

    root = out / "datasets" / name
    t0 = time.monotonic()
    proc = start_pipeline(name, ms, out, cfg)
    parent = psutil.Process(proc.pid)
    try:
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                out_s, err_s = proc.communicate()
                pytest.fail(f"{label}: the run ended before the kill point:\n{out_s[-1500:]}\n{err_s[-1500:]}")
            try:
                kids = parent.children(recursive=True)
            except psutil.NoSuchProcess:
                kids = []
            st = read_state(root)
            why = trigger(st, kids, root)
            if why:
                step = read_state(root).get("current_step", "")
                kill_tree(proc)
                return KillPoint(label, step, _wsclean_lines_in_last_attempt(root), time.monotonic() - t0, why)
            time.sleep(0.03)
        pytest.fail(f"{label}: kill point not reached within {timeout} s")
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    raise AssertionError("unreachable")


def _wsclean_lines_in_last_attempt(root: Path) -> int:
    """WSClean command lines logged since the last 'step X' line of pipeline.log."""
    lines = (root / "logs" / "pipeline.log").read_text().splitlines()
    start = max((i for i, ln in enumerate(lines) if re.search(r": step \S+$", ln)), default=0)
    return sum(1 for ln in lines[start:] if "[wsclean] " in ln)


def cmdline(p: Any) -> list[str]:
    try:
        return p.cmdline()
    except Exception:  # noqa: BLE001  (process gone)
        return []


def casa_child_calls(p: Any) -> list[dict[str, Any]]:
    """The calls in a casa_runner child's request JSON ([] for other processes)."""
    cl = cmdline(p)
    if "selfcal_batch.casa.runner" not in cl:
        return []
    try:
        if "--serve" in cl:  # a dataset's long-lived child: the request it is running now
            req = json.loads((Path(cl[cl.index("--serve") + 1]) / "serving.json").read_text())["request"]
            return json.loads(Path(req).read_text())["calls"]
        return json.loads(Path(cl[-1]).read_text())["calls"]
    except (OSError, ValueError, KeyError, IndexError):
        return []


# -- data ------------------------------------------------------------------------------


@dataclass
class GuardedMS:
    """An input MS with the checksums of all its files taken right after it was made."""

    path: Path
    checksums: dict[str, str] = field(default_factory=dict)

    def changes(self) -> list[str]:
        return tree_diff(self.checksums, tree_checksums(self.path))


class MSFactory:
    """Simulated MSs, each generated once per session."""

    def __init__(self, root: Path):
        self.root = root
        self.cache: dict[str, GuardedMS] = {}
        self.seconds: dict[str, float] = {}

    def get(self, key: str, preset: str = "vla-c", lockless: bool = False, **kw: Any) -> GuardedMS:
        """The MS ``key`` (simulated on first use); ``lockless``: without table.lock files."""
        if key not in self.cache:
            from selfcal_batch.simulate import simulate_ms_isolated, spec_from_preset

            kw.setdefault("duration_s", 600)
            kw.setdefault("seed", 1)
            kw.setdefault("phase_rms_deg", 30)
            flux = kw.pop("flux_jy", 0.1)
            t0 = time.monotonic()
            path = self.root / f"{key}.ms"
            simulate_ms_isolated(spec_from_preset(preset, flux_jy=flux, **kw), path)
            if lockless:
                for lock in path.rglob("table.lock"):
                    lock.unlink()
            self.seconds[key] = time.monotonic() - t0
            self.cache[key] = GuardedMS(path, tree_checksums(path))
        return self.cache[key]

    @staticmethod
    def copy(ms: GuardedMS, dest: Path) -> Path:
        """A private copy of an MS (for tests that damage their input)."""
        shutil.copytree(ms.path, dest, symlinks=True)
        return dest


@pytest.fixture(scope="session")
def ms_factory(tmp_path_factory: pytest.TempPathFactory) -> MSFactory:
    return MSFactory(tmp_path_factory.mktemp("ms"))


@pytest.fixture(scope="session")
def base_ms(ms_factory: MSFactory) -> GuardedMS:
    """The shared 10-minute VLA C-band MS (0.1 Jy, 30 deg phase rms) most tests read.

    It has NO table.lock files (as after copying an MS without them): casacore creates one
    in every table it opens, even read-only, so any open of the input itself shows up as
    an added file in :meth:`GuardedMS.changes` -- the strictest input-integrity check.
    """
    ms = ms_factory.get("base", lockless=True)
    assert not any(k.endswith("table.lock") for k in ms.checksums)
    return ms


@pytest.fixture(scope="session")
def prepared(base_ms: GuardedMS, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset directory of ``base_ms`` with startup done and work.ms kept (copy it)."""
    out = tmp_path_factory.mktemp("prepared")
    res = run_pipeline("prep", base_ms.path, out, quick_config(steps=["startup"], keep_work_ms=True))
    assert res["status"] == "finished", res["error"]
    return out / "datasets" / "prep"


@pytest.fixture(scope="session")
def vla_real_ms(tmp_path_factory: pytest.TempPathFactory) -> GuardedMS:
    """The real VLA Q-band MS, unpacked into a temporary directory (shared copy untouched)."""
    if not VLA_TARBALL.exists():
        pytest.skip(f"real VLA data not available: {VLA_TARBALL}")
    d = tmp_path_factory.mktemp("vla")
    subprocess.run(["tar", "xzf", str(VLA_TARBALL), "-C", str(d)], check=True, capture_output=True)
    ms = next(d.glob("*.ms"))
    return GuardedMS(ms, tree_checksums(ms))


# -- the kill-and-resume chain (shared by test_resume and test_input_untouched) -------------

#: The full default step list, quick settings. threads=1 (QUICK): WSClean -j 1 is
#: bit-reproducible, so a resumed run must give *identical* results. test_imaging='seed' so
#: that final_robust is an input of the final steps only.
CHAIN_CFG = quick_config(steps=list(DEFAULT_STEPS), test_imaging="seed")


def wsclean_named(step: str, suffix: str, min_age: float = 0.3):
    """Trigger: a WSClean child making image ``*suffix`` in ``step``, running >= min_age s."""
    def trig(st: dict[str, Any], kids: list[Any], root: Path) -> str | None:
        if st.get("current_step") != step:
            return None
        for p in kids:
            cl = cmdline(p)
            if cl and os.path.basename(cl[0]) == "wsclean" and "-name" in cl \
                    and cl[cl.index("-name") + 1].endswith(suffix):
                if time.time() - p.create_time() >= min_age:
                    return f"wsclean -name {cl[cl.index('-name') + 1]} (pid {p.pid})"
        return None
    return trig


def casa_task(step: str, task: str, key: str, suffix: str):
    """Trigger: a casa_runner child with a call of ``task`` whose ``kwargs[key]`` ends in
    ``suffix``, once the child has logged that this call started (casa.log); for split also
    once its output directory exists."""
    def trig(st: dict[str, Any], kids: list[Any], root: Path) -> str | None:
        if st.get("current_step") != step:
            return None
        for p in kids:
            calls = casa_child_calls(p) or []
            hits = [(i, c) for i, c in enumerate(calls)
                    if c.get("task") == task and str(c["kwargs"].get(key, "")).endswith(suffix)]
            if not hits:
                continue
            i, call = hits[0]
            target = repr(call["kwargs"][key])
            try:
                log = (root / "logs" / "casa.log").read_text(errors="replace")
            except OSError:
                return None
            if any(f"call {i}: {task}(" in ln and target in ln for ln in log.splitlines()):
                if task != "split" or Path(call["kwargs"]["outputvis"]).exists():
                    return f"casa_runner {task} {key}={call['kwargs'][key]} (pid {p.pid})"
        return None
    return trig


KILLS = [
    ("wsclean", wsclean_named("p0", "p0_post")),
    ("gaincal", casa_task("p1", "gaincal", "caltable", "p1.G")),
    ("split", casa_task("split_calibrated", "split", "outputvis", "final.ms.partial")),
]


@pytest.fixture(scope="session")
def reference_run(base_ms: GuardedMS, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted reference run of CHAIN_CFG, started (not finished) here; it keeps
    work.ms, which is no step's input."""
    out = tmp_path_factory.mktemp("ref")
    return {"out": out, "t0": time.monotonic(),
            "proc": start_pipeline("d", base_ms.path, out, dict(CHAIN_CFG, keep_work_ms=True))}


@pytest.fixture(scope="session")
def kill_chain(base_ms: GuardedMS, reference_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, Any]:
    """The reference run and one run killed three times (SIGKILL of the whole tree: in p0
    while WSClean makes p0_post, in p1 during the gaincal CASA child, in split_trial_1 during
    the split into final.ms.partial), resumed after each kill with the same arguments."""
    ref_out, ref_proc = reference_run["out"], reference_run["proc"]
    t0 = time.monotonic()
    out = tmp_path_factory.mktemp("killed")
    root = out / "datasets" / "d"
    kills: list[KillPoint] = []
    input_changes: list[list[str]] = []
    states: list[dict[str, Any]] = []
    for label, trig in KILLS:
        kills.append(run_until_killed("d", base_ms.path, out, CHAIN_CFG, label, trig))
        input_changes.append(base_ms.changes())
        states.append(read_state(root))
    final = run_pipeline("d", base_ms.path, out, CHAIN_CFG)
    chain_s = time.monotonic() - t0
    ref = finish_pipeline(ref_proc)
    return {"ref": ref, "ref_root": ref_out / "datasets" / "d", "res": final, "root": root, "kills": kills,
            "input_changes": input_changes, "states": states, "chain_s": chain_s,
            "ref_s": ref["wall_s"], "ref_input_changes": base_ms.changes()}


# -- long runs started early --------------------------------------------------------------


@pytest.fixture(scope="session")
def background() -> Any:
    """Two worker threads for long, independent pipeline runs (each a child process)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="faults-bg")
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def variety_jobs(background: Any, ms_factory: MSFactory, vla_real_ms: GuardedMS,
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The data-variety runs (test_data_variety.CASES), submitted to the background pool."""
    from .test_data_variety import CASES, run_case

    out = tmp_path_factory.mktemp("variety")
    # The real-data case first: it is the longest (imsize 256).
    order = ["vla_real"] + [c for c in CASES if c != "vla_real"]
    return {c: background.submit(run_case, c, ms_factory, vla_real_ms, out) for c in order}


@pytest.fixture(scope="session", autouse=True)
def _start_long_runs_early(request: pytest.FixtureRequest) -> None:
    """Start the reference run and the data-variety runs at the beginning of the session
    (when their tests are selected), so they overlap with the other tests."""
    used = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    if "kill_chain" in used:
        request.getfixturevalue("reference_run")
    if "variety" in used:
        request.getfixturevalue("variety_jobs")
