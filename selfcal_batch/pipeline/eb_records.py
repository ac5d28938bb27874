"""Joint EBs: the per-EB rows of ``result.json`` (``DatasetResult.ebs``) from a dataset's state."""
from __future__ import annotations

from typing import Any


def eb_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Joint EBs: the result's per-EB records from the state (startup, align_ebs, split)."""
    align = (state.get("steps") or {}).get("align_ebs") or {}
    kept = align.get("accepted") is True
    out = []
    for k, eb in enumerate(state.get("ebs") or []):
        a = (align.get("per_eb") or [{}] * (k + 1))[k] if kept else {}
        out.append({"ms": eb.get("ms"), "final_ms": eb.get("final_ms", ""), "input_spws": eb.get("input_spws"),
                    "spws": eb.get("spws"), "nchan": eb.get("nchan"),
                    # what startup averaged to one channel count (steps_joint.equalise_channels)
                    "channel_averaging": eb.get("channel_averaging"),
                    "phase_shift_arcsec": eb.get("phase_shift_arcsec", 0.0), "phase_centre": eb.get("phase_centre"),
                    "align_gain": a.get("scale", 1.0),
                    "align_flux_factor": round(1 / a["scale"] ** 2, 5) if a.get("scale") else 1.0,
                    "align_phase_rms_deg": a.get("phase_rms_deg"),
                    "flagged_fraction": eb.get("flagged_fraction"),
                    # fraction of this EB's solutions flagged, per step that solved (eb_solutions)
                    "flagged_solutions": {s: r["flagged_solutions_per_eb"][k]
                                          for s, r in (state.get("steps") or {}).items()
                                          if isinstance(r, dict) and len(r.get("flagged_solutions_per_eb") or ()) > k}})
    return out
