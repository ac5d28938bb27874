"""Which WSClean products a dataset keeps on disk (the ``keep_products`` policy).

A WSClean run with ``-channels-out N`` writes ``5 (N + 1)`` FITS files (dirty, image, model,
psf, residual per channel and for the MFS). At 1024² and survey scale that is terabytes
of files nothing reads. The ``default`` policy keeps, per run:

- the MFS (or single-channel) restored image, residual and model: statistics, masks,
  plots, the final guard and resume (``ImageSet.exists``) read them;
- the per-channel model images: ``wsclean -predict`` refills MODEL_DATA from them after a
  reverted step and on resume;

and removes the per-channel dirty/image/psf/residual and the dirty and psf images. The
restoring beam stays in the kept images' headers. Once a dataset has finished and its
work.ms was removed (so any restart redoes everything), the per-channel models go too
(:func:`prune_finished`); should one still be wanted, the run is re-imaged
(``ImageSet.can_predict``). ``all`` keeps everything (debugging).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

KEEP_PRODUCTS = ("default", "all")
_PRODUCT = re.compile(r"^(?P<prefix>.+?)(?:-(?P<chan>\d{4}|MFS))?-(?P<kind>dirty|image|model|psf|residual)\.fits$")


def removable(names: list[str], prefix: str, policy: str = "default") -> list[str]:
    """File names (from ``names``) of the run ``prefix`` that the policy does not keep.

    Args:
        names: file names in the images directory (no directories).
        prefix: the run's ``-name`` (file names start with ``prefix-``).
        policy: one of :data:`KEEP_PRODUCTS`.

    Returns:
        The names to delete, sorted.

    Raises:
        ValueError: unknown policy.
    """
    if policy not in KEEP_PRODUCTS:
        raise ValueError(f"keep_products: unknown policy {policy!r} (choose from {', '.join(KEEP_PRODUCTS)})")
    if policy == "all":
        return []
    out = []
    for n in names:
        m = _PRODUCT.match(n)
        if not m or m["prefix"] != prefix:
            continue
        kind, chan = m["kind"], m["chan"]
        per_channel = chan is not None and chan != "MFS"
        if kind in ("dirty", "psf") or (per_channel and kind != "model"):
            out.append(n)
    return sorted(out)


def prune(images_dir: Path, prefix: str, policy: str = "default") -> int:
    """Delete what :func:`removable` names for the run ``prefix`` in ``images_dir``;
    returns the bytes freed."""
    freed = 0
    for n in removable([p.name for p in images_dir.iterdir() if p.is_file()], prefix, policy):
        p = images_dir / n
        try:
            freed += p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            pass
    return freed


def prune_finished(images_dir: Path, policy: str = "default") -> int:
    """After a dataset finished: delete the per-channel model images (default policy);
    returns the bytes freed."""
    if policy == "all" or not images_dir.is_dir():
        return 0
    freed = 0
    for p in images_dir.iterdir():
        m = _PRODUCT.match(p.name)
        if m and m["kind"] == "model" and m["chan"] not in (None, "MFS"):
            freed += p.stat().st_size
            p.unlink()
    return freed
