"""Pure helpers of the per-dataset pages and the report legend (no files read here).

* :func:`observation_summary`: a ``listobs``-like summary from the MS inspection the
  pipeline records in ``state.json`` (``msinfo``, see ``ms/inspection.py``).
* :func:`status_text`: one sentence per dataset status, so interrupted, not started,
  unchanged, no_detection, needs_calibration and failed read apart.
* :func:`text`: a table cell from any value, never ``nan`` / ``None``.
* :data:`LEGEND`: each metric of the report defined once.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: (name, definition) of every metric the report shows; rendered as the report's legend.
LEGEND: tuple[tuple[str, str], ...] = (
    ("SNR", "peak / off-source rms: the image peak (Jy/beam) over the robust (MAD) rms of the "
            "residual outside the source mask. The acceptance gate and the detection test use it."),
    ("DR (dynamic range)", "peak / residual rms: the image peak over the rms (standard deviation) "
            "of the whole residual image, artefacts near the source included; DR ≤ SNR."),
    ("rms", "off-source rms of the residual in µJy/beam (the SNR's denominator)."),
    ("rms / thermal", "off-source rms over the thermal noise expected from the visibilities "
            "(their scatter / √(unflagged samples), natural weighting): 1 = noise-limited; "
            "Briggs weighting alone gives about 1.2–1.5, calibration errors and sidelobes more."),
    ("gain", "final / initial (initial = the test image before self-calibration, final = the "
            "final image of the calibrated data)."),
    ("campaign elapsed", "wall-clock time of the campaign process; summed dataset time adds up "
            "every attempt of every dataset, concurrent ones counted each."),
)

#: status -> what it means for the data delivered.
STATUS_TEXT: dict[str, str] = {
    "finished": "self-calibrated: final.ms holds calibrated data better than the input",
    "unchanged": "delivered unchanged: no step was kept, or the final guard found no improvement",
    "no_detection": "delivered unchanged: no source above the detection threshold in the test image",
    "needs_calibration": "delivered unchanged: the visibilities look uncalibrated (delays)",
    "failed": "failed: no usable output",
    "interrupted": "interrupted while running (campaign stopped); rerun the same command to resume",
    "not_started": "not started (the campaign was stopped before it ran); rerun to run it",
    "skipped": "skipped",
}


def text(v: Any, default: str = "–") -> str:
    """A cell's text: ``default`` for None, NaN, '' and the strings 'nan' / 'None'."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return default
    s = str(v).strip()
    return default if s in ("", "nan", "NaN", "None") else s


def status_text(status: str, reason: str = "", error: str = "") -> str:
    """One sentence for a dataset's status and its reason / error."""
    base = STATUS_TEXT.get(status, status or "unknown status")
    extra = text(error if status == "failed" else reason, "")
    return f"{base} ({extra})" if extra and extra not in base else base


def _num(v: Any, scale: float = 1.0, spec: str = ".3g", unit: str = "") -> str:
    """``v * scale`` formatted with ``unit``; '–' for anything not a finite number."""
    try:
        f = float(v) * scale
    except (TypeError, ValueError):
        return "–"
    return f"{f:{spec}}{unit}" if math.isfinite(f) else "–"


def _freq(hz: Any) -> str:
    return _num(hz, 1e-9, ".4f", " GHz")


def _duration(s: Any) -> str:
    try:
        v = float(s)
    except (TypeError, ValueError):
        return "–"
    if not math.isfinite(v):
        return "–"
    return f"{v / 3600:.2f} h" if v >= 3600 else f"{v / 60:.1f} min" if v >= 60 else f"{v:.0f} s"


def observation_summary(msinfo: dict[str, Any] | None) -> dict[str, Any]:
    """``{"rows": [(label, value)], "spws": [...], "scans": [...]}`` from ``msinfo``.

    Rows: fields, antennas (present / with unflagged data / named), time on source and
    span, integration time, spectral windows, correlations, longest baseline, flagged and
    zero-weight fractions, visibility and thermal noise (µJy/beam), warnings. Spws: id,
    channels, frequency range, channel width, correlations. Empty when there is no msinfo
    (the startup step did not run)."""
    if not isinstance(msinfo, dict) or not msinfo:
        return {"rows": [], "spws": [], "scans": []}
    names = msinfo.get("antenna_names") or []
    unflagged = msinfo.get("antennas_unflagged") or []
    present = msinfo.get("antennas_present") or []
    spws = msinfo.get("spws") or []
    corr = sorted({c for s in spws for c in (s.get("corr") or [])})
    thermal = msinfo.get("thermal_noise_jy")
    rows = [
        ("inspected (private copy of the input)", text(msinfo.get("vis"))),
        ("fields", ", ".join(map(str, msinfo.get("fields") or [])) or "–"),
        ("antennas", f"{len(present)} with data, {len(unflagged)} with unflagged data "
                     f"({len(names)} in ANTENNA): "
                     + (", ".join(str(names[a]) if a < len(names) else str(a) for a in present) or "–")),
        ("time on source", _duration(msinfo.get("time_on_source_s"))),
        ("time span", _duration(msinfo.get("time_span_s"))),
        ("integration", _num(msinfo.get("integration_s"), unit=" s")),
        ("spectral windows", f"{len(spws)} used" + (f", unused: {msinfo['spws_unused']}"
                                                    if msinfo.get("spws_unused") else "")),
        ("correlations", ", ".join(corr) or "–"),
        ("scans", str(len(msinfo.get("scans") or []))),
        ("rows", text(msinfo.get("nrows"))),
        ("longest baseline", _num(msinfo.get("max_baseline_m"), 1e-3, ".2f", " km")),
        ("flagged", _num(msinfo.get("flagged_fraction"), 100, ".1f", " %")),
        ("thermal noise (from the visibilities)", _num(thermal, 1e6, ".1f", " µJy/beam")),
    ]
    for w in msinfo.get("warnings") or []:
        rows.append(("warning", str(w)))
    spw_rows = [{"id": s.get("id"), "nchan": s.get("nchan"),
                 "range": f"{_freq(s.get('freq_min'))} – {_freq(s.get('freq_max'))}",
                 "width": _num(s.get("chan_width"), 1e-6, ".3f", " MHz"),
                 "corr": " ".join(s.get("corr") or [])} for s in spws]
    scans = [{"scan": sc.get("scan"), "spws": ", ".join(map(str, sc.get("spws") or []))}
             for sc in (msinfo.get("scans") or [])]
    return {"rows": rows, "spws": spw_rows, "scans": scans}


def micro(v: Any) -> float:
    """Jy -> µJy (NaN stays NaN)."""
    try:
        return float(v) * 1e6
    except (TypeError, ValueError):
        return math.nan


def eb_rows(result: dict[str, Any] | None) -> list[dict[str, str]]:
    """Joint EBs (issue 18): one display row per execution block of ``result["ebs"]``
    (DatasetResult.ebs); [] for a one-MS dataset. Text cells: the EB's MS and final MS
    names, spw ids (input -> joint working copy), channels (input -> joint copy and the
    final MS's when startup averaged them: ``channel_averaging``), the re-phasing to eb0's
    phase centre (arcsec, '–' when not), the alignment's visibility factor and phase rms, the
    final MS's flagged percentage, the EB's share of failed solutions per step that solved
    (``'align_ebs 0%, p0 54%'``)."""
    rows: list[dict[str, str]] = []
    if not isinstance(result, dict):
        return rows
    for k, eb in enumerate(result.get("ebs") or []):
        spws_in, spws = eb.get("input_spws") or [], eb.get("spws") or []
        rows.append({
            "eb": f"eb{k}", "ms": text(eb.get("ms")),
            "final_ms": text(Path(eb["final_ms"]).name if eb.get("final_ms") else None),
            "spws": f"{','.join(map(str, spws_in))} → {','.join(map(str, spws))}" if spws_in else "–",
            "nchan": _nchan_text(eb),
            "shift": _num(eb.get("phase_shift_arcsec"), spec=".3g", unit=" arcsec")
            if eb.get("phase_shift_arcsec") else "–",
            "align": _num(eb.get("align_flux_factor"), spec=".4f"),
            "phase": _num(eb.get("align_phase_rms_deg"), spec=".1f", unit=" deg"),
            "flagged": _num(eb.get("flagged_fraction"), scale=100.0, spec=".1f", unit="%"),
            "solutions_flagged": ", ".join(f"{s} {_num(v, scale=100.0, spec='.0f', unit='%')}"
                                           for s, v in (eb.get("flagged_solutions") or {}).items()) or "–",
        })
    return rows


def _nchan_text(eb: dict[str, Any]) -> str:
    """The joint copy's channels per spw; for an EB averaged at startup ``input -> joint
    (final MS: delivered)``. Pure."""
    joint = ",".join(map(str, eb.get("nchan") or [])) or "–"
    avg = eb.get("channel_averaging") or {}
    if not any(int(f) > 1 for f in avg.get("factor") or []):
        return joint
    return (f"{','.join(map(str, avg.get('input_nchan') or []))} → {joint} "
            f"(final MS: {','.join(map(str, avg.get('delivered_nchan') or []))})")
