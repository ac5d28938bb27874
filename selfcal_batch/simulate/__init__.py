"""Synthetic measurement sets with a known sky and known antenna gain corruptions.

Public API::

    spec = spec_from_preset("vla-c", flux_jy=0.1, phase_rms_deg=30.0, seed=3)
    ms = simulate_ms_isolated(spec, "X.ms")      # child process (safe next to casacore)
    truth = load_truth(ms)                       # X.truth.json
    phases = truth_phase_deg(truth, "ea05", spw=1)

Importing this package never imports casatools (only :func:`simulate_ms` does, in the
calling process). The truth sidecar ``X.truth.json`` holds ``version, spec, phase_centre,
components`` (with exact RA/Dec), ``antennas`` (``id, name, station, position_m``,
true and MS dish diameters), ``max_baseline_m, spws, correlations, scans``, ``gains``
(``times`` = MS TIME of every integration, ``phase_deg[name]`` per time,
``spw_phase_offset_deg[name]`` per spw, ``amp[name]``), ``noise_jy, seed,
dead_antenna`` (name or null), ``missing_spw`` (null or ``{spw, absent_from_scans}``),
``model_data_written, nrows, flagged_fraction, generation_s``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from selfcal_batch.errors import SimulationError
from .arrays import BANDS, PRESETS, Antenna, antennas_for
from .msbuild import TRUTH_VERSION, simulate_ms, simulate_ms_isolated, truth_path_for
from .sky import Component, default_components, predict
from .spec import DEFAULT_NOISE_JY, SimSpec, spec_from_preset

__all__ = [
    "BANDS", "PRESETS", "Antenna", "Component", "DEFAULT_NOISE_JY", "SimSpec", "antennas_for",
    "default_components", "load_truth", "predict", "simulate_ms", "simulate_ms_isolated",
    "spec_from_preset", "truth_path_for", "truth_phase_deg",
]


def load_truth(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a truth JSON (given its path or the MS path)."""
    p = Path(path)
    if p.is_dir() or not p.name.endswith(".json"):
        p = truth_path_for(p)
    try:
        truth = json.loads(p.read_text())
    except OSError as exc:
        raise SimulationError(f"cannot read truth file {p}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise SimulationError(f"truth file {p} is not valid JSON: {exc}") from None
    if not isinstance(truth, dict) or truth.get("version") != TRUTH_VERSION:
        raise SimulationError(f"{p} is not a version-{TRUTH_VERSION} simulator truth file")
    return truth


def truth_phase_deg(truth: dict[str, Any], antenna: str | int, spw: int = 0) -> np.ndarray:
    """Injected phase (deg) of ``antenna`` (name or id) in ``spw`` at every ``gains.times``."""
    names = [a["name"] for a in truth["antennas"]]
    name = names[antenna] if isinstance(antenna, int) else antenna
    g = truth["gains"]
    return np.asarray(g["phase_deg"][name], dtype=float) + float(g["spw_phase_offset_deg"][name][spw])
