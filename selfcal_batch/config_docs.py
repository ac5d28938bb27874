"""Documentation generated from the configuration schema (``selfcal-batch config``).

* :func:`defaults_toml` -- every setting with its default, help, type, unit and choices as
  comments; parses back as a valid manifest (``[campaign]``, ``[defaults]``, ``[cluster]``).
* :func:`markdown` -- ``docs/configuration.md`` (a unit test keeps the checked-in copy equal).
* :func:`explain` -- one key (or one table) as text; unknown keys raise ConfigError with a
  did-you-mean hint.

Nothing here declares a setting: the declarations are the dataclasses of
:mod:`selfcal_batch.config`, :mod:`selfcal_batch.campaign_config` and
:class:`selfcal_batch.selfcal.templates.StepParams` (see :mod:`selfcal_batch.schema`).
"""
from __future__ import annotations

import dataclasses
import json
import textwrap
from dataclasses import dataclass
from typing import Any

from selfcal_batch.campaign_config import DATASET_KEYS_DOC, CampaignSection, ClusterSpec
from selfcal_batch.config import PipelineConfig
from selfcal_batch.errors import ConfigError
from selfcal_batch.schema import (
    ADDRESS,
    ANGLE,
    DURATION,
    MEMORY,
    SOLINT,
    WALLTIME,
    Setting,
    did_you_mean,
    fields_of,
    range_text,
    spec,
    type_name,
)
from selfcal_batch.selfcal.templates import TEMPLATE_NAMES, StepParams, template_params


@dataclass(frozen=True)
class Key:
    """One documented key: ``name`` as written under its ``table`` (``[defaults]`` ...)."""

    name: str
    table: str
    type: str
    default: Any
    setting: Setting
    #: False for keys without a single default (template values, dataset keys).
    has_default: bool = True

    @property
    def allowed(self) -> str:
        """Choices / range / grammar in a few words ('' when any value of the type goes)."""
        return self.allowed_text(grammar=True)

    def allowed_text(self, grammar: bool) -> str:
        """Like :attr:`allowed`; ``grammar=False`` leaves out the value type's grammar."""
        s = self.setting
        parts = []
        if s.choices:
            parts.append(" | ".join(s.choices))
        if s.text is not None and grammar:
            parts.append(s.text.doc)
        r = range_text(s)
        if r:
            parts.append(r)
        also = [repr(a) for a in s.also]
        if also:
            parts.append("or " + " / ".join(also))
        return "; ".join(parts)


def _section(cls: type, table: str, prefix: str = "", instance: Any = None) -> list[Key]:
    out: list[Key] = []
    obj = instance if instance is not None else cls()
    nested: list[Key] = []
    for f, tp in fields_of(cls):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(tp):
            nested += _section(tp, f"{table[:-1]}.{f.name}]", f"{prefix}{f.name}.", value)
            continue
        out.append(Key(prefix + f.name, table, type_name(tp, spec(f)), value, spec(f)))
    return out + nested


def all_keys() -> list[Key]:
    """Every key of a manifest, in manifest order."""
    keys = _section(CampaignSection, "[campaign]", "campaign.")
    keys += _section(PipelineConfig, "[defaults]")
    keys += [Key(f"templates.{f.name}", "[templates.<name>.<step>]", type_name(tp, spec(f)), None,
                 spec(f), has_default=False) for f, tp in fields_of(StepParams)]
    keys += _section(ClusterSpec, "[cluster]", "cluster.")
    keys += [Key(f"datasets.{name}", "[[datasets]]", tp, None, Setting(help=text),
                 has_default=False) for name, tp, text in DATASET_KEYS_DOC]
    return keys


def find_key(name: str) -> list[Key]:
    """Keys matching ``name``: one key (``cell``, ``defaults.cell``, ``wsclean.mgain``,
    ``cluster.kind``, ``templates.solint``, ``templates.faint.p0.solint``) or every key of a
    table (``gate``, ``cluster``). ConfigError with a did-you-mean hint when none matches."""
    name = name.strip()
    name = name.removeprefix("defaults.")
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "templates":
        name = f"templates.{parts[3]}"
    keys = all_keys()
    exact = [k for k in keys if k.name == name]
    if exact:
        return exact
    table = [k for k in keys if k.name.startswith(name + ".")]
    if table:
        return table
    names = [k.name for k in keys]
    # A key of a table given without its table ('targets' for datasets.targets): name it
    # exactly, before a spelling match on the top-level names ('datasets').
    inner = sorted(n for n in names if n.endswith("." + name))
    if inner:
        raise ConfigError(f"no setting {name!r} (did you mean {' or '.join(repr(n) for n in inner)}?)")
    tables = sorted({k.name.rsplit(".", 1)[0] for k in keys if "." in k.name})
    raise did_you_mean("", f"no setting {name!r}", name, names + tables)


# ----------------------------------------------------------------------------------------
# TOML


def toml_value(v: Any) -> str:
    """A TOML literal of a default (str, bool, int, float, list/tuple, dict)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML literal for {v!r}")


def _facts(k: Key) -> str:
    bits = [k.type]
    if k.setting.unit:
        bits.append(f"unit {k.setting.unit}")
    if k.allowed:
        bits.append(k.allowed)
    return "; ".join(bits)


def _comment(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, 96, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")


def _toml_key(k: Key, live: bool = True, example: Any = None) -> list[str]:
    leaf = k.name.rsplit(".", 1)[-1]
    lines = [""] + _comment(k.setting.help) + _comment(f"({_facts(k)})")
    value = k.default if live else example
    lines.append(f"{'' if live else '# '}{leaf} = {toml_value(value)}")
    return lines


def defaults_toml() -> str:
    """Every setting with its default, commented; a valid manifest once ``[[datasets]]`` is
    added (``selfcal-batch config --defaults``)."""
    out = ["# selfcal-batch: every setting with its default (selfcal-batch config --defaults).",
           "# Add [[datasets]] (name, ms) and keep only what you change; reference:",
           "# docs/configuration.md, or selfcal-batch config --explain KEY."]
    current = ""
    # The [defaults.templates] table follows the last plain key of [defaults] (TOML: a key
    # written after a table header belongs to that table).
    last_plain = [k.name for k in all_keys() if k.table == "[defaults]" and k.name != "templates"][-1]
    for k in all_keys():
        if k.table.startswith("[templates") or k.table == "[[datasets]]":
            continue
        if k.table != current:
            current = k.table
            out += ["", current]
            if current == "[defaults]":
                out += _comment("Any of these may also be set per dataset in [[datasets]].")
        if k.name == "templates":
            continue  # written below as the [defaults.templates] table
        if k.name == "cluster.kwargs":
            out += [""] + _comment(k.setting.help) + ["[cluster.kwargs]"]
            continue
        out += _toml_key(k)
        if k.name == last_plain:
            out += _templates_toml()
    out += ["", "# [[datasets]]", "# name = \"J1008\"", "# ms = \"/data/J1008.ms\""]
    return "\n".join(out) + "\n"


def _templates_toml() -> list[str]:
    """The empty ``[defaults.templates]`` table and, commented, every override key with the
    VLA C-band 'bright' p1 value as example."""
    example = template_params("bright", "VLA", "C")["p1"]
    out = ["", "[defaults.templates]"]
    out += _comment(f"Template overrides: [templates.<name>.<step>] tables (name: "
                    f"{', '.join(TEMPLATE_NAMES)}; step: p0, p1, p2, ap1). Keys, with the "
                    "VLA C-band bright p1 values as examples:")
    out += ["# [templates.bright.p1]"]
    for k in all_keys():
        if k.table.startswith("[templates"):
            leaf = k.name.rsplit(".", 1)[-1]
            lines = _toml_key(k, False, getattr(example, leaf))[1:]
            out += ["#"] + [f"#{line[1:]}" for line in lines]
    return out


# ----------------------------------------------------------------------------------------
# Markdown and --explain


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    """``docs/configuration.md``: every key with type, default, unit, allowed values, help."""
    out = ["# Configuration reference", "",
           "Generated from the schema by `selfcal-batch config --markdown > docs/configuration.md`",
           "(do not edit by hand; `tests/unit/test_config_docs.py` fails when it is stale).",
           "Declarations: `selfcal_batch/config.py` (pipeline), `selfcal_batch/campaign_config.py`",
           "(`[campaign]`, `[cluster]`), `StepParams` in `selfcal_batch/selfcal/templates.py`",
           "(template overrides). `selfcal-batch config --defaults` prints every setting as TOML;",
           "`selfcal-batch config --explain KEY` explains one.", "",
           "Every `[defaults]` key may also be set per dataset in `[[datasets]]`; nested tables",
           "are written `[defaults.wsclean]` or inline (`gate = { rms_tolerance = 0.1 }`).", "",
           "## Value types", "",
           f"- **angle**: {ANGLE.doc}; all are units WSClean 3.1 reads, passed on as written.",
           f"- **duration**: {DURATION.doc}.",
           f"- **solint**: {SOLINT.doc} (CASA gaincal).",
           f"- **memory**: {MEMORY.doc}; **walltime**: {WALLTIME.doc}; **address**: {ADDRESS.doc}.",
           ""]
    current = ""
    for k in all_keys():
        if k.table != current:
            current = k.table
            out += ([""] if out[-1] else []) + [
                f"## `{current}`", "", "| key | type | default | unit | allowed | meaning |",
                "|---|---|---|---|---|---|"]
        if k.has_default:
            default = f"`{toml_value(k.default)}`"
        else:
            default = "required" if k.name == "datasets.ms" else (k.setting.default_doc or "-")
        out.append(f"| `{k.name}` | {k.type} | {_cell(default)} | {_cell(k.setting.unit)} | "
                   f"{_cell(k.allowed_text(grammar=False))} | {_cell(k.setting.help)} |")
        if k.name == "datasets.simulate":
            out.append("| *(any `[defaults]` key)* | | | | | per-dataset override |")
    return "\n".join(out).rstrip() + "\n"


def explain(name: str) -> str:
    """Text for ``selfcal-batch config --explain NAME`` (ConfigError for an unknown key)."""
    keys = find_key(name)
    out: list[str] = []
    for k in keys:
        out.append(f"{k.name}  ({k.table})")
        out.append(f"  {k.setting.help}")
        out.append(f"  type:    {k.type}")
        if k.has_default:
            out.append(f"  default: {toml_value(k.default)}")
        elif k.setting.default_doc:
            out.append(f"  default: {k.setting.default_doc}")
        if k.setting.unit:
            out.append(f"  unit:    {k.setting.unit}")
        if k.allowed:
            out.append(f"  allowed: {k.allowed}")
        if len(keys) > 1:
            out.append("")
    return "\n".join(out).rstrip() + "\n"
