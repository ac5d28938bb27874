"""A reverted step's model back in MODEL_DATA without a WSClean run (issue 16).

A ladder step's "after" image writes its model into MODEL_DATA. When the gate reverts the
step, the next step needs the step's "before" model again; that used to be a ``wsclean
-predict`` (gridding and degridding the whole data set). Instead, the working copy keeps the
previous model in a second column, ``MODEL_KEPT``, of the same description in its own
storage manager:

* :func:`stash` (before an image that rewrites MODEL_DATA): the first time, MODEL_KEPT is
  added and filled with a copy of MODEL_DATA (one TaQL ``UPDATE``); afterwards the two
  columns swap names (a rename: nothing is read or written). WSClean then overwrites the
  column named MODEL_DATA (measured: it writes into an existing column in any storage
  manager; the working copy keeps its size over repeated swaps, whereas removing and
  re-adding MODEL_DATA grows its shared storage manager by one column each time).
* :func:`restore` (revert): swap back when MODEL_KEPT holds the wanted model.

``state`` keys (WorkMSState): ``model_in_ms`` (prefix whose model is in MODEL_DATA, '' =
unknown) and ``model_kept`` (prefix whose model is in MODEL_KEPT, '' = unknown). Both are set
to '' and saved before a column is touched, so a kill half-way leaves "unknown" (the model is
then predicted, as before). ``work.ms`` is private to the dataset; the delivered final.ms
is a split of DATA or CORRECTED_DATA and does not carry MODEL_KEPT.
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("selfcal_batch.pipeline")

KEPT = "MODEL_KEPT"
_SWAP = "MODEL_SWAP_TMP"


def swap_plan(model_in_ms: str, model_kept: str, has_kept_column: bool) -> tuple[str, str, str]:
    """What :func:`stash` does (pure): ``(action, model_in_ms_after, model_kept_after)`` with
    action 'none' (MODEL_DATA holds nothing known: nothing worth keeping), 'copy' (first
    time: MODEL_KEPT added as a copy) or 'swap' (the columns exchange names)."""
    if not model_in_ms:
        return "none", model_in_ms, model_kept
    if not has_kept_column:
        return "copy", model_in_ms, model_in_ms
    return "swap", model_kept, model_in_ms


def stash(ctx: Any) -> None:
    """Keep the model now in MODEL_DATA in MODEL_KEPT before MODEL_DATA is overwritten."""
    from casacore.tables import table  # casacore is loaded only where a table is written

    st = ctx.state
    held, kept = str(st.get("model_in_ms") or ""), str(st.get("model_kept") or "")
    with table(str(ctx.work_ms), readonly=False, ack=False) as t:
        action, new_in, new_kept = swap_plan(held, kept, KEPT in t.colnames())
        if action == "none":
            return
        st.set("model_in_ms", "")
        st.set("model_kept", "")
        st.save()
        if action == "copy":
            _add_copy(t)
        else:
            _swap(t)
    st.set("model_in_ms", new_in)
    st.set("model_kept", new_kept)
    st.save()


def restore(ctx: Any, prefix: str) -> bool:
    """MODEL_DATA back to ``prefix``'s model when MODEL_KEPT holds it (a swap); False when
    it does not (the caller predicts)."""
    from casacore.tables import table  # casacore is loaded only where a table is written

    st = ctx.state
    held, kept = str(st.get("model_in_ms") or ""), str(st.get("model_kept") or "")
    if not prefix or kept != prefix:
        return False
    st.set("model_in_ms", "")
    st.set("model_kept", "")
    st.save()
    with table(str(ctx.work_ms), readonly=False, ack=False) as t:
        if KEPT not in t.colnames():
            return False
        _swap(t)
    st.set("model_in_ms", prefix)
    st.set("model_kept", held)
    st.save()
    log.info("%s: MODEL_DATA back to %s's model (kept column, no predict)", ctx.name, prefix.rsplit("/", 1)[-1])
    return True


def _add_copy(t: Any) -> None:
    from casacore import tables  # casacore is loaded only where a table is written

    desc = tables.makecoldesc(KEPT, t.getcoldesc("MODEL_DATA"))
    t.addcols(tables.maketabdesc(desc), dminfo={"TYPE": "StandardStMan", "NAME": "model_kept", "SPEC": {}})
    tables.taql(f"UPDATE $t SET {KEPT} = MODEL_DATA")


def _swap(t: Any) -> None:
    t.renamecol("MODEL_DATA", _SWAP)
    t.renamecol(KEPT, "MODEL_DATA")
    t.renamecol(_SWAP, KEPT)
