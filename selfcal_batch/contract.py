"""The output contract: what a campaign directory holds, declared once.

Used by the pipeline (writes ``result.json``, ``image_properties.csv``, ``state.json``), the
campaign (``survey/datasets.csv``, ``campaign.json``) and the report (reads all of them, also
of older campaigns). Pure: imports nothing of the package but the template thresholds.

Layout (``<out>`` = a campaign's output directory)::

    <out>/campaign.json                  CAMPAIGN_JSON: versions, options, resolved manifest,
                                         "output_schema", "template_thresholds_mjy" per dataset
    <out>/survey/datasets.csv            DATASETS_CSV: CSV_COLUMNS, then extra keys (sorted)
    <out>/datasets/<name>/result.json    RESULT_JSON: DatasetResult.to_dict()
    <out>/datasets/<name>/state.json     STATE_JSON: pipeline.state (schema STATE_VERSION)
    <out>/datasets/<name>/image_properties.csv   IMAGE_ROW_KEYS, then imstats.STAT_COLUMNS
    <out>/datasets/<name>/gain_tables.json       per accepted step: tables and spwmaps
    <out>/datasets/<name>/final.ms, final-image.fits, work.ms (kept with keep_work_ms)
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from selfcal_batch.selfcal.templates import DEFAULT_THRESHOLDS

#: Version of this layout (recorded in campaign.json as "output_schema"). 1: issue 15.
OUTPUT_SCHEMA_VERSION = 1

CAMPAIGN_JSON = "campaign.json"
DATASETS_CSV = "survey/datasets.csv"
RESULT_JSON = "result.json"
STATE_JSON = "state.json"
IMAGE_PROPERTIES_CSV = "image_properties.csv"
GAIN_TABLES_JSON = "gain_tables.json"
FINAL_MS = "final.ms"
FINAL_IMAGE = "final-image.fits"
WORK_MS = "work.ms"
#: The files of a dataset directory the report links to.
DATASET_FILES = (RESULT_JSON, STATE_JSON, IMAGE_PROPERTIES_CSV, GAIN_TABLES_JSON)

#: Template selection thresholds (mJy; very_faint|faint|standard_1|standard_2|bright),
#: the default of ``template_thresholds_mjy`` (selfcal.templates, seed §2.4).
TEMPLATE_THRESHOLDS_MJY: tuple[float, ...] = tuple(DEFAULT_THRESHOLDS)


@dataclass
class DatasetResult:
    """One dataset's outcome (written to ``result.json``; one row of datasets.csv).

    The cost fields (``wall_s``, ``time_*_s``, ``wsclean_runs``) are summed over every
    attempt that ran a step (:mod:`selfcal_batch.pipeline.records`); ``attempts`` lists every attempt.
    """

    name: str
    ms: str
    #: finished | unchanged | no_detection | needs_calibration | failed (outcome.ALL_STATUSES)
    status: str = "failed"
    error: str = ""
    #: Why the input was delivered unchanged (status unchanged / no_detection / needs_calibration).
    reason: str = ""
    template_initial: str = ""
    template_final: str = ""
    steps_run: list[str] = field(default_factory=list)
    steps_accepted: list[str] = field(default_factory=list)
    steps_reverted: list[str] = field(default_factory=list)
    steps_skipped: list[str] = field(default_factory=list)
    snr_initial: float = math.nan
    snr_final: float = math.nan
    dr_initial: float = math.nan
    dr_final: float = math.nan
    rms_initial: float = math.nan
    rms_final: float = math.nan
    peak_initial: float = math.nan
    peak_final: float = math.nan
    total_flux_initial: float = math.nan
    total_flux_final: float = math.nan
    wall_s: float = 0.0
    final_ms: str = ""
    final_image: str = ""
    wsclean_runs: int = 0
    #: Of those, predict-only runs (MODEL_DATA refilled from an earlier model after a revert).
    wsclean_predicts: int = 0
    time_wsclean_s: float = 0.0
    time_casa_s: float = 0.0
    time_python_s: float = 0.0
    #: Number of attempts on this dataset directory (also no-op resumes).
    n_attempts: int = 0
    #: Image noise expected from the visibilities (natural weighting, Jy/beam; ms/inspection).
    thermal_noise_jy: float = math.nan
    #: Seconds WSClean/CASA runs waited for cores of a worker shared with other datasets
    #: (``[cluster] share_cores``; selfcal_batch.corepool): not counted in time_python_s.
    time_core_wait_s: float = 0.0
    decisions: dict[str, Any] = field(default_factory=dict)
    #: One record per attempt (records.py): start, end (UTC ISO), steps, exit, host, worker, costs.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: The final guard's verdict: deliver (bool), reason, changes {metric: [before, after, z]}.
    guard: dict[str, Any] = field(default_factory=dict)
    #: Joint EBs (issue 18): one record per execution block, in manifest order: ``ms``,
    #: ``final_ms``, ``input_spws``/``spws`` (the input's / the joint working copy's spw
    #: ids), ``nchan`` (per spw, in the joint working copy), ``channel_averaging``
    #: (``{input_nchan, chanbin, factor, delivered_nchan}``: per spw, the input's channels,
    #: the extra averaging factor startup applied so that all EBs share one count (1 = none)
    #: and the channels of ``final_ms``; an averaged EB also has ``delivered_resolution =
    #: "input"`` or, when that failed, ``full_resolution_error`` (then ``final_ms`` holds the
    #: averaged channels); None in outputs older than this field), ``phase_shift_arcsec`` (how
    #: far its working copy was re-phased to EB 1's phase centre by CASA phaseshift, 0.0 = not;
    #: its final MS keeps that centre), ``phase_centre`` (the working copy's phase centre, CASA
    #: J2000 text), ``align_gain`` (antenna amplitude factor of align_ebs, 1 = none),
    #: ``align_flux_factor`` (= 1 / align_gain^2: what the EB's visibilities were multiplied
    #: by), ``align_phase_rms_deg``, ``flagged_fraction`` (of its final MS), ``flagged_solutions``
    #: (``{step: fraction of this EB's solutions flagged in the step's table}``). Empty for one MS.
    ebs: list[dict[str, Any]] = field(default_factory=list)
    #: Joint EBs: every input MS (execution block) in manifest order (';'-joined in
    #: datasets.csv: the target's row names its EBs, issue 18 item 3); empty for one MS.
    eb_paths: list[str] = field(default_factory=list)
    #: What the campaign decided about the dataset's inputs that the user must know (tester
    #: s7 #4/#8): an MS of a grouped entry left out of this target, and why. Empty = none.
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly mapping (NaN -> None)."""
        d = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


# -- result columns (derived from DatasetResult) -------------------------------------------

#: Every result field, in declaration order.
RESULT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(DatasetResult))
_TYPES = typing.get_type_hints(DatasetResult)
#: Fields holding step-name lists (';'-joined in CSV files).
LIST_FIELDS: tuple[str, ...] = tuple(f for f in RESULT_FIELDS if _TYPES[f] == list[str])
#: Text fields (lists included: they are text in a CSV), numeric fields.
TEXT_FIELDS: tuple[str, ...] = tuple(f for f in RESULT_FIELDS if _TYPES[f] is str or f in LIST_FIELDS)
NUMERIC_FIELDS: tuple[str, ...] = tuple(f for f in RESULT_FIELDS if _TYPES[f] in (int, float))
#: Structured fields (dicts, the attempt list): JSON in result.json.
NESTED_FIELDS: tuple[str, ...] = tuple(f for f in RESULT_FIELDS if f not in TEXT_FIELDS + NUMERIC_FIELDS)
#: Fields added after survey/datasets.csv's column order was fixed: written after the
#: leading columns (sorted with any other extra key), so existing files keep their layout.
LATER_FIELDS = ("steps_skipped", "wsclean_predicts", "thermal_noise_jy", "time_core_wait_s", "eb_paths", "notes")
#: Leading columns of survey/datasets.csv (campaign.progress), in order.
CSV_COLUMNS: tuple[str, ...] = tuple(f for f in RESULT_FIELDS if f not in LATER_FIELDS + NESTED_FIELDS)
#: Result keys kept in result.json only (too wide for a CSV cell).
CSV_EXCLUDED = ("attempts", "ebs")
#: The report's dataset table columns: every flat field but wsclean_predicts.
REPORT_COLUMNS: tuple[str, ...] = tuple(f for f in RESULT_FIELDS
                                        if f not in NESTED_FIELDS and f != "wsclean_predicts")
#: The report's numeric columns (same selection, in order).
REPORT_NUMERIC: tuple[str, ...] = tuple(f for f in REPORT_COLUMNS if f in NUMERIC_FIELDS)

# -- step records and image rows --------------------------------------------------------

#: Keys of a ladder step's state record copied into result.json ``decisions``.
DECISION_KEYS = ("status", "accepted", "reason", "solint", "combine", "est_snr", "solint_reason",
                 "flagged_solutions")
#: Columns of survey/steps.csv (a step record plus dataset, outcome and template).
STEP_COLUMNS = ("dataset", "step", "status", "accepted", "reason", "solint", "combine", "est_snr",
                "flagged_solutions", "outcome", "solint_reason", "template", "snr_pre", "snr_post",
                "seconds")
#: Identity columns of an image row (image_properties.csv), before the statistics.
IMAGE_ROW_KEYS = ("dataset", "step", "role", "template", "robust", "path")
