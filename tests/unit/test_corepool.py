"""The worker's core pool (issue 16): the pure grant rule and the thread-safe pool (no programs run)."""
from __future__ import annotations

import json
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


def test_wsclean_gets_the_granted_cores_as_j_and_omp(monkeypatch, tmp_path):
    """run_wsclean claims from the pool: -j and OMP_NUM_THREADS equal the grant, not the
    dataset's threads, and the grant reaches the tool record (run_tool replaced: no program)."""
    from selfcal_batch.imaging import wsclean as ws

    seen: list[tuple[list[str], dict[str, str], corepool.Grant]] = []

    def fake_run_tool(argv, *, env, grant, **kw):
        seen.append((list(argv), env, grant))
        (tmp_path / "img-image.fits").write_text("x")

    monkeypatch.setattr(ws, "run_tool", fake_run_tool)
    pool = CorePool(2)
    monkeypatch.setattr(corepool, "_POOL", pool)
    opts = ws.WSCleanOptions(name="img", size=128, scale="1arcsec", threads=4, parallel_gridding=2)
    with pool.claim(1):                               # another dataset's CASA holds one core
        ws.run_wsclean(opts, tmp_path / "x.ms", log_path=tmp_path / "w.log", cwd=tmp_path)
    ws.run_wsclean(opts, tmp_path / "x.ms", log_path=tmp_path / "w.log", cwd=tmp_path)
    monkeypatch.setattr(corepool, "_POOL", None)       # no pool: the dataset's threads, as before
    ws.run_wsclean(opts, tmp_path / "x.ms", log_path=tmp_path / "w.log", cwd=tmp_path)
    got = [(a[a.index("-j") + 1], env["OMP_NUM_THREADS"], g.cores, g.pooled) for a, env, g in seen]
    assert got == [("1", "1", 1, True), ("2", "2", 2, True), ("4", "4", 4, False)]
    # never more parallel gridders than cores granted (-parallel-gridding 1 is not passed)
    gridders = [a[a.index("-parallel-gridding") + 1] if "-parallel-gridding" in a else "1" for a, _e, _g in seen]
    assert gridders == ["1", "2", "2"]
    assert pool.free == 2


def test_tool_record_carries_the_grant(tmp_path):
    from selfcal_batch.process import ToolRecorder, held_comment

    rec = ToolRecorder(tmp_path / "tools.jsonl")
    rec.record("wsclean", "wsclean", ["wsclean", "-j", "2"], 3.0, 0, grant=corepool.Grant(2, 1.25, True))
    rec.record("casa", "casa", ["python"], 1.0, 0)
    lines = [json.loads(ln) for ln in (tmp_path / "tools.jsonl").read_text().splitlines()]
    assert (lines[0]["cores"], lines[0]["core_wait_s"]) == (2, 1.25)
    assert abs(lines[0]["start"] + 3.0 - time.time()) < 5
    assert "cores" not in lines[1]
    assert held_comment(corepool.Grant(2, 1.25, True)) == "  # cores 2 of the worker's pool, waited 1.2 s"
    assert held_comment(corepool.Grant(2)) == held_comment(None) == ""


def test_deaths_in_a_shared_worker_are_not_counted_against_a_dataset(tmp_path):
    """A worker process that ran two datasets died: neither death is counted as the dataset's
    own (it is resubmitted alone); a death while running alone is, as before."""
    from selfcal_batch.campaign.worker import attempts_path, count_deaths, shared_deaths

    def write(name: str, lines: list[str]) -> None:
        p = attempts_path(tmp_path, name)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(ln + "\n" for ln in lines))

    t = "2026-12-03T17:00:00+00:00"
    write("a", [f"R selfcal-a start t1 host 100 {t}",                # died with b in pid 100
                f"R selfcal-a start t2 host 200 {t}",                # died alone in pid 200
                f"R selfcal-a start t3 host 300 {t}", f"R selfcal-a end t3 {t}"])
    write("b", [f"R selfcal-b start u1 host 100 {t}",
                f"R selfcal-b start u2 host 300 {t}", f"R selfcal-b end u2 {t}",
                f"OLD selfcal-b start u0 host 200 {t}"])             # another campaign run: ignored
    assert count_deaths(tmp_path, "a", "R selfcal-a") == 2
    assert shared_deaths(tmp_path, "a", "R selfcal-a", ["a", "b", "c"]) == 1
    assert shared_deaths(tmp_path, "b", "R selfcal-b", {"a": 1, "b": 1}) == 1
    assert shared_deaths(tmp_path, "a", "R selfcal-a", []) == 0
