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
(``ImageSet.can_predict``), and :func:`compress_finished` gzips what only a restart could
read (MFS models and clean masks: mostly zeros, 100-170x smaller as ``.fits.gz``, which
astropy and DS9 open directly) and deletes the reference-antenna search's scratch table.
``all`` keeps everything (debugging).
"""
from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
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


#: Scratch tables nothing reads once a dataset has finished (the reference-antenna search).
SCRATCH_CALTABLES = ("find_refant.phase",)


def compress_finished(root: Path, policy: str = "default") -> int:
    """After a dataset finished without work.ms: gzip MFS models and masks, drop scratch tables.

    Args:
        root: the dataset's output directory (holds ``images/``, ``masks/``, ``caltables/``).
        policy: one of :data:`KEEP_PRODUCTS`; ``all`` changes nothing.

    Returns:
        Bytes freed (size before minus size after).

    Each ``X.fits`` becomes ``X.fits.gz`` (written to a temporary name, then renamed, then the
    original removed: an interruption leaves one complete copy). Measured on a 256² dataset:
    a model FITS 273600 -> 2087 bytes, a mask 270720 -> 1617 bytes; restored images and
    residuals are noise and are left as they are (gzip saves ~10%).
    """
    if policy == "all":
        return 0
    freed = 0
    targets = [p for p in (root / "images").glob("*-model.fits")] if (root / "images").is_dir() else []
    if (root / "masks").is_dir():
        targets += list((root / "masks").glob("*.fits"))
    for src in sorted(targets):
        dst = src.with_name(src.name + ".gz")
        tmp = src.with_name(src.name + ".gz.partial")
        before = src.stat().st_size
        with open(src, "rb") as fin, gzip.open(tmp, "wb", compresslevel=6) as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, dst)
        src.unlink()
        freed += before - dst.stat().st_size
    for name in SCRATCH_CALTABLES:
        table = root / "caltables" / name
        if table.is_dir():
            freed += sum(f.stat().st_size for f in table.rglob("*") if f.is_file())
            shutil.rmtree(table)
    if freed:
        log.info("finished products compressed: %.1f MB freed", freed / 1e6)
    return freed
