"""Which gain tables a step solves on top of, and which it applies (pure).

The seed's chaining: p0 and p1 solve from scratch (nothing pre-applied; p1 *discards* p0,
which only served to improve the model); every later phase step (p2 and the extension
steps) and ap1 solve incrementally on the accepted chain and append to it. A reverted
step leaves the accepted chain unchanged.
"""
from __future__ import annotations

from typing import Any

from selfcal_batch.pipeline.registry import SCRATCH_STEPS  # steps that solve with nothing pre-applied

Entry = dict[str, Any]

#: Chain entries of these steps stay in front of every later chain (joint-EB alignment).
KEPT_STEPS = ("align_ebs",)


def pre_apply_chain(step: str, accepted: list[Entry]) -> list[Entry]:
    """Tables gaincal pre-applies for ``step`` given the accepted chain."""
    if step in SCRATCH_STEPS:
        return [e for e in accepted if e.get("step") in KEPT_STEPS]
    return list(accepted)


def chain_after(step: str, accepted: list[Entry], new: Entry) -> list[Entry]:
    """The chain applycal uses once ``step`` has solved ``new``."""
    return pre_apply_chain(step, accepted) + [new]


def chain_after_decision(accepted: list[Entry], candidate: list[Entry], keep: bool) -> list[Entry]:
    """The accepted chain after the gate: the candidate if kept, else unchanged."""
    return list(candidate) if keep else list(accepted)
