"""Which correlations to image and calibrate, from what the data hold (pure).

Input: the correlation names per spectral window with data (``inspect_ms``'s
``correlations``: spw id -> e.g. ``['RR', 'LL']``). Rules:

* every spw holds both parallel hands of one basis (RR+LL or XX+YY), or a Stokes I
  correlation: image Stokes I (``wsclean -pol i``) and keep the template's gaintype;
* otherwise one parallel hand held by every spw: image that hand (``-pol rr`` ...) and
  solve with gaintype 'T' (one solution per antenna from that hand; CASA 'G' would solve
  a second polarisation without data);
* no hand common to all spws (e.g. spw 0 holds only RR, spw 1 only LL; or only cross
  hands): :class:`PolarisationError`, one line naming the spws and their correlations.

WSClean forms Stokes I only where both hands exist ("Can not form requested polarization
(Stokes I)", WSClean 3.1, exit 255), which is why a single missing hand anywhere rules it out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

__all__ = ["PolChoice", "PolarisationError", "choose_polarisation", "gaintype_for"]

_PAIRS = (("RR", "LL"), ("XX", "YY"))
_HANDS = ("RR", "LL", "XX", "YY")


class PolarisationError(ValueError):
    """No correlation choice is valid for every spectral window."""


@dataclass(frozen=True)
class PolChoice:
    """``wsclean_pol``: WSClean ``-pol`` value; ``hands``: correlations used;
    ``single_hand``: one correlation only (gaintype 'T'); ``note``: why, for the log."""

    wsclean_pol: str
    hands: tuple[str, ...]
    single_hand: bool
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"wsclean_pol": self.wsclean_pol, "hands": list(self.hands),
                "single_hand": self.single_hand, "note": self.note}


def _describe(corr: Mapping[str, Sequence[str]]) -> str:
    return "; ".join(f"spw {s}: {' '.join(c) or 'none'}" for s, c in sorted(corr.items(), key=lambda kv: int(kv[0])))


def choose_polarisation(correlations: Mapping[str | int, Sequence[str]]) -> PolChoice:
    """The correlation choice for spw id -> correlation names (see the module docstring).

    Raises :class:`PolarisationError` (one line) when no choice is consistent, and
    ``ValueError`` for an empty mapping.
    """
    corr = {str(k): [str(c).upper() for c in v] for k, v in correlations.items()}
    if not corr:
        raise ValueError("no spectral window with data")
    sets = [set(c) for c in corr.values()]
    if all(any(a in s and b in s for a, b in _PAIRS) for s in sets) or all("I" in s for s in sets):
        bases = {p for s in sets for p in _PAIRS if p[0] in s and p[1] in s}
        if len(bases) <= 1 or all("I" in s for s in sets):
            return PolChoice("i", ("I",), False, "Stokes I")
    for hand in _HANDS:
        if all(hand in s for s in sets):
            pair = next(p for p in _PAIRS if hand in p)
            missing = sorted((k for k, c in corr.items() if not set(pair) <= set(c)), key=int)
            return PolChoice(hand.lower(), (hand,), True,
                             f"{hand} only ({', '.join('spw ' + k for k in missing)} without {'/'.join(pair)})")
    raise PolarisationError(f"no parallel-hand correlation common to all spectral windows "
                            f"({_describe(corr)}): cannot image Stokes I or a single hand; "
                            "select spws with 'spw'")


def gaintype_for(template_gaintype: str, choice: Mapping[str, Any] | None) -> str:
    """gaincal gaintype: 'T' when a single hand is used (one polarisation to solve), else the
    template's ('G' or 'T')."""
    if choice and choice.get("single_hand") and template_gaintype == "G":
        return "T"
    return template_gaintype
