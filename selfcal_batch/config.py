"""Typed, validated pipeline configuration for one dataset.

Every setting a campaign's ``[defaults]`` or a ``[[datasets]]`` entry may carry is a field
here, declared once with :func:`selfcal_batch.schema.setting` (default, help, unit, choices
or range, value type). :meth:`PipelineConfig.from_dict` validates with the one validator
(:func:`selfcal_batch.schema.build`): unknown keys (did-you-mean), wrong types and invalid
values are a one-line :class:`ConfigError` naming the dotted key. Angles (``cell``,
``test_uvtaper``) and durations (``timebin``) stay strings, as written, validated by
:data:`~selfcal_batch.schema.ANGLE` / :data:`~selfcal_batch.schema.DURATION`; read them as
numbers with :func:`~selfcal_batch.schema.angle_arcsec` / ``duration_seconds``.
Reference: ``docs/configuration.md`` (generated: ``selfcal-batch config --markdown``).
"""
from __future__ import annotations

import dataclasses
import json
from functools import partial
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from selfcal_batch.errors import ConfigError
from selfcal_batch.selfcal.uvrange import uvrange_problem
from selfcal_batch.pipeline.products import KEEP_PRODUCTS
from selfcal_batch.schema import ANGLE, DURATION, build, check, hint, setting
from selfcal_batch.selfcal.templates import (
    TEMPLATE_NAMES,
    normalise_band,
    normalise_instrument,
    template_params,
)

# Step names in run order, the default steps and the aliases (old names): the step registry.
from selfcal_batch.pipeline.registry import DEFAULT_STEPS, STEP_ALIASES, STEP_NAMES, steps_problem  # noqa: E402
from selfcal_batch.selfcal.templates import DEFAULT_THRESHOLDS  # noqa: E402


LADDER_IMAGING = ("initial", "shared", "template")


def _even_size(v: int) -> str:
    return "" if v >= 32 and v % 2 == 0 else f"must be an even number >= 32, got {v}"


def _thresholds(th: tuple[float, ...]) -> str:
    ok = len(th) == 4 and th[0] > 0 and all(b > a for a, b in pairwise(th))
    return "" if ok else f"need 4 increasing positive values, got {list(th)}"


def _instrument(v: str) -> str:
    try:
        normalise_instrument(v)
    except ValueError as exc:
        return str(exc)
    return ""


def _template_tables(tables: dict[str, Any]) -> str:
    for name, steps in tables.items():
        if name not in TEMPLATE_NAMES:
            return f"unknown template {name!r}{hint(name, TEMPLATE_NAMES)}"
        if not isinstance(steps, dict):
            return f"{name}: expected a table of steps ([templates.{name}.<step>]), got {steps!r}"
    return ""


@dataclass(frozen=True)
class WSCleanConfig:
    """How WSClean is run and its fixed deconvolution settings (``[defaults.wsclean]``)."""

    binary: str = setting("wsclean", "WSClean executable (name on PATH or a path).")
    container: str = setting("", "Container image (.sif); when set, WSClean runs as "
                             "`<container_runtime> exec IMAGE wsclean` ('' = no container).")
    container_runtime: str = setting("apptainer", "Program that runs `container`.",
                                     choices=("apptainer", "singularity"))
    mgain: float = setting(0.8, "Major-cycle gain (-mgain); must be < 1 so WSClean 3.1 writes "
                           "MODEL_DATA.", gt=0, lt=1)
    gain: float = setting(0.1, "Minor-cycle loop gain (-gain).", gt=0, le=1)
    nmiter: int = setting(12, "Maximum number of major cycles (-nmiter).", ge=1)
    use_wgridder: bool = setting(True, "Grid with the w-gridder (-use-wgridder).")
    parallel_gridding: int = setting(2, "-parallel-gridding; measured 1.21-1.25x faster per run "
                                     "with identical images (scripts/bench).", ge=1)
    parallel_deconvolution: int = setting(0, "Sub-image size for -parallel-deconvolution "
                                          "(0 = off).", unit="px", ge=0)
    abs_mem_gb: float = setting(0.0, "Memory cap per run (-abs-mem); 0 = WSClean's default.",
                                unit="GB", ge=0)
    extra_args: tuple[str, ...] = setting((), "Extra arguments appended to every WSClean "
                                          "command line, verbatim.")
    timeout_s: float = setting(7200.0, "A WSClean run longer than this is killed and the step "
                               "fails.", unit="s", gt=0)


@dataclass(frozen=True)
class GateConfig:
    """Acceptance gate thresholds of each self-cal step (issue 7; ``[defaults.gate]``)."""

    enabled: bool = setting(True, "Judge each self-cal step and revert a rejected one.")
    snr_tolerance: float = setting(1.0, "The image SNR after a step must be >= the SNR before "
                                   "x this.", ge=0)
    rms_tolerance: float = setting(0.05, "The off-source rms may rise by at most this fraction "
                                   "(unless the estimated solution SNR is above high_snr).",
                                   ge=0, le=1)
    high_snr: float = setting(5.0, "Estimated per-solution SNR above which an rms rise is "
                              "tolerated.", ge=0)
    beam_tolerance: float = setting(0.05, "The beam area must stay within this fraction of the "
                                    "original image's.", ge=0, le=1)
    max_flagged_solutions: float = setting(0.2, "Maximum fraction of failed (flagged) solutions; "
                                           "also bounds the data fraction applycal may flag.",
                                           ge=0, le=1)
    max_antenna_loss: float = setting(0.5, "No antenna may lose more than this fraction of its "
                                      "solutions.", ge=0, le=1)
    flux_tolerance: float = setting(0.05, "Amplitude steps: the integrated flux may change by "
                                    "at most this fraction.", ge=0, le=1)
    min_phase_significance: float = setting(
        3.0, "Phase solutions must carry signal: mean squared (phase x SNR) of the non-reference "
        "solutions (~1-2.3 for pure noise) must reach this; 0 = no test.", ge=0)
    min_amp_significance: float = setting(
        1.5, "Amplitude steps: mean squared ((|g|/median - 1) x SNR) (~0.5 for pure noise) must "
        "reach this; 0 = no test.", ge=0)
    stop_on_phase_reject: bool = setting(True, "Stop the phase ladder at the first rejected "
                                         "phase step (unless it only gained nothing).")
    improve_sigma: float = setting(
        2.0, "A step must improve the image SNR (or off-source / near-field rms) by more than "
        "this many sigma of the metric's own noise; 0 = the plain comparisons (issue 14; "
        "scripts/bench_harm.py: real corrections z = 3.1-37, nothing to correct z < 0.9).",
        unit="sigma", ge=0)


@dataclass(frozen=True)
class GuardConfig:
    """The final guard (issue 14, ``[defaults.guard]``): deliver self-calibrated data only
    when measurably better than the input."""

    enabled: bool = setting(True, "Compare the final image with the like-for-like 'before' "
                            "image and keep the input when not better.")
    sigma: float = setting(3.0, "A metric must change by more than this many of its sigmas to "
                           "count, better or worse (one-sided false alarm 0.13 % per metric).",
                           unit="sigma", ge=0)
    tolerance: float = setting(0.03, "A peak or integrated-flux drop must also exceed this "
                               "fraction to count as worse.", ge=0, le=1)
    near_beams: float = setting(3.0, "Width of the near-field ring around the source mask.",
                                unit="beam FWHM", gt=0)


@dataclass(frozen=True)
class SolintConfig:
    """SNR-based solution intervals and the extended ladder (issue 7, ``[defaults.solint]``)."""

    snr_based: bool = setting(True, "Lengthen a template interval whose estimated per-solution "
                              "SNR is below min_snr.")
    min_snr: float = setting(3.0, "Minimum estimated per-solution SNR.", ge=0)
    extend_ladder: bool = setting(True, "Continue the phase ladder below the template's "
                                  "shortest interval while the SNR allows.")
    extend_min_snr: float = setting(6.0, "Estimated per-solution SNR needed before an "
                                    "extension step.", ge=0)
    extend_min_gain: float = setting(
        0.0, "Extend only while the last accepted phase step raised the image SNR by this "
        "fraction; 0 = off (0.01 saved 3 WSClean runs but left 7.0 instead of 5.6 deg "
        "residual phase, scripts/bench_quality.py).", ge=0)
    max_extra_steps: int = setting(4, "Maximum number of extension steps.", ge=0)
    max_solint_s: float = setting(1200.0, "Longest interval the lengthening may reach.",
                                  unit="s", gt=0)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything one dataset's pipeline needs besides the MS path (``[defaults]``)."""

    instrument: str = setting("VLA", "Telescope: VLA (EVLA, JVLA) or eMERLIN (e-MERLIN, eM); "
                              "case-insensitive.", check=_instrument)
    band: str = setting("C", "Receiver band: VLA 4 P L S C X Ku K Ka Q, e-MERLIN L C K; "
                        "picks the template values, cell and taper.")
    field: str = setting("", "CASA field selection of the working copy ('' = all).")
    eb_fields: tuple[str, ...] = setting((), "Joint execution blocks: the field selection of each EB's "
                                         "working copy, in ms order ([] = field in every EB); set by "
                                         "grouping targets (group), where a target's field ids or names "
                                         "differ between EBs.")
    spw: str = setting("", "CASA spw selection of the working copy ('' = all).")
    input_column: str = setting("data", "Column of the input MS to self-calibrate ('corrected' "
                                "for an observatory-calibrated MS).",
                                choices=("data", "corrected"), ignore_case=True)
    steps: tuple[str, ...] = setting(DEFAULT_STEPS, "Steps to run, in order (fov_image, autoflag_init and "
                                     "autoflag_final are off by default; old step names are accepted; align_ebs is added "
                                     "for joint execution blocks only).", choices=STEP_NAMES,
                                     also=tuple(STEP_ALIASES), noun="step")
    imsize: int = setting(512, "Image width and height (even, >= 32).", unit="px",
                          check=_even_size)
    cell: str = setting("auto", "Pixel size, or 'auto' = beam / pixels_per_beam from the "
                        "longest baseline.", text=ANGLE, also=("auto",))
    pixels_per_beam: float = setting(5.0, "Pixels across the beam when cell = 'auto'.", gt=0)
    channels_out: int = setting(0, "WSClean -channels-out (0 = the band default, capped by the "
                                "number of channels).", ge=0)
    niter: int = setting(100000, "Clean iterations of the test and ladder images.", ge=0)
    final_niter: int = setting(150000, "Clean iterations of the final image.", ge=0)
    final_robust: float = setting(0.5, "Briggs robust of the final image.", ge=-2, le=2)
    final_multiscale: bool = setting(True, "Multiscale clean for the final image.")
    test_imaging: str = setting(
        "final", "'final': the test image uses the final-image settings and doubles as the "
        "like-for-like 'before' image; 'seed': the seed's test image (robust test_robust, "
        "auto-mask 5/3, niter 1e4).", choices=("final", "seed"))
    test_robust: float = setting(0.0, "Briggs robust of the seed-style test image.", ge=-2, le=2)
    test_uvtaper: str = setting("", "Gaussian taper of the test image ('' = none).", text=ANGLE,
                                also=("",))
    allow_negative: bool = setting(True, "Allow negative clean components (WSClean "
                                   "-negative / -no-negative).")
    threads: int = setting(2, "Cores for WSClean (-j) and CASA of one dataset (the default "
                           "of [cluster] threads_per_dataset).", ge=1)
    template_thresholds_mjy: tuple[float, ...] = setting(
        DEFAULT_THRESHOLDS, "Test-image flux limits between the templates very_faint | "
        "faint | standard_1 | standard_2 | bright (4 increasing values).", unit="mJy", gt=0,
        check=_thresholds)
    force_template: str = setting("", "Use this template instead of selecting by flux "
                                  "('' = select).", choices=TEMPLATE_NAMES, also=("",),
                                  noun="template")
    templates: dict[str, dict[str, dict[str, Any]]] = setting(  # noqa: RUF009 (a dataclasses.field)
        {}, "Per-template overrides {template: {step: {key: value}}}; written as "
        "[templates.<name>.<step>] tables (keys: see Template overrides).",
        check=_template_tables)
    refant: str = setting("", "Reference antennas: '' = ranked automatically; a comma list is "
                          "filtered to antennas with unflagged data and good solutions, then "
                          "followed by the ranked list.")
    refantmode: str = setting("flex", "gaincal refantmode; 'flex' moves to the next antenna of "
                              "the list where the first is missing.", choices=("flex", "strict"))
    flag_bad_antennas: bool = setting(True, "Flag antennas whose phase solutions mostly fail "
                                      "while the rest of the array solves well.")
    calwt: bool = setting(False, "applycal calwt (scale the weights by the gains).")
    solnorm_amplitude: bool = setting(True, "Amplitude steps (ap*) normalise their gains "
                                      "(gaincal solnorm) so the flux scale stays.")
    solnorm_type: str = setting("median", "gaincal normtype of that normalisation ('median' is "
                                "robust to one wild antenna).", choices=("median", "mean"))
    detection_sigma: float = setting(5.0, "No source above this peak/rms in the test image -> "
                                     "status no_detection, input unchanged.", unit="sigma",
                                     ge=0)
    decorrelation_limit: float = setting(
        0.3, "Channel-average amplitude loss to phase slopes across the band above which the "
        "data are reported needs_calibration (input unchanged); 0 = no check.", ge=0, lt=1)
    outside_ratio: float = setting(
        3.0, "Data/model rms amplitude on the shortest baselines (test image's clean model) above "
        "which the visibilities hold bright emission outside the image: status unchanged, input "
        "delivered, no self-calibration (selfcal/outside.py); 0 = no check.", ge=0)
    coherence_loss: float = setting(
        0.2, "Largest fraction of a source's peak on a map of the short baselines over the primary "
        "beam that self-calibration may lose (final.ms vs the input, also 5 sigma): beyond it the "
        "input is delivered unchanged (selfcal/coherence.py); 0 = no check.", ge=0, lt=1)
    statwt_init: bool = setting(False, "Run statwt on the working copy before self-calibration.")
    statwt_final: bool = setting(True, "Run statwt on the self-calibrated data (final.ms).")
    timebin: str = setting("", "Time averaging of the working copy ('' = none).", text=DURATION,
                           also=("",))
    chanbin: int = setting(1, "Channel binning of the working copy (1 = none).", ge=1)
    ladder_imaging: str = setting(
        "initial", "Imaging setup along the ladder: 'initial' = the initially selected "
        "template's (+ multiscale when the final image uses it), kept when the template "
        "changes; 'shared' = the current template's; 'template' = each step's own "
        "robust/taper/multiscale (the seed).", choices=LADDER_IMAGING)
    plots: bool = setting(True, "Write per-dataset plots (images, solutions).")
    keep_work_ms: bool = setting(False, "Keep work.ms and the phase-only calibrated copy made "
                                 "before ap1 (phase_only.ms).")
    keep_products: str = setting(
        "default", "WSClean files kept per run: 'default' = MFS image/residual/model and "
        "per-channel models (what statistics, plots and resume read); once a dataset finished "
        "without work.ms, per-channel models go and MFS models and masks are gzipped "
        "(.fits.gz); 'all' = every file.",
        choices=KEEP_PRODUCTS, noun="policy")
    casa_timeout_s: float = setting(3600.0, "A CASA call longer than this is killed and the "
                                    "step fails.", unit="s", gt=0)
    ladder_economy: bool = setting(True, "Ladder images sized to the emission seen in the test image "
                                   "(cell unchanged, at least 256 px) and one output channel when the "
                                   "fractional bandwidth is <= 5% (imaging/economy.py); test, guard and "
                                   "final images keep the full settings.")
    casa_persistent: bool = setting(True, "One long-lived CASA child per dataset (restarted if it dies) "
                                    "instead of a child per batch of calls.")
    primary_beam: bool = setting(True, "Write final-image.pb.fits and final-image.pbcor.fits (CASA's "
                                 "beam model; e-MERLIN: a documented approximation).")
    pb_cutoff: float = setting(0.2, "Primary-beam response below which the .pb/.pbcor images are "
                               "blanked.", gt=0, le=1)
    uvrange_cal: str = setting("", "gaincal uv range: '' (all), '>500lambda', '<20klambda', "
                               "'0~5km', ... (units lambda, klambda, Mlambda, m, km) or 'auto' "
                               "(exclude the short baselines where the model misses flux).",
                               check=partial(uvrange_problem, allow_auto=True))
    uvrange_image: str = setting("", "WSClean uv range (-minuv-l/-maxuv-l), same syntax without "
                                 "'auto'; metres are converted to wavelengths at the band centre.",
                                 check=uvrange_problem)
    # setting() returns a dataclasses.field (ruff's RUF009 cannot know it)
    wsclean: WSCleanConfig = setting(WSCleanConfig(), "WSClean settings.")  # noqa: RUF009
    gate: GateConfig = setting(GateConfig(), "Acceptance gate.")  # noqa: RUF009
    solint: SolintConfig = setting(SolintConfig(), "Solution intervals.")  # noqa: RUF009
    guard: GuardConfig = setting(GuardConfig(), "Final guard.")  # noqa: RUF009

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> PipelineConfig:
        """Build and validate from a (TOML-derived) mapping; errors name ``where.key``."""
        cfg = build(cls, data, where)
        cfg.validate(where)
        return cfg

    def with_updates(self, **kw: Any) -> PipelineConfig:
        """A validated copy with some fields replaced."""
        new = dataclasses.replace(self, **kw)
        new.validate()
        return new

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly mapping."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))

    def validate(self, where: str = "") -> None:
        """Every declared field (types, ranges, choices, grammar), then the checks that need
        several fields: the band of the instrument, template overrides against the template's
        steps. Raises ConfigError naming the key."""
        p = f"{where}." if where else ""
        check(self, where)
        if (why := steps_problem(self.steps)) is not None:
            raise ConfigError(f"{p}steps: {why}")
        try:
            inst = normalise_instrument(self.instrument)
            normalise_band(self.band, inst)
        except (ValueError, ConfigError) as exc:
            raise ConfigError(f"{p}instrument/band: {exc}") from None
        for name, over in self.templates.items():
            try:
                template_params(name, inst, self.band, over)
            except ConfigError as exc:
                raise ConfigError(f"{p}{exc}") from None
