"""Dask deployments for a campaign: local processes, an existing scheduler, SLURM, PBS.

Topology: every worker *process* declares the abstract resource ``cores = C``. With
``[cluster] share_cores`` (default) it has C Dask threads and every dataset task claims
``{"cores": 1}``, so up to C datasets run in it at once and their WSClean and CASA runs
share the C cores phase by phase through the worker's :mod:`selfcal_batch.corepool`
(WSClean: the free cores up to ``threads_per_dataset``; a CASA request: 1 core). Without it
(engineering notes 2.1, "Pattern A") a worker has 1 Dask thread, every dataset claims
``{"cores": C}`` and runs WSClean with ``-j C``. Locally ``n_workers = floor(cores / C)``
so workers x C never oversubscribes the machine. The pipeline itself only waits on child
processes (WSClean, the CASA child), so CASA never shares a process with another dataset.

See :data:`DEPLOYMENTS_MD` for the user-facing description of each deployment.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from selfcal_batch.errors import ConfigError, SelfcalBatchError
from selfcal_batch.campaign_config import ClusterSpec

log = logging.getLogger(__name__)
ENV_ADDRESS = "DASK_SCHEDULER_ADDRESS"
RESOURCE = "cores"
_MAX_DEFAULT_JOBS = 64

DEPLOYMENTS_MD = """\
## Deployments

Each dataset is one Dask task that runs in a worker *process*. Workers declare the resource
`cores=C`, where `C` is `[cluster] threads_per_dataset` (or `--threads-per-dataset`;
default locally: 1 when there are at least as many datasets as cores, else
`cores / datasets` up to the `threads` pipeline setting, which is the default elsewhere).

**Shared cores (default, `[cluster] share_cores = true`).** A worker with `cores=C` runs up
to C datasets at once (C Dask threads; each dataset claims `cores=1` in Dask). Inside the
worker process one core pool hands out the C cores per phase: a WSClean run takes the free
cores up to the dataset's threads (at least 1, waiting while none is free) and gets exactly
that many as `-j` and `OMP_NUM_THREADS`; a CASA request (gaincal, applycal, split, flagging,
statwt...) takes 1 core while it runs, and an idle CASA child holds none. So while one
dataset is in single-threaded CASA, another's WSClean uses the other cores, and the cores in
use never exceed C. Every WSClean/CASA command line in `pipeline.log` ends with
`# cores N of the worker's pool` and `logs/tools.jsonl` records `cores`, `start` and
`core_wait_s` per run. **Memory:** up to C datasets' working copies (and WSClean runs) are in
flight per worker instead of one; with `memory` set, that limit covers them all. Set
`share_cores = false` for the previous behaviour: one dataset per worker at a time, claiming
`cores=C` (WSClean `-j C`). A worker that declares no `cores` resource gives every WSClean
run the dataset's threads, as before.

Before submitting, the campaign checks that some worker can satisfy every claim (a claim
no worker can meet would wait forever in Dask); a dataset that cannot be placed is
reported failed.

**Local (default).** `[cluster] kind = "local"`: a `LocalCluster` of
`workers = floor(cores / C)` processes x C threads (1 without `share_cores`) on this machine
(`selfcal-batch campaign.toml --workers 2 --threads-per-dataset 1`).
More workers than the cores allow are capped, with a warning.

**Existing scheduler.** `--scheduler-address tcp://host:8786`, or the environment variable
`DASK_SCHEDULER_ADDRESS`, or `[cluster] kind = "address"` + `address = "tcp://host:8786"`
(first match wins, in that order). Start workers that declare the resource, e.g.
`dask worker tcp://host:8786 --nworkers 4 --nthreads 8 --resources cores=8` (with
`share_cores`, `--nthreads` = cores; `--nthreads 1` runs one dataset at a time). A worker
with several threads runs several datasets at once, sharing its cores as above
(without `share_cores`, `--nthreads 4 --resources cores=8` runs up to 4 datasets of 2
cores): each keeps its own `pipeline.log` and its own tool times
(`logs/tools.jsonl`, one line per WSClean/CASA run). The number
of worker deaths a dataset survives is the *scheduler's* `allowed-failures` setting here
(start it with `DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=1`).

**SLURM / PBS.** `[cluster] kind = "slurm"` or `"pbs"` uses dask-jobqueue: one batch job
per worker, each with C Dask threads (1 without `share_cores`) and `C` reserved CPUs (`#SBATCH --cpus-per-task=C` /
`#PBS -l select=1:ncpus=C:mem=...`), `--resources cores=C`, and a prologue that exports
`OMP_NUM_THREADS=C` after your own `prologue` lines (module load, venv activation).
`workers` is the number of jobs (`cluster.scale(jobs=N)`); set `memory`, `walltime`,
`queue`, `account` and `job_extra_directives`; anything else goes in `[cluster.kwargs]`
(passed to `SLURMCluster`/`PBSCluster`) or in your site's `~/.config/dask/jobqueue.yaml`.
The campaign process hosts the scheduler, so run it on a login node (in `tmux`/`screen`) or
inside a small long-running job. `selfcal-batch campaign.toml --dry-run` prints the job
script. Jobs that end while datasets are pending (walltime, `scancel`, node loss) are
replaced, up to `max_job_replacements` over the campaign (0 = 2 x workers + 2, so a job
that dies at start is not resubmitted forever); when no worker has been connected for
`no_worker_timeout_s` (default 900) the remaining datasets fail with one line saying so
(this also applies to an existing scheduler whose workers are gone).

Worker deaths (OOM kill, node failure) are retried `[cluster] retries` times (default 1);
after that the dataset is reported failed with "worker died N times (...)" and every other
dataset still finishes. With shared cores a worker death while several datasets ran in it
is not counted against any of them (it cannot be told whose it was): they are resubmitted to
run alone on a worker, where a further death is their own. Finished pipeline steps are resumed, so re-running a campaign only
redoes what failed.
"""


@dataclass(frozen=True)
class WorkerSlot:
    """What one connected worker offers."""

    address: str
    nthreads: int
    cores: float | None


def local_cores() -> int:
    """CPU cores this process may use (affinity-aware, e.g. inside a SLURM allocation)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def dashboard_available() -> bool:
    """The Dask dashboard needs bokeh."""
    return importlib.util.find_spec("bokeh") is not None


def auto_threads(max_threads: int, cores: int, n_datasets: int) -> int:
    """Cores per dataset when none is set: with more datasets than cores, one each.

    CASA's solvers are single-threaded (about half a dataset's time), so one dataset per
    core keeps every core busy while datasets are queued (measured on 2 cores, 8 datasets:
    2 workers x 1 core: 99.8% CPU, 51 datasets/h; 1 worker x 2 cores: 64%, 31 datasets/h).
    Fewer datasets than cores share the cores out, up to ``max_threads`` each.
    """
    return max(1, min(max_threads, cores // max(1, min(n_datasets, cores))))


def dataset_claim(spec: ClusterSpec, threads: int) -> int:
    """The Dask ``cores`` claim of a dataset task with ``threads`` threads: 1 when the
    worker's cores are shared phase by phase (``share_cores``), else ``threads``."""
    return 1 if spec.share_cores else max(1, int(threads))


def worker_threads(spec: ClusterSpec) -> int:
    """Dask threads per worker: one per core when datasets share the cores, else 1."""
    return max(1, spec.threads_per_dataset) if spec.share_cores else 1


def resolve_cluster(spec: ClusterSpec, *, default_threads: int, workers: int | None = None,
                    threads_per_dataset: int | None = None, scheduler_address: str | None = None,
                    n_datasets: int = 1) -> ClusterSpec:
    """Apply CLI / environment overrides and fill automatic values.

    Precedence for the scheduler: ``--scheduler-address`` > ``$DASK_SCHEDULER_ADDRESS`` >
    ``[cluster] kind = "address"``.
    """
    kw: dict[str, Any] = {}
    env_addr = os.environ.get(ENV_ADDRESS, "").strip()
    if scheduler_address:
        kw.update(kind="address", address=scheduler_address)
    elif env_addr and spec.kind in ("local", "address"):
        kw.update(kind="address", address=env_addr)
        log.info("using the scheduler in $%s: %s", ENV_ADDRESS, env_addr)
    if workers is not None:
        if workers < 1:
            raise ConfigError(f"--workers: must be >= 1, got {workers}")
        kw["workers"] = workers
    if threads_per_dataset is not None:
        if threads_per_dataset < 1:
            raise ConfigError(f"--threads-per-dataset: must be >= 1, got {threads_per_dataset}")
        kw["threads_per_dataset"] = threads_per_dataset
    out = dataclasses.replace(spec, **kw)
    if out.threads_per_dataset <= 0:
        c = max(1, default_threads)
        if out.kind == "local":
            c = auto_threads(c, local_cores(), out.workers or n_datasets)
        out = dataclasses.replace(out, threads_per_dataset=c)
    if out.kind == "address" and not out.address:
        raise ConfigError("cluster.address: kind = 'address' needs address = 'tcp://host:port' "
                          "(or --scheduler-address, or $DASK_SCHEDULER_ADDRESS)")
    c = out.threads_per_dataset
    if out.kind == "local":
        cores = local_cores()
        fit = max(1, cores // c)
        n = out.workers or fit
        if n > fit:
            log.warning("cluster: %d workers x %d cores per dataset exceeds the %d cores of this "
                        "machine; using %d workers", n, c, cores, fit)
            n = fit
        if c > cores:
            log.warning("cluster: threads_per_dataset = %d exceeds the %d cores of this machine", c, cores)
        out = dataclasses.replace(out, workers=n)
    elif out.kind in ("slurm", "pbs") and out.workers <= 0:
        out = dataclasses.replace(out, workers=max(1, min(n_datasets, _MAX_DEFAULT_JOBS)))
    out.validate()
    return out


def describe(spec: ClusterSpec) -> str:
    """One line: what will run where."""
    c, k, t = spec.threads_per_dataset, dataset_claim(spec, spec.threads_per_dataset), worker_threads(spec)
    how = (f"each dataset claims cores={k}; WSClean takes the free cores up to -j {c}, CASA 1 core"
           if spec.share_cores else f"each dataset claims cores={c} (WSClean -j {c})")
    if spec.kind == "local":
        return (f"local: {spec.workers} worker process(es) x {t} thread(s), resources cores={c} each "
                f"({local_cores()} cores on this machine); {how}")
    if spec.kind == "address":
        return f"existing scheduler {spec.address}; {how}"
    extra = ", ".join(f"{k}={v}" for k, v in (("queue", spec.queue), ("account", spec.account),
                                               ("walltime", spec.walltime), ("memory", spec.memory)) if v)
    return (f"{spec.kind}: {spec.workers} job(s), each 1 worker x {t} thread(s) with {c} reserved CPUs "
            f"(cores={c}; {how}){'; ' + extra if extra else ''}")


# ----------------------------------------------------------------------------------------
# dask-jobqueue


def jobqueue_kwargs(spec: ClusterSpec, out_dir: Path | None = None) -> dict[str, Any]:
    """Keyword arguments for SLURMCluster / PBSCluster (and their Job classes)."""
    if spec.kind not in ("slurm", "pbs"):
        raise ConfigError(f"cluster.kind: {spec.kind!r} is not a batch system")
    c = spec.threads_per_dataset
    prologue = list(spec.prologue) + [
        f"export OMP_NUM_THREADS={c}",
        f"export OPENBLAS_NUM_THREADS={c}",
        f"export MKL_NUM_THREADS={c}",
    ]
    kw: dict[str, Any] = {
        "cores": worker_threads(spec),  # Dask threads: C sharing the cores, else 1 dataset at a time
        "processes": 1,
        "job_script_prologue": prologue,
        "worker_extra_args": ["--resources", f"{RESOURCE}={c}"],
        "job_extra_directives": list(spec.job_extra_directives),
        "walltime": spec.walltime or None,
        "job_name": "selfcal-batch",
    }
    for key in ("memory", "queue", "account", "python", "interface", "local_directory"):
        if getattr(spec, key):
            kw[key] = getattr(spec, key)
    if spec.log_directory:
        kw["log_directory"] = spec.log_directory
    elif out_dir is not None:
        kw["log_directory"] = str(Path(out_dir) / "dask-jobs")
    if spec.kind == "slurm":
        kw["job_cpu"] = c      # --cpus-per-task=C although the worker has one Dask thread
    else:
        mem = spec.memory or _jobqueue_config("pbs", "memory")
        if mem:
            from dask.utils import parse_bytes  # Dask loaded only when a cluster is described or made
            from dask_jobqueue.pbs import pbs_format_bytes_ceil  # (same reason)

            kw["resource_spec"] = f"select=1:ncpus={c}:mem={pbs_format_bytes_ceil(parse_bytes(mem))}"
        else:
            kw["resource_spec"] = f"select=1:ncpus={c}"
    extra = dict(spec.kwargs)
    if "worker_extra_args" in extra:  # keep the cores resource whatever the user adds
        extra["worker_extra_args"] = kw["worker_extra_args"] + list(extra["worker_extra_args"])
    kw.update(extra)
    if problem := batch_path_problem(kw, bool(spec.log_directory)):
        raise ConfigError(problem)
    return kw


def batch_path_problem(kw: dict[str, Any], log_directory_set: bool = True) -> str:
    """One line when a path dask-jobqueue writes unquoted into the batch script (``#SBATCH -o``
    / ``#PBS -o`` lines: ``log_directory``; the worker command: ``python``, default this
    interpreter, and ``local_directory``) holds whitespace: the batch system would split it.
    ``''`` otherwise. ``log_directory_set``: the user chose it (else it is ``<out>/dask-jobs``)."""
    for key in ("log_directory", "python", "local_directory"):
        value = str(kw.get(key) or (sys.executable if key == "python" else ""))
        if any(ch.isspace() for ch in value):
            fix = ("set [cluster] log_directory to a directory without spaces (the default is under "
                   "the output directory)" if key == "log_directory" and not log_directory_set
                   else f"choose a {key} without spaces")
            return (f"cluster.{key}: {value!r} holds a space, which dask-jobqueue writes unquoted into the "
                    f"batch script: {fix}")
    return ""


def _jobqueue_config(kind: str, key: str) -> Any:
    import dask  # Dask loaded only when a cluster is made

    return dask.config.get(f"jobqueue.{kind}.{key}", None)


def render_job_script(spec: ClusterSpec, out_dir: Path | None = None,
                      scheduler: str = "tcp://SCHEDULER:8786") -> str:
    """The batch script one worker job would run (no scheduler or batch system needed)."""
    kw = jobqueue_kwargs(spec, out_dir)
    kw.pop("log_directory", None)  # the Job class would create it
    if spec.kind == "slurm":
        from dask_jobqueue.slurm import SLURMJob as job_cls  # dask_jobqueue only for a batch-system cluster
    else:
        from dask_jobqueue.pbs import PBSJob as job_cls  # (same reason)
    try:
        job = job_cls(scheduler=scheduler, name="selfcal-worker", **kw)
    except ValueError as exc:
        raise ConfigError(f"cluster: {' '.join(str(exc).split())} (set [cluster] memory)") from None
    return job.job_script()


# ----------------------------------------------------------------------------------------
# clients


def scheduler_options(kw: dict[str, Any], dashboard_address: str | None) -> dict[str, Any]:
    """The jobqueue scheduler's options: the user's ``[cluster.kwargs] scheduler_options``
    win over ours (only the dashboard address is set here, and only when not given)."""
    return {"dashboard_address": dashboard_address, **dict(kw.get("scheduler_options") or {})}


@contextlib.contextmanager
def make_client(spec: ClusterSpec, *, out_dir: Path | None = None) -> Iterator[Any]:
    """A connected ``distributed.Client`` for a resolved spec (see :func:`resolve_cluster`).

    The cluster (if created here) is closed on exit. Worker deaths tolerated per task come
    from ``spec.retries`` (scheduler ``allowed-failures``) for clusters created here.
    """
    import dask  # Dask loaded only when a cluster is made

    with contextlib.ExitStack() as stack:
        client = _connect(stack, spec, out_dir, dask)
        try:
            yield client
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM: the nanny's teardown (and its late callbacks) then log
            # CancelledError tracebacks that say nothing to the user; the campaign records
            # the interruption itself. Not restored: the process is stopping.
            silence_dask_logs()
            raise


def silence_dask_logs() -> None:
    """Raise every ``distributed`` logger to CRITICAL, also the children that carry their own
    level (Dask's config sets ``distributed.client: warning``; ``log_errors`` logs through the
    failing function's module logger, e.g. ``distributed.client`` on a timed-out close)."""
    names = ["distributed", *(n for n in logging.root.manager.loggerDict if n.startswith("distributed."))]
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _connect(stack: contextlib.ExitStack, spec: ClusterSpec, out_dir: Path | None, dask: Any) -> Any:
    """Create (on ``stack``) the cluster of ``spec`` if needed and return a connected client."""
    from distributed import Client  # Dask loaded only when a cluster is made

    cfg = {"distributed.scheduler.allowed-failures": spec.retries}
    dash = ":0" if spec.dashboard and dashboard_available() else None
    if spec.kind == "address":
        try:
            client = stack.enter_context(Client(spec.address, timeout="30s"))
        except OSError as exc:
            raise SelfcalBatchError(f"cannot connect to the Dask scheduler at {spec.address}: {exc}") from None
        try:
            client.wait_for_workers(1, timeout=spec.wait_for_workers_s)
        except TimeoutError:
            raise SelfcalBatchError(
                f"no worker connected to the scheduler at {spec.address} within "
                f"{spec.wait_for_workers_s:.0f} s") from None
        return client
    if spec.kind == "local":
        from distributed import LocalCluster  # Dask loaded only when a cluster is made

        with dask.config.set(cfg):
            cluster = stack.enter_context(LocalCluster(
                n_workers=spec.workers, threads_per_worker=worker_threads(spec), processes=True,
                resources={RESOURCE: spec.threads_per_dataset},
                memory_limit=spec.memory or 0, dashboard_address=dash,
                local_directory=spec.local_directory or None,
            ))
        client = stack.enter_context(Client(cluster))
        client.wait_for_workers(spec.workers, timeout=120)
        return client
    kw = jobqueue_kwargs(spec, out_dir)
    kw["scheduler_options"] = scheduler_options(kw, dash)
    if spec.kind == "slurm":
        from dask_jobqueue import SLURMCluster as cls  # dask_jobqueue only for a batch-system cluster
    else:
        from dask_jobqueue import PBSCluster as cls  # (same reason)
    with dask.config.set(cfg):
        try:
            cluster = stack.enter_context(cls(**kw))
        except ValueError as exc:
            raise ConfigError(f"cluster: {' '.join(str(exc).split())}") from None
    log.info("worker job script:\n%s", cluster.job_script())
    cluster.scale(jobs=spec.workers)
    return stack.enter_context(Client(cluster))


def worker_slots(client: Any) -> list[WorkerSlot]:
    """The workers currently connected and the ``cores`` resource each declares."""
    info = client.scheduler_info(n_workers=-1).get("workers", {})
    return [WorkerSlot(addr, int(w.get("nthreads", 1)), (w.get("resources") or {}).get(RESOURCE))
            for addr, w in info.items()]


def capacity(spec: ClusterSpec, client: Any | None) -> tuple[float | None, int]:
    """(largest ``cores`` any worker offers, datasets that can run at once).

    For batch clusters the workers are configured here, so the answer does not depend on
    which jobs have started yet.
    """
    c = spec.threads_per_dataset
    k = dataset_claim(spec, c)
    if spec.kind in ("slurm", "pbs") or client is None:
        return float(c), max(1, spec.workers) * worker_threads(spec)
    slots = worker_slots(client)
    offered = [s.cores for s in slots if s.cores is not None]
    if not offered:
        return None, 0
    conc = sum(min(s.nthreads, int(s.cores // k)) for s in slots if s.cores)
    return max(offered), max(1, conc)


def check_claims(claims: dict[str, int], max_cores: float | None, where: str) -> dict[str, str]:
    """Problems for claims no worker can satisfy: {dataset: one-line reason}."""
    problems: dict[str, str] = {}
    for name, need in claims.items():
        if max_cores is None:
            problems[name] = (f"no worker of {where} declares the '{RESOURCE}' resource (start workers "
                              f"with --resources {RESOURCE}=N); the dataset would wait forever")
        elif need > max_cores:
            problems[name] = (f"needs {RESOURCE}={need} but the largest worker of {where} offers "
                              f"{RESOURCE}={max_cores:g}; lower its threads or add bigger workers")
    return problems


#: Modules every dataset needs: imported once when a worker joins, not in its first dataset.
WARM_MODULES = ("selfcal_batch.pipeline.runner", "selfcal_batch.imaging.plots", "selfcal_batch.imaging.imstats", "casacore.tables")


def warm_imports_plugin() -> Any:
    """A Dask worker plugin that imports :data:`WARM_MODULES` when a worker starts (also
    workers that join later, e.g. batch jobs), so the first dataset on each worker does not
    pay ~1 s of imports (matplotlib, astropy, python-casacore)."""
    from distributed.diagnostics.plugin import WorkerPlugin  # Dask loaded only when a cluster is made

    class WarmImports(WorkerPlugin):
        name = "selfcal-batch-warm-imports"

        def setup(self, worker: Any) -> None:
            import importlib  # runs on the worker

            for mod in WARM_MODULES:
                try:
                    importlib.import_module(mod)
                except Exception as exc:  # noqa: BLE001  (the dataset will report it)
                    log.warning("worker %s: cannot import %s: %s", getattr(worker, "address", "?"), mod, exc)

    return WarmImports()
