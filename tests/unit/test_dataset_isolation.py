"""Two datasets in two threads of one process: logs and tool accounting stay separate
(what a Dask worker with several threads does). Runs ``sh``, not WSClean or CASA."""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from selfcal_batch.pipeline.dataset_log import current_dataset, dataset_handler, in_dataset
from selfcal_batch.process import current_recorder, recording, run_tool


def _dataset(name: str, root: Path, n: int, barrier: threading.Barrier, out: dict) -> None:
    log = logging.getLogger("selfcal_batch.pipeline")
    handler = dataset_handler(root / f"{name}.log", name)
    logging.getLogger("selfcal_batch").addHandler(handler)
    try:
        with in_dataset(name), recording(root / f"{name}.jsonl") as rec:
            barrier.wait()
            for i in range(n):
                rec.step = f"s{i}"
                log.warning("%s line %d", name, i)
                run_tool(["sh", "-c", "sleep 0.05"], tool="sh", log_path=root / f"{name}-tool.log",
                         category="wsclean" if i % 2 else "casa")
            out[name] = (dict(rec.seconds), dict(rec.runs), current_dataset())
    finally:
        logging.getLogger("selfcal_batch").removeHandler(handler)
        handler.close()


def test_two_datasets_in_one_process_keep_their_own_logs_and_costs(tmp_path: Path) -> None:
    out: dict = {}
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=_dataset, args=(n, tmp_path, k, barrier, out))
               for n, k in (("alpha", 4), ("beta", 6))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert current_recorder() is None and current_dataset() == ""
    for name, k in (("alpha", 4), ("beta", 6)):
        lines = (tmp_path / f"{name}.log").read_text().splitlines()
        own = [ln for ln in lines if f"{name} line" in ln]
        assert len(own) == k
        other = "beta" if name == "alpha" else "alpha"
        assert not any(other in ln for ln in lines), lines
        records = [json.loads(ln) for ln in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == [f"s{i}" for i in range(k)]
        seconds, runs, ds = out[name]
        assert ds == name
        assert runs == {"casa": (k + 1) // 2, "wsclean": k // 2}
        for cat in ("casa", "wsclean"):
            assert abs(seconds[cat] - sum(r["seconds"] for r in records if r["category"] == cat)) < 0.01
