"""Survey-wide reports of a campaign output directory.

Public API::

    build_report(outdir) -> Path           # survey tables, plots and survey/report.html
    compare_runs(out_a, out_b, out=None)   # compare two outputs -> compare.html
    template_summary(datasets_df)          # pure per-template statistics
    load_survey(outdir, write=True)        # the loaded tables (Survey)

Outputs of ``build_report`` (under ``<out>/survey/``): ``datasets.csv`` (rebuilt from
``datasets/*/result.json`` if the campaign did not write it), ``steps.csv``,
``image_properties.csv`` + ``.parquet``, ``templates.csv``, ``plots/*.png`` and
``report.html``. Missing files never raise: the report lists what is missing.
"""
from __future__ import annotations

import logging
from pathlib import Path

from .aggregate import Survey, load_datasets, load_survey, template_summary
from .compare import compare_runs, pick_winner

log = logging.getLogger(__name__)

__all__ = ["Survey", "build_report", "compare_runs", "load_datasets", "load_survey",
           "pick_winner", "template_summary"]


def build_report(outdir: str | Path) -> Path:
    """Aggregate a campaign output and write ``<outdir>/survey/report.html`` (returned)."""
    from .figures import survey_plots  # lazy: report parts load when a report is built
    from .html import write_report  # lazy: report parts load when a report is built

    out = Path(outdir).resolve()
    if not out.is_dir():
        raise FileNotFoundError(f"campaign output directory not found: {out}")
    survey = load_survey(out, write=True)
    plots, thumbs = survey_plots(survey, out / "survey" / "plots")
    from .aggregate import with_gains  # lazy: report parts load when a report is built
    from .sweep import build_sweep  # lazy: report parts load when a report is built

    sweep = build_sweep(out, with_gains(survey.datasets), survey.campaign, survey.thresholds_mjy)
    path = write_report(survey, plots, thumbs, sweep=sweep)
    log.info("survey report: %s (%d datasets)", path, len(survey.datasets))
    return path
