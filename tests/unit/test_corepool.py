"""The worker's core pool (issue 16): the pure grant rule and the thread-safe pool (no programs run)."""
from __future__ import annotations

import threading
import time

import pytest

from selfcal_batch import corepool
from selfcal_batch.corepool import CorePool, grant


@pytest.mark.parametrize(("free", "request_", "expected"), [
    (2, 2, 2),    # all asked for
    (2, 4, 2),    # all free cores, not more
    (1, 2, 1),    # fewer than asked rather than waiting
    (0, 2, 0),    # none free: wait
    (0, 1, 0),
    (3, 1, 1),    # a CASA request takes one core
    (2, 0, 1),    # a request < 1 counts as 1
    (-1, 1, 0),   # never negative
])
def test_grant(free, request_, expected):
    assert grant(free, request_) == expected


def test_pool_counts_and_bounds():
    pool = CorePool(2)
    with pool.claim(4) as g:
        assert (g.cores, g.pooled, pool.free) == (2, True, 0)
        with pool.claim(1) as inner:        # nested in its own claim: no wait, no extra core
            assert inner.cores == 1 and pool.free == 0
    assert pool.free == 2
    pool.release(5)                          # over-release is capped at the size
    assert pool.free == 2
    with pytest.raises(ValueError, match="at least 1 core"):
        CorePool(0)


def test_pool_threads_never_exceed_size_and_overlap():
    """Eight threads (WSClean-like claims of 2, CASA-like claims of 1) on a 2-core pool: the
    cores held never exceed 2, a claim of 2 sometimes gets 1 (the other core busy) and all
    finish."""
    pool = CorePool(2)
    lock = threading.Lock()
    held, peak, grants, errors = [0], [0], [], []
    start = threading.Barrier(8)

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(20):
                with pool.claim(2 if i % 2 else 1) as g:
                    with lock:
                        held[0] += g.cores
                        peak[0] = max(peak[0], held[0])
                        grants.append((i % 2, g.cores))
                        assert held[0] <= 2, held[0]
                    time.sleep(0.001)
                    with lock:
                        held[0] -= g.cores
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and not any(t.is_alive() for t in threads)
    assert len(grants) == 160 and peak[0] == 2 and pool.free == 2
    assert {c for wide, c in grants if not wide} == {1}          # CASA: always one core
    assert {c for wide, c in grants if wide} <= {1, 2}


def test_waiting_claim_gets_the_released_cores():
    """A claim made while every core is held waits, then starts with what is released."""
    pool = CorePool(2)
    got: list[corepool.Grant] = []
    done = threading.Event()

    def waiter() -> None:
        with pool.claim(2) as g:
            got.append(g)
            done.wait(5)

    holder = pool.claim(2)
    holder.__enter__()
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    assert not got                                  # still waiting: nothing free
    holder.__exit__(None, None, None)
    for _ in range(500):
        if got:
            break
        time.sleep(0.01)
    assert got and got[0].cores == 2 and got[0].waited >= 0.15 and pool.free == 0
    done.set()
    t.join(timeout=5)
    assert pool.free == 2


def test_no_pool_keeps_the_old_behaviour(monkeypatch):
    monkeypatch.setattr(corepool, "_POOL", None)
    with corepool.claim(4) as g:
        assert (g.cores, g.pooled, g.waited) == (4, False, 0.0)
    assert corepool.install(None) is None and corepool.install(0.5) is None
    pool = corepool.install(2.0)
    assert pool is not None and pool.total == 2 and corepool.install(2) is pool   # one per process
    with corepool.claim(4) as g:
        assert g.cores == 2 and g.pooled
        assert corepool.install(3) is pool                                         # busy: kept
    assert corepool.install(3).total == 3
    monkeypatch.setattr(corepool, "_POOL", None)
