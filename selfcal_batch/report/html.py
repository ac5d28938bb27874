"""``survey/report.html``: one self-contained page (inline CSS/JS, relative links only).

Every ``src``/``href`` written is relative to ``survey/`` and is only written when the file
exists (see :func:`Linker.link`). jinja2 runs with autoescape.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import re
import shutil
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import pandas as pd

from selfcal_batch import contract
from selfcal_batch.fileio import atomic_write_text

from .aggregate import Survey, read_json, split_list, to_float, with_gains
from .dataset_page import LEGEND, eb_rows, micro, observation_summary, status_text, text
from .figures import PLOT_FILES

PLOT_TITLES = {
    "dr_before_after": "Dynamic range before vs after",
    "snr_gain_vs_flux": "SNR gain vs initial flux (template thresholds dotted)",
    "snr_steps": "SNR through the steps",
    "template_usage": "Template usage (initial vs final selection)",
    "wall_time": "Wall time per dataset (WSClean / CASA / Python)",
    "thumbnails": "Before / after thumbnails",
}
#: Up to this many datasets the per-dataset sections would be inline; every dataset now has
#: its own page (survey/datasets/<anchor>.html), linked from the summary table, so the
#: summary page stays small (1000 datasets inline made a 7.1 MB page).
INLINE_DATASETS_MAX = 0
MAIN_LOGS = ("pipeline.log", "wsclean.log", "casa.log")
DATASET_FILES = contract.DATASET_FILES
SURVEY_FILES = ("datasets.csv", "templates.csv", "steps.csv", "image_properties.csv",
                "image_properties.parquet")


class Linker:
    """Relative, URL-quoted links from one directory; None for files that do not exist."""

    def __init__(self, base: Path):
        self.base = Path(base).resolve()

    def link(self, path: Path | str | None) -> str | None:
        if path is None:
            return None
        p = Path(path)
        if not p.is_file():
            return None
        rel = os.path.relpath(p.resolve(), self.base)
        return "/".join(quote(part) for part in Path(rel).as_posix().split("/"))


def fmt(v: Any, spec: str = ".3g") -> str:
    """Format a number ('–' for missing / non-finite)."""
    f = to_float(v)
    if math.isnan(f):
        return "–"
    return format(f, spec)


def sort_key(v: Any) -> str:
    """``data-v`` value of a numeric table cell ('' when missing)."""
    f = to_float(v)
    return "" if math.isnan(f) else repr(f)


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).with_name("templates"))),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["sk"] = sort_key
    return env


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


def anchors(names: list[str]) -> dict[str, str]:
    """Unique HTML ids per dataset name."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for n in names:
        base = "ds-" + (re.sub(r"[^A-Za-z0-9_-]", "_", n) or "x")
        a, i = base, 1
        while a in used:
            i += 1
            a = f"{base}-{i}"
        used.add(a)
        out[n] = a
    return out


def _iso_seconds(a: Any, b: Any) -> float:
    """Seconds from ISO time ``a`` to ``b`` (NaN when either is missing or unparsable)."""
    try:
        return (_dt.datetime.fromisoformat(str(b)) - _dt.datetime.fromisoformat(str(a))).total_seconds()
    except (TypeError, ValueError):
        return math.nan


def campaign_elapsed(camp: dict[str, Any]) -> tuple[float, float, int]:
    """(elapsed s of the last campaign run, elapsed s summed over every recorded run, number
    of runs) from campaign.json (``elapsed_s`` or finished - started; ``runs``). NaN when
    unknown. This is wall-clock time of the campaign process, unlike the datasets' summed
    ``wall_s`` (every attempt of every dataset, concurrent ones added up)."""
    last = to_float(camp.get("elapsed_s"))
    if math.isnan(last):
        last = _iso_seconds(camp.get("started"), camp.get("finished"))
    runs = camp.get("runs") if isinstance(camp.get("runs"), list) else []
    vals = []
    for r in runs:
        if isinstance(r, dict):
            v = to_float(r.get("elapsed_s"))
            vals.append(v if not math.isnan(v) else _iso_seconds(r.get("started"), r.get("finished")))
    vals = [v for v in vals if not math.isnan(v)]
    total = sum(vals) if vals else last
    return last, total, max(len(runs), 1 if not math.isnan(last) else 0)


def campaign_summary(s: Survey) -> dict[str, Any]:
    ds, camp = s.datasets, s.campaign
    from selfcal_batch.selfcal.outcome import ALL_STATUSES  # lazy: loaded only on this path

    counts = {k: int((ds["status"] == k).sum()) for k in ALL_STATUSES}
    other = len(ds) - sum(counts.values())
    walls = [w for w in ds["wall_s"] if not math.isnan(w)]
    cluster = camp.get("cluster")
    versions = camp.get("versions") if isinstance(camp.get("versions"), dict) else {}
    if not versions:
        from selfcal_batch import __version__  # lazy: avoids importing the package root at module load

        versions = {"selfcal-batch (report)": __version__}
    info = [("campaign", camp.get("campaign") or s.out.name), ("output", str(s.out)),
            ("status", camp.get("status")), ("started", camp.get("started")),
            ("finished", camp.get("finished")), ("host", camp.get("host")),
            ("cluster", cluster.get("description") if isinstance(cluster, dict) else cluster)]
    elapsed, elapsed_all, n_runs = campaign_elapsed(camp)
    return {"n": len(ds), "counts": counts, "other": other,
            "wall_total": sum(walls) if walls else math.nan,
            "elapsed": elapsed, "elapsed_all": elapsed_all, "n_runs": n_runs,
            "wall_median": statistics.median(walls) if walls else math.nan,
            "info": [(k, str(v)) for k, v in info if v not in (None, "")],
            "versions": sorted((str(k), str(v)) for k, v in versions.items()),
            "thresholds": ", ".join(f"{t:g}" for t in s.thresholds_mjy)}


def dataset_rows(s: Survey, anchor: dict[str, str], paged: bool = False) -> list[dict[str, Any]]:
    rows = []
    for _, r in with_gains(s.datasets).iterrows():
        a = anchor[r["name"]]
        rows.append({
            "name": r["name"], "anchor": a, "href": f"datasets/{quote(a)}.html" if paged else f"#{a}",
            "status": r["status"],
            "error": r["error"], "t_ini": r["template_initial"], "t_fin": r["template_final"],
            "snr_initial": r["snr_initial"], "snr_final": r["snr_final"], "snr_gain": r["snr_gain"],
            "dr_initial": r["dr_initial"], "dr_final": r["dr_final"], "dr_gain": r["dr_gain"],
            "rms_final_ujy": micro(r["rms_final"]), "rms_thermal_final": r.get("rms_thermal_final"),
            "why": text(r["error"] if r["status"] == "failed" else r.get("reason"), ""),
            "accepted": split_list(r["steps_accepted"]), "reverted": split_list(r["steps_reverted"]),
            "skipped": split_list(r["steps_skipped"]), "wall_s": r["wall_s"],
        })
    return rows


def _beam(r: pd.Series) -> str:
    a, b, pa = (to_float(r.get(k)) for k in ("bmaj_arcsec", "bmin_arcsec", "bpa_deg"))
    if math.isnan(a) or math.isnan(b):
        return "–"
    return f"{a:.2f}″×{b:.2f}″" + ("" if math.isnan(pa) else f" @ {pa:.0f}°")


def ms_text(ms: str, eb_paths: list[str]) -> str:
    """The dataset section's MS line: the MS, or every EB of a joint dataset (issue 18 item 3)."""
    return f"{len(eb_paths)} execution blocks: " + "; ".join(map(str, eb_paths)) if len(eb_paths) > 1 else ms


def _decision_text(r: pd.Series) -> str:
    reason = str(r.get("reason") or "").strip()
    outcome = str(r.get("outcome") or "")
    if reason and reason.lower() != "nan" and outcome != "accepted":
        return f"{outcome}: {reason}"
    return outcome


def dataset_section(s: Survey, name: str, anchor: str, thumbs: dict[str, Path],
                    linker: Linker) -> dict[str, Any]:
    root = s.out / "datasets" / name
    row = s.datasets[s.datasets["name"] == name].iloc[0]
    result = read_json(root / "result.json")
    result = result if isinstance(result, dict) else {}
    # the campaign's notes on the inputs (an EB left out of the target's group, tester s7 #8)
    notes = list(s.dataset_notes.get(name, [])) + [str(n) for n in result.get("notes") or []]
    images = s.images[s.images["dataset"] == name] if not s.images.empty else s.images
    state = read_json(root / "state.json")
    msinfo = state.get("msinfo") if isinstance(state, dict) else None
    thermal = to_float((msinfo or {}).get("thermal_noise_jy"))
    image_rows = [{"step": r["step"], "role": r["role"], "template": text(r.get("template"), ""),
                   "snr": r.get("snr"), "dr": r.get("dynamic_range"), "rms": micro(r.get("rms_offsource")),
                   "rms_thermal": to_float(r.get("rms_offsource")) / thermal if thermal > 0 else math.nan,
                   "peak": r.get("peak"), "flux": r.get("total_flux_mask"), "beam": _beam(r),
                   "fits": linker.link(root / str(r["path"])) if r["path"] else None,
                   "path": r["path"]}
                  for _, r in images.iterrows()]
    steps = s.steps[s.steps["dataset"] == name]
    decisions = [{"step": r["step"], "template": text(r["template"]), "outcome": text(r["outcome"], ""),
                  "text": text(_decision_text(r)), "solint": text(r["solint"]),
                  "solint_reason": text(r["solint_reason"], ""), "est_snr": r["est_snr"],
                  "combine": text(r["combine"]), "snr_pre": r["snr_pre"], "snr_post": r["snr_post"],
                  "flagged": r["flagged_solutions"], "seconds": r["seconds"]}
                 for _, r in steps.iterrows()]
    logs = [(n, linker.link(root / "logs" / n)) for n in MAIN_LOGS]
    missing_logs = [n for n, href in logs if href is None]
    logs = [(n, h) for n, h in logs if h]
    if (root / "logs").is_dir():
        logs += [(p.name, linker.link(p)) for p in sorted((root / "logs").glob("*.log"))
                 if p.name not in MAIN_LOGS]
    if missing_logs and root.is_dir():
        notes.append("missing log(s): " + ", ".join(missing_logs))
    plots = [(p.name, linker.link(p)) for p in sorted((root / "plots").glob("*.png"))] \
        if (root / "plots").is_dir() else []
    thumb_links = {k: linker.link(thumbs.get(k)) for k in ("initial", "final", "pair")}
    if row["status"] == "finished" and not image_rows:
        notes.append("no per-image statistics")
    return {"name": name, "anchor": anchor, "status": row["status"], "error": row["error"],
            "status_text": status_text(str(row["status"]), str(row.get("reason") or ""), str(row["error"] or "")),
            "obs": observation_summary(msinfo), "ebs": eb_rows(result),
            "gain_plots": [(n, h) for n, h in plots if h and ("gain" in n or "snr" in n.lower())],
            "ms": ms_text(str(row["ms"] or ""), result.get("eb_paths") or []),
            "t_ini": row["template_initial"], "t_fin": row["template_final"],
            "thumbs": thumb_links, "images": image_rows, "decisions": decisions, "logs": logs,
            "plots": [(n, h) for n, h in plots if h],
            "summary_png": linker.link(root / "plots" / "summary.png"),
            "files": [(n, linker.link(root / n)) for n in DATASET_FILES if linker.link(root / n)],
            "notes": notes}


def template_rows(s: Survey) -> list[dict[str, Any]]:
    return [dict(r) for _, r in s.templates.iterrows()]


def write_report(s: Survey, plots: dict[str, Path], thumbs: dict[str, dict[str, Path]],
                 sweep: dict[str, Any] | None = None) -> Path:
    """Render ``survey/report.html`` from a loaded survey and its drawn plots."""
    survey_dir = s.out / "survey"
    survey_dir.mkdir(parents=True, exist_ok=True)
    linker = Linker(survey_dir)
    names = list(s.datasets["name"])
    anchor = anchors(names)
    plot_links = [(PLOT_TITLES[k], linker.link(plots[k])) for k in PLOT_FILES if k in plots]
    files = [(n, linker.link(survey_dir / n)) for n in SURVEY_FILES]
    files.append(("campaign.json", linker.link(s.out / "campaign.json")))
    files += [(n, linker.link(survey_dir / n)) for n in ("sweep_matrix.csv", "sweep_bins.csv",
                                                          "proposed_thresholds.toml")]
    title = f"selfcal-batch survey report: {s.campaign.get('campaign') or s.out.name}"
    paged = len(names) > INLINE_DATASETS_MAX
    if paged:
        sections = []
        page_dir = survey_dir / "datasets"
        if page_dir.is_dir():
            shutil.rmtree(page_dir)  # no stale pages of datasets no longer in the survey
        page_dir.mkdir()
        page_linker = Linker(page_dir)
        for n in names:
            sec = dataset_section(s, n, anchor[n], thumbs.get(n, {}), page_linker)
            _write(page_dir / f"{anchor[n]}.html", render("dataset_page.html.j2", title=f"{n}: {title}", s=sec,
                                                          legend=LEGEND))
    else:
        sections = [dataset_section(s, n, anchor[n], thumbs.get(n, {}), linker) for n in names]
    html = render(
        "report.html.j2", title=title,
        generated=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        summary=campaign_summary(s), datasets=dataset_rows(s, anchor, paged), templates=template_rows(s),
        plots=[(t, h) for t, h in plot_links if h], files=[(n, h) for n, h in files if h],
        sections=sections, paged=paged, notes=s.notes, legend=LEGEND, sweep=sweep)
    return _write(survey_dir / "report.html", html)


def _write(path: Path, html: str) -> Path:
    return atomic_write_text(path, html)
