"""Joint execution blocks in the manifest: ``ms = ["eb1.ms", "eb2.ms"]`` (issue 18, item 2).

One dataset self-calibrates several execution blocks (EBs) of one target jointly
(DESIGN.md, "Joint EBs"). :func:`resolve_eb_list` checks such a list (pure path checks, no
table is opened); the manifest turns the result into ``DatasetSpec.ebs``.
"""
from __future__ import annotations

from pathlib import Path
from selfcal_batch.ms.view import archive_hint
from typing import Any

#: Dataset keys that cannot be combined with a list of EBs (each names one MS).
EXCLUSIVE_KEYS = ("simulate", "targets", "target_name", "min_target_time_s")


def resolve_eb_list(ms_raw: list[Any], entry: dict[str, Any],
                    base_dir: Path) -> tuple[tuple[Path, ...], tuple[str, str] | None]:
    """The EBs' absolute paths, or ``(key, one-line problem)`` naming the EB at fault.

    Problems: not a list of >= 2 path strings, a glob, a key of :data:`EXCLUSIVE_KEYS`, an EB
    listed twice, an EB that does not exist or is not a directory."""
    if len(ms_raw) < 2 or not all(isinstance(m, str) and m for m in ms_raw):
        return (), ("ms", f"ms: expected a path or a list of paths, got {ms_raw!r}")
    if any(c in m for m in ms_raw for c in "*?["):
        return (), ("ms", "ms: a list of execution blocks takes plain paths, not globs")
    for key in EXCLUSIVE_KEYS:
        if key in entry:
            return (), (key, f"{key}: cannot be combined with a list of execution blocks in ms")
    ebs = tuple(q if (q := Path(m).expanduser()).is_absolute() else base_dir / q for m in ms_raw)
    if len({p.resolve() for p in ebs}) != len(ebs):  # also through '..', a trailing '/' or a link
        return (), ("ms", "ms: the same execution block is listed twice")
    for k, ms in enumerate(ebs):
        where = f"(execution block {k + 1} of {len(ebs)})"
        if not ms.exists():
            return (), ("ms", f"ms not found: {ms} {where}{archive_hint(ms)}")
        if not ms.is_dir():
            return (), ("ms", f"ms is not a measurement set directory: {ms} {where}{archive_hint(ms)}")
    return ebs, None
