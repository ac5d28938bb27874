"""Loose numbers from JSON, CSV cells and result rows: one conversion used everywhere."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["finite_or_nan", "float_or_nan", "seconds_text"]


def float_or_nan(v: Any) -> float:
    """``float(v)``; NaN when ``v`` is not convertible (None, '', text). +-inf is kept."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def finite_or_nan(v: Any) -> float:
    """``float(v)`` when finite; NaN for anything else (None, text, +-inf, NaN)."""
    f = float_or_nan(v)
    return f if math.isfinite(f) else math.nan


def seconds_text(seconds: float) -> str:
    """A duration for a message: ``'600'`` for 600 s, ``'0.5'`` for half a second (never ``'0'``
    for a short non-zero limit, which read as "no time at all")."""
    return f"{seconds:.0f}" if abs(seconds) >= 1 else f"{seconds:.2g}"
