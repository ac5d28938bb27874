"""Template sweep tables (DESIGN.md, "Template sweeps"): the matrix dataset x variant, the
winner per flux bin and proposed template thresholds. Pure functions of the dataset rows,
except :func:`truth_errors` (reads FITS and the simulator's truth files) and
:func:`write_sweep` (writes the CSV / TOML files).

Quality of a (dataset, variant) run = its final dynamic range (peak / residual rms of the
final image, ``dr_final``); a run that failed has none. Columns of the matrix, per variant
``v``: ``dr_<v>``, ``rms_thermal_<v>`` (final off-source rms / thermal noise), ``flux_<v>``
(final / initial flux in the mask), ``kept_<v>`` (steps accepted), ``status_<v>`` and,
with a truth file, ``err_<v>`` (rms(final image - truth) / truth peak,
simulate/evaluate.py). ``flux_mjy`` is the initial flux (mJy) of the ``auto`` variant (else
the first variant with one); ``winner`` the variant with the highest DR.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from selfcal_batch.campaign.variants import AUTO, split_name

#: Templates from faint to bright (the order of the thresholds between them).
TEMPLATE_ORDER = ("very_faint", "faint", "standard_1", "standard_2", "bright")


def sweep_variants(campaign: dict[str, Any]) -> tuple[str, ...]:
    """The variants of a campaign.json (``manifest_resolved.campaign.variants``), or ()."""
    res = campaign.get("manifest_resolved") if isinstance(campaign, dict) else None
    v = ((res or {}).get("campaign") or {}).get("variants") or ()
    return tuple(str(x) for x in v)


def _f(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def sweep_matrix(datasets: pd.DataFrame, variants: tuple[str, ...],
                 errors: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per base dataset, the columns of the module docstring (NaN where missing)."""
    rows: dict[str, dict[str, Any]] = {}
    for _, r in datasets.iterrows():
        base, v = split_name(str(r["name"]), variants)
        if not v:
            continue
        row = rows.setdefault(base, {"dataset": base})
        kept = r.get("steps_accepted")
        kept = kept if isinstance(kept, list) else [s for s in str(kept or "").split(";") if s and s != "nan"]
        ini, fin = _f(r.get("total_flux_initial")), _f(r.get("total_flux_final"))
        th, rms = _f(r.get("thermal_noise_jy")), _f(r.get("rms_final"))
        row.update({f"dr_{v}": _f(r.get("dr_final")) if r.get("status") != "failed" else math.nan,
                    f"rms_thermal_{v}": rms / th if th > 0 else math.nan,
                    f"flux_{v}": fin / ini if ini > 0 else math.nan,
                    f"kept_{v}": " ".join(kept), f"status_{v}": str(r.get("status") or ""),
                    f"_ini_{v}": ini})
        if errors is not None:
            row[f"err_{v}"] = errors.get(str(r["name"]), math.nan)
    out = []
    for row in rows.values():
        order = [AUTO, *[v for v in variants if v != AUTO]]
        flux = next((row.get(f"_ini_{v}") for v in order if _f(row.get(f"_ini_{v}")) > 0), math.nan)
        drs = {v: _f(row.get(f"dr_{v}")) for v in variants}
        finite = {v: d for v, d in drs.items() if not math.isnan(d)}
        row = {k: v for k, v in row.items() if not k.startswith("_ini_")}
        row["flux_mjy"] = 1e3 * flux if not math.isnan(flux) else math.nan
        ranked = sorted(finite.values(), reverse=True)
        row["winner"] = max(finite, key=finite.get) if finite else ""
        row["margin"] = ranked[0] / ranked[1] if len(ranked) > 1 and ranked[1] > 0 else math.nan
        out.append(row)
    return pd.DataFrame(out)


def flux_bins(thresholds_mjy: tuple[float, ...]) -> list[tuple[float, float, str]]:
    """(low, high, template) bins of the initial flux, faint to bright."""
    edges = [0.0, *thresholds_mjy, math.inf]
    return [(edges[i], edges[i + 1], TEMPLATE_ORDER[i] if i < len(TEMPLATE_ORDER) else f"bin{i}")
            for i in range(len(edges) - 1)]


def bin_winners(matrix: pd.DataFrame, variants: tuple[str, ...],
                thresholds_mjy: tuple[float, ...]) -> list[dict[str, Any]]:
    """Per flux bin with datasets: the variant with the best median final DR, its margin
    over the runner-up (ratio of medians) and the spread (q25-q75 of its DR) in the bin."""
    out = []
    for lo, hi, label in flux_bins(thresholds_mjy):
        sel = matrix[(matrix["flux_mjy"] >= lo) & (matrix["flux_mjy"] < hi)] if len(matrix) else matrix
        if sel.empty:
            continue
        med = {}
        for v in variants:
            vals = pd.to_numeric(sel.get(f"dr_{v}"), errors="coerce").dropna() if f"dr_{v}" in sel else pd.Series([], dtype=float)
            if len(vals):
                med[v] = (float(vals.median()), float(vals.quantile(0.25)), float(vals.quantile(0.75)))
        if not med:
            continue
        ranked = sorted(med, key=lambda v: med[v][0], reverse=True)
        best = ranked[0]
        second = med[ranked[1]][0] if len(ranked) > 1 else math.nan
        out.append({"bin": f"{lo:g}–{hi:g} mJy" if math.isfinite(hi) else f"≥ {lo:g} mJy",
                    "template_by_flux": label, "n": int(len(sel)), "winner": best,
                    "median_dr": med[best][0], "q25": med[best][1], "q75": med[best][2],
                    "runner_up": ranked[1] if len(ranked) > 1 else "",
                    "margin": med[best][0] / second if second and second > 0 else math.nan})
    return out


#: A dataset's winner counts for the threshold proposal only when its final DR beats the
#: runner-up by this factor: DR differences of a few per cent are within the scatter of
#: identical re-runs (measured: a 4 x 3 sweep's winners won by 0.2-1.4 %).
MIN_MARGIN = 1.05


def propose_thresholds(matrix: pd.DataFrame, current: tuple[float, ...],
                       min_margin: float = MIN_MARGIN) -> tuple[list[float], list[str]]:
    """Thresholds (mJy, 4 values) from the winning template of each dataset, and why.
    Only decisive winners count (final DR >= ``min_margin`` x the runner-up's).

    For the boundary between templates TEMPLATE_ORDER[i] and [i+1]: the geometric mean of the
    brightest dataset won by a template <= i and the faintest won by a template > i, when the
    former is fainter than the latter; otherwise (no evidence on one side, or the winners
    are not ordered by flux) the current threshold is kept. The result is made increasing."""
    rank = {t: i for i, t in enumerate(TEMPLATE_ORDER)}
    margins = matrix["margin"] if "margin" in matrix else [math.inf] * len(matrix)
    pts = [(float(f), rank[w]) for f, w, mg in zip(matrix.get("flux_mjy", []), matrix.get("winner", []), margins, strict=False)
           if w in rank and math.isfinite(_f(f)) and f > 0 and not _f(mg) < min_margin]
    out, why = [], []
    for i, cur in enumerate(current):
        lower = [f for f, r in pts if r <= i]
        upper = [f for f, r in pts if r > i]
        if lower and upper and max(lower) < min(upper):
            val = math.sqrt(max(lower) * min(upper))
            why.append(f"{TEMPLATE_ORDER[i]} | {TEMPLATE_ORDER[i + 1]}: {val:.3g} mJy (between "
                       f"{max(lower):.3g} and {min(upper):.3g} mJy)")
        else:
            val = float(cur)
            why.append(f"{TEMPLATE_ORDER[i]} | {TEMPLATE_ORDER[i + 1]}: kept {cur:g} mJy "
                       f"({'no decisive winner on one side' if not (lower and upper) else 'winners not ordered by flux'})")
        out.append(val)
    for i in range(1, len(out)):  # strictly increasing, as the config requires
        if out[i] <= out[i - 1]:
            out[i] = out[i - 1] * 1.01
    return [round(v, 3) for v in out], why


def snippet(thresholds: list[float], why: list[str]) -> str:
    """A manifest snippet the user can adopt."""
    lines = ["# proposed by the template sweep (selfcal-batch report); a dataset's winning template",
             f"# counts only when its final DR beats the runner-up by >= {MIN_MARGIN:g}x"]
    lines += [f"#   {w}" for w in why]
    lines += ["[defaults]", "template_thresholds_mjy = [" + ", ".join(f"{t:g}" for t in thresholds) + "]"]
    return "\n".join(lines) + "\n"


def truth_errors(out: Path, datasets: pd.DataFrame) -> dict[str, float]:
    """name -> rms(final image - truth)/truth peak for datasets whose MS has a truth file."""
    errs: dict[str, float] = {}
    for _, r in datasets.iterrows():
        ms, img = str(r.get("ms") or ""), Path(out) / "datasets" / str(r["name"]) / "final-image.fits"
        truth_path = Path(ms).with_suffix(".truth.json") if ms else None
        if not truth_path or not truth_path.is_file() or not img.is_file():
            continue
        try:
            from selfcal_batch.simulate.evaluate import error_vs_truth  # lazy: loaded only on this path

            errs[str(r["name"])] = error_vs_truth(img, json.loads(truth_path.read_text()))["err"]
        except Exception:  # noqa: BLE001 - a truth comparison is optional
            continue
    return errs


def write_sweep(survey_dir: Path, matrix: pd.DataFrame, winners: list[dict[str, Any]], text: str) -> None:
    survey_dir.mkdir(parents=True, exist_ok=True)
    matrix.to_csv(survey_dir / "sweep_matrix.csv", index=False)
    pd.DataFrame(winners).to_csv(survey_dir / "sweep_bins.csv", index=False)
    (survey_dir / "proposed_thresholds.toml").write_text(text)


def cell(v: Any) -> str:
    """Matrix cell text ('–' for missing)."""
    f = _f(v)
    if isinstance(v, str):
        return v or "–"
    return "–" if math.isnan(f) else f"{f:.3g}"


__all__ = ["bin_winners", "cell", "flux_bins", "propose_thresholds", "snippet", "sweep_matrix",
           "sweep_variants", "truth_errors", "write_sweep"]


def build_sweep(out: Path, datasets: pd.DataFrame, campaign: dict[str, Any],
                thresholds_mjy: tuple[float, ...]) -> dict[str, Any] | None:
    """Everything the report shows of a sweep (None when the campaign has no variants);
    writes survey/sweep_matrix.csv, sweep_bins.csv and proposed_thresholds.toml."""
    variants = sweep_variants(campaign)
    if not variants:
        return None
    errors = truth_errors(out, datasets)
    matrix = sweep_matrix(datasets, variants, errors if errors else None)
    winners = bin_winners(matrix, variants, thresholds_mjy)
    proposed, why = propose_thresholds(matrix, thresholds_mjy)
    text = snippet(proposed, why)
    write_sweep(Path(out) / "survey", matrix, winners, text)
    rows = [{"dataset": r["dataset"], "flux": cell(r.get("flux_mjy")), "winner": r.get("winner") or "–",
             "cells": [{k: cell(r.get(f"{k}_{v}")) for k in ("dr", "rms_thermal", "flux", "kept", "status", "err")}
                       for v in variants]} for _, r in matrix.iterrows()]
    return {"variants": list(variants), "rows": rows, "truth": bool(errors),
            "bins": [{k: cell(v) if not isinstance(v, (str, int)) else v for k, v in b.items()} for b in winners],
            "snippet": text}
