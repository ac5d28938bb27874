"""Campaign runner on a real Dask LocalCluster: fault isolation with a stand-in task, the CLI
in a subprocess, and the real pipeline on simulated data (moved from tests/test_campaign.py)."""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from selfcal_batch.campaign.run import RunOptions, run_campaign
from selfcal_batch.campaign.lock import LOCK_NAME, CampaignLock
from selfcal_batch.campaign.manifest import load_manifest

STAND_IN = "campaign_helpers:stand_in"


# -- runner mechanics on a real LocalCluster (stand-in task) ---------------------------


def _stand_in_manifest(tmp_path: Path, fake_ms, extra: str = "") -> Path:
    for n in ("ok-1", "ok-2", "fail-1", "raise-1", "kill-once-1", "kill-always-1", "big-1"):
        fake_ms(tmp_path / "data" / f"{n}.ms")
    text = textwrap.dedent("""
        [campaign]
        name = "mech"
        output_dir = "out"
        [cluster]
        workers = 2
        threads_per_dataset = 1
        retries = 1
        dashboard = false
        """) + "".join(f'[[datasets]]\nms = "data/{n}.ms"\n' for n in
                       ("ok-1", "fail-1", "raise-1", "kill-once-1", "kill-always-1", "ok-2")) + textwrap.dedent("""
        [[datasets]]
        name = "big-1"
        ms = "data/big-1.ms"
        threads = 4
        [[datasets]]
        name = "missing"
        ms = "data/missing.ms"
        """) + extra
    p = tmp_path / "mech.toml"
    p.write_text(text)
    return p


def test_fault_isolation_with_stand_in(tmp_path, fake_ms, capsys):
    camp = load_manifest(_stand_in_manifest(tmp_path, fake_ms))
    t0 = time.monotonic()
    outcome = run_campaign(camp, RunOptions(task=STAND_IN, quiet=True))
    elapsed = time.monotonic() - t0
    rows = {r["name"]: r for r in outcome.rows}
    out = tmp_path / "out"
    assert [r["name"] for r in outcome.rows] == ["ok-1", "fail-1", "raise-1", "kill-once-1",
                                                  "kill-always-1", "ok-2", "big-1", "missing"]
    assert rows["ok-1"]["status"] == rows["ok-2"]["status"] == "finished"
    assert rows["fail-1"]["status"] == "failed" and rows["fail-1"]["error"] == "stand-in failure: bad data"
    # an exception: retried (retries=1), then a failed row with a one-line reason + traceback kept
    assert rows["raise-1"]["error"] == "RuntimeError: stand-in crash in raise-1 second line"
    assert len((out / "datasets/raise-1/attempts.log").read_text().splitlines()) == 2
    assert "Traceback" in (out / "datasets/raise-1/logs/campaign-error.log").read_text()
    # a worker killed once is retried and finishes
    # (a finished result still in a dying worker's memory may be recomputed: >= 2 starts)
    assert rows["kill-once-1"]["status"] == "finished"
    assert (out / "datasets/kill-once-1/killed-once").exists()
    assert len((out / "datasets/kill-once-1/attempts.log").read_text().splitlines()) >= 2
    runner_log = (out / "logs/attempts/kill-once-1.log").read_text().splitlines()
    starts = [ln.split()[3] for ln in runner_log if ln.split()[2] == "start"]
    ends = [ln.split()[3] for ln in runner_log if ln.split()[2] == "end"]
    assert len(set(starts) - set(ends)) >= 1  # the killed attempt never ended
    # a worker killed every time: allowed-failures = retries = 1 -> 2 deaths
    assert rows["kill-always-1"]["status"] == "failed"
    assert rows["kill-always-1"]["error"].startswith("worker died 2 times")
    # a claim no worker can meet fails fast instead of hanging
    assert "needs cores=4 but the largest worker of the cluster offers cores=1" in rows["big-1"]["error"]
    assert rows["missing"]["error"].startswith("datasets[7] (name='missing'): ms not found")
    # datasets rejected before they ran (missing MS, unmet claim): exit 2, the others still ran
    assert outcome.n_invalid == 2 and outcome.exit_code == 2
    # the pipeline got threads and a config with the same threads
    assert "threads=1 cfg.threads=1" in (out / "datasets/ok-1/attempts.log").read_text()
    # outputs
    csv_rows = list(csv.DictReader(open(out / "survey" / "datasets.csv")))
    assert [r["name"] for r in csv_rows] == [r["name"] for r in outcome.rows]
    assert csv_rows[0]["steps_run"] == "p0;p1"
    rec = json.loads((out / "campaign.json").read_text())
    assert rec["status"] == "failed" and rec["counts"] == {"finished": 3, "failed": 5, "skipped": 0, "unchanged": 0, "no_detection": 0,
                                                        "needs_calibration": 0, "interrupted": 0, "not_started": 0}
    assert rec["versions"]["selfcal-batch"] and rec["versions"]["dask"] and rec["versions"]["python"]
    assert "casatasks" in rec["versions"] and "wsclean" in rec["versions"]
    assert rec["manifest_resolved"]["datasets"][0]["name"] == "ok-1"
    assert rec["started"] and rec["finished"] and rec["host"] == socket.gethostname()
    assert "local: 2 worker process(es)" in rec["cluster"]["description"]
    assert json.loads((out / "datasets/missing/result.json").read_text())["status"] == "failed"
    log_text = (out / "campaign.log").read_text()
    assert "submitted ok-1" in log_text and "kill-always-1 failed: worker died" in log_text
    assert not (out / LOCK_NAME).exists()
    printed = capsys.readouterr().out
    assert "[1/8]" in printed and "Campaign mech: 3 finished, 5 failed" in printed
    print(f"stand-in campaign: {elapsed:.1f} s")

    # --only re-runs one dataset and keeps the other rows in the survey CSV
    outcome2 = run_campaign(camp, RunOptions(task=STAND_IN, quiet=True, only=("ok-2",), workers=1))
    assert [r["name"] for r in outcome2.rows] == ["ok-2"] and outcome2.exit_code == 0
    csv_rows = list(csv.DictReader(open(out / "survey" / "datasets.csv")))
    assert len(csv_rows) == 8 and {r["name"]: r["status"] for r in csv_rows}["raise-1"] == "failed"


def test_cli_subprocess_exit_code_and_summary(tmp_path, fake_ms, subprocess_env, python_exe):
    for n in ("ok-a", "fail-b"):
        fake_ms(tmp_path / f"{n}.ms")
    (tmp_path / "c.toml").write_text(textwrap.dedent("""
        [campaign]
        output_dir = "out"
        [cluster]
        workers = 1
        threads_per_dataset = 1
        dashboard = false
        [[datasets]]
        ms = "ok-a.ms"
        [[datasets]]
        ms = "fail-b.ms"
        """))
    res = subprocess.run([python_exe, "-m", "selfcal_batch.cli", str(tmp_path / "c.toml"), "--quiet",
                          "--task", STAND_IN], env=subprocess_env, capture_output=True, text=True,
                         timeout=180, cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert "ok-a finished" in res.stdout and "fail-b failed: stand-in failure: bad data" in res.stdout
    assert "Campaign c: 1 finished, 1 failed" in res.stdout
    # a second run while the first holds the lock is refused with exit code 3
    lock = CampaignLock(tmp_path / "out")
    with lock:
        res = subprocess.run([python_exe, "-m", "selfcal_batch.cli", str(tmp_path / "c.toml"), "--quiet",
                              "--task", STAND_IN], env=subprocess_env, capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
    assert res.returncode == 3 and "is in use by pid" in res.stderr


# -- integration: the real pipeline -----------------------------------------------------


def _pipeline_available() -> str:
    try:
        import selfcal_batch.pipeline.runner  # noqa: F401
    except ImportError as exc:
        return f"selfcal_batch.pipeline.runner is not importable yet ({exc})"
    return ""


#: Small but real: 10 min of VLA C-band (B configuration), 1 spw x 4 channels, imsize 128.
INTEGRATION_DEFAULTS = """
[defaults]
instrument = "VLA"
band = "C"
imsize = 128
steps = ["startup", "save_init_flags", "test_image", "select_refant", "p0", "p1", "split_trial_1"]
plots = false
"""


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory):
    """Two simulated MSs (generated once per module) and a corrupt one."""
    if _pipeline_available():
        pytest.skip(_pipeline_available())
    from selfcal_batch.simulate import simulate_ms_isolated, spec_from_preset

    d = tmp_path_factory.mktemp("campaign-data")
    t0 = time.monotonic()
    for name, flux, seed in (("src-a", 0.08, 21), ("src-b", 0.03, 22)):
        spec = spec_from_preset("vla-c", flux_jy=flux, duration_s=600.0, n_spw=1, n_chan=4,
                                phase_rms_deg=40.0, phase_timescale_s=200.0, seed=seed)
        simulate_ms_isolated(spec, d / f"{name}.ms")
    bad = d / "corrupt.ms"
    bad.mkdir()
    (bad / "table.dat").write_bytes(os.urandom(512))
    (bad / "table.f0").write_bytes(b"garbage")
    print(f"simulated data in {time.monotonic() - t0:.1f} s")
    return d


def _integration_manifest(tmp_path: Path, data: Path, datasets=("src-a", "src-b", "corrupt")) -> Path:
    text = textwrap.dedent(f"""
        [campaign]
        name = "integ"
        output_dir = "out"
        {INTEGRATION_DEFAULTS}
        [cluster]
        workers = 2
        threads_per_dataset = 1
        dashboard = false
        """) + "".join(f'[[datasets]]\nname = "{n}"\nms = "{data / n}.ms"\n' for n in datasets)
    p = tmp_path / "integ.toml"
    p.write_text(text)
    return p


def _check_three(out: Path, res: subprocess.CompletedProcess) -> None:
    # corrupt.ms fails the up-front input check: exit 2, the other two still finish
    assert res.returncode == 2, res.stdout + res.stderr
    rows = {r["name"]: r for r in csv.DictReader(open(out / "survey" / "datasets.csv"))}
    assert rows["src-a"]["status"] == "finished", rows["src-a"]["error"]
    assert rows["src-b"]["status"] == "finished", rows["src-b"]["error"]
    assert rows["corrupt"]["status"] == "failed"
    err = rows["corrupt"]["error"]
    assert err and "\n" not in err and len(err) < 600
    assert "Campaign integ: 2 finished, 1 failed" in res.stdout
    assert "corrupt" in res.stdout
    assert (out / "datasets" / "corrupt" / "logs").is_dir()
    assert float(rows["src-a"]["snr_final"]) > 0


@pytest.mark.integration
@pytest.mark.skipif(bool(_pipeline_available()), reason=_pipeline_available() or "ok")
def test_integration_local_cluster(tmp_path, sim_data, subprocess_env, python_exe):
    t0 = time.monotonic()
    res = subprocess.run([python_exe, "-m", "selfcal_batch.cli", str(_integration_manifest(tmp_path, sim_data)),
                          "--quiet"], env=subprocess_env, capture_output=True, text=True, timeout=600)
    print(res.stdout[-3000:], res.stderr[-3000:])
    _check_three(tmp_path / "out", res)
    print(f"local 3-dataset campaign: {time.monotonic() - t0:.1f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
@pytest.mark.skipif(bool(_pipeline_available()), reason=_pipeline_available() or "ok")
def test_integration_scheduler_address(tmp_path, sim_data, subprocess_env, python_exe):
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    dask = str(Path(python_exe).with_name("dask"))
    env = dict(subprocess_env, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="1")
    procs: list[subprocess.Popen] = []
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    t0 = time.monotonic()
    try:
        procs.append(subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                       "--no-dashboard"], env=env, cwd=tmp_path,
                                      stdout=open(logs / "scheduler.log", "w"), stderr=subprocess.STDOUT))
        for i in range(2):
            procs.append(subprocess.Popen([dask, "worker", addr, "--nworkers", "1", "--nthreads", "1",
                                           "--resources", "cores=1", "--no-dashboard", "--host", "127.0.0.1"],
                                          env=env, cwd=tmp_path, stdout=open(logs / f"worker{i}.log", "w"),
                                          stderr=subprocess.STDOUT))
        res = subprocess.run([python_exe, "-m", "selfcal_batch.cli", str(_integration_manifest(tmp_path, sim_data)),
                              "--quiet", "--scheduler-address", addr], env=subprocess_env,
                             capture_output=True, text=True, timeout=600)
        print(res.stdout[-3000:], res.stderr[-3000:])
        _check_three(tmp_path / "out", res)
        rec = json.loads((tmp_path / "out" / "campaign.json").read_text())
        assert rec["cluster"]["kind"] == "address" and rec["cluster"]["address"] == addr
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    print(f"scheduler-address 3-dataset campaign: {time.monotonic() - t0:.1f} s")


def _worker_processes(root_pid: int) -> list:
    import psutil

    out = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.mark.integration
@pytest.mark.skipif(bool(_pipeline_available()), reason=_pipeline_available() or "ok")
def test_integration_worker_killed_mid_dataset(tmp_path, sim_data, subprocess_env, python_exe):
    manifest = _integration_manifest(tmp_path, sim_data, datasets=("src-a",))
    text = manifest.read_text().replace("workers = 2", "workers = 1")
    manifest.write_text(text)
    out = tmp_path / "out"
    state = out / "datasets" / "src-a" / "state.json"
    t0 = time.monotonic()
    proc = subprocess.Popen([python_exe, "-m", "selfcal_batch.cli", str(manifest), "--quiet"],
                            env=subprocess_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                step = json.loads(state.read_text()).get("current_step", "")
            except (OSError, ValueError):
                step = ""
            if step in ("select_refant", "p0", "p1"):
                workers = _worker_processes(proc.pid)
                assert len(workers) == 1, workers
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
                break
            time.sleep(0.2)
        assert killed is not None, "the dataset never reached a calibration step"
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(stdout[-3000:], stderr[-3000:])
    assert proc.returncode == 0, stdout + stderr
    rows = list(csv.DictReader(open(out / "survey" / "datasets.csv")))
    assert rows[0]["status"] == "finished"
    assert "src-a finished" in stdout
    from selfcal_batch.campaign.run import attempts_path

    fields = [ln.split() for ln in attempts_path(out, "src-a").read_text().splitlines()]
    starts = {f[3] for f in fields if f[2] == "start"}
    ends = {f[3] for f in fields if f[2] == "end"}
    assert len(starts) >= 2 and len(starts - ends) == 1  # killed once, then finished
    import psutil

    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    print(f"worker-killed campaign: {time.monotonic() - t0:.1f} s (killed worker pid {killed} at step {step})")


def test_interrupt_silences_dask_teardown(monkeypatch):
    """Ctrl-C inside ``make_client``: the cluster still closes, and the nanny's teardown
    errors (CancelledError tracebacks seen in CI after a group SIGINT) are not logged."""
    import logging

    from selfcal_batch.campaign import cluster as cl
    from selfcal_batch.campaign.manifest import ClusterSpec

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    names = ["distributed", *(n for n in logging.root.manager.loggerDict if n.startswith("distributed."))]
    for n in names:  # restored after the test
        monkeypatch.setattr(logging.getLogger(n), "level", logging.getLogger(n).level)
    spec = cl.resolve_cluster(ClusterSpec(workers=1, threads_per_dataset=1, dashboard=False),
                              default_threads=1, n_datasets=1)
    with pytest.raises(KeyboardInterrupt):
        with cl.make_client(spec) as client:
            assert client.submit(sum, [1, 2]).result() == 3
            raise KeyboardInterrupt
    assert client.status == "closed"
    # the client's own logger carries an explicit level (dask config): it is silenced too
    for n in ("distributed", "distributed.client", "distributed.nanny", "distributed.utils"):
        assert not logging.getLogger(n).isEnabledFor(logging.ERROR), n
