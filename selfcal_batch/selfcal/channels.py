"""Joint EBs of different channelisation (issue 18, item 2; DESIGN.md "Joint EBs", "Mixed
channel counts"): which EB's spws are averaged by how much so that the joint working copy
holds one channel count, or why that cannot be done. Pure: the inputs are the working
copies' spectral windows as measured (``ms.inspection.inspect_ms``) or as listed by the
dry-run (``ms.fields``); nothing here reads an MS.

Why one count: WSClean 3.1 reads every row of one MS with the first spw's shape while
writing the model (``-predict -reorder``: "Table array conformance error (shape=[2, 4],
expected [2, 8])", measured; see ``pipeline.steps_joint.channel_count_problem``), and the
joint working copy is one MS (CASA ``concat``).

Rule (:func:`common_channels`): the common count is the smallest count of any spw of any EB;
every spw is averaged by ``its count / common count`` channels (CASA split ``width``), which
must be a whole number (averaging never drops channels here). A spw that is averaged and
lies on a spw of another EB with the same averaged channel width must have its averaged
channel edges on that spw's edges (within :data:`EDGE_TOLERANCE` of a channel), so that
both hold the same frequencies: otherwise concat keeps two near-identical spws apart and
their channels differ by a fraction of a channel, which is refused rather than delivered
silently.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

#: Largest offset (fraction of one averaged channel) at which two EBs' averaged channel edges
#: count as aligned: a shift of 1 % of a channel moves no visibility measurably in a
#: continuum image (our choice; frequency labels of archive EBs agree to far better than that).
EDGE_TOLERANCE = 0.01
#: Relative difference at which two averaged channel widths count as equal (the same band
#: channelised alike after averaging).
WIDTH_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SpwChannels:
    """One spw of one EB's working copy: id, channels, lowest channel edge (Hz) and channel
    width (Hz, > 0); the frequencies may be None when unknown (then edges are not checked)."""

    spw_id: int
    n_chan: int
    low_hz: float | None = None
    chan_width_hz: float | None = None

    def averaged(self, factor: int) -> tuple[float, float] | None:
        """(lowest edge, width) in Hz after averaging ``factor`` channels; None if unknown."""
        if self.low_hz is None or not self.chan_width_hz:
            return None
        return self.low_hz, self.chan_width_hz * factor

    def span(self) -> tuple[float, float] | None:
        """(low, high) edge in Hz; None if unknown."""
        if self.low_hz is None or not self.chan_width_hz:
            return None
        return self.low_hz, self.low_hz + self.n_chan * self.chan_width_hz


@dataclass(frozen=True)
class ChannelPlan:
    """The decision: ``common`` channel count, per EB ``{spw id: averaging factor}`` (1 =
    unchanged) and ``reasons`` (``(EB index, text)``; non-empty = cannot be made equal)."""

    common: int
    factors: list[dict[int, int]]
    reasons: list[tuple[int, str]]

    @property
    def averaged(self) -> bool:
        """True when some spw is averaged (and nothing refused)."""
        return not self.reasons and any(f > 1 for per in self.factors for f in per.values())


def common_channels(ebs: Sequence[Sequence[SpwChannels]], edge_tolerance: float = EDGE_TOLERANCE) -> ChannelPlan:
    """The averaging that gives every spw of every EB one channel count (module docstring).

    Args:
        ebs: per EB, its working copy's spws (after the dataset's ``chanbin``).
        edge_tolerance: see :data:`EDGE_TOLERANCE` (fraction of an averaged channel).

    Returns:
        A :class:`ChannelPlan`; ``reasons`` name the spw at fault: a count that is not a
        multiple of the common count, or averaged channel edges off another EB's.

    Raises:
        ValueError: a spw with fewer than 1 channel.
    """
    counts = [s.n_chan for eb in ebs for s in eb]
    if any(n < 1 for n in counts):
        raise ValueError(f"channel counts must be >= 1, got {counts}")
    common = min(counts, default=1)
    factors = [{s.spw_id: max(1, s.n_chan // common) for s in eb} for eb in ebs]
    reasons = [(k, f"spw {s.spw_id} has {s.n_chan} channels, not a multiple of {common}")
               for k, eb in enumerate(ebs) for s in eb if s.n_chan % common]
    if not reasons:
        reasons = _edge_reasons(ebs, factors, edge_tolerance)
    return ChannelPlan(common, factors, reasons)


def _edge_reasons(ebs: Sequence[Sequence[SpwChannels]], factors: list[dict[int, int]],
                  tolerance: float) -> list[tuple[int, str]]:
    """Averaged spws whose channel edges are off an overlapping spw of another EB with the same
    averaged width (one reason per averaged spw; pairs where neither is averaged are as
    before: not checked)."""
    out: list[tuple[int, str]] = []
    for k, eb in enumerate(ebs):
        for s in eb:
            if factors[k][s.spw_id] > 1 and (why := _edge_offset(ebs, factors, k, s, tolerance)):
                out.append((k, why))
    return out


def _edge_offset(ebs: Sequence[Sequence[SpwChannels]], factors: list[dict[int, int]], k: int,
                 s: SpwChannels, tolerance: float) -> str:
    """Why the averaged spw ``s`` of EB ``k`` is misaligned ('' when it is not)."""
    fs = factors[k][s.spw_id]
    a = s.averaged(fs)
    for j, other in enumerate(ebs):
        for o in other if j != k and a is not None else ():
            b = o.averaged(factors[j][o.spw_id])
            if b is None or not _overlap(s, o) or abs(a[1] - b[1]) > WIDTH_TOLERANCE * min(a[1], b[1]):
                continue  # different averaged widths: kept apart, as EBs of equal counts are
            off = (a[0] - b[0]) / b[1]
            if abs(off - round(off)) > tolerance:
                return (f"spw {s.spw_id} averaged x{fs}: its channel edges are {abs(off - round(off)):.2f} "
                        f"of a channel off execution block {j + 1}'s spw {o.spw_id}")
    return ""


def _overlap(a: SpwChannels, b: SpwChannels) -> bool:
    """True when the two spws share some frequency range (both spans known)."""
    sa, sb = a.span(), b.span()
    return sa is not None and sb is not None and min(sa[1], sb[1]) > max(sa[0], sb[0])
