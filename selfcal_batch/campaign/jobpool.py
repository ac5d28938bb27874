"""Keeping a batch-system worker pool alive while datasets are pending.

dask-jobqueue forgets a job once it ends (walltime expiry, ``scancel``, node loss) but
never submits a replacement: with every job gone a campaign would wait forever, with no
progress and no message (measured on a real single-node SLURM: ``cluster.workers``
empties about 12 s after ``scancel``; calling ``cluster.scale(jobs=N)`` again brings new
jobs within seconds). :func:`heal` decides, from counts alone, whether to ask for
replacements or to give up; :class:`JobPoolHealer` applies it to a live cluster.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

#: Seconds between two looks at the pool (a job takes ~5-15 s to start on an idle SLURM).
HEAL_INTERVAL_S = 10.0


@dataclass(frozen=True)
class PoolAction:
    """What to do now: submit ``submit`` more jobs, and/or give up with ``fail_reason``."""

    submit: int = 0
    fail_reason: str = ""


def heal(*, pending: bool, target: int, alive: int, connected: int, replacements: int,
         max_replacements: int, idle_s: float, no_worker_timeout_s: float) -> PoolAction:
    """Decide how to keep ``target`` jobs while datasets are ``pending``.

    Args:
        pending: datasets are queued or running.
        target: jobs the campaign asked for.
        alive: jobs the cluster still tracks (queued or running).
        connected: workers connected to the scheduler now.
        replacements: replacement jobs submitted so far.
        max_replacements: cap on replacements over the whole campaign, so that a job that
            dies at start (bad prologue, wrong partition) is not resubmitted forever.
        idle_s: seconds since a worker was last connected (0 when one is).
        no_worker_timeout_s: give up after this long with no worker connected.

    Returns:
        The :class:`PoolAction`; ``fail_reason`` is one line for every remaining dataset.
    """
    if not pending:
        return PoolAction()
    submit = max(0, min(target - alive, max_replacements - replacements))
    if connected == 0 and idle_s >= no_worker_timeout_s:
        capped = " (replacement cap reached)" if replacements >= max_replacements else ""
        return PoolAction(submit=0, fail_reason=(
            f"no Dask worker connected for {idle_s:.0f} s: {alive} batch job(s) queued or running, "
            f"{replacements} replacement job(s) submitted{capped}; check the batch queue and the job logs"))
    return PoolAction(submit=submit)


class JobPoolHealer:
    """Applies :func:`heal` to a dask-jobqueue cluster every :data:`HEAL_INTERVAL_S`.

    Args:
        cluster: a ``JobQueueCluster`` (``SLURMCluster``/``PBSCluster``), or None for an
            existing scheduler (nothing to scale: only the no-worker timeout applies).
        client: its ``distributed.Client``.
        target: jobs to keep.
        max_replacements: see :func:`heal`.
        no_worker_timeout_s: see :func:`heal`.
    """

    def __init__(self, cluster: Any, client: Any, target: int, max_replacements: int,
                 no_worker_timeout_s: float, clock: Any = time.monotonic):
        self.cluster, self.client, self.target = cluster, client, target
        self.max_replacements, self.no_worker_timeout_s = max_replacements, no_worker_timeout_s
        self.replacements = 0
        self.clock = clock
        self.last_seen = clock()
        self.last_tick = -HEAL_INTERVAL_S

    def tick(self, pending: bool) -> str:
        """Look at the pool (at most every HEAL_INTERVAL_S); returns a fail reason or ''."""
        now = self.clock()
        if now - self.last_tick < HEAL_INTERVAL_S:
            return ""
        self.last_tick = now
        try:
            connected = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        except Exception:  # noqa: BLE001 - a slow scheduler answer is retried next tick
            return ""
        if connected:
            self.last_seen = now
        alive = len(self.cluster.workers) if self.cluster is not None else connected
        act = heal(pending=pending, target=self.target, alive=alive, connected=connected,
                   replacements=self.replacements, max_replacements=self.max_replacements,
                   idle_s=now - self.last_seen, no_worker_timeout_s=self.no_worker_timeout_s)
        if act.submit and self.cluster is not None:
            self.replacements += act.submit
            log.warning("batch jobs: %d of %d left while datasets are pending; submitting %d "
                        "replacement job(s) (%d of at most %d so far)", alive, self.target, act.submit,
                        self.replacements, self.max_replacements)
            self.cluster.scale(jobs=alive + act.submit)
        return act.fail_reason
