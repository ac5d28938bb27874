"""Each image once: an image of the working copy's DATA with the same settings and the same
visibilities, flags and weights as an earlier one is that earlier image (issue 16).

The final guard's "before" image (final-image settings, DATA, current flags) is the test
image whenever nothing was flagged since; before this it was imaged a second time. Only
DATA images without a model update or FITS mask qualify: DATA never changes in the working
copy. Same visibilities: :func:`selfcal_batch.ms.checksum.storage_identity` ``"data"`` (row
count, size/inode/mtime of DATA's storage files and of the sub-tables: any write changes it)
is equal. Same flags and weights: its ``"flags"`` (the same for FLAG, FLAG_ROW, WEIGHT,
WEIGHT_SPECTRUM) is equal, or else :func:`~selfcal_batch.ms.checksum.flags_digest` (their
content; flags restored from a saved version are rewritten with the same values) is. Plus
the same WSClean arguments: the same image. The earlier image file must also be the one made
then (same modification time). Before, DATA, flags and weights were read and hashed before
and after every DATA image; now DATA is never read and the flags are read once per DATA
image (and once more only when their files were rewritten since).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from selfcal_batch.imaging.wsclean import ImageSet, WSCleanOptions, build_argv, expected_products

log = logging.getLogger("selfcal_batch.pipeline")

STATE_KEY = "data_images"


def settings_signature(opts: WSCleanOptions) -> str | None:
    """What makes two DATA images equal apart from the data (pure): every WSClean argument
    except the output name and temporary directory; None when the image cannot be shared
    (not DATA, writes MODEL_DATA, predict-only, or uses a FITS mask)."""
    if opts.data_column != "DATA" or opts.update_model or opts.predict or opts.fits_mask:
        return None
    argv = build_argv(opts.replace(name="-", temp_dir=""), "MS")
    return hashlib.sha256("\0".join(argv).encode()).hexdigest()[:16]


def _mtime(path: str) -> int | None:
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return None


def same_data_image(ctx: Any, opts: WSCleanOptions, ms: Path) -> ImageSet | None:
    """The earlier image of the same data and settings (products on disk), or None."""
    sig = settings_signature(opts)
    if sig is None or Path(ms) != ctx.work_ms:
        return None
    entry = (ctx.state.get(STATE_KEY) or {}).get(sig)
    if not entry or entry.get("prefix") == opts.name:
        return None
    products = expected_products(opts.replace(name=entry["prefix"]))
    if not products.exists() or _mtime(products.image) != entry.get("mtime_ns"):
        return None
    from selfcal_batch.ms.checksum import flags_digest, storage_identity  # lazy: loaded only on this path

    ident = storage_identity(ms, "DATA")
    if ident["data"] != entry.get("data_id"):
        return None
    if ident["flags"] != entry.get("flags_id") and flags_digest(ms) != entry.get("flags_digest"):
        return None
    log.info("%s: %s is %s (same data, flags and settings): not imaged again", ctx.name,
             Path(opts.name).name, Path(entry["prefix"]).name)
    return products


def remember_data_image(ctx: Any, opts: WSCleanOptions, ms: Path) -> None:
    """Record a DATA image just made, for :func:`same_data_image`. An image that also wrote
    MODEL_DATA (the test image: the reference-antenna solve's model, no predict) is the same
    image as one that did not: it is recorded with ``update_model`` off (a request that needs
    the model written is never served from the record)."""
    sig = settings_signature(opts.replace(update_model=False))
    if sig is None or Path(ms) != ctx.work_ms:
        return
    from selfcal_batch.ms.checksum import flags_digest, storage_identity  # lazy: loaded only on this path

    image = expected_products(opts).image
    ident = storage_identity(ms, "DATA")
    entries = dict(ctx.state.get(STATE_KEY) or {})
    entries[sig] = {"prefix": opts.name, "data_id": ident["data"], "flags_id": ident["flags"],
                    "flags_digest": flags_digest(ms), "mtime_ns": _mtime(image)}
    ctx.state.set(STATE_KEY, entries)
