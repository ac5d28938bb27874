"""Loose numbers from JSON, CSV cells and result rows: one conversion used everywhere."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["finite_or_nan", "float_or_nan"]


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
