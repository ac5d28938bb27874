"""Survey tables: datasets, per-step decisions, image properties, template summary.

Everything here reads the output contract of DESIGN.md (``<out>/campaign.json``,
``<out>/survey/datasets.csv``, ``<out>/datasets/<name>/{result,state}.json`` and
``image_properties.csv``) and never raises for a missing or unreadable file: problems are
collected as human-readable notes for the report.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from selfcal_batch import contract
from selfcal_batch.fileio import atomic_write, atomic_write_text
from selfcal_batch.numeric import finite_or_nan as to_float  # noqa: F401 (re-exported: report.html, report.compare)

log = logging.getLogger(__name__)

# Column sets of the output contract (selfcal_batch.contract).
LIST_COLUMNS = contract.LIST_FIELDS
TEXT_COLUMNS = contract.TEXT_FIELDS
NUMERIC_COLUMNS = contract.REPORT_NUMERIC
#: The columns of the report's dataset table (the DatasetResult fields, lists joined by ';').
DATASET_COLUMNS = contract.REPORT_COLUMNS
STEP_COLUMNS = contract.STEP_COLUMNS
IMAGE_KEY_COLUMNS = contract.IMAGE_ROW_KEYS
#: (column suffix, numerator, denominator) of the per-dataset ratios.
RATIOS = (("snr_gain", "snr_final", "snr_initial"), ("dr_gain", "dr_final", "dr_initial"),
          ("rms_change", "rms_final", "rms_initial"),
          ("flux_change", "total_flux_final", "total_flux_initial"))
DEFAULT_THRESHOLDS_MJY = contract.TEMPLATE_THRESHOLDS_MJY


@dataclass
class Survey:
    """Everything the report needs, loaded once."""

    out: Path
    campaign: dict[str, Any]
    datasets: pd.DataFrame
    steps: pd.DataFrame
    images: pd.DataFrame
    templates: pd.DataFrame
    thresholds_mjy: tuple[float, ...] = DEFAULT_THRESHOLDS_MJY
    notes: list[str] = field(default_factory=list)
    #: dataset name -> notes about that dataset's missing files.
    dataset_notes: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------------------- helpers
def split_list(v: Any) -> list[str]:
    """A steps list from a list, a ';'-joined string or an empty value."""
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v if str(x)]
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return []
    return [s for s in str(v).split(";") if s.strip()]


def read_json(path: Path) -> Any:
    """Parsed JSON or None (absent / unreadable / invalid)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    return atomic_write_text(path, df.to_csv(index=False))


def normalise_datasets(df: pd.DataFrame) -> pd.DataFrame:
    """Every DATASET_COLUMNS column present; text as str ('' for missing), numbers as float."""
    df = df.copy()
    for c in DATASET_COLUMNS:
        if c not in df.columns:
            df[c] = "" if c in TEXT_COLUMNS else math.nan
    for c in TEXT_COLUMNS:
        df[c] = [";".join(split_list(v)) if c in LIST_COLUMNS else
                 ("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
                 for v in df[c]]
    for c in NUMERIC_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    extra = [c for c in df.columns if c not in DATASET_COLUMNS]
    return df[list(DATASET_COLUMNS) + extra].reset_index(drop=True)


# ---------------------------------------------------------------------------- datasets
def dataset_dirs(out: Path) -> list[Path]:
    root = Path(out) / "datasets"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def rows_from_results(out: Path, notes: list[str]) -> list[dict[str, Any]]:
    """One row per ``datasets/*/`` from its result.json (a failed row if it has none)."""
    rows = []
    for d in dataset_dirs(out):
        res = read_json(d / "result.json")
        if not isinstance(res, dict):
            notes.append(f"{d.name}: no readable result.json (still running or crashed?); "
                         "listed as failed")
            res = {"name": d.name, "status": "failed",
                   "error": "no result.json (the dataset did not finish)"}
        row = {k: v for k, v in res.items() if k not in ("decisions", "attempts", "guard")}
        row["name"] = row.get("name") or d.name
        rows.append(row)
    return rows


def load_datasets(out: Path, notes: list[str] | None = None, write: bool = True) -> pd.DataFrame:
    """``survey/datasets.csv``, or (if absent/unreadable) rebuilt from every result.json.

    With ``write`` the rebuilt table is saved as ``survey/datasets.csv``.
    """
    notes = notes if notes is not None else []
    path = Path(out) / "survey" / "datasets.csv"
    df: pd.DataFrame | None = None
    if path.is_file():
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            notes.append(f"survey/datasets.csv is unreadable ({exc}); rebuilt from result.json files")
        else:
            if "name" not in df.columns:
                notes.append("survey/datasets.csv has no 'name' column; rebuilt from result.json files")
                df = None
    if df is None:
        rows = rows_from_results(Path(out), notes)
        if path.is_file() or rows:
            notes.append(f"survey/datasets.csv rebuilt from {len(rows)} result.json file(s)")
        df = normalise_datasets(pd.DataFrame(rows))
        if write:
            saved = df[list(DATASET_COLUMNS)].copy()
            for c in ("wsclean_runs", "n_attempts"):
                saved[c] = saved[c].round().astype("Int64")
            write_csv(saved, path)
        return df
    df = normalise_datasets(df)
    df = df[df["name"] != ""].reset_index(drop=True)
    # A campaign-written CSV may lack steps_skipped: take it from the result.json files.
    if "steps_skipped" not in pd.read_csv(path, nrows=0).columns:
        for i, name in enumerate(df["name"]):
            res = read_json(Path(out) / "datasets" / name / "result.json")
            if isinstance(res, dict):
                df.at[i, "steps_skipped"] = ";".join(split_list(res.get("steps_skipped")))
    return df


def load_steps(out: Path, datasets: pd.DataFrame) -> pd.DataFrame:
    """Per-step decisions of every dataset (result.json ``decisions`` + state.json extras)."""
    rows = []
    for _, ds in datasets.iterrows():
        name = ds["name"]
        root = Path(out) / "datasets" / name
        res = read_json(root / "result.json")
        decisions = res.get("decisions") if isinstance(res, dict) else None
        if not isinstance(decisions, dict) and isinstance(ds.get("decisions"), str) and ds["decisions"]:
            try:
                decisions = json.loads(ds["decisions"])
            except ValueError:
                decisions = None
        state = read_json(root / "state.json")
        srec = state.get("steps") if isinstance(state, dict) else None
        srec = srec if isinstance(srec, dict) else {}
        decisions = decisions if isinstance(decisions, dict) else {}
        order = [s for s in srec if s in decisions] + [s for s in decisions if s not in srec]
        for step in order:
            rec = {**(srec.get(step) or {}), **(decisions.get(step) or {})}
            status = str(rec.get("status") or "")
            accepted = rec.get("accepted")
            if status == "done":
                outcome = "accepted" if accepted else "reverted"
            else:
                outcome = status or "unknown"
            row = {c: rec.get(c) for c in STEP_COLUMNS}
            row.update(dataset=name, step=step, status=status, outcome=outcome,
                       accepted=bool(accepted) if accepted is not None else None)
            rows.append(row)
    df = pd.DataFrame(rows, columns=list(STEP_COLUMNS))
    for c in ("est_snr", "flagged_solutions", "snr_pre", "snr_post", "seconds"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
    return df


def gather_image_properties(out: Path, names: Iterable[str],
                            dataset_notes: dict[str, list[str]]) -> pd.DataFrame:
    """Concatenate every ``datasets/<name>/image_properties.csv`` (file order kept)."""
    frames = []
    for name in names:
        path = Path(out) / "datasets" / name / "image_properties.csv"
        if not path.is_file():
            dataset_notes.setdefault(name, []).append("no image_properties.csv")
            continue
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            dataset_notes.setdefault(name, []).append(f"image_properties.csv unreadable: {exc}")
            continue
        if df.empty:
            dataset_notes.setdefault(name, []).append("image_properties.csv has no rows")
            continue
        if "dataset" not in df.columns:
            df.insert(0, "dataset", name)
        df["dataset"] = df["dataset"].fillna(name).astype(str)
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(IMAGE_KEY_COLUMNS))
    df = pd.concat(frames, ignore_index=True, sort=False)
    for c in IMAGE_KEY_COLUMNS:
        if c not in df.columns:
            df[c] = math.nan
    return df


def text_keys(images: pd.DataFrame) -> pd.DataFrame:
    """A copy with the text key columns as str ('' for missing), for display."""
    df = images.copy()
    for c in ("dataset", "step", "role", "template", "path"):
        if c in df.columns:
            df[c] = df[c].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v))
                              else str(v))
    return df


def write_images(df: pd.DataFrame, survey: Path, notes: list[str]) -> None:
    """``survey/image_properties.csv`` and ``.parquet`` (same rows and columns)."""
    write_csv(df, survey / "image_properties.csv")
    pq = survey / "image_properties.parquet"

    def write(tmp: Path) -> None:
        try:
            df.to_parquet(tmp, index=False)
        except (ValueError, TypeError, ImportError) as exc:  # mixed-type object columns
            log.info("parquet: retrying with text columns (%s)", exc)
            fixed = df.copy()
            for c in fixed.columns[fixed.dtypes == object]:  # noqa: E721 (pandas elementwise dtype test)
                fixed[c] = fixed[c].map(lambda v: None if v is None or (isinstance(v, float)
                                                                        and math.isnan(v)) else str(v))
            fixed.to_parquet(tmp, index=False)

    try:
        atomic_write(pq, write)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        notes.append(f"survey/image_properties.parquet not written: {exc}")


# ---------------------------------------------------------------------------- templates
def ratio(df: pd.DataFrame, num: str, den: str) -> pd.Series:
    """``df[num] / df[den]`` with NaN where either is missing or the denominator is 0."""
    a = pd.to_numeric(df[num], errors="coerce").astype(float) if num in df else pd.Series(math.nan, df.index)
    b = pd.to_numeric(df[den], errors="coerce").astype(float) if den in df else pd.Series(math.nan, df.index)
    b = b.where(b != 0)
    r = a / b
    return r.where(r.map(math.isfinite))


#: (column, numerator, denominator): off-source rms over the thermal noise expected from the
#: visibilities (``thermal_noise_jy``, natural weighting): 1 = noise-limited; Briggs
#: weighting alone gives ~1.2-1.5, calibration errors and sidelobes more.
NOISE_RATIOS = (("rms_thermal_initial", "rms_initial", "thermal_noise_jy"),
                ("rms_thermal_final", "rms_final", "thermal_noise_jy"))


def with_gains(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of a datasets table with the RATIOS and NOISE_RATIOS columns added."""
    df = df.copy()
    for col, num, den in (*RATIOS, *NOISE_RATIOS):
        df[col] = ratio(df, num, den)
    return df


TEMPLATE_COLUMNS = ("selection", "template", "n_datasets", "n_failed",
                    *(f"{c}_{s}" for c, _, _ in RATIOS for s in ("median", "q25", "q75")),
                    "steps_accepted", "steps_reverted", "frac_steps_kept", "wall_s_median")


def template_summary(datasets: pd.DataFrame) -> pd.DataFrame:
    """Per template, by initial and by final selection: counts and gain statistics.

    ``n_datasets`` counts the finished datasets (the only ones in the statistics),
    ``n_failed`` the failed ones; medians and quartiles (linear interpolation) of the
    RATIOS over finished datasets; ``frac_steps_kept`` = accepted / (accepted + reverted)
    summed over those datasets; ``wall_s_median`` their median wall time. Datasets that
    never got a template are grouped as ``(none)``. Pure function.
    """
    rows = []
    if datasets is None or len(datasets) == 0:
        return pd.DataFrame(columns=list(TEMPLATE_COLUMNS))
    df = with_gains(datasets)
    status = df["status"].fillna("").astype(str) if "status" in df else pd.Series("", df.index)
    for sel in ("initial", "final"):
        col = f"template_{sel}"
        tmpl = (df[col] if col in df else pd.Series("", df.index)).map(
            lambda v: "(none)" if v is None or (isinstance(v, float) and math.isnan(v))
            or str(v).strip() == "" else str(v))
        for name in sorted(set(tmpl)):
            in_t = tmpl == name
            fin = df[in_t & (status == "finished")]
            n_failed = int((in_t & (status == "failed")).sum())
            if len(fin) == 0 and n_failed == 0:
                continue
            row: dict[str, Any] = {"selection": sel, "template": name, "n_datasets": len(fin),
                                   "n_failed": n_failed}
            for c, _, _ in RATIOS:
                vals = fin[c].dropna()
                row[f"{c}_median"] = float(vals.median()) if len(vals) else math.nan
                row[f"{c}_q25"] = float(vals.quantile(0.25)) if len(vals) else math.nan
                row[f"{c}_q75"] = float(vals.quantile(0.75)) if len(vals) else math.nan
            acc = sum(len(split_list(v)) for v in fin.get("steps_accepted", []))
            rev = sum(len(split_list(v)) for v in fin.get("steps_reverted", []))
            row.update(steps_accepted=acc, steps_reverted=rev,
                       frac_steps_kept=acc / (acc + rev) if acc + rev else math.nan)
            wall = pd.to_numeric(fin.get("wall_s", pd.Series(dtype=float)), errors="coerce").dropna()
            row["wall_s_median"] = float(wall.median()) if len(wall) else math.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=list(TEMPLATE_COLUMNS))


# ---------------------------------------------------------------------------- thresholds
def _dig(obj: Any, *path: Any) -> Any:
    """``obj[p0][p1]...`` or None when any step is missing or of another type."""
    for p in path:
        if isinstance(p, int):
            obj = obj[p] if isinstance(obj, list) and -len(obj) <= p < len(obj) else None
        else:
            obj = obj.get(p) if isinstance(obj, dict) else None
    return obj


def template_thresholds(out: Path, campaign: dict[str, Any], names: Iterable[str]) -> tuple[float, ...]:
    """The campaign's template thresholds (mJy) for the report.

    campaign.json ``template_thresholds_mjy.defaults`` (recorded since output schema 1);
    for older campaigns the manifest's ``[defaults]``, else the first dataset's override or
    resolved configuration (campaign.json), else any dataset's state.json configuration;
    else the package default (:data:`selfcal_batch.contract.TEMPLATE_THRESHOLDS_MJY`)."""
    key = "template_thresholds_mjy"
    resolved = campaign.get("manifest_resolved")
    first = _dig(resolved, "datasets", 0)
    candidates = [_dig(campaign, key, "defaults"), _dig(resolved, "defaults", key),
                  _dig(first, "overrides", key), _dig(first, "config", key)]
    for name in names:
        candidates.append(_dig(read_json(Path(out) / "datasets" / name / "state.json"), "config", key))
    for c in candidates:
        if isinstance(c, (list, tuple)) and c:
            vals = tuple(to_float(x) for x in c)
            if all(math.isfinite(v) and v > 0 for v in vals):
                return vals
    return DEFAULT_THRESHOLDS_MJY


# ---------------------------------------------------------------------------- all
def load_survey(out: Path, write: bool = True) -> Survey:
    """Load (and with ``write`` save) every survey table of one campaign output."""
    out = Path(out)
    notes: list[str] = []
    campaign = read_json(out / "campaign.json")
    if not isinstance(campaign, dict):
        notes.append("no campaign.json (versions, times and host unknown)")
        campaign = {}
    datasets = load_datasets(out, notes, write=write)
    if datasets.empty:
        notes.append("no datasets found (no survey/datasets.csv rows and no datasets/*/result.json)")
    names = list(datasets["name"])
    dnotes: dict[str, list[str]] = {}
    for name in names:
        if not (out / "datasets" / name).is_dir():
            dnotes.setdefault(name, []).append(f"no output directory datasets/{name}/")
    steps = load_steps(out, datasets)
    images = gather_image_properties(out, names, dnotes)
    templates = template_summary(datasets)
    survey = Survey(out=out, campaign=campaign, datasets=datasets, steps=steps, images=images,
                    templates=templates, thresholds_mjy=template_thresholds(out, campaign, names),
                    notes=notes, dataset_notes=dnotes)
    if write:
        sdir = out / "survey"
        write_csv(steps, sdir / "steps.csv")
        write_images(images, sdir, notes)
        write_csv(templates, sdir / "templates.csv")
    survey.images = text_keys(images)
    return survey
