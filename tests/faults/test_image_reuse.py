"""Each DATA image once, with the cheap identity (imaging/reuse.py: storage-file stat of DATA,
the flags' content only when their files were rewritten; before, DATA itself was hashed).

A real run through the final guard: the guard's "before" image (DATA, final settings) is the
test image, not imaged again (issue 16: the guard uses the test image directly). The guard_before
image asked afterwards is still found identical although the ladder's applycal/restore rewrote
the flag files (measured: the stat identity of the flags differs, their content does not). Then the flags of
the kept working copy are changed and the same image asked again: it must be remade, never
reused.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.faults.conftest import GuardedMS, MSFactory, quick_config, run_pipeline

pytestmark = pytest.mark.integration


def test_guard_before_image_reused_and_never_after_a_flag_change(tmp_path, base_ms: GuardedMS) -> None:
    from casacore.tables import table

    from selfcal_batch.config import PipelineConfig
    from selfcal_batch.imaging.reuse import STATE_KEY, same_data_image
    from selfcal_batch.pipeline.context import Context
    from selfcal_batch.pipeline.step_tools import final_options

    ms = MSFactory.copy(base_ms, tmp_path / "in.ms")
    out = tmp_path / "out"
    cfg = quick_config(steps=["startup", "save_init_flags", "test_image", "select_refant", "p0", "split_calibrated"],
                       keep_work_ms=True, test_imaging="final")
    res = run_pipeline("d", ms, out, cfg)
    assert res["status"] in ("finished", "unchanged"), res
    root = out / "datasets" / "d"
    log = (root / "logs" / "pipeline.log").read_text()
    reused = [ln for ln in log.splitlines() if "not imaged again" in ln]
    state = json.loads((root / "state.json").read_text())
    assert state.get("guard"), "p0 was not kept: the guard did not run"  # 30 deg phase errors on 0.1 Jy
    # The guard's "before" image is the test image itself (outcome.test_image_shows_input):
    # no guard_before WSClean run at all, reused or not.
    wsclean_names = [ln.split("-name ", 1)[1].split()[0] for ln in log.splitlines() if "[wsclean] wsclean -name" in ln]
    assert wsclean_names and not any(n.endswith("guard_before") for n in wsclean_names), wsclean_names
    assert not any("guard_before" in ln for ln in reused), reused
    assert all("digest" not in e for e in state[STATE_KEY].values())  # the new identity is recorded

    ctx = Context(name="d", ms=ms.resolve(), cfg=PipelineConfig.from_dict(cfg), root=root, threads=1)
    try:
        opts = final_options(ctx, "guard_before", "DATA")
        assert same_data_image(ctx, opts, ctx.work_ms) is not None  # unchanged since: reusable
        with table(str(ctx.work_ms), readonly=False, ack=False) as t:
            flags = t.getcol("FLAG", startrow=0, nrow=10)
            t.putcol("FLAG", ~flags, startrow=0, nrow=10)
        assert same_data_image(ctx, opts, ctx.work_ms) is None  # other flags: never the old image
        with table(str(ctx.work_ms), readonly=False, ack=False) as t:
            t.putcol("FLAG", flags, startrow=0, nrow=10)  # back to the imaged flags (as a restore does)
        assert same_data_image(ctx, opts, ctx.work_ms) is not None
        with table(str(ctx.work_ms), readonly=False, ack=False) as t:
            t.putcol("DATA", t.getcol("DATA", startrow=0, nrow=1) * np.complex64(2), startrow=0, nrow=1)
        assert same_data_image(ctx, opts, ctx.work_ms) is None  # other data: never the old image
    finally:
        ctx.close()
