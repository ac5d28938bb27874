"""Solution intervals (pure): parse a CASA solint, estimate the per-solution SNR, choose a
step's interval (auto_selfcal's estimate), plan shorter extension intervals.

Nothing here runs a program or reads a file; every function is unit-tested on numbers.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover  (annotation only: config imports this module)
    from selfcal_batch.config import SolintConfig


#: A CASA solution interval or time bin: 'int', 'inf', or a number with an optional unit
#: (s, min; seconds without one). The one pattern of the package (templates, timebin, gate).
SOLINT_RE = re.compile(r"^(?:(?P<word>int|inf)|(?P<num>\d+(?:\.\d*)?|\.\d+)(?P<unit>s|min)?)$")


@dataclass(frozen=True)
class Solint:
    """A parsed interval: ``word`` 'int'/'inf' (then ``seconds`` is None) or ``seconds``;
    ``unit``: the unit written ('' none)."""

    word: str = ""
    seconds: float | None = None
    unit: str = ""


def parse_solint(text: str, *, words: bool = True, unit_required: bool = False) -> Solint:
    """Parse a CASA solint ('int', 'inf', '60s', '2min', '30' = seconds).

    ``words``: accept 'int'/'inf'; ``unit_required``: refuse a bare number. Raises
    ValueError naming the text when it is not an interval of that form."""
    m = SOLINT_RE.match(str(text))
    if not m or (m["word"] and not words) or (m["num"] and unit_required and not m["unit"]):
        raise ValueError(f"bad solint {text!r}")
    if m["word"]:
        return Solint(word=m["word"])
    v = float(m["num"])
    return Solint(seconds=v * 60 if m["unit"] == "min" else v, unit=m["unit"] or "")


def is_solint(text: str, *, words: bool = True, unit_required: bool = False) -> bool:
    """True when :func:`parse_solint` accepts ``text`` with these options."""
    try:
        parse_solint(text, words=words, unit_required=unit_required)
    except ValueError:
        return False
    return True


def solint_seconds(solint: str, integration_s: float, scan_s: float) -> float:
    """Seconds spanned by a CASA solint ('int', 'inf' = one scan, '60s', '2min');
    ValueError for anything else. Surrounding blanks are ignored."""
    p = parse_solint(str(solint).strip())
    if p.word == "int":
        return integration_s
    if p.word == "inf":
        return scan_s
    return float(p.seconds)  # type: ignore[arg-type]


def format_solint(seconds: float, integration_s: float) -> str:
    """A CASA solint string for ``seconds`` ('int' at the integration time)."""
    if seconds <= integration_s * 1.01:
        return "int"
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"


def estimate_solution_snr(
    image_snr: float,
    n_antennas: int,
    time_on_source_s: float,
    solint_s: float,
    *,
    spw_fraction: float = 1.0,
    pol_fraction: float = 1.0,
) -> float:
    """auto_selfcal's estimate of the per-antenna, per-solution SNR.

    ``SNR_sol = SNR_image / (sqrt(N_ant - 3) * sqrt(T_on / solint))``, scaled by
    ``sqrt(spw_fraction)`` when spws are solved separately and ``sqrt(pol_fraction)`` when
    polarisations are (gaintype G: 0.5).
    """
    if not (image_snr > 0 and n_antennas > 3 and time_on_source_s > 0 and solint_s > 0):
        return 0.0
    n_sol = max(1.0, time_on_source_s / solint_s)
    return image_snr / (math.sqrt(n_antennas - 3) * math.sqrt(n_sol)) * math.sqrt(spw_fraction * pol_fraction)


def data_fraction(combine: str, gaintype: str, n_spw: int) -> float:
    """Fraction of the data one solution of one antenna sees within its interval: 1 / n_spw
    when spws are solved separately (no 'spw' in ``combine``), x 0.5 when the polarisations
    are (gaintype 'G')."""
    spw = 1.0 if ("spw" in str(combine) or n_spw <= 1) else 1.0 / n_spw
    return spw * (0.5 if gaintype == "G" else 1.0)


@dataclass(frozen=True)
class MeasuredSNR:
    """A solve's own per-solution SNR: ``snr`` (median of the caltable's SNR column, i.e.
    per antenna, spw and polarisation solution), over effective intervals of ``interval_s``
    seconds (:func:`effective_solint_s`) with ``fraction`` of the data per solution
    (:func:`data_fraction`)."""

    snr: float
    interval_s: float
    fraction: float = 1.0

    def scaled(self, interval_s: float, fraction: float = 1.0) -> float:
        """The SNR the same data give over ``interval_s`` with ``fraction``: the SNR of a
        solution grows as the square root of the data it averages (radiometer equation;
        Thompson, Moran & Swenson 2017, *Interferometry and Synthesis in Radio Astronomy*,
        sec. 6.2; auto_selfcal scales its estimate the same way). 0.0 when not measurable."""
        if not (self.snr > 0 and self.interval_s > 0 and self.fraction > 0 and interval_s > 0 and fraction > 0):
            return 0.0
        return self.snr * math.sqrt(interval_s / self.interval_s * fraction / self.fraction)


def new_time_scale(interval_s: float, accepted_s: Sequence[float]) -> bool:
    """Does a phase step solve a shorter time scale than every phase step already accepted
    (effective intervals in seconds, :func:`effective_solint_s`)? True for the first one.

    The acceptance gate judges only such steps on the paired noise of its images
    (selfcal.acceptance.paired_metric_noise). A re-solve at an interval already solved (p1
    at p0's 60 s, discarding p0) gains only from the newer model, and its image gain is
    confounded with the model's own pull on the solutions, which no noise model sees
    (measured, scripts/bench_quality.py with the paired noise for every step: extended_faint
    p1 at p0's 60 s +2.6 % SNR, z 4.6, kept, while its residual phase error against the truth
    rose 11.17 -> 11.70 deg; standard_2 p1 +0.9 %, z 2.9, 3.34 -> 3.46 deg)."""
    return all(interval_s < a * (1 - 1e-6) for a in accepted_s)


@dataclass(frozen=True)
class SolintChoice:
    """The interval and combination chosen for a step, or why it is skipped."""

    solint: str
    combine: str
    est_snr: float
    skip: bool = False
    reason: str = ""


def choose_solint(
    template_solint: str,
    template_combine: str,
    gaintype: str,
    *,
    image_snr: float,
    n_antennas: int,
    n_spw: int,
    integration_s: float,
    scan_s: float,
    time_on_source_s: float,
    cfg: SolintConfig,
    measured: MeasuredSNR | None = None,
    span_s: float | None = None,
) -> SolintChoice:
    """Keep the template interval if its estimated SNR reaches ``cfg.min_snr``; otherwise
    lengthen it (doubling, up to the scan length or ``max_solint_s``), then also combine
    spectral windows; skip the step when nothing allowed reaches the minimum.

    The SNR is estimated over the interval gaincal really uses (:func:`effective_solint_s`;
    ``span_s``: time span, default ``scan_s``): from ``measured`` (an earlier solve's own SNR,
    :meth:`MeasuredSNR.scaled`) when given, else :func:`estimate_solution_snr` (``image_snr``)."""

    def est(sol_s: float, combine: str) -> float:
        frac = data_fraction(combine, gaintype, n_spw)
        eff = effective_solint_s(f"{sol_s:.6g}s", combine, integration_s=integration_s, scan_s=scan_s,
                                 span_s=scan_s if span_s is None else span_s)
        if measured is not None:
            return measured.scaled(eff, frac)
        return estimate_solution_snr(image_snr, n_antennas, time_on_source_s, eff,
                                     spw_fraction=data_fraction(combine, "", n_spw),
                                     pol_fraction=0.5 if gaintype == "G" else 1.0)

    base_s = solint_seconds(template_solint, integration_s, scan_s)
    if not cfg.snr_based:
        return SolintChoice(template_solint, template_combine, est(base_s, template_combine))
    first = est(base_s, template_combine)
    if first >= cfg.min_snr:
        return SolintChoice(template_solint, template_combine, first)
    limit = max(base_s, min(cfg.max_solint_s, max(scan_s, base_s)))
    combos = [template_combine]
    if "spw" not in template_combine and n_spw > 1:
        combos.append(",".join(c for c in (template_combine, "spw") if c))
    for combine in combos:
        s = base_s
        while True:
            e = est(s, combine)
            if e >= cfg.min_snr:
                why = f"lengthened {template_solint} -> {format_solint(s, integration_s)}"
                if combine != template_combine:
                    why += f", combine='{combine}'"
                return SolintChoice(format_solint(s, integration_s), combine, e, reason=why + f" (est. SNR {e:.1f})")
            if s >= limit:
                break
            s = min(limit, s * 2)
    best = est(limit, combos[-1])
    return SolintChoice(template_solint, template_combine, best, skip=True,
                        reason=f"estimated solution SNR {best:.2f} < {cfg.min_snr:g} even at "
                               f"{format_solint(limit, integration_s)} with combine='{combos[-1]}'")


def worth_extending(snr_pre: float, snr_post: float, min_gain: float) -> bool:
    """Try a shorter interval only while the last accepted phase step still paid off: its
    image SNR rose by at least ``min_gain`` (fraction). Below that, the phase errors on
    that timescale are already under the noise, and a shorter interval has noisier
    solutions; each extra step costs a solve and an image. ``min_gain <= 0``: always."""
    if min_gain <= 0:
        return True
    if not (math.isfinite(snr_pre) and math.isfinite(snr_post) and snr_pre > 0):
        return False
    return snr_post >= snr_pre * (1.0 + min_gain)


def extension_solints(
    shortest_s: float,
    integration_s: float,
    *,
    image_snr: float,
    n_antennas: int,
    time_on_source_s: float,
    gaintype: str,
    cfg: SolintConfig,
    measured: MeasuredSNR | None = None,
    fraction: float = 1.0,
) -> list[tuple[str, float]]:
    """Shorter phase intervals to try after the template's ladder: halving from
    ``shortest_s`` (the last step's effective interval, :func:`effective_solint_s`) down to
    the integration time while the estimated SNR stays above ``cfg.extend_min_snr``; at most
    ``cfg.max_extra_steps``. The SNR: ``measured`` (the last accepted phase step's own, scaled
    to the interval and ``fraction`` of the data, :meth:`MeasuredSNR.scaled`) when given,
    else :func:`estimate_solution_snr`. Returns (solint, est_snr)."""
    if not cfg.extend_ladder:
        return []
    out: list[tuple[str, float]] = []
    s = shortest_s
    pol_frac = 0.5 if gaintype == "G" else 1.0
    while len(out) < cfg.max_extra_steps and s > integration_s * 1.01:
        s = max(integration_s, s / 2)
        e = (measured.scaled(s, fraction) if measured is not None
             else estimate_solution_snr(image_snr, n_antennas, time_on_source_s, s, pol_fraction=pol_frac))
        if e < cfg.extend_min_snr:
            break
        out.append((format_solint(s, integration_s), e))
    return out


def interval_s(solint: str, combine: str, *, integration_s: float, scan_s: float, span_s: float) -> float:
    """:func:`solint_seconds` with 'inf' = the scan, or the whole span when ``combine`` holds 'scan'."""
    return solint_seconds(solint, integration_s, span_s if "scan" in str(combine) else scan_s)


def effective_solint_s(solint: str, combine: str, *, integration_s: float, scan_s: float, span_s: float) -> float:
    """Mean length (s) of the solution intervals gaincal makes of ``solint``.

    gaincal starts a new interval at every scan boundary unless ``combine`` holds 'scan'
    (CASA ``gaincal`` documentation, parameters ``solint`` and ``combine``). An interval of
    ``solint`` seconds holds k = ceil(solint / integration_s) integrations, so a scan of
    n = scan_s / integration_s integrations is cut into ceil(n / k) intervals of mean
    length scan_s / ceil(n / k): '96s' and '60s' in 60 s scans are both one solution per
    scan (60 s), '48s' is 50 s + 10 s (mean 30 s). With 'scan' in ``combine``: the interval
    itself, 'inf' = ``span_s``. 'int' = one integration. Seconds; ValueError for a bad solint.
    """
    dt = max(float(integration_s), 1e-9)
    p = parse_solint(str(solint).strip())
    if p.word == "int":
        return dt
    across = "scan" in str(combine)
    if p.word == "inf":
        return max(dt, float(span_s) if across else float(scan_s))
    sol = max(float(p.seconds), dt)  # type: ignore[arg-type]
    if across:
        return min(sol, max(dt, float(span_s)))
    n = max(1, round(float(scan_s) / dt))
    k = max(1, math.ceil(sol / dt - 1e-6))
    return n * dt / math.ceil(n / k)


def scan_limited_solint(
    template_solint: str,
    combine: str,
    earlier: list[tuple[float, float]],
    *,
    integration_s: float,
    scan_s: float,
    span_s: float,
) -> tuple[str, str]:
    """The interval of a phase ladder step whose template interval the scan length has made
    no shorter than an earlier step's.

    The templates' phase intervals shrink from step to step (p0 96 s, p1 60 s, p2 48 s in
    standard_1: each step tries a shorter time scale of the phase errors). In scans shorter
    than those intervals gaincal cuts every interval at the scan boundary
    (:func:`effective_solint_s`), so e.g. p1 '60s' in 60 s scans repeats p0's one solution
    per scan: it cannot gain, the gate rejects it as "no improvement", and the shorter
    intervals the data support are never tried. Such a step gets instead the interval of
    ceil(n / m) integrations (n per scan) for the fewest parts m per scan that make it
    effectively shorter than every earlier step with a longer template interval: scans cut
    into (nearly) equal parts, the longest such interval (auto_selfcal likewise
    derives its ladder from the scan length: 'inf', scan/2, ... 'int'; peers.md).

    Args:
        template_solint: this step's template interval (CASA solint).
        combine: this step's gaincal combine.
        earlier: per phase step already run, (its template interval, its effective
            interval as run), both in seconds.
        integration_s, scan_s, span_s: integration time, (mean) scan length, time span (s).

    Returns:
        (solint, reason): the template interval and '' when it is already shorter (or when
        nothing shorter than one integration exists), else the shorter interval and why.
    """
    t_s = interval_s(template_solint, combine, integration_s=integration_s, scan_s=scan_s, span_s=span_s)
    eff = effective_solint_s(template_solint, combine, integration_s=integration_s, scan_s=scan_s, span_s=span_s)
    bound = min((e for t, e in earlier if t_s < t * (1 - 1e-6)), default=math.inf)
    if eff < bound * (1 - 1e-6):
        return template_solint, ""
    dt = max(float(integration_s), 1e-9)
    n = max(1, round(float(scan_s) / dt))
    for parts in range(1, n + 1):  # fewest parts per scan first: the longest interval
        k = math.ceil(n / parts)  # integrations per interval
        sec = k * dt
        cand = "int" if k == 1 else (f"{sec:.0f}s" if abs(sec - round(sec)) < 1e-3 else f"{sec:.2f}s")
        if effective_solint_s(cand, combine, integration_s=dt, scan_s=scan_s, span_s=span_s) < bound * (1 - 1e-6):
            return cand, (f"template {template_solint} is {eff:.0f} s in {scan_s:.0f} s scans, no shorter than an "
                          f"earlier step's {bound:.0f} s: {cand} instead")
    return template_solint, ""


#: Fragment of the gate's reason that says too many of a step's solutions failed minsnr
#: (selfcal.acceptance._check_solutions): too little SNR per interval, which a longer interval
#: cures; kept in step with it by a unit test. Not data flagged by applycal (a reference
#: antenna missing from part of the data: a longer interval does not help) nor one antenna's
#: lost solutions (a dead antenna).
FLAGGED_SOLUTION_REASONS = ("of solutions flagged",)


def longer_after_flagged(reasons: Sequence[str], solint: str, *, integration_s: float, scan_s: float,
                         max_solint_s: float) -> str | None:
    """The interval of one retry for the first phase step when the gate rejected it only
    because too many of its solutions were flagged, or None.

    Failed solutions mean too little SNR per interval (CASA flags a solution below
    ``minsnr``); the solution SNR grows as the square root of the interval, so the retry
    takes the longest interval gaincal can give without combining scans: one solution per
    scan, capped at ``max_solint_s`` (tester finding F7: 90 % randomly flagged data at SNR 33
    had 23 % of its 96 s solutions flagged, and the whole ladder stopped). None when any other
    reason rejected the step (noise-like corrections, a worse image: harm, not SNR) or the
    interval is already that long. Pure; seconds in, CASA solint out.
    """
    if not reasons or not all(any(m in r for m in FLAGGED_SOLUTION_REASONS) for r in reasons):
        return None
    now = effective_solint_s(solint, "", integration_s=integration_s, scan_s=scan_s, span_s=scan_s)
    longest = min(float(max_solint_s), float(scan_s))
    if longest < 1.5 * now:  # not a meaningfully longer interval (SNR gain < 1.22)
        return None
    # 'inf' without combine='scan' is exactly one solution per scan, whatever each scan's length
    return "inf" if longest >= float(scan_s) else format_solint(longest, integration_s)
