"""Per-phase core claims inside one worker process (issue 16).

A Dask worker that declares ``cores = C`` may run several datasets at once (one per Dask
thread). Their external programs share the C cores through one :class:`CorePool` per
worker process: a WSClean run takes the free cores up to the dataset's ``threads`` (at
least 1; it waits while none is free) and gives them back when the process ends; a CASA
request (a one-shot child, or one request to a dataset's long-lived child) takes 1 core
while it runs; an idle CASA child holds none. So while dataset A is in single-threaded
CASA, dataset B's WSClean can use the other cores, and the cores held never exceed C.

What is not claimed: the pipeline's own Python between programs (~1% of a dataset's time,
issue 16's profile) and the WSClean/CASA start-up of a core's holder. A process without a
pool (no Dask worker, or a worker that declares no ``cores`` resource) keeps the old
behaviour: every claim is granted in full at once.

The decision (:func:`grant`) is pure; the pool is the thin thread-safe wrapper.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterator

log = logging.getLogger(__name__)


def grant(free: int, request: int) -> int:
    """Cores to grant a claim for ``request`` cores when ``free`` are free; 0 = wait.

    All free cores up to the request, and at least 1 (a request < 1 counts as 1): a
    WSClean run asked for C cores starts with fewer rather than waiting for a full set
    (a started run keeps its cores until it ends, so waiting could idle cores for a whole
    run of another dataset). Pure; raises nothing.
    """
    want = max(1, int(request))
    return max(0, min(int(free), want))


@dataclass(frozen=True)
class Grant:
    """A granted claim: ``cores`` held, seconds ``waited`` for them, ``pooled`` = a real pool
    (False: no pool in this process, the request was granted as asked)."""

    cores: int
    waited: float = 0.0
    pooled: bool = False


class CorePool:
    """``total`` cores shared by the threads of one process (thread-safe).

    :meth:`claim` blocks until :func:`grant` gives at least one core. A thread that already
    holds a claim and claims again (a nested tool call) gets cores from its own claim, never
    waits for itself.
    """

    def __init__(self, total: int):
        if int(total) < 1:
            raise ValueError(f"a core pool needs at least 1 core, got {total}")
        self.total = int(total)
        self._free = self.total
        self._cond = threading.Condition()
        self._held = threading.local()

    @property
    def free(self) -> int:
        """Cores not held by any claim now."""
        with self._cond:
            return self._free

    def acquire(self, request: int) -> int:
        """Block until some cores are free; take :func:`grant` of them and return how many."""
        with self._cond:
            while (n := grant(self._free, request)) == 0:
                self._cond.wait()
            self._free -= n
            return n

    def release(self, n: int) -> None:
        """Give back ``n`` cores taken by :meth:`acquire`."""
        with self._cond:
            self._free = min(self.total, self._free + int(n))
            self._cond.notify_all()

    @contextlib.contextmanager
    def claim(self, request: int) -> Iterator[Grant]:
        """Hold cores for the block: ``with pool.claim(4) as g: run(-j g.cores)``."""
        held = getattr(self._held, "n", 0)
        if held > 0:  # nested in this thread's own claim
            yield Grant(min(held, max(1, int(request))), 0.0, True)
            return
        t0 = time.monotonic()
        n = self.acquire(request)
        self._held.n = n
        try:
            yield Grant(n, time.monotonic() - t0, True)
        finally:
            self._held.n = 0
            self.release(n)


_POOL: CorePool | None = None
_INSTALL = threading.Lock()


def install(total: float | int | None) -> CorePool | None:
    """The process's pool for ``total`` cores (``None`` or < 1: no pool, old behaviour).

    Idempotent: the datasets of one worker process share one pool. A different ``total``
    replaces the pool only while no core of it is held (a worker's resources do not change
    while it runs).
    """
    global _POOL
    with _INSTALL:
        size = int(total) if total is not None and total >= 1 else 0
        cur = _POOL
        if cur is not None and (cur.total == size or cur.free < cur.total):
            return cur
        _POOL = CorePool(size) if size else None
        if _POOL is not None:
            log.info("core pool: %d cores shared by the datasets of this worker process", size)
        return _POOL


def installed() -> CorePool | None:
    """This process's pool, if any."""
    return _POOL


@contextlib.contextmanager
def claim(request: int) -> Iterator[Grant]:
    """Claim cores from this process's pool; without a pool, ``request`` at once (old behaviour)."""
    pool = _POOL
    if pool is None:
        yield Grant(max(1, int(request)))
        return
    with pool.claim(request) as g:
        yield g
