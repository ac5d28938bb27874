"""Template sweeps: one dataset run under several variants (DESIGN.md, "Template sweeps").

A variant is ``auto`` (the flux-based template selection) or a template name (that template
forced). :func:`expand` turns every dataset ``D`` into datasets ``D__<variant>``, each an
ordinary dataset (own directory, working copy, state, result), so resume, ``--restart-from``
and ``--only`` work per (dataset, variant).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from selfcal_batch.selfcal.templates import TEMPLATE_NAMES

AUTO = "auto"
#: Separator between a dataset's name and its variant (names allow letters, digits, . _ + -).
SEP = "__"


def check(variants: Any) -> str:
    """'' when ``variants`` is a valid list, else a one-line reason."""
    if not isinstance(variants, (list, tuple)) or not all(isinstance(v, str) for v in variants):
        return f"campaign.variants: expected a list of strings, got {variants!r}"
    allowed = (AUTO, *TEMPLATE_NAMES)
    for v in variants:
        if v not in allowed:
            return f"campaign.variants: unknown variant {v!r} (choose from: {', '.join(allowed)})"
    if len(set(variants)) != len(variants):
        return f"campaign.variants: duplicate variant in {list(variants)}"
    return ""


def variant_name(base: str, variant: str) -> str:
    return f"{base}{SEP}{variant}"


def split_name(name: str, variants: tuple[str, ...] | list[str]) -> tuple[str, str]:
    """(base, variant) of an expanded dataset name; (name, '') when it is not one."""
    for v in variants:
        if name.endswith(SEP + v) and len(name) > len(SEP + v):
            return name[: -len(SEP + v)], v
    return name, ""


def overridden_templates(datasets: list[Any], defaults: dict[str, Any], variants: tuple[str, ...],
                         label: str = "manifest", line_of: Any = None) -> list[str]:
    """One warning line per ``force_template`` that the ``variants`` replace (pure).

    A sweep runs every dataset under every variant (``auto`` = selection by flux), so a
    ``force_template`` of a dataset (or of ``[defaults]``: one line for all) does not hold
    inside it; a survey astronomer adding a sweep to a production manifest wants the sweep,
    said once, not a refusal. ``line_of(key_path)``: the manifest line of a key (or None).
    """
    if not variants:
        return []

    def where(path: tuple) -> str:
        ln = line_of(path) if line_of else None
        return f"{label}:{ln}: " if ln else f"{label}: "

    tail = f"is replaced by each of [campaign] variants {list(variants)} (a sweep runs every variant)"
    out = []
    if defaults.get("force_template"):
        out.append(f"{where(('defaults', 'force_template'))}[defaults] force_template = "
                   f"{defaults['force_template']!r} {tail}")
    for d in datasets:
        if d.overrides.get("force_template"):
            out.append(f"{where(('datasets', d.index, 'force_template'))}datasets[{d.index}] (name={d.name!r}): "
                       f"force_template = {d.overrides['force_template']!r} {tail}")
    return out


def expand(datasets: list[Any], variants: tuple[str, ...]) -> list[Any]:
    """Every DatasetSpec once per variant (``base``/``variant`` set, ``force_template`` for a
    template variant); a dataset that carries an error is expanded too (each variant fails
    with the same reason). No variants: the datasets unchanged."""
    if not variants:
        return list(datasets)
    out = []
    for d in datasets:
        for v in variants:
            cfg = d.config
            if cfg is not None:
                cfg = cfg.with_updates(force_template="" if v == AUTO else v)
            out.append(dataclasses.replace(d, name=variant_name(d.name, v), config=cfg,
                                           base=d.name, variant=v))
    return out
