"""Provenance of the delivered images: ``final-image.fits`` and ``final-residual.fits``.

:func:`provenance_cards` (pure) lists the FITS header cards; :func:`publish_final_images`
copies WSClean's final image and residual beside ``final.ms`` and writes the cards into
both headers. Keywords (FITS standard: 8 characters; astropy writes longer strings with
CONTINUE cards):

=========  ==========================================================================
SCB_VERS   selfcal-batch version
SCB_TMPL   template (initial -> final selection)
SCB_STEP   accepted (delivered) self-calibration steps with their solution intervals,
           e.g. ``p0:inf p1:60s ap1:inf`` ('none' = the input delivered unchanged)
SCB_NSTP   number of those steps
SCB_RMS    off-source rms of the final image (Jy/beam)
SCB_SNR    peak / off-source rms
SCB_DR     peak / residual rms
SCB_INMS   the input measurement set (name; the full path is in HISTORY)
SCB_DATE   when the image was written (UTC, ISO 8601)
=========  ==========================================================================

FITS header values must be printable ASCII (FITS 4.0 section 4.2.1); every text written
here goes through :func:`fits_text` (non-ASCII escaped as ``\\u00fc``), the full UTF-8
name stays in the dataset's ``result.json`` (``ms``).
"""
from __future__ import annotations

import datetime as _dt
import math
import shutil
from pathlib import Path
from typing import Any

FINAL_IMAGE = "final-image.fits"
FINAL_RESIDUAL = "final-residual.fits"


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fits_text(value: str) -> str:
    """``value`` as printable ASCII for a FITS header (FITS 4.0, section 4.2.1: characters
    32-126): every other character written as ``\\uXXXX`` (``\\UXXXXXXXX`` above U+FFFF), as
    in JSON/Python string literals: ``'baseü.ms'`` -> ``'base\\u00fc.ms'``, a tab ->
    ``'\\u0009'``. Pure; printable ASCII text is returned unchanged."""
    return "".join(ch if " " <= ch <= "~" else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000
                   else f"\\U{ord(ch):08x}" for ch in str(value))


def provenance_cards(version: str, template: str, steps: list[tuple[str, str]], stats: dict[str, Any],
                     input_ms: str, when: str | None = None) -> list[tuple[str, Any, str]]:
    """``(keyword, value, comment)`` cards; ``steps`` = [(step, solint)] as delivered.
    Non-finite statistics are left out (FITS has no NaN header value)."""
    when = when or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    step_text = " ".join(f"{s}:{solint or '?'}" for s, solint in steps) or "none"
    cards: list[tuple[str, Any, str]] = [
        ("SCB_VERS", str(version), "selfcal-batch version"),
        ("SCB_TMPL", str(template or "unknown"), "template (initial->final)"),
        ("SCB_STEP", step_text, "accepted selfcal steps step:solint"),
        ("SCB_NSTP", len(steps), "number of accepted selfcal steps"),
    ]
    for key, stat, comment in (("SCB_RMS", "rms_offsource", "off-source rms (Jy/beam)"),
                               ("SCB_SNR", "snr", "peak / off-source rms"),
                               ("SCB_DR", "dynamic_range", "peak / residual rms")):
        if (v := _finite(stats.get(stat))) is not None:
            cards.append((key, v, comment))
    cards += [("SCB_INMS", Path(str(input_ms)).name, "input measurement set"),
              ("SCB_DATE", when, "image written (UTC)")]
    return cards


def stamp(path: Path, cards: list[tuple[str, Any, str]], input_ms: str) -> None:
    """Write ``cards`` (and a HISTORY line with the input MS path) into a FITS primary header."""
    from astropy.io import fits  # lazy: plotting/FITS libraries only when drawing

    with fits.open(path, mode="update") as hdul:
        h = hdul[0].header
        for key, value, comment in cards:
            value = fits_text(value) if isinstance(value, str) else value
            h[f"HIERARCH {key}" if len(key) > 8 else key] = (value, fits_text(comment))
        h.add_history(fits_text(f"selfcal-batch input MS: {input_ms}"))


def publish_final_images(image: str | Path, residual: str | Path | None, dest_dir: Path,
                         cards: list[tuple[str, Any, str]], input_ms: str) -> list[Path]:
    """Copy the final image (and residual, when it exists) to ``dest_dir`` as
    FINAL_IMAGE / FINAL_RESIDUAL and stamp both; returns the paths written."""
    written = []
    for src, name in ((image, FINAL_IMAGE), (residual, FINAL_RESIDUAL)):
        if src is None or not Path(src).exists():
            continue
        dest = Path(dest_dir) / name
        tmp = dest.with_name(f".{name}.tmp")
        shutil.copyfile(src, tmp)
        stamp(tmp, cards, input_ms)
        tmp.replace(dest)
        written.append(dest)
    return written
