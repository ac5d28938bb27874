"""Output channels that WSClean 3.1 can write MODEL_DATA back for, from the MS's spw layout.

WSClean 3.1 reorders a multi-spw MS into "parts" (one per output channel and data
description): for each output channel in frequency order, the DATA_DESC_IDs that have
channels in it, in id order. Writing the model back (``-update-model-required``, ``-predict``)
it gives each DATA_DESC_ID ``d`` an index = the position of ``d`` in the first-appearance order
of that list, and then (the bug) reads the parts whose DATA_DESC_ID equals that *index*, not
``d`` (3.1 ``PartitionedMS::unpartition``: ``if (dataDescId == dataDescIdIter->second)``;
later releases compare the ids). The index equals ``d`` only when every window first appears in
id order, i.e. when the output channel holding a window's lowest channel never decreases with
the id. Otherwise rows of one window get another window's model: "Error reading from temporary
model data file" (SIGABRT) when the other window has fewer rows, a silently wrong MODEL_DATA
when it has as many (measured on joint execution blocks whose spws interleave in frequency,
issue 18 tester finding 2).

Safe choices, all pure functions of the channel frequencies per DATA_DESC_ID:

* windows whose lowest channels rise with the id (one EB, the usual case): any -channels-out;
* otherwise output channels cut with ``-channel-division-frequencies`` (one output channel per
  cut segment, ``channels_out = cuts + 1``) only where no window with a higher id starts below
  a window with a lower id on the other side of the cut;
* no such cut: one output channel (all windows in the one channel, in id order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ChannelPlan:
    """WSClean output channels for one MS.

    ``channels_out``: -channels-out; ``division_hz``: -channel-division-frequencies (Hz,
    ascending; empty = WSClean's own even division; else ``channels_out == len + 1``);
    ``reason``: why fewer or cut channels were chosen ('' when the request was kept).
    """

    channels_out: int
    division_hz: tuple[float, ...] = field(default=())
    reason: str = ""


def first_appearance_ok(lowest_hz: Sequence[float], cuts_hz: Sequence[float]) -> bool:
    """True when, with output channels cut at ``cuts_hz`` (Hz), each window (index = its
    DATA_DESC_ID order) first appears in id order: the output channel holding a window's
    lowest channel ``lowest_hz[i]`` never decreases with the id."""
    first = np.searchsorted(np.sort(np.asarray(cuts_hz, float)), np.asarray(lowest_hz, float))
    return bool(np.all(np.diff(first) >= 0))


def _allowed_cuts(chan_hz: Sequence[np.ndarray]) -> list[float]:
    """Cut frequencies (midpoints between neighbouring distinct channel centres) that keep
    the windows in id order: none strictly between the lowest channels of a window ``i`` and
    of a later window ``j`` that starts below it."""
    lows = [float(np.min(f)) for f in chan_hz]
    forbidden = [(lows[j], lows[i]) for i in range(len(lows)) for j in range(i + 1, len(lows))
                 if lows[j] < lows[i]]
    centres = np.unique(np.concatenate([np.asarray(f, float).ravel() for f in chan_hz]))
    mids = (centres[1:] + centres[:-1]) / 2
    return [float(m) for m in mids if not any(lo < m < hi for lo, hi in forbidden)]


def _even_cuts(allowed: list[float], lo: float, hi: float, want: int) -> tuple[float, ...]:
    """Up to ``want - 1`` allowed cuts, each the one nearest an even split of [lo, hi]."""
    picked = set()
    for k in range(1, want):
        ideal = lo + k * (hi - lo) / want
        picked.add(min(allowed, key=lambda c: (abs(c - ideal), c)))
    return tuple(sorted(picked))


def plan_output_channels(chan_hz: Sequence[Sequence[float]], want: int) -> ChannelPlan:
    """Output channels for an MS whose DATA_DESC_IDs 0..n-1 have channel centre frequencies
    ``chan_hz[d]`` (Hz, any order within a window), when ``want`` output channels are asked for.

    Returns ``want`` unchanged when the windows' lowest channels rise with the id; else the
    cut plan of the module docstring (at most ``want`` channels, cuts nearest an even split
    of the band), or one channel. Raises ValueError for an empty window.
    """
    want = max(1, int(want))
    freqs = [np.asarray(f, float).ravel() for f in chan_hz]
    if any(f.size == 0 for f in freqs):
        raise ValueError("a spectral window without channels")
    lows = [float(f.min()) for f in freqs]
    if want == 1 or bool(np.all(np.diff(lows) >= 0)):  # any contiguous division keeps id order
        return ChannelPlan(want)
    allowed = _allowed_cuts(freqs)
    lo, hi = min(lows), max(float(f.max()) for f in freqs)
    cuts = _even_cuts(allowed, lo, hi, want) if allowed else ()
    order = ", ".join(f"{d}: {x / 1e9:.4g}" for d, x in enumerate(lows))
    why = (f"spectral windows are not numbered in frequency order (lowest channel per DATA_DESC_ID, GHz: "
           f"{order}); WSClean 3.1 would write one window's model into another's MODEL_DATA rows "
           f"('Error reading from temporary model data file' or a wrong model) with {want} output channels")
    if not cuts:
        return ChannelPlan(1, (), why + ": imaging with 1 output channel")
    at = ", ".join(f"{c / 1e9:.6g}" for c in cuts)
    return ChannelPlan(len(cuts) + 1, cuts, why + f": {len(cuts) + 1} output channels cut at {at} GHz")


def ddid_channel_frequencies(info: Mapping[str, Any]) -> list[np.ndarray]:
    """Channel centres (Hz) per DATA_DESC_ID with data, in id order, from the msinfo of
    :func:`selfcal_batch.ms.inspection.inspect_ms` (``data_descriptions``: ``id, spw``;
    ``spws``: ``id, nchan, freq_min, freq_max``; evenly spaced channels assumed). Windows
    defined without rows are not in the msinfo and are left out. Empty without windows."""
    spws = {int(s["id"]): s for s in info.get("spws", [])}
    out = []
    for dd in sorted(info.get("data_descriptions", []), key=lambda d: int(d["id"])):
        s = spws.get(int(dd["spw"]))
        if s is not None:
            out.append(np.linspace(float(s["freq_min"]), float(s["freq_max"]), max(1, int(s["nchan"]))))
    return out
