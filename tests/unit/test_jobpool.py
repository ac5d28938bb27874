"""Self-healing batch job pool: the pure decision and its application (no batch system)."""
from __future__ import annotations

from typing import Any

from selfcal_batch.campaign.jobpool import HEAL_INTERVAL_S, JobPoolHealer, heal

BASE = dict(pending=True, target=2, alive=2, connected=2, replacements=0, max_replacements=6,
            idle_s=0.0, no_worker_timeout_s=900.0)


def test_full_pool_or_nothing_pending_does_nothing() -> None:
    assert heal(**BASE).submit == 0 and heal(**BASE).fail_reason == ""
    assert heal(**{**BASE, "pending": False, "alive": 0, "connected": 0, "idle_s": 5000}).submit == 0


def test_lost_jobs_are_replaced_up_to_the_cap() -> None:
    assert heal(**{**BASE, "alive": 0, "connected": 0}).submit == 2
    assert heal(**{**BASE, "alive": 1, "connected": 1}).submit == 1
    assert heal(**{**BASE, "alive": 0, "connected": 0, "replacements": 5}).submit == 1
    assert heal(**{**BASE, "alive": 0, "connected": 0, "replacements": 6}).submit == 0


def test_no_worker_for_too_long_fails_with_one_line() -> None:
    act = heal(**{**BASE, "alive": 0, "connected": 0, "replacements": 6, "idle_s": 901.0})
    assert act.submit == 0
    assert act.fail_reason.startswith("no Dask worker connected for 901 s: 0 batch job(s) queued or running, "
                                      "6 replacement job(s) submitted (replacement cap reached)")
    assert "\n" not in act.fail_reason
    # Jobs queued but none connected yet: still waiting below the timeout.
    assert heal(**{**BASE, "connected": 0, "idle_s": 899.0}).fail_reason == ""


class _Cluster:
    def __init__(self, n: int):
        self.workers = {f"job-{i}": object() for i in range(n)}
        self.scaled: list[int] = []

    def scale(self, jobs: int) -> None:
        self.scaled.append(jobs)
        self.workers = {f"job-{i}": object() for i in range(jobs)}


class _Client:
    def __init__(self) -> None:
        self.connected = 0

    def scheduler_info(self, n_workers: int = -1) -> dict[str, Any]:
        return {"workers": {f"w{i}": {} for i in range(self.connected)}}


def test_healer_rescales_lost_jobs_then_gives_up() -> None:
    now = [0.0]
    cluster, client = _Cluster(0), _Client()
    healer = JobPoolHealer(cluster, client, target=2, max_replacements=3, no_worker_timeout_s=60.0,
                           clock=lambda: now[0])
    assert healer.tick(pending=True) == "" and cluster.scaled == [2] and healer.replacements == 2
    now[0] += 1.0
    assert healer.tick(pending=True) == "" and cluster.scaled == [2]       # within the interval
    cluster.workers = {}                                                   # both jobs died again
    now[0] += HEAL_INTERVAL_S
    assert healer.tick(pending=True) == "" and cluster.scaled == [2, 1]    # cap: one more only
    cluster.workers = {}
    now[0] += 60.0
    reason = healer.tick(pending=True)
    assert reason.startswith("no Dask worker connected for ") and "replacement cap reached" in reason


def test_healer_for_an_existing_scheduler_only_times_out() -> None:
    now = [0.0]
    client = _Client()
    client.connected = 1
    healer = JobPoolHealer(None, client, target=1, max_replacements=3, no_worker_timeout_s=30.0,
                           clock=lambda: now[0])
    assert healer.tick(pending=True) == ""
    client.connected = 0
    now[0] += 31.0
    assert healer.tick(pending=True).startswith("no Dask worker connected for 31 s")


def test_user_scheduler_options_are_kept() -> None:
    from selfcal_batch.campaign.cluster import scheduler_options

    assert scheduler_options({}, ":0") == {"dashboard_address": ":0"}
    user = {"scheduler_options": {"port": 8786, "dashboard_address": ":8787", "interface": "ib0"}}
    assert scheduler_options(user, ":0") == {"dashboard_address": ":8787", "port": 8786, "interface": "ib0"}
