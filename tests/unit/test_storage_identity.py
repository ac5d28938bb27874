"""The cheap identity of what a DATA image sees (imaging/reuse.py), on a real casacore MS laid
out as CASA split writes the working copy (one storage manager per array column): every write
to the data, rows or frequencies changes ``data``; every write to the flags or weights changes
``flags``; writes of MODEL_DATA / CORRECTED_DATA and HISTORY rows change neither. Flags
rewritten with the same values (a restored flag version) keep :func:`flags_digest`.
Generated: one fresh MS per kind of write (python-casacore, ~0.2 s each)."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from selfcal_batch.ms.checksum import flags_digest, storage_identity

ARRAY_COLUMNS = ("DATA", "FLAG", "WEIGHT", "MODEL_DATA", "CORRECTED_DATA")


def _split_like_ms(path: Path) -> Path:
    from casacore.tables import default_ms, makearrcoldesc, maketabdesc, table

    desc = maketabdesc([makearrcoldesc(c, 0j, ndim=2, shape=[1, 1]) for c in ("DATA", "MODEL_DATA", "CORRECTED_DATA")])
    dminfo = {f"*{i}": {"TYPE": "TiledShapeStMan", "NAME": f"{c}_dm", "SPEC": {"DEFAULTTILESHAPE": [1, 1, 64]},
                        "COLUMNS": [c]} for i, c in enumerate(ARRAY_COLUMNS)}
    for i, c in enumerate(("FLAG_ROW", "UVW", "TIME"), start=len(dminfo)):  # split: one manager each
        dminfo[f"*{i}"] = {"TYPE": "StandardStMan", "NAME": f"{c}_ssm", "SPEC": {}, "COLUMNS": [c]}
    with default_ms(str(path), desc, dminfo) as t:
        t.addrows(4)
        t.putcol("FLAG", np.zeros((4, 1, 1), bool))
        t.putcol("WEIGHT", np.ones((4, 1), np.float32))
        for c in ("DATA", "MODEL_DATA", "CORRECTED_DATA"):
            t.putcol(c, np.zeros((4, 1, 1), complex))
    with table(str(path / "SPECTRAL_WINDOW"), readonly=False, ack=False) as st:
        st.addrows(1)
        st.putcell("CHAN_FREQ", 0, np.array([5e9]))
    return path


def _write(ms: Path, what: str) -> None:
    from casacore.tables import table

    if what in ("SPECTRAL_WINDOW", "HISTORY"):
        with table(str(ms / what), readonly=False, ack=False) as t:
            t.putcell("CHAN_FREQ", 0, np.array([6e9])) if what == "SPECTRAL_WINDOW" else t.addrows(1)
        return
    with table(str(ms), readonly=False, ack=False) as t:
        n = t.nrows()
        values = {"FLAG": np.ones((n, 1, 1), bool), "FLAG_ROW": np.ones(n, bool),
                  "WEIGHT": np.full((n, 1), 2.0, np.float32), "UVW": np.ones((n, 3)), "TIME": np.ones(n)}
        if what == "rows":  # one more row, every array cell defined (as split writes them)
            t.addrows(1)
            t.putcell("FLAG", n, np.zeros((1, 1), bool))
            t.putcell("WEIGHT", n, np.ones(1, np.float32))
            for c in ("DATA", "MODEL_DATA", "CORRECTED_DATA"):
                t.putcell(c, n, np.zeros((1, 1), complex))
        elif what == "same flags":  # a restored flag version: rewritten, same values
            t.putcol("FLAG", t.getcol("FLAG"))
        elif what in values:
            t.putcol(what, values[what])
        else:  # DATA, or MODEL_DATA / CORRECTED_DATA as predict and applycal write them
            t.putcol(what, np.ones((n, 1, 1), complex))


@pytest.mark.parametrize("what, data, flags, content", [
    ("DATA", True, False, False), ("rows", True, True, True), ("SPECTRAL_WINDOW", True, False, False),
    ("UVW", True, False, False), ("TIME", True, False, False),
    ("FLAG", False, True, True), ("FLAG_ROW", False, True, True), ("WEIGHT", False, True, True),
    ("same flags", False, True, False),
    ("MODEL_DATA", False, False, False), ("CORRECTED_DATA", False, False, False), ("HISTORY", False, False, False),
])
def test_identity_changes_exactly_when_the_image_would(tmp_path, what, data, flags, content) -> None:
    ms = _split_like_ms(tmp_path / "w.ms")
    time.sleep(0.05)  # as in the pipeline: identities are taken well after the last write
    before, digest = storage_identity(ms), flags_digest(ms)
    assert storage_identity(ms) == before  # reading (and the lock file it writes) changes nothing
    time.sleep(0.05)
    _write(ms, what)
    after = storage_identity(ms)
    assert (after["data"] != before["data"], after["flags"] != before["flags"]) == (data, flags)
    assert (flags_digest(ms) != digest) is content


def test_a_rebuilt_working_copy_is_another_identity(tmp_path) -> None:
    """startup removes and re-splits work.ms: the same values, new files (inodes, times)."""
    ms = _split_like_ms(tmp_path / "w.ms")
    before = storage_identity(ms)
    shutil.rmtree(ms)
    time.sleep(0.05)
    _split_like_ms(ms)
    assert storage_identity(ms)["data"] != before["data"]


def test_the_kept_model_column_is_not_imaged(tmp_path) -> None:
    """pipeline/model_keep adds MODEL_KEPT and swaps it with MODEL_DATA by renaming: neither
    changes what an image of DATA sees (found when the two merged: the test image was no
    longer recognised after a revert)."""
    from casacore.tables import table

    from selfcal_batch.pipeline import model_keep

    ms = _split_like_ms(tmp_path / "w.ms")
    before, digest = storage_identity(ms), flags_digest(ms)
    time.sleep(0.05)
    with table(str(ms), readonly=False, ack=False) as t:
        desc = t.getcoldesc("MODEL_DATA")
        desc["name"] = model_keep.KEPT
        t.addcols(desc)
        t.putcol(model_keep.KEPT, t.getcol("MODEL_DATA") * 2)
        t.renamecol("MODEL_DATA", "TMP_SWAP")
        t.renamecol(model_keep.KEPT, "MODEL_DATA")
        t.renamecol("TMP_SWAP", model_keep.KEPT)
    assert storage_identity(ms)["data"] == before["data"]
    # a storage manager shared with the flags may be rewritten: then their content decides
    assert flags_digest(ms) == digest
