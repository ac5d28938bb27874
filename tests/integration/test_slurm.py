"""A real single-node SLURM, started by the test: a 2-dataset campaign with kind = "slurm"
gives the same results as kind = "local", and survives every batch job being cancelled
mid-run (what a walltime expiry or node loss does): replacements are submitted and both
datasets finish. Skips with the reason where SLURM cannot be started (not root, no apt)."""
from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from mini_slurm import MiniSlurm, SlurmUnavailable

pytestmark = pytest.mark.integration

DEFAULTS = """
[defaults]
instrument = "VLA"
band = "C"
imsize = 128
threads = 1
plots = false
steps = ["startup", "save_init_flags", "test_image", "select_refant", "p0", "p1", "split_trial_1"]
solint = { extend_ladder = false }
"""
COMPARED = ("status", "template_initial", "template_final", "steps_run", "steps_accepted", "steps_reverted")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory):
    try:
        s = MiniSlurm(tmp_path_factory.mktemp("slurm")).start()
    except SlurmUnavailable as exc:
        pytest.skip(f"no test SLURM: {exc}")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from selfcal_batch.simulate import simulate_ms_isolated, spec_from_preset

    d = tmp_path_factory.mktemp("slurm-data")
    for name, flux, seed in (("a", 0.08, 31), ("b", 0.04, 32)):
        simulate_ms_isolated(spec_from_preset("vla-c", flux_jy=flux, duration_s=600.0, n_spw=1, n_chan=4,
                                              phase_rms_deg=40.0, phase_timescale_s=200.0, seed=seed),
                             d / f"{name}.ms")
    return d


def _manifest(tmp: Path, data: Path, cluster: str) -> Path:
    p = tmp / "c.toml"
    p.write_text(textwrap.dedent(f"""
        [campaign]
        name = "slurm-test"
        output_dir = "out"
        {DEFAULTS}
        [cluster]
        {cluster}
        threads_per_dataset = 1
        dashboard = false
        """) + "".join(f'[[datasets]]\nname = "{n}"\nms = "{data / n}.ms"\n' for n in ("a", "b")))
    return p


def _results(out: Path) -> dict[str, dict]:
    return {n: json.loads((out / "datasets" / n / "result.json").read_text()) for n in ("a", "b")}


def _step(out: Path, name: str) -> str:
    try:
        return json.loads((out / "datasets" / name / "state.json").read_text()).get("current_step") or ""
    except (OSError, json.JSONDecodeError):
        return ""


def test_slurm_campaign_equals_local_and_survives_losing_every_job(
        slurm: MiniSlurm, two_datasets: Path, tmp_path: Path, subprocess_env: dict, python_exe: str) -> None:
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    res = subprocess.run([python_exe, "-m", "selfcal_batch.cli",
                          str(_manifest(local_dir, two_datasets, 'kind = "local"\nworkers = 2')), "--quiet"],
                         env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    local = _results(local_dir / "out")

    sl_dir = tmp_path / "slurm"
    sl_dir.mkdir()
    manifest = _manifest(sl_dir, two_datasets, 'kind = "slurm"\nworkers = 2\nmemory = "2GiB"\n'
                                                'walltime = "00:30:00"\nno_worker_timeout_s = 300')
    env = dict(subprocess_env, **slurm.env)
    proc = subprocess.Popen([python_exe, "-m", "selfcal_batch.cli", str(manifest), "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = sl_dir / "out"
    t0 = time.monotonic()
    # Wait until both datasets are past startup on their batch jobs, then cancel every job.
    while not all(_step(out, n) not in ("", "startup", "save_init_flags") for n in ("a", "b")):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() - t0 < 400, "datasets did not start on the SLURM jobs"
        time.sleep(0.5)
    first_jobs = slurm.job_ids()
    assert len(first_jobs) == 2
    cancelled = slurm.cancel_all()
    t_cancel = time.monotonic()
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    log = (out / "logs" / "campaign.log").read_text() if (out / "logs" / "campaign.log").exists() else stderr
    assert "replacement job(s)" in log + stderr + stdout
    # Replacement jobs have new ids (SLURM numbers jobs upwards).
    job_outputs = sorted((out / "dask-jobs").glob("*.err")) + sorted((out / "dask-jobs").glob("*.out"))
    ids = {p.stem.rsplit("-", 1)[-1] for p in job_outputs}
    assert ids - set(cancelled), f"no replacement job ran: {sorted(ids)} vs cancelled {cancelled}"
    slurm_res = _results(out)
    for n in ("a", "b"):
        assert slurm_res[n]["status"] == "finished", slurm_res[n]["error"]
        for k in COMPARED:
            assert slurm_res[n][k] == local[n][k], (n, k, slurm_res[n][k], local[n][k])
        for k in ("snr_final", "dr_final", "peak_final"):
            assert slurm_res[n][k] == pytest.approx(local[n][k], rel=1e-4), (n, k)
    print(f"slurm: jobs {first_jobs} cancelled at {t_cancel - t0:.0f} s; campaign finished "
          f"{time.monotonic() - t_cancel:.0f} s later; job outputs {sorted(ids)}")
