"""Cluster resolution, resource validation and rendered SLURM / PBS job scripts."""
from __future__ import annotations

import dataclasses
import logging

import pytest

from selfcal_batch.campaign import cluster as cl
from selfcal_batch.errors import ConfigError
from selfcal_batch.campaign.manifest import ClusterSpec


@pytest.fixture(autouse=True)
def _no_env_address(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


def test_local_pattern_a(monkeypatch):
    monkeypatch.setattr(cl, "local_cores", lambda: 8)
    s = cl.resolve_cluster(ClusterSpec(), default_threads=2)
    assert (s.kind, s.workers, s.threads_per_dataset) == ("local", 4, 2)
    s = cl.resolve_cluster(ClusterSpec(threads_per_dataset=3), default_threads=2)
    assert (s.workers, s.threads_per_dataset) == (2, 3)
    s = cl.resolve_cluster(ClusterSpec(), default_threads=2, workers=1, threads_per_dataset=8)
    assert (s.workers, s.threads_per_dataset) == (1, 8)
    assert "1 worker process(es) x 8 thread(s), resources cores=8" in cl.describe(s)
    assert "each dataset claims cores=1; WSClean takes the free cores up to -j 8" in cl.describe(s)
    old = dataclasses.replace(s, share_cores=False)
    assert "1 worker process(es) x 1 thread(s), resources cores=8" in cl.describe(old)
    assert "each dataset claims cores=8 (WSClean -j 8)" in cl.describe(old)


def test_dataset_claim_and_worker_threads():
    shared = ClusterSpec(threads_per_dataset=4)
    assert cl.dataset_claim(shared, 4) == 1 and cl.worker_threads(shared) == 4
    whole = dataclasses.replace(shared, share_cores=False)
    assert cl.dataset_claim(whole, 4) == 4 and cl.worker_threads(whole) == 1
    # batch clusters: the capacity counts every job's threads (datasets that run at once)
    batch = dataclasses.replace(shared, kind="slurm", workers=3)
    assert cl.capacity(batch, None) == (4.0, 12)
    assert cl.capacity(dataclasses.replace(batch, share_cores=False), None) == (4.0, 3)


def test_auto_threads_fill_the_cores(monkeypatch):
    assert cl.auto_threads(2, 2, 8) == 1          # queued datasets: one core each
    assert cl.auto_threads(2, 2, 1) == 2          # a single dataset gets the machine
    assert cl.auto_threads(4, 16, 2) == 4         # capped by the threads setting
    assert cl.auto_threads(4, 8, 3) == 2
    monkeypatch.setattr(cl, "local_cores", lambda: 2)
    s = cl.resolve_cluster(ClusterSpec(), default_threads=2, n_datasets=8)
    assert (s.workers, s.threads_per_dataset) == (2, 1)
    s = cl.resolve_cluster(ClusterSpec(), default_threads=2, n_datasets=8, threads_per_dataset=2)
    assert (s.workers, s.threads_per_dataset) == (1, 2)   # explicit choice wins
    s = cl.resolve_cluster(ClusterSpec(kind="slurm", memory="8GiB"), default_threads=2, n_datasets=8)
    assert s.threads_per_dataset == 2                      # batch jobs: the threads setting


def test_local_never_oversubscribes(monkeypatch, caplog):
    monkeypatch.setattr(cl, "local_cores", lambda: 2)
    with caplog.at_level(logging.WARNING):
        s = cl.resolve_cluster(ClusterSpec(workers=4, threads_per_dataset=1), default_threads=2)
    assert s.workers == 2
    assert "exceeds the 2 cores" in caplog.text
    with pytest.raises(ConfigError, match="--workers: must be >= 1"):
        cl.resolve_cluster(ClusterSpec(), default_threads=1, workers=0)


def test_address_precedence(monkeypatch):
    s = cl.resolve_cluster(ClusterSpec(), default_threads=1, scheduler_address="tcp://h:1")
    assert (s.kind, s.address) == ("address", "tcp://h:1")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://env:2")
    s = cl.resolve_cluster(ClusterSpec(), default_threads=1)
    assert (s.kind, s.address) == ("address", "tcp://env:2")
    s = cl.resolve_cluster(ClusterSpec(kind="address", address="tcp://toml:3"), default_threads=1,
                           scheduler_address="tcp://cli:4")
    assert s.address == "tcp://cli:4"
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    with pytest.raises(ConfigError, match="kind = 'address' needs address"):
        cl.resolve_cluster(ClusterSpec(kind="address"), default_threads=1)


def test_batch_default_jobs():
    s = cl.resolve_cluster(ClusterSpec(kind="slurm", memory="8GiB"), default_threads=4, n_datasets=3)
    assert s.workers == 3 and s.threads_per_dataset == 4


def test_check_claims():
    assert cl.check_claims({"a": 2, "b": 4}, 4.0, "x") == {}
    probs = cl.check_claims({"a": 2, "b": 8}, 4.0, "the cluster")
    assert list(probs) == ["b"] and "needs cores=8 but the largest worker of the cluster offers cores=4" in probs["b"]
    probs = cl.check_claims({"a": 1}, None, "tcp://h:1")
    assert "declares the 'cores' resource" in probs["a"]
    s = dataclasses.replace(ClusterSpec(kind="slurm"), threads_per_dataset=8, workers=5)
    assert cl.capacity(s, None) == (8.0, 40)          # 5 jobs x 8 datasets sharing 8 cores
    assert cl.capacity(dataclasses.replace(s, share_cores=False), None) == (8.0, 5)


SLURM = ClusterSpec(
    kind="slurm", workers=4, threads_per_dataset=8, memory="32GiB", queue="compute",
    account="proj42", walltime="06:30:00", job_extra_directives=("--constraint=avx2",),
    prologue=("module load wsclean/3.1", "source /opt/venv/bin/activate"),
)


def test_slurm_job_script():
    script = cl.render_job_script(SLURM)
    lines = script.splitlines()
    assert "#SBATCH --cpus-per-task=8" in lines          # reserved CPUs = threads per dataset
    assert "#SBATCH -n 1" in lines
    assert "#SBATCH --mem=32G" in lines
    assert "#SBATCH -p compute" in lines
    assert "#SBATCH -A proj42" in lines
    assert "#SBATCH -t 06:30:00" in lines
    assert "#SBATCH --constraint=avx2" in lines
    assert "module load wsclean/3.1" in lines
    assert "export OMP_NUM_THREADS=8" in lines
    assert lines.index("module load wsclean/3.1") < lines.index("export OMP_NUM_THREADS=8")
    worker = next(ln for ln in lines if "distributed.cli.dask_worker" in ln)
    assert "--nthreads 8" in worker                      # up to 8 datasets share the job's 8 cores
    assert "--resources cores=8" in worker
    assert "--nworkers" not in worker
    old = cl.render_job_script(dataclasses.replace(SLURM, share_cores=False)).splitlines()
    assert "#SBATCH --cpus-per-task=8" in old
    worker = next(ln for ln in old if "distributed.cli.dask_worker" in ln)
    assert "--nthreads 1" in worker and "--resources cores=8" in worker  # one dataset at a time


def test_pbs_job_script():
    spec = dataclasses.replace(SLURM, kind="pbs", memory="16GiB", job_extra_directives=("-l place=excl",))
    script = cl.render_job_script(spec)
    lines = script.splitlines()
    assert "#PBS -l select=1:ncpus=8:mem=16GB" in lines
    assert "#PBS -q compute" in lines
    assert "#PBS -A proj42" in lines
    assert "#PBS -l walltime=06:30:00" in lines
    assert "#PBS -l place=excl" in lines
    assert "export OMP_NUM_THREADS=8" in lines
    worker = next(ln for ln in lines if "distributed.cli.dask_worker" in ln)
    assert "--nthreads 8" in worker and "--resources cores=8" in worker


def test_job_script_extra_kwargs_and_missing_memory():
    spec = dataclasses.replace(SLURM, kwargs={"worker_extra_args": ["--lifetime", "55m"]})
    worker = next(ln for ln in cl.render_job_script(spec).splitlines() if "dask_worker" in ln)
    assert "--resources cores=8 --lifetime 55m" in worker
    with pytest.raises(ConfigError, match="memory"):
        cl.render_job_script(dataclasses.replace(SLURM, memory=""))


def test_dry_run_shows_job_script(tmp_path, tiny_ms):
    from selfcal_batch.campaign.run import RunOptions, plan_text
    from selfcal_batch.campaign.manifest import load_manifest

    tiny_ms(tmp_path / "x.ms")
    p = tmp_path / "c.toml"
    p.write_text('[cluster]\nkind = "pbs"\nmemory = "16GiB"\nthreads_per_dataset = 4\nqueue = "q1"\n'
                 '[[datasets]]\nms = "x.ms"\n')
    text, invalid = plan_text(load_manifest(p), RunOptions())
    assert invalid == 0
    assert "pbs: 1 job(s), each 1 worker x 4 thread(s) with 4 reserved CPUs" in text
    assert "#PBS -l select=1:ncpus=4:mem=16GB" in text and "export OMP_NUM_THREADS=4" in text


def test_deployments_doc_mentions_every_kind():
    for word in ("LocalCluster", "--scheduler-address", "DASK_SCHEDULER_ADDRESS", "SLURM", "PBS",
                 "threads_per_dataset", "OMP_NUM_THREADS"):
        assert word in cl.DEPLOYMENTS_MD
