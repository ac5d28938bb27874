"""Joint EBs: the per-EB rows of ``result.json`` (``DatasetResult.ebs``) from a dataset's state."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from selfcal_batch.selfcal.spwmap import spw_correspondence


def own_spws(eb: Mapping[str, Any]) -> list[int]:
    """The joint copy's spw ids holding EB ``eb``'s data (state ``ebs[k]["spws"]``), ascending.
    A per-EB final is split with this selection: without it CASA ``split`` by observation id
    keeps every spw of the joint copy, the other EBs' too, as empty spws (tester s7-break2 #1).
    Pure."""
    return sorted({int(s) for s in eb.get("spws") or [] if s is not None})


def final_spw_ids(eb: Mapping[str, Any], joint_spws: Sequence[Mapping[str, Any]],
                  final_spws: Sequence[Mapping[str, Any]]) -> list[int | None]:
    """Per input spw of the EB (``eb["input_spws"]`` order), its spw id in the EB's delivered
    MS, matched by frequency (``*_spws``: ``inspect_ms`` entries ``id, freq_min, freq_max``,
    Hz; a final at input channel resolution spans its averaged joint spw). None where the
    final holds no such spw. Pure."""
    own = set(own_spws(eb))
    to_joint = spw_correspondence(final_spws, [w for w in joint_spws if int(w["id"]) in own])
    to_final = {j: f for f, j in to_joint.items()}
    return [None if j is None else to_final.get(int(j)) for j in eb.get("spws") or []]


def eb_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Joint EBs: the result's per-EB records from the state (startup, align_ebs, split)."""
    align = (state.get("steps") or {}).get("align_ebs") or {}
    kept = align.get("accepted") is True
    out = []
    for k, eb in enumerate(state.get("ebs") or []):
        a = (align.get("per_eb") or [{}] * (k + 1))[k] if kept else {}
        out.append({"ms": eb.get("ms"), "final_ms": eb.get("final_ms", ""), "input_spws": eb.get("input_spws"),
                    "spws": eb.get("spws"), "final_spws": eb.get("final_spws"), "nchan": eb.get("nchan"),
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
