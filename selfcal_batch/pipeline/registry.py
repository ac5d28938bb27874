"""The step registry: one declaration per pipeline step (pure; imports nothing of the package).

Everything else that knows about steps is derived from :data:`STEPS`:

- the run order and the names a user may type (``config.STEP_NAMES``, ``DEFAULT_STEPS``,
  aliases: the seed's names such as ``split_trial_1`` stay valid everywhere a step is typed:
  manifest ``steps``, ``--only``, ``--restart-from``, the step records of an old ``state.json``);
- the configuration each step's resume hash depends on (:func:`depends`);
- which steps read ``work.ms`` (:data:`NO_WORK_MS`), which are ladder steps, which solve from
  scratch (:data:`SCRATCH_STEPS`), which row of the seed's mask-growth table a step uses;
- the step functions (:func:`function`, resolved lazily so that ``config`` can import the
  names without importing the steps, which import ``config``).

A step's resume hash is computed with its ``hash_name`` (the name it had when the hash was
introduced), so renaming a step never redoes finished work of an existing output directory.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Kinds of steps: preparation (before the ladder), ladder (a template's calibration step),
#: extension (a shorter phase step planned at run time), final (after the ladder).
KINDS = ("prep", "ladder", "extension", "final")

#: Configuration a ladder or extension step's hash depends on (everything the ladder reads).
LADDER_KEYS = ("instrument", "band", "imsize", "cell", "pixels_per_beam", "channels_out", "niter", "templates",
               "force_template", "template_thresholds_mjy", "gate", "solint", "ladder_imaging", "calwt",
               "refantmode", "wsclean", "allow_negative", "solnorm_amplitude", "solnorm_type",
               "uvrange_cal", "uvrange_image", "ladder_economy")
#: Settings the test image depends on only when it uses the final-image settings.
FINAL_IMAGING_KEYS = ("final_robust", "final_multiscale", "final_niter")


@dataclass(frozen=True)
class Step:
    """One step's declaration.

    ``func``: ``"module:attribute"`` of a callable ``(Context) -> dict | (status, dict)`` (for
    ladder steps the callable also receives the step name); ``depends``: configuration keys
    whose values enter the step's resume hash; ``work_ms``: the step reads the working copy;
    ``aliases``: other names a user may type (the seed's names first); ``default``: in the
    default ``steps``; ``scratch``: a ladder step solving with nothing pre-applied (seed
    chaining); ``mask_row``: the row of the seed's mask-growth table (``imaging.masks``);
    ``conditional``: keys of ``depends`` used only when ``test_imaging == 'final'``.
    """

    name: str
    func: str
    kind: str
    depends: tuple[str, ...] = ()
    work_ms: bool = True
    aliases: tuple[str, ...] = ()
    default: bool = True
    scratch: bool = False
    calmode: str = ""
    mask_row: str = ""
    conditional: tuple[str, ...] = field(default=())

    @property
    def hash_name(self) -> str:
        """The name hashed into the resume hash (the oldest name: renames keep old hashes)."""
        return self.aliases[0] if self.aliases else self.name


_PREP = "selfcal_batch.pipeline.steps_prepare"
_FINAL = "selfcal_batch.pipeline.steps_finish"
_LADDER = "selfcal_batch.pipeline.eb_solutions:ladder_step"  # ladder.run_step + joint EBs' per-EB solutions

#: Every step, in run order (extension steps run after the last phase step, before ap1).
STEPS: tuple[Step, ...] = (
    Step("startup", f"{_PREP}:startup", "prep", ("field", "eb_fields", "spw", "timebin", "chanbin", "input_column"),
         work_ms=False),
    Step("save_init_flags", f"{_PREP}:save_init_flags", "prep", ("statwt_init",)),
    Step("fov_image", f"{_PREP}:fov_image", "prep",
         ("instrument", "band", "imsize", "cell", "pixels_per_beam", "wsclean"), default=False),
    Step("autoflag_init", f"{_PREP}:autoflag_init", "prep", (),
         aliases=("run_rflag_init", "run_autoflag_init"), default=False),
    Step("test_image", f"{_PREP}:test_image", "prep",
         ("instrument", "band", "imsize", "cell", "pixels_per_beam", "channels_out", "test_robust",
          "test_uvtaper", "test_imaging", "final_robust", "final_multiscale", "final_niter", "force_template",
          "template_thresholds_mjy", "wsclean", "allow_negative", "detection_sigma", "decorrelation_limit",
          "uvrange_image", "outside_ratio"),
         conditional=FINAL_IMAGING_KEYS),
    Step("select_refant", f"{_PREP}:select_refant", "prep", ("refant", "refantmode", "flag_bad_antennas", "guard")),
    # Joint EBs only (one solution per execution block, pipeline/steps_joint.py): added by
    # steps_for, never run for a one-MS dataset, so its step hashes are those of before.
    Step("align_ebs", "selfcal_batch.pipeline.steps_joint:align_ebs", "prep", LADDER_KEYS, default=False),
    Step("p0", _LADDER, "ladder", LADDER_KEYS, scratch=True, calmode="p", mask_row="p0"),
    Step("p1", _LADDER, "ladder", LADDER_KEYS, scratch=True, calmode="p", mask_row="p1"),
    Step("p2", _LADDER, "ladder", LADDER_KEYS, calmode="p", mask_row="p2"),
    Step("ap1", _LADDER, "ladder", LADDER_KEYS, calmode="ap", mask_row="ap1"),
    Step("split_calibrated", f"{_FINAL}:split_calibrated", "final",
         ("statwt_final", "final_robust", "final_multiscale", "final_niter", "calwt", "guard",
          "uvrange_image", "primary_beam", "pb_cutoff", "coherence_loss"),
         aliases=("split_trial_1",)),
    Step("dataset_plots", f"{_FINAL}:dataset_plots", "final", ("plots",), work_ms=False,
         aliases=("report_results",)),
    Step("autoflag_final", f"{_FINAL}:autoflag_final", "final", (), work_ms=False,
         aliases=("run_rflag_final", "run_autoflag_final"), default=False),
)

BY_NAME: dict[str, Step] = {s.name: s for s in STEPS}
#: Step names in run order (what ``steps`` may contain, besides the aliases).
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in STEPS)
#: The steps run when a manifest gives no ``steps``.
DEFAULT_STEPS: tuple[str, ...] = tuple(s.name for s in STEPS if s.default)
#: Old or alternative name -> step name.
STEP_ALIASES: dict[str, str] = {a: s.name for s in STEPS for a in s.aliases}
#: The template ladder's steps, in order.
LADDER_STEPS: tuple[str, ...] = tuple(s.name for s in STEPS if s.kind == "ladder")
#: Ladder steps that solve with nothing pre-applied (p1 discards p0: seed chaining).
SCRATCH_STEPS: tuple[str, ...] = tuple(s.name for s in STEPS if s.scratch)
#: Steps that do not read work.ms (every other step needs it).
NO_WORK_MS: tuple[str, ...] = tuple(s.name for s in STEPS if not s.work_ms)

#: Extension steps are named p3, p4, ... (after the template's last phase step p2).
_EXTENSION_RE = re.compile(r"^p(\d+)$")
_FIRST_EXTENSION = 1 + max(int(m.group(1)) for s in LADDER_STEPS if (m := _EXTENSION_RE.match(s)))


def canonical(name: str) -> str:
    """The step name for a typed name or alias (unknown names are returned unchanged)."""
    return STEP_ALIASES.get(name, name)


def extension_name(n: int) -> str:
    """The name of the ``n``-th extension step (1-based): p3, p4, ..."""
    return f"p{_FIRST_EXTENSION - 1 + n}"


def is_extension(step: str) -> bool:
    """True for a run-time extension step (p3, p4, ...)."""
    m = _EXTENSION_RE.match(step)
    return bool(m) and int(m.group(1)) >= _FIRST_EXTENSION


def is_ladder(step: str) -> bool:
    """True for a ladder or extension step (a step that solves and is judged by the gate)."""
    return step in LADDER_STEPS or is_extension(step)


def is_phase(step: str) -> bool:
    """True for a phase-only ladder step (p0, p1, p2) or an extension step."""
    s = BY_NAME.get(step)
    return (s is not None and s.kind == "ladder" and s.calmode == "p") or is_extension(step)


def mask_row(step: str) -> str:
    """The row of the seed's mask-growth table for ``step`` (extension steps use p2's)."""
    s = BY_NAME.get(step)
    return s.mask_row if s is not None and s.mask_row else "p2"


#: Keys added after outputs of earlier versions exist, with the value those versions behaved
#: as: hashed only when set to something else, so an older output's steps keep their hashes.
#: ``ladder_economy`` is a speed setting (same decisions, scripts/bench_quality.py): an older
#: output's ladder steps stay valid with it on, so only turning it off enters the hash.
ADDED_KEYS: dict[str, Any] = {"uvrange_cal": "", "uvrange_image": "", "primary_beam": True, "pb_cutoff": 0.2,
                              "ladder_economy": True, "outside_ratio": 3.0,
                              "eb_fields": [], "coherence_loss": 0.2}


def depends(step: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The configuration values (from ``PipelineConfig.to_dict()``) in ``step``'s resume hash
    (keys of :data:`ADDED_KEYS` only when they differ from the value there)."""
    s = BY_NAME.get(step)
    keys = s.depends if s is not None else LADDER_KEYS  # extension steps
    if s is not None and s.conditional and cfg.get("test_imaging") != "final":
        # The seed-style test image does not use the final-image settings: changing them
        # must not redo the test image and the whole ladder after it.
        keys = tuple(k for k in keys if k not in s.conditional)
    return {k: cfg.get(k) for k in keys if k not in ADDED_KEYS or cfg.get(k, ADDED_KEYS[k]) != ADDED_KEYS[k]}


def hash_name(step: str) -> str:
    """The name hashed for ``step`` (its oldest name; extension steps: their own)."""
    s = BY_NAME.get(step)
    return s.hash_name if s is not None else step


def function(step: str) -> Callable[..., Any]:
    """The callable of ``step`` (extension steps run the ladder step)."""
    spec = BY_NAME[step].func if step in BY_NAME else _LADDER
    module, attr = spec.split(":")
    # Imported at call time: the step modules import config, which imports this module.
    return getattr(importlib.import_module(module), attr)


def run_order(requested: list[str] | tuple[str, ...]) -> list[str]:
    """The requested steps (names or aliases) in run order, without duplicates."""
    want = {canonical(s) for s in requested}
    return [s for s in STEP_NAMES if s in want]


def steps_problem(requested: list[str] | tuple[str, ...]) -> str | None:
    """Why a ``steps`` list cannot run as given, or None. Pure.

    Refused: a step named twice (also under an old name: ``p0`` and ``p0`` again would be
    silently dropped by :func:`run_order`), and ladder steps without ``split_calibrated``:
    the gains would be solved but never checked by the guard, never applied to a delivered
    ``final.ms`` and never imaged, yet the run would look finished. An astronomer who wants
    only the diagnostics stops before the ladder (e.g. ``["startup", "test_image"]``).
    """
    seen: dict[str, str] = {}
    for name in requested:
        c = canonical(name)
        if c in seen:
            both = repr(name) if seen[c] == name else f"{c!r} (as {seen[c]!r} and {name!r})"
            return f"step {both} given twice; each step runs once, in run order"
        seen[c] = name
    ladder = [s for s in seen if s in LADDER_STEPS]
    if ladder and "split_calibrated" not in seen:
        return (f"ladder steps ({', '.join(ladder)}) without split_calibrated: the gains would never be "
                "checked by the guard nor delivered; add 'split_calibrated' (or stop before the ladder)")
    return None


#: Steps run only for joint execution blocks, before the first ladder step.
JOINT_STEPS: tuple[str, ...] = ("align_ebs",)


def steps_for(requested: list[str] | tuple[str, ...], joint: bool) -> list[str]:
    """The steps a dataset runs, in order: ``requested`` (names or aliases), plus
    :data:`JOINT_STEPS` for joint EBs when any ladder step is requested; without them for
    one MS (a one-MS dataset's steps and hashes stay those of before joint EBs existed)."""
    order = run_order(requested)
    if joint and any(s in LADDER_STEPS for s in order):
        return run_order([*order, *JOINT_STEPS])
    return [s for s in order if joint or s not in JOINT_STEPS]


def rename_old_steps(steps: dict[str, Any]) -> dict[str, Any]:
    """Step records keyed by old names (``state.json`` before the renames) under the new names,
    order kept. Records already under a new name win over an old duplicate."""
    out: dict[str, Any] = {}
    for k, v in steps.items():
        new = canonical(k)
        if new not in out or new == k:
            out[new] = v
    return out
