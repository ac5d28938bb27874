"""Several fields in one simulated MS: an "execution block" (EB) as observatories deliver it.

A :class:`FieldSpec` is one pointing of a multi-field :class:`~selfcal_batch.simulate.SimSpec`
(``SimSpec.fields``): a name, its scan intents (written, as the VLA and ALMA archives
write them, to the STATE table's ``OBS_MODE`` as ``"INTENT#UNSPECIFIED"`` joined by commas;
the main table's ``STATE_ID`` points at that row), its centre as an offset from the spec's
``(ra_deg, dec_deg)`` and its own sky (components relative to its own centre).

Time layout of a multi-field spec: ``n_scans`` cycles; each cycle observes every field in
the order given, one scan each of ``scan_fraction`` x (``duration_s / n_scans``, rounded to
whole integrations, at least one), separated by ``scan_gap_s``; so a field with
``scan_fraction`` 1 spends ``duration_s`` on source (the calibrator-target interleaving of a
real EB). Every field sees the same antenna gains at the same time.

Field centres: offsets up to 5 deg in RA and 10 deg in Dec (measured: fields 0.5 deg apart
in RA keep the planned, non-overlapping scan times; the hour angles are those of the
reference centre).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from selfcal_batch.errors import SimulationError
from .sky import Component, checked_fields

#: Intents accepted in ``FieldSpec.intent`` (the ALMA/VLA scan intents the pipeline reads).
KNOWN_INTENTS = (
    "OBSERVE_TARGET", "CALIBRATE_PHASE", "CALIBRATE_BANDPASS", "CALIBRATE_AMPLI", "CALIBRATE_FLUX",
    "CALIBRATE_DELAY", "CALIBRATE_POL_ANGLE", "CALIBRATE_POL_LEAKAGE", "SYSTEM_CONFIGURATION",
)


@dataclass(frozen=True)
class FieldSpec:
    """One field of a multi-field simulated MS.

    ``intent``: comma-separated intents from :data:`KNOWN_INTENTS` ('' = no intent: the
    STATE table stays empty when no field has one, like the real VLA MS in the tests).
    ``dra_deg``/``ddec_deg``: offset of the field centre in RA/Dec coordinates (deg).
    ``components``: the field's sky, offsets from its own centre (see :mod:`.sky`).
    ``scan_fraction``: length of this field's scans relative to ``duration_s / n_scans``.
    """

    name: str
    intent: str = "OBSERVE_TARGET"
    dra_deg: float = 0.0
    ddec_deg: float = 0.0
    components: tuple[Component, ...] = field(default_factory=tuple)
    scan_fraction: float = 1.0

    def __post_init__(self) -> None:
        s = object.__setattr__
        if not isinstance(self.name, str) or not self.name.strip() or "," in self.name:
            raise SimulationError(f"field name must be a non-empty string without ',' (got {self.name!r})")
        if not isinstance(self.intent, str):
            raise SimulationError(f"field {self.name}: intent must be a string (got {self.intent!r})")
        intents = [i.strip().upper() for i in self.intent.split(",") if i.strip()]
        for i in intents:
            if i not in KNOWN_INTENTS:
                raise SimulationError(f"field {self.name}: unknown intent {i!r} (known: {', '.join(KNOWN_INTENTS)})")
        s(self, "intent", ",".join(intents))
        for f in ("dra_deg", "ddec_deg", "scan_fraction"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SimulationError(f"field {self.name}: {f} must be a finite number (got {v!r})")
            s(self, f, float(v))
        if not 0.0 < self.scan_fraction <= 10.0:
            raise SimulationError(f"field {self.name}: scan_fraction must be in (0, 10] (got {self.scan_fraction})")
        if abs(self.dra_deg) > 5.0 or abs(self.ddec_deg) > 10.0:
            raise SimulationError(f"field {self.name}: offset must be within 5 deg in RA and 10 deg in Dec")
        comps = self.components
        if not isinstance(comps, (list, tuple)):
            raise SimulationError(f"field {self.name}: components must be a list")
        s(self, "components", tuple(c if isinstance(c, Component) else Component.from_dict(c) for c in comps))

    @property
    def obs_mode(self) -> str:
        """The STATE table's ``OBS_MODE`` string, e.g. ``"CALIBRATE_PHASE#UNSPECIFIED,..."``."""
        return ",".join(f"{i}#UNSPECIFIED" for i in self.intent.split(",") if i)

    def centre(self, ra0_deg: float, dec0_deg: float) -> tuple[float, float]:
        """(RA, Dec) in degrees of this field's centre."""
        return (ra0_deg + self.dra_deg) % 360.0, dec0_deg + self.ddec_deg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["components"] = [c.to_dict() for c in self.components]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> "FieldSpec":
        return cls(**checked_fields(cls, d, "field"))


def as_fields(value: Any) -> tuple[FieldSpec, ...]:
    """Validate ``SimSpec.fields``: a list of FieldSpec or mappings with unique names."""
    if not isinstance(value, (list, tuple)):
        raise SimulationError(f"fields must be a list of fields, got {value!r}")
    out = tuple(f if isinstance(f, FieldSpec) else FieldSpec.from_dict(f) for f in value)
    names = [f.name for f in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SimulationError(f"fields: duplicate field name(s) {', '.join(dup)}")
    return out


def field_scan_plan(fields: tuple[FieldSpec, ...], n_scans: int, n_int: int, integration_s: float,
                    gap_s: float) -> list[dict[str, Any]]:
    """Scans of a multi-field spec (see the module docstring), from hour angle 0.

    Returns ``[{"scan", "field", "ha_start_s", "ha_stop_s"}]`` with ``ha_*`` measured from the
    start of the first scan (the caller centres them on transit).
    """
    out: list[dict[str, Any]] = []
    t = 0.0
    for _cycle in range(n_scans):
        for f in fields:
            length = max(1, int(round(n_int * f.scan_fraction))) * integration_s
            out.append({"scan": len(out) + 1, "field": f.name, "ha_start_s": t, "ha_stop_s": t + length})
            t += length + gap_s
    return out


def field_truth(truth: dict[str, Any], name: str) -> dict[str, Any]:
    """The truth of one field of a multi-field truth file, shaped like a single-field truth
    (``phase_centre`` and ``components`` of that field), for :mod:`.evaluate`.

    Raises:
        SimulationError: no field ``name`` in the truth.
    """
    for f in truth.get("fields") or []:
        if f["name"] == name:
            return {**truth, "phase_centre": f["phase_centre"], "components": f["components"],
                    "field": name}
    raise SimulationError(f"no field {name!r} in the truth ({', '.join(f['name'] for f in truth.get('fields') or [])})")
