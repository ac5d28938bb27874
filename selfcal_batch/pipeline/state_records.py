"""Typed records of a dataset's state (frozen dataclasses; JSON layout of ``state.json`` v2).

``state.json`` stays one JSON object (readable by the report, progress and preflight without
this module); the records name, type and group its sections:

- :class:`MSInfo`: the working copy's description (``msinfo``, written by ``startup``);
- :class:`ImageProduct`: one measured image (``current``, ``test_image``, ``initial``, ``final``,
  a ladder step's pre/post image);
- :class:`GainEntry`: one gain table of the applied chain (``chain``);
- :class:`LadderState`: everything a step may change that must be rolled back before the
  step runs again (the snapshot of a step is ``LadderState.capture(data).to_json()``);
- :class:`WorkMSState`: what ``work.ms``'s columns and flag versions hold (reset whenever a
  new copy is made); :func:`selfcal_batch.pipeline.work_ms.rewrite_corrected` is the only
  writer of CORRECTED_DATA and keeps ``corrected_chain`` honest.

Absent keys stay absent (``st.get(key, default)`` callers rely on it): a field holding
:data:`ABSENT` is not written.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class _Absent:
    """Marker of a state key that does not exist (distinct from a stored ``None``)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


class _Section:
    """A group of top-level ``state.json`` keys as a frozen record (one field per key)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def capture(cls, data: Mapping[str, Any]) -> Any:
        """The record of ``data``'s section (deep copies; missing keys ABSENT)."""
        return cls(**{k: copy.deepcopy(data[k]) if k in data else ABSENT for k in cls.names()})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Any:
        """From the JSON form written by :meth:`to_json` (unknown keys ignored)."""
        return cls.capture(d)

    def to_json(self) -> dict[str, Any]:
        """The present keys only (deep copies)."""
        return {k: copy.deepcopy(getattr(self, k)) for k in self.names() if getattr(self, k) is not ABSENT}

    def restore(self, data: dict[str, Any]) -> None:
        """Put this record back into ``data``: present keys set, ABSENT keys removed."""
        for k in self.names():
            v = getattr(self, k)
            if v is ABSENT:
                data.pop(k, None)
            else:
                data[k] = copy.deepcopy(v)

    @classmethod
    def reset(cls, data: dict[str, Any]) -> None:
        """Remove the section's keys from ``data``."""
        for k in cls.names():
            data.pop(k, None)


@dataclass(frozen=True)
class LadderState(_Section):
    """What a step may change (rolled back before it re-runs after a kill).

    ``chain``: accepted gain entries (:class:`GainEntry` JSON); ``current``: the newest
    accepted image (:class:`ImageProduct` JSON); ``extensions``: planned extension steps
    ``{name: {base, solint, est_snr}}``; ``applied``: per accepted step the tables/spwmaps
    applied; ``outcome``/``guard``: the honest-outcome and final-guard verdicts.
    """

    chain: Any = ABSENT
    current: Any = ABSENT
    template_initial: Any = ABSENT
    template_final: Any = ABSENT
    ladder_stopped: Any = ABSENT
    extensions: Any = ABSENT
    applied: Any = ABSENT
    modified_robust: Any = ABSENT
    test_image: Any = ABSENT
    initial: Any = ABSENT
    final: Any = ABSENT
    outcome: Any = ABSENT
    guard: Any = ABSENT
    #: Ladder image size / output channels decided from the test image (imaging/economy.py).
    ladder_economy: Any = ABSENT


@dataclass(frozen=True)
class WorkMSState(_Section):
    """What ``work.ms`` holds besides DATA (invalid as soon as a new copy is made).

    ``corrected_chain``: caltable paths applied into CORRECTED_DATA (None: unknown, e.g. a
    CASA batch rewriting it was killed); ``model_in_ms``: image prefix whose model is in
    MODEL_DATA ('' unknown); ``images_done``: image prefix -> imaging key of images made this
    attempt; ``cell``: the pixel size derived from the data; ``original_beam``: imaging key ->
    beam area (pixels) of the first image with those settings; ``flag_versions``: reserved.
    """

    flag_versions: Any = ABSENT
    corrected_chain: Any = ABSENT
    model_in_ms: Any = ABSENT
    #: image prefix whose model is in the MODEL_KEPT column ('' unknown; pipeline/model_keep.py).
    model_kept: Any = ABSENT
    images_done: Any = ABSENT
    cell: Any = ABSENT
    original_beam: Any = ABSENT


@dataclass(frozen=True)
class GainEntry:
    """One table of the applied chain: the step that solved it, its path and spwmap."""

    step: str
    table: str
    spwmap: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "table": self.table, "spwmap": list(self.spwmap)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GainEntry:
        return cls(str(d["step"]), str(d["table"]), tuple(int(x) for x in d.get("spwmap") or ()))


@dataclass(frozen=True)
class ImageProduct:
    """A measured image: ``prefix`` (WSClean -name), ``image``/``residual`` FITS paths,
    ``stats`` (imaging.imstats.image_statistics), ``key`` (WSCleanOptions.imaging_key(): reuse
    only with the same key) and ``column`` (the data column imaged). ``key``/``column`` None:
    not reusable as a ladder step's pre image (e.g. the test image)."""

    prefix: str
    image: str
    residual: str = ""
    stats: Mapping[str, Any] = field(default_factory=dict)
    key: tuple[Any, ...] | None = None
    column: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"prefix": self.prefix, "image": self.image, "residual": self.residual,
                             "stats": dict(self.stats)}
        if self.key is not None:
            d["key"] = list(self.key)
        if self.column is not None:
            d["column"] = self.column
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ImageProduct:
        key = d.get("key")
        return cls(str(d.get("prefix") or ""), str(d.get("image") or ""), str(d.get("residual") or ""),
                   dict(d.get("stats") or {}), tuple(key) if key is not None else None, d.get("column"))

    def shows(self, key: tuple[Any, ...], column: str) -> bool:
        """True when this image shows ``column`` imaged with imaging key ``key`` (reusable)."""
        return self.key is not None and list(self.key) == list(key) and self.column == column


@dataclass(frozen=True)
class MSInfo:
    """The working copy's description (``casa.jobs.inspect_ms``), the fields the ladder reads.

    Times in seconds; ``scans``: [{"spws": [...], ...}]; ``spws``: [{"id", "nchan", "freq_max",
    ...}]; ``thermal_noise_jy``: natural-weighting image noise from the visibilities (NaN if
    unknown). The full mapping stays in ``state.json["msinfo"]``.
    """

    n_antennas_present: int
    antenna_names: tuple[str, ...]
    spws: tuple[Mapping[str, Any], ...]
    scans: tuple[Mapping[str, Any], ...]
    integration_s: float
    time_span_s: float
    time_on_source_s: float
    thermal_noise_jy: float
    polarisation: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> MSInfo:
        """From ``state.json["msinfo"]``; KeyError when ``startup`` has not run."""
        # Numbers kept as stored (int or float): solint strings are formatted from them.
        return cls(d["n_antennas_present"], tuple(d["antenna_names"]), tuple(d["spws"]), tuple(d["scans"]),
                   d["integration_s"], d["time_span_s"], d["time_on_source_s"],
                   float(d.get("thermal_noise_jy") or float("nan")), d.get("polarisation"))

    def scan_s(self) -> float:
        """Mean scan length (s), at least one integration."""
        return max(min(self.time_span_s, self.time_on_source_s) / max(1, len(self.scans)), self.integration_s)
