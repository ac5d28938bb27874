"""Typed ``[campaign]`` and ``[cluster]`` tables of a manifest (the configuration layer).

Declared with :func:`selfcal_batch.schema.setting` and validated by the one validator
(:func:`selfcal_batch.schema.build` / :func:`~selfcal_batch.schema.check`), like the
pipeline settings. Deployment code (:mod:`selfcal_batch.campaign.cluster`) imports
:class:`ClusterSpec` from here, not from the TOML loader.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfcal_batch.schema import ADDRESS, MEMORY, WALLTIME, check, setting

CLUSTER_KINDS = ("local", "address", "slurm", "pbs")

#: ``[[datasets]]`` keys besides the pipeline settings: (key, type, help).
DATASET_KEYS_DOC: tuple[tuple[str, str, str], ...] = (
    ("name", "string", ("Dataset name (letters, digits, '.', '_', '+', '-'; default: the MS "
                        "file name without extension; with a glob: NAME-<stem>).")),
    ("ms", "string", ("Path of the input MS (relative to the manifest), or a glob: one dataset "
                      "per matching directory. Required.")),
    ("simulate", "table", ("Generate `ms` with the simulator when absent: preset = \"vla-c\" "
                           "plus simulator arguments (selfcal-batch simulate --help).")),
    ("targets", "string or list of strings", ("One dataset per science target of the MS: \"science\" "
                                              "(fields with an OBSERVE_TARGET* scan intent) and/or "
                                              "field-name patterns (for MSs without intents); fields "
                                              "are selected by id. Not with field or simulate.")),
    ("target_name", "string", ("Dataset name of each target, from {name}, {stem}, {field}; "
                               "default \"{name}__{field}\"; no '/'.")),
    ("min_target_time_s", "number (s)", ("Targets with less unflagged time on source are skipped "
                                         "with the reason; default 60.")),
    ("group", "string", ("With targets over several MSs (a glob or a list in ms): one joint dataset "
                         "per target holding its fields from every MS, EBs in order of observation; "
                         "\"name\" (same field name; positions must agree within "
                         "group_tolerance_arcsec) or \"position\" (centres within it).")),
    ("group_tolerance_arcsec", "number (arcsec)", ("Position tolerance of group, > 0; default 1.0. A name "
                                                   "group whose positions differ more fails with one line "
                                                   "naming both MSs and the separation. It decides which fields "
                                                   "are one source; EBs whose phase centres differ by more than "
                                                   "1 mas are re-phased to the first EB's centre in their "
                                                   "working copies (CASA phaseshift), up to 0.36 % of the "
                                                   "primary beam; farther apart they are refused in one line.")),
)


@dataclass(frozen=True)
class CampaignSection:
    """``[campaign]``."""

    name: str = setting("", "Campaign name ('' = the manifest file name without .toml).")
    output_dir: str = setting("", "Output directory, relative to the manifest ('' = "
                              "<manifest stem>-out).")
    description: str = setting("", "Free text shown in the report.")
    variants: tuple[str, ...] = setting((), "Template sweep: run every dataset once per variant "
                                        "('auto' = the flux-based choice, or a template name); "
                                        "datasets are named <name>__<variant>.")


@dataclass(frozen=True)
class ClusterSpec:
    """``[cluster]``: where the dataset tasks run (see :mod:`selfcal_batch.campaign.cluster`)."""

    kind: str = setting("local", "Deployment: local processes, an existing scheduler "
                        "(address), or batch jobs (slurm, pbs).", choices=CLUSTER_KINDS,
                        noun="kind")
    workers: int = setting(0, "local: worker processes (0 = floor(cores / threads_per_dataset)); "
                           "slurm/pbs: batch jobs, one worker each (0 = one per dataset, max 64).",
                           ge=0)
    threads_per_dataset: int = setting(0, "Cores each dataset claims (Dask resource 'cores', "
                                       "WSClean -j); 0 = automatic (local) or the [defaults] "
                                       "threads setting.", ge=0)
    share_cores: bool = setting(True, "A worker with C cores runs up to C datasets at once: WSClean "
                                "takes the free cores up to threads_per_dataset, a CASA request 1 "
                                "core (up to C working copies in memory per worker); false = one "
                                "dataset per worker at a time, claiming all C cores.")
    memory: str = setting("", "Memory per worker / batch job ('' = no Dask limit locally, the "
                          "jobqueue configuration on a batch system).", text=MEMORY, also=("",))
    retries: int = setting(1, "Worker deaths tolerated per dataset before it is reported failed "
                           "(also Dask's retries for unexpected exceptions in the task).", ge=0)
    address: str = setting("", "Scheduler address for kind = 'address'.", text=ADDRESS,
                           also=("",))
    wait_for_workers_s: float = setting(120.0, "Seconds to wait for the first worker of an "
                                        "existing scheduler.", unit="s", ge=0)
    dashboard: bool = setting(True, "Serve the Dask dashboard (its address is printed at start).")
    queue: str = setting("", "slurm/pbs: queue / partition ('' = the site default).")
    account: str = setting("", "slurm/pbs: account / project to charge ('' = none).")
    walltime: str = setting("04:00:00", "slurm/pbs: walltime of each batch job.", text=WALLTIME,
                            also=("",))
    job_extra_directives: tuple[str, ...] = setting((), "slurm/pbs: extra #SBATCH / #PBS "
                                                    "directives, verbatim.")
    prologue: tuple[str, ...] = setting((), "slurm/pbs: shell lines run before the worker starts "
                                        "(module load, venv activation...).")
    python: str = setting("", "slurm/pbs: Python on the compute nodes ('' = this interpreter).")
    interface: str = setting("", "slurm/pbs: network interface of the workers ('' = default).")
    local_directory: str = setting("", "Worker scratch space ('' = Dask's default; e.g. "
                                   "\"$TMPDIR\" on HPC).")
    log_directory: str = setting("", "slurm/pbs: batch job stdout/stderr ('' = "
                                 "<output_dir>/dask-jobs).")
    max_job_replacements: int = setting(0, "slurm/pbs: replacement jobs over the campaign when "
                                        "jobs end while datasets are pending (walltime, scancel, "
                                        "node loss); 0 = 2 x workers + 2.", ge=0)
    no_worker_timeout_s: float = setting(900.0, "Fail the remaining datasets after this long "
                                         "with no worker connected.", unit="s", gt=0)
    kwargs: dict[str, Any] = setting(  # noqa: RUF009 (setting() returns a dataclasses.field)
        {}, "slurm/pbs: extra keyword arguments passed verbatim to SLURMCluster / PBSCluster "
        "([cluster.kwargs]).")

    def validate(self, where: str = "cluster") -> None:
        """Every declared constraint (raises ConfigError naming the key, e.g. ``cluster.kind``)."""
        check(self, where)
