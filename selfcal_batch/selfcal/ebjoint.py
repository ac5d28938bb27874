"""Pure decisions for self-calibrating several execution blocks (EBs) of one target jointly.

Design: DESIGN.md, "Joint EBs (issue 18)". Nothing here reads an MS or runs a program: the
inputs are numbers measured elsewhere (field tables, spectral-window tables, gain tables).

* :func:`group_targets`: expanded targets of several MSs -> groups of one target (same
  field name, or centres within a tolerance); :func:`group_ebs` orders each group's EBs by
  observation start and refuses a name group whose positions differ.
* :func:`phase_shift_plan`: EBs of one joint dataset at different phase centres: which are
  re-phased to the first EB's centre (CASA ``phaseshift`` of the working copies), refused
  beyond :func:`shift_limit_arcsec` (a small fraction of the primary beam);
  :func:`pointing_problem` is its refusal line.
* :func:`map_spws`: per EB, spw id -> a common spectral-window key by frequency, so EBs with
  different spw numbering and channelisation line up (auto_selfcal's dominant bug class:
  peers.md, issues #12, #28, PR #8).
* :func:`alignment_scales`: per-EB amplitude factors of the ``inf``-per-EB alignment step,
  normalised so the weighted mean flux scale of the EBs is kept; applied only when
  plausible (:func:`applied_alignment_scales`) and above the noise
  (:func:`eb_scale_estimate`, :func:`alignment_significance`,
  :func:`significant_alignment_scales`; :func:`noise_coherence` for the pre-applied phases).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def angular_separation_arcsec(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance (arcsec) of two directions given in degrees (haversine)."""
    p1, p2 = math.radians(dec1), math.radians(dec2)
    dra = math.radians(ra2 - ra1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dra / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(h)))) * 3600.0


def group_targets(targets: Sequence[dict[str, Any]], by: str = "name",
                  tolerance_arcsec: float = 1.0) -> list[list[int]]:
    """Group targets of several EBs (``{ms, field, ra_deg, dec_deg}`` records, e.g.
    ``DatasetSpec.target``) into one list of indices per source.

    Args:
        by: ``"name"`` (same field name) or ``"position"`` (a target joins the first group
            whose first member lies within ``tolerance_arcsec``; greedy, in input order).
        tolerance_arcsec: position tolerance (arcsec), > 0.

    Returns:
        Groups of indices into ``targets``, in order of their first member. Two targets of
        the same MS are never grouped (one MS holds a source once per field).

    Raises:
        ValueError: unknown ``by`` or a tolerance <= 0.
    """
    if by not in ("name", "position"):
        raise ValueError(f"group: expected 'name' or 'position', got {by!r}")
    if not tolerance_arcsec > 0:
        raise ValueError(f"group_tolerance_arcsec: must be > 0, got {tolerance_arcsec!r}")
    groups: list[list[int]] = []
    for i, t in enumerate(targets):
        for g in groups:
            first = targets[g[0]]
            if any(targets[j]["ms"] == t["ms"] for j in g):
                continue
            same = (t["field"] == first["field"]) if by == "name" else angular_separation_arcsec(
                first["ra_deg"], first["dec_deg"], t["ra_deg"], t["dec_deg"]) <= tolerance_arcsec
            if same:
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


#: Phase centres of one target in two EBs closer than this are one pointing (arcsec): CASA
#: ``concat``'s default ``dirtol`` (1 mas), below which it joins the EBs' FIELD rows into one
#: field. Farther apart, the joint working copy holds two fields and WSClean images only the
#: first (measured, issue 18: the second EB then has no model and ``align_ebs`` fails with
#: "no alignment solution succeeded").
SAME_POINTING_ARCSEC = 0.001


@dataclass(frozen=True)
class EBGroup:
    """One target's fields across MSs (:func:`group_ebs`): ``members`` are indices into the
    input records in EB order (observation start, then MS path); ``problem`` is '' or one line
    why the group cannot be one joint dataset."""

    members: tuple[int, ...]
    problem: str = ""


def group_ebs(targets: Sequence[dict[str, Any]], by: str = "name",
              tolerance_arcsec: float = 1.0) -> list[EBGroup]:
    """Group expanded targets of several MSs into one joint dataset per source (pure).

    Args:
        targets: ``{ms, field, ra_deg, dec_deg, start_s}`` records (``start_s``: the target's
            first time stamp in that MS, MJD seconds, or None).
        by: ``"name"`` (same field name) or ``"position"`` (centres within
            ``tolerance_arcsec`` of the group's first member: :func:`group_targets`).
        tolerance_arcsec: position tolerance (arcsec), > 0.

    Returns:
        Groups in the order of their earliest member; members sorted by ``start_s`` (unknown
        last), then MS path, so the EB order does not depend on the manifest's or the glob's
        order. A name group whose members lie farther than ``tolerance_arcsec`` from its
        first member carries a ``problem`` naming both MSs and the separation (another
        pointing under the same name is not silently joined).

    Raises:
        ValueError: unknown ``by`` or a tolerance <= 0 (:func:`group_targets`).
    """
    def order(i: int) -> tuple[bool, float, str]:
        st = targets[i].get("start_s")
        return (st is None, float(st) if st is not None else 0.0, str(targets[i]["ms"]))

    ranked = sorted(range(len(targets)), key=order)
    raw = group_targets([targets[i] for i in ranked], by, tolerance_arcsec)
    out = []
    for g in raw:
        members = tuple(ranked[j] for j in g)
        out.append(EBGroup(members, _name_group_problem(targets, members, tolerance_arcsec) if by == "name" else ""))
    return out


def _name_group_problem(targets: Sequence[dict[str, Any]], members: tuple[int, ...], tolerance_arcsec: float) -> str:
    first = targets[members[0]]
    for i in members[1:]:
        t = targets[i]
        sep = angular_separation_arcsec(first["ra_deg"], first["dec_deg"], t["ra_deg"], t["dec_deg"])
        if sep > tolerance_arcsec:
            return (f"field {first['field']!r} of {first['ms']} and of {t['ms']} are {sep:.3g} arcsec apart "
                    f"(> group_tolerance_arcsec = {tolerance_arcsec:g}): not one target, not grouped")
    return ""


def casa_direction(ra_deg: float, dec_deg: float) -> str:
    """A J2000 direction as CASA's ``phasecenter`` takes it, e.g. ``'J2000 10h01m00.00000s
    +40d00m00.0000s'`` (RA to 10 us of time = 0.15 mas, Dec to 0.1 mas: well inside
    :data:`SAME_POINTING_ARCSEC`; sexagesimal by astropy ``Angle.to_string``)."""
    from astropy import units as u  # lazy: heavy library, only when a message needs it
    from astropy.coordinates import Angle  # lazy: as above

    ra = Angle(ra_deg % 360.0, u.deg).to_string(unit=u.hourangle, sep="hms", precision=5, pad=True)
    dec = Angle(dec_deg, u.deg).to_string(unit=u.deg, sep="dms", precision=4, alwayssign=True, pad=True)
    return f"J2000 {'00' + ra[2:] if ra.startswith('24') else ra} {dec}"  # 23h59m59.999999s rounds to 24h


#: Largest phase-centre offset between EBs that a joint run re-phases, as a fraction of the
#: primary beam's FWHM. CASA ``phaseshift`` moves the phase centre, not the primary beam: each
#: EB's beam stays centred where it was observed, so one sky model sees every source through
#: beams offset by ``d``. For a Gaussian beam of FWHM ``theta`` the EBs' responses to a source
#: at radius ``r`` differ by at most ``8 ln2 r d / theta^2`` (d ln A / dr); at the half-power
#: radius ``r = theta / 2`` that is ``4 ln2 d / theta``. Kept <= 1 % (below the amplitude
#: self-calibration's per-EB precision, and far below the 20 % plausibility cap of the
#: alignment step): ``d <= 0.01 / (4 ln2) theta = 0.0036 theta`` (VLA 25 m: 6.5" at 1.4 GHz,
#: 1.5" at 6 GHz; ALMA 12 m at 345 GHz: 0.055"; e-MERLIN with the Lovell 76 m at 5 GHz: 0.6").
PHASE_SHIFT_PB_FRACTION = 0.01 / (4.0 * math.log(2.0))

#: FWHM of a dish's power pattern in lambda / D used for that limit: 1.02, uniform
#: illumination, the narrowest a dish of that diameter has (the conservative end of 1.02-1.22;
#: imaging/primary_beam.py uses 1.13 for the beam correction).
PB_FWHM_LAMBDA_OVER_D = 1.02


def shift_limit_arcsec(freq_max_hz: float, dish_m: float) -> float:
    """Largest offset (arcsec) re-phased: :data:`PHASE_SHIFT_PB_FRACTION` of the primary beam
    FWHM ``1.02 lambda / D`` at the highest frequency ``freq_max_hz`` (Hz) for the largest dish
    ``dish_m`` (m): the narrowest beam of the data. :data:`SAME_POINTING_ARCSEC` when either
    is unknown (<= 0 or not finite): then nothing is re-phased."""
    if not (math.isfinite(freq_max_hz) and math.isfinite(dish_m) and freq_max_hz > 0 and dish_m > 0):
        return SAME_POINTING_ARCSEC
    fwhm_arcsec = math.degrees(PB_FWHM_LAMBDA_OVER_D * (299_792_458.0 / freq_max_hz) / dish_m) * 3600.0
    return max(SAME_POINTING_ARCSEC, PHASE_SHIFT_PB_FRACTION * fwhm_arcsec)


@dataclass(frozen=True)
class PhaseShiftPlan:
    """What a joint run does with its EBs' phase centres (:func:`phase_shift_plan`):
    ``shifts_arcsec`` per EB (0.0: kept, within :data:`SAME_POINTING_ARCSEC` of EB 1's centre;
    > 0: its working copy is re-phased to EB 1's centre, by that many arcsec); ``problem`` is
    '' or one line refusing the dataset."""

    shifts_arcsec: tuple[float, ...]
    problem: str = ""

    @property
    def shifted(self) -> tuple[int, ...]:
        """Indices of the EBs whose working copies are re-phased."""
        return tuple(k for k, s in enumerate(self.shifts_arcsec) if s > 0)


def phase_shift_plan(ebs: Sequence[str], centres: Sequence[tuple[float, float]], limit_arcsec: float,
                     same_arcsec: float = SAME_POINTING_ARCSEC) -> PhaseShiftPlan:
    """Which EBs of one joint dataset are re-phased to the first EB's phase centre (pure).

    Args:
        ebs: the EBs' names (paths), EB 1 first.
        centres: each EB's target phase centre (RA, Dec in degrees).
        limit_arcsec: the largest offset re-phased (:func:`shift_limit_arcsec`).
        same_arcsec: offsets up to this are one pointing (CASA concat's ``dirtol``, 1 mas).

    Returns:
        The per-EB offsets to shift (0.0 within ``same_arcsec``) and, when an EB lies farther
        than ``limit_arcsec`` from EB 1, a one-line ``problem`` naming the first such EB, the
        offset and the limit (the EBs' primary beams do not move with a phase shift)."""
    shifts = []
    for k in range(len(ebs)):
        sep = angular_separation_arcsec(*centres[0], *centres[k]) if k else 0.0
        if sep > limit_arcsec and sep > same_arcsec:
            return PhaseShiftPlan(tuple(0.0 for _ in ebs), (
                f"execution block {k + 1} ({ebs[k]}): phase centre {sep:.3g} arcsec from execution block 1's "
                f"({ebs[0]}), more than the {limit_arcsec:.3g} arcsec a joint run re-phases "
                f"({PHASE_SHIFT_PB_FRACTION * 100:.2g}% of the primary beam: the EBs' primary beams stay "
                "where they were observed): run them separately"))
        shifts.append(sep if sep > same_arcsec else 0.0)
    return PhaseShiftPlan(tuple(shifts))


def pointing_problem(ebs: Sequence[str], centres: Sequence[tuple[float, float]],
                     limit_arcsec: float = SAME_POINTING_ARCSEC) -> str:
    """The one-line refusal of :func:`phase_shift_plan` ('' when every EB lies within
    ``limit_arcsec`` of EB 1 or within 1 mas). Grouping (``group_tolerance_arcsec``,
    :func:`group_targets`) only decides which fields are one source; this decides whether
    they can be one working copy: within 1 mas as they are (concat joins their FIELD rows),
    farther up to ``limit_arcsec`` after CASA ``phaseshift`` of the working copies."""
    return phase_shift_plan(ebs, centres, limit_arcsec).problem


@dataclass(frozen=True)
class SpwInfo:
    """One spectral window of one EB: id, centre frequency (Hz), total width (Hz), channels."""

    spw_id: int
    centre_hz: float
    width_hz: float
    n_chan: int


def map_spws(ebs: Sequence[Sequence[SpwInfo]], rel_tolerance: float = 0.5) -> list[dict[int, int]]:
    """Give every spw of every EB a common key: spws of different EBs share a key when their
    centres differ by less than ``rel_tolerance`` x the narrower width (the same baseband
    tuned alike; channel counts may differ).

    Args:
        ebs: per EB, its spws (any ids, any order).
        rel_tolerance: fraction of the narrower spw width (0.5 = centre inside the middle
            half of both), in (0, 1].

    Returns:
        Per EB, ``{spw id: common key}``; keys are numbered 0.. in increasing frequency of
        their first spw. An spw matching no other EB gets its own key.

    Raises:
        ValueError: a tolerance outside (0, 1], or two spws of one EB matching one key.
    """
    if not 0 < rel_tolerance <= 1:
        raise ValueError(f"rel_tolerance must be in (0, 1], got {rel_tolerance}")
    keys: list[SpwInfo] = []  # representative of each key
    raw: list[dict[int, int]] = []
    for k, eb in enumerate(ebs):
        m: dict[int, int] = {}
        for s in sorted(eb, key=lambda s: s.centre_hz):
            hit = next((j for j, r in enumerate(keys)
                        if abs(r.centre_hz - s.centre_hz) < rel_tolerance * min(r.width_hz, s.width_hz)), None)
            if hit is not None and hit in m.values():
                raise ValueError(f"EB {k}: spws {[i for i, v in m.items() if v == hit][0]} and {s.spw_id} "
                                 f"both match the band at {keys[hit].centre_hz / 1e9:.4f} GHz")
            if hit is None:
                keys.append(s)
                hit = len(keys) - 1
            m[s.spw_id] = hit
        raw.append(m)
    order = sorted(range(len(keys)), key=lambda j: keys[j].centre_hz)
    rank = {j: r for r, j in enumerate(order)}
    return [{sid: rank[j] for sid, j in m.items()} for m in raw]


def alignment_scales(median_amp: Sequence[float], weights: Sequence[float]) -> list[float]:
    """Amplitude gain factors that align the EBs' flux scales to their weighted mean.

    ``median_amp[k]``: EB k's antenna amplitude gain of its ``inf`` alignment solve
    (:func:`eb_scale_estimate`: a clipped mean since tester s6 G2, the median before)
    (gaincal without ``solnorm``: data = g_i g_j* model, so an EB whose flux scale is
    (1 + e) times the model has gains ~ sqrt(1 + e)). Dividing EB k's data by
    ``g_k^2 / G^2``, with ``G^2`` the ``weights``-weighted mean of ``g_k^2``, brings every EB
    to the common scale and keeps the combined flux (the weights are the EBs' visibility
    weights; the model itself is set by all EBs together, so only ratios are measured).

    Returns:
        Per EB, the antenna-gain factor to apply (``g_k / G``; amplitude gains multiply
        visibilities as g_i g_j*, so the visibility scale changes by its square).

    Raises:
        ValueError: lengths differ, a gain is not finite and > 0, or the weights sum to 0.
    """
    if len(median_amp) != len(weights) or not median_amp:
        raise ValueError("median_amp and weights must be non-empty and of the same length")
    if any(not (math.isfinite(g) and g > 0) for g in median_amp):
        raise ValueError(f"alignment gains must be finite and > 0, got {list(median_amp)}")
    wsum = float(sum(weights))
    if not wsum > 0:
        raise ValueError("weights must sum to > 0")
    mean_sq = sum(w * g * g for g, w in zip(median_amp, weights, strict=True)) / wsum
    return [g / math.sqrt(mean_sq) for g in median_amp]


#: Largest flux-scale difference between two EBs of one target that an alignment may apply,
#: as a fraction of the visibility scale. Flux-density scales of VLA and e-MERLIN EBs agree
#: to a few per cent (Perley & Butler 2017, ApJS 230, 7: 1-3 % at cm wavelengths; e-MERLIN's
#: bootstrap from 3C286 ~5-10 %); a factor beyond 20 % is not a flux-scale offset but a
#: biased solve (measured, issue 18 re-break: an EB with 90 deg phase errors decorrelated
#: within its one 'inf' solution read as factors 0.65 / 1.75).
MAX_ALIGNMENT_OFFSET = 0.2


def applied_alignment_scales(scales: Sequence[float],
                             max_offset: float = MAX_ALIGNMENT_OFFSET) -> tuple[list[float], str]:
    """The antenna-gain factors to apply (``scales`` of :func:`alignment_scales`), or all 1.0
    with the reason when any EB's visibility factor ``1 / scale**2`` differs from 1 by more
    than ``max_offset`` (see :data:`MAX_ALIGNMENT_OFFSET`). The phases are applied either way."""
    vis = [1.0 / (s * s) for s in scales]
    if all(abs(v - 1.0) <= max_offset for v in vis):
        return list(scales), ""
    shown = "/".join(f"{v:.3g}" for v in vis)
    return [1.0] * len(scales), (f"flux alignment not applied: visibility factors {shown} differ from 1 by more than "
                                 f"{100 * max_offset:.0f}% (flux scales of EBs agree to a few per cent; a factor "
                                 "this large is a solve biased by decorrelation or a bad EB)")



#: Per-antenna amplitudes farther than this many standard deviations from the others' mean
#: are left out of an EB's flux-scale gain (astropy ``sigma_clipped_stats``): one antenna
#: with a wild gain does not move it, as it did not move the median used before.
CLIP_SIGMA = 3.0


def noise_coherence(snrs: Sequence[float]) -> float:
    """The mean coherence left by noisy phase solutions pre-applied to an amplitude solve:
    a phase solution of SNR s is off by sigma = 1 / s rad, and Gaussian phase errors keep
    <cos(dphi)> = exp(-sigma^2 / 2) of the amplitude (Thompson, Moran & Swenson,
    Interferometry and Synthesis in Radio Astronomy, 3rd ed., sec. 13.1). An antenna's
    amplitude gain solved after them absorbs its own factor (g_i g_j = c_i c_j), so the
    alignment divides it out. ``snrs``: one antenna's unflagged phase solutions (CASA SNR
    column); 1.0 when there are none (nothing was pre-applied)."""
    vals = [math.exp(-0.5 / (s * s)) for s in snrs if math.isfinite(s) and s > 0]
    return sum(vals) / len(vals) if vals else 1.0


#: The EBs' flux scales are aligned only when their differences are this unlikely as noise:
#: p of Cochran's Q (homogeneity of K estimates with known variances, chi-square with K - 1
#: degrees of freedom; Cochran 1954, Biometrics 10, 101) below 0.0027, the two-sided tail of
#: 3 sigma. Tester s6 G2: EBs whose flux scales agree to 0.2 % were set 3.5-5 % apart.
ALIGNMENT_P_MAX = 0.0027


def eb_scale_estimate(amps: Sequence[float], snrs: Sequence[float]) -> tuple[float, float]:
    """One EB's flux-scale gain and its standard error from its per-antenna ``inf`` amplitudes.

    ``amps``: per antenna, the amplitude of its one solution (mean over polarisations and
    spws); ``snrs``: their SNRs (CASA gaincal's SNR column: amplitude / its error). Returns
    ``(mean amplitude, standard error)`` over the antennas kept by a :data:`CLIP_SIGMA`
    clip (astropy ``sigma_clipped_stats``), the error being the larger of the mean's error
    from the antennas' scatter (std / sqrt(n), >= 3 antennas) and from the solutions' own
    noise (rms(amp / SNR) / sqrt(n)).

    Raises:
        ValueError: no finite amplitude > 0 (with its SNR > 0), or lengths differ.
    """
    from astropy.stats import sigma_clip  # lazy: astropy only where an EB's scale is measured

    if len(amps) != len(snrs):
        raise ValueError("amps and snrs must have the same length")
    pairs = [(float(a), float(s)) for a, s in zip(amps, snrs, strict=True)
             if math.isfinite(a) and a > 0 and math.isfinite(s) and s > 0]
    if not pairs:
        raise ValueError("no amplitude solution with a finite amplitude and SNR > 0")
    a = [p[0] for p in pairs]
    if len(a) >= 3:
        kept = sigma_clip(a, sigma=CLIP_SIGMA, maxiters=5, masked=True)
        pairs = [p for p, m in zip(pairs, kept.mask, strict=True) if not m]
        a = [p[0] for p in pairs]
    n = len(a)
    mean = sum(a) / n
    se = math.sqrt(sum((x / s) ** 2 for x, s in pairs) / n) / math.sqrt(n)
    if n >= 3:
        std = math.sqrt(sum((x - mean) ** 2 for x in a) / (n - 1))
        se = max(se, std / math.sqrt(n))
    return mean, se


def alignment_significance(gains: Sequence[float], errors: Sequence[float]) -> dict[str, Any]:
    """How far the EBs' flux-scale gains (:func:`eb_scale_estimate`) stand above their noise.

    Returns ``{"q", "dof", "p", "z"}``: Cochran's Q = sum w_k (g_k - g_w)^2 with w_k = 1 /
    error_k^2 and g_w the w-weighted mean, its degrees of freedom K - 1, p = P(chi2_{K-1} >=
    Q) (``scipy.stats.chi2.sf``) and per EB z_k = (g_k - g_w) / error_k. See
    :data:`ALIGNMENT_P_MAX`.

    Raises:
        ValueError: fewer than 2 EBs, lengths differ, or an error not finite and > 0.
    """
    from scipy.stats import chi2  # lazy: scipy only where a significance is computed

    if len(gains) != len(errors) or len(gains) < 2:
        raise ValueError("gains and errors: the same length, >= 2 EBs")
    if any(not (math.isfinite(e) and e > 0) for e in errors):
        raise ValueError(f"errors must be finite and > 0, got {list(errors)}")
    w = [1.0 / (e * e) for e in errors]
    mean = sum(wk * g for wk, g in zip(w, gains, strict=True)) / sum(w)
    q = sum(wk * (g - mean) ** 2 for wk, g in zip(w, gains, strict=True))
    dof = len(gains) - 1
    return {"q": q, "dof": dof, "p": float(chi2.sf(q, dof)),
            "z": [(g - mean) / e for g, e in zip(gains, errors, strict=True)]}


def significant_alignment_scales(scales: Sequence[float], significance: dict[str, Any],
                                 p_max: float = ALIGNMENT_P_MAX) -> tuple[list[float], str]:
    """``scales`` (:func:`applied_alignment_scales`' result) when the EBs' flux scales differ
    beyond their noise (``significance["p"] < p_max``), else all 1.0 with the reason."""
    if significance["p"] < p_max:
        return list(scales), ""
    shown = "/".join(f"{z:+.1f}" for z in significance["z"])
    return [1.0] * len(scales), (f"flux alignment not applied: the EBs' flux scales agree within their noise "
                                 f"(Cochran's Q = {significance['q']:.3g} for {significance['dof']} degree(s) "
                                 f"of freedom, p = {significance['p']:.3g} >= {p_max:g}; z {shown})")
