"""Campaign manifest (TOML) -> :class:`Campaign` (typed, validated up front).

Tables: ``[campaign]``, ``[defaults]`` (any pipeline setting), ``[templates.<name>.<step>]``,
``[cluster]`` and ``[[datasets]]`` (``name``, ``ms``, per-dataset overrides and an optional
``[datasets.simulate]`` table). Problems that concern the whole campaign (TOML syntax,
unknown top-level keys, ``[campaign]``/``[cluster]``/``[defaults]`` errors, duplicate names)
raise a one-line :class:`ConfigError` naming the key and the line. Problems of a single
dataset (missing MS, invalid override) are recorded on that :class:`DatasetSpec` as
``error`` so the runner can report it as a failed row while the others run.
"""
from __future__ import annotations

import copy
import dataclasses
import glob
import logging
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# CampaignSection, ClusterSpec and CLUSTER_KINDS are re-exported (they live in the config layer).
from selfcal_batch.campaign_config import CLUSTER_KINDS, CampaignSection, ClusterSpec  # noqa: F401
from selfcal_batch.campaign import variants as sweep_variants
from selfcal_batch.campaign.ebs import resolve_eb_list
from selfcal_batch.campaign.groups import GROUP_KEYS, group_datasets, parse_group_keys
from selfcal_batch.campaign.keylines import KeyLocator, key_path_of
from selfcal_batch.campaign.targets import (TARGET_KEYS, expand_datasets, parse_target_keys, separate_generated_names,
                                            stem_name)
from selfcal_batch.config import PipelineConfig
from selfcal_batch.errors import ConfigError
from selfcal_batch.ms.view import archive_hint
from selfcal_batch.schema import build, did_you_mean

log = logging.getLogger("selfcal_batch.campaign")

TOP_LEVEL_KEYS = ("campaign", "defaults", "templates", "cluster", "datasets")
DATASET_KEYS = ("name", "ms", "simulate")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]*$")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the campaign, fully resolved (or carrying its ``error``)."""

    name: str
    #: Absolute MS path (None when it could not be resolved).
    ms: Path | None
    #: Validated per-dataset config (None when ``error``).
    config: PipelineConfig | None
    #: Index of its ``[[datasets]]`` entry (a glob entry expands to several datasets).
    index: int = 0
    #: The per-dataset override table as written (without name/ms/simulate).
    overrides: dict[str, Any] = field(default_factory=dict)
    #: Simulator preset + arguments used to create ``ms`` when absent.
    simulate: dict[str, Any] | None = None
    #: Cores this dataset claims (None: the cluster's threads_per_dataset).
    threads: int | None = None
    #: One-line reason this dataset cannot run ('' = fine).
    error: str = ""
    line: int | None = None
    #: Target expansion request (``targets``; empty once expanded or when not asked).
    targets: tuple[str, ...] = ()
    #: Dataset-name pattern of expanded targets ('' = ``targets.DEFAULT_NAME_PATTERN``).
    target_name: str = ""
    #: Targets with less time on source (s) are skipped.
    min_target_time_s: float = 60.0
    #: For an expanded target: ``{ms, field, field_id, intents, time_on_source_s, ra_deg, dec_deg}``.
    target: dict[str, Any] | None = None
    #: Template sweep (campaign/variants.py): the dataset's own name and the variant run.
    base: str = ""
    variant: str = ""
    #: Joint execution blocks (``ms = ["eb1.ms", "eb2.ms"]``): every EB's absolute path, the
    #: first being ``ms``; empty for an ordinary one-MS dataset (see :attr:`inputs`).
    ebs: tuple[Path, ...] = ()
    #: Grouping of expanded targets across MSs (campaign/groups.py): "name" | "position" | "".
    group: str = ""
    group_tolerance_arcsec: float = 1.0
    #: The entry's ``name`` as written ('' = none), for grouped datasets' names.
    entry_name: str = ""
    #: Grouped entries: what target expansion left out of the entry, ``(ms, field, reason)``
    #: (field '' = the whole MS), for the groups' notes (campaign/groups.py).
    eb_skips: tuple[tuple[str, str, str], ...] = ()
    #: Warnings about this dataset's inputs (an EB of its target left out, and why): printed by
    #: --dry-run and the run, kept in result.json ``notes``.
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def inputs(self) -> tuple[Path, ...]:
        """Every input MS of the dataset: its EBs, or ``(ms,)`` (empty when unresolved)."""
        return self.ebs or ((self.ms,) if self.ms is not None else ())

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "ms": str(self.ms) if self.ms else None, "index": self.index,
            "overrides": self.overrides, "simulate": self.simulate, "threads": self.threads,
            "error": self.error, "base": self.base or self.name, "variant": self.variant,
            "config": self.config.to_dict() if self.config is not None else None,
            **({"target": self.target} if self.target else {}),
            **({"ebs": [str(p) for p in self.ebs]} if self.ebs else {}),
            **({"notes": list(self.notes)} if self.notes else {}),
        }


@dataclass(frozen=True)
class Campaign:
    """A loaded, validated campaign manifest."""

    name: str
    path: Path
    output_dir: Path
    description: str
    defaults: dict[str, Any]
    templates: dict[str, Any]
    cluster: ClusterSpec
    datasets: tuple[DatasetSpec, ...]
    #: The default pipeline config ([defaults] + [templates]).
    base_config: PipelineConfig
    #: Fields that target expansion skipped: ``(f"{ms}: {field}", reason)``.
    skipped_targets: tuple[tuple[str, str], ...] = ()
    #: Template sweep variants ([campaign] variants; empty = no sweep).
    variants: tuple[str, ...] = ()

    def select(self, only: typing.Iterable[str]) -> "Campaign":
        """Only the named datasets (ConfigError for an unknown name)."""
        only = list(only)
        if not only:
            return self
        names = [d.name for d in self.datasets]
        bases = {d.base for d in self.datasets if d.base}
        for n in only:
            if n not in names and n not in bases:
                raise did_you_mean("--only", f"no dataset named {n!r}", n, names)
        # a sweep: --only D runs every variant of D, --only D__faint one of them
        return dataclasses.replace(self, datasets=tuple(d for d in self.datasets
                                                        if d.name in only or (d.base and d.base in only)))

    def with_output_dir(self, out: str | Path) -> "Campaign":
        return dataclasses.replace(self, output_dir=Path(out).expanduser().resolve())

    def to_dict(self) -> dict[str, Any]:
        """The resolved manifest (JSON-friendly) for campaign.json."""
        return {
            "campaign": {"name": self.name, "manifest": str(self.path),
                         "output_dir": str(self.output_dir), "description": self.description,
                         "variants": list(self.variants)},
            "defaults": self.defaults,
            "templates": self.templates,
            "cluster": dataclasses.asdict(self.cluster),
            "datasets": [d.to_dict() for d in self.datasets],
        }


# ----------------------------------------------------------------------------------------
# loading


def load_manifest(path: str | Path) -> Campaign:
    """Read and validate a campaign manifest; global problems raise :class:`ConfigError`."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"manifest not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc.strerror}") from None
    return parse_manifest(text, path.resolve())


def parse_manifest(text: str, path: Path) -> Campaign:
    """Parse manifest ``text`` as if read from ``path`` (relative paths resolve against it)."""
    label = path.name
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        where = f"{label}:{m.group(1)}" if m else label
        raise ConfigError(f"{where}: TOML syntax error: {msg}") from None
    loc = KeyLocator(text)

    def fail(key_path: tuple, msg: str) -> ConfigError:
        line = loc.find(key_path)
        return ConfigError(f"{label}:{line}: {msg}" if line else f"{label}: {msg}")

    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise fail((key,), str(did_you_mean(key, "unknown top-level table", key, TOP_LEVEL_KEYS)))
    base_dir = path.parent

    # [campaign]
    try:
        section = build(CampaignSection, data.get("campaign", {}), "campaign")
    except ConfigError as exc:
        raise fail(key_path_of(str(exc)), str(exc)) from None
    name = section.name or path.stem
    if not _NAME_RE.match(name):
        raise fail(("campaign", "name"), f"campaign.name: {name!r} must be letters, digits, '.', '_', '+' or '-'")
    output_dir = _resolve(base_dir, section.output_dir or f"{path.stem}-out")

    # [cluster]
    try:
        cluster = build(ClusterSpec, data.get("cluster", {}), "cluster")
        cluster.validate()
    except ConfigError as exc:
        raise fail(key_path_of(str(exc)), str(exc)) from None

    # [defaults] + [templates] -> the base config (errors here concern every dataset)
    defaults = data.get("defaults", {})
    templates = data.get("templates", {})
    if not isinstance(defaults, dict):
        raise fail(("defaults",), "defaults: expected a table")
    if not isinstance(templates, dict):
        raise fail(("templates",), "templates: expected a table")
    base_dict = deep_merge(defaults, {"templates": templates}) if templates else copy.deepcopy(defaults)
    try:
        base_config = PipelineConfig.from_dict(base_dict)
    except (ConfigError, ValueError, TypeError, KeyError) as exc:
        key = key_path_of(str(exc))
        line = loc.best([("defaults",), ()], key) or loc.find(("defaults",))
        raise ConfigError(f"{label}:{line}: {_one_line(exc)}" if line else f"{label}: {_one_line(exc)}") from None

    # [[datasets]]
    entries = data.get("datasets", [])
    if not isinstance(entries, list):
        raise fail(("datasets",), "datasets: expected an array of tables ([[datasets]])")
    if not entries:
        raise fail(("datasets",), "no [[datasets]] in the manifest")
    datasets: list[DatasetSpec] = []
    for i, entry in enumerate(entries):
        datasets.extend(_resolve_dataset(i, entry, base_dict, base_dir, loc, label))
    datasets, skipped_targets = expand_datasets(datasets)  # reads MSs only when targets are asked
    datasets = group_datasets(datasets)  # group = "name" | "position": one joint dataset per target
    datasets = separate_generated_names(datasets)  # colliding generated names never stop the manifest
    if section.variants:
        if problem := sweep_variants.check(section.variants):
            raise fail(("campaign", "variants"), problem)
        for warning in sweep_variants.overridden_templates(datasets, defaults, tuple(section.variants), label,
                                                           loc.find):
            log.warning("%s", warning)
        datasets = sweep_variants.expand(datasets, tuple(section.variants))
    seen: dict[str, DatasetSpec] = {}
    for d in datasets:
        if d.name in seen:
            other = seen[d.name]
            raise fail(("datasets", d.index, "name"),
                       f"datasets[{d.index}]: duplicate dataset name {d.name!r} "
                       f"(also datasets[{other.index}]{', line ' + str(other.line) if other.line else ''})")
        seen[d.name] = d
    return Campaign(name=name, path=path, output_dir=output_dir, description=section.description,
                    defaults=defaults, templates=templates, cluster=cluster,
                    datasets=tuple(datasets), base_config=base_config,
                    skipped_targets=tuple(skipped_targets), variants=tuple(section.variants))


def _resolve_dataset(i: int, entry: Any, base_dict: dict, base_dir: Path,
                     loc: "KeyLocator", label: str) -> list[DatasetSpec]:
    """One ``[[datasets]]`` entry -> one DatasetSpec per MS (glob) with per-dataset errors."""
    line = loc.find(("datasets", i))
    if not isinstance(entry, dict):
        return [DatasetSpec(f"datasets-{i}", None, None, index=i, line=line,
                            error=f"datasets[{i}]: expected a table ({label}:{line})")]
    raw_name = entry.get("name")
    ms_raw = entry.get("ms")
    simulate = entry.get("simulate")
    overrides = {k: v for k, v in entry.items() if k not in (*DATASET_KEYS, *TARGET_KEYS, *GROUP_KEYS)}

    def err(nm: str, key_path: tuple, msg: str, ms: Path | None = None) -> DatasetSpec:
        ln = loc.find(("datasets", i, *key_path)) or line
        where = f" ({label}:{ln})" if ln else ""
        return DatasetSpec(nm, ms, None, index=i, overrides=overrides, simulate=simulate,
                           line=line, error=f"datasets[{i}] (name={nm!r}): {msg}{where}")

    fallback = raw_name if isinstance(raw_name, str) and raw_name else f"datasets-{i}"
    if raw_name is not None and not isinstance(raw_name, str):
        return [err(f"datasets-{i}", ("name",), f"name: expected a string, got {raw_name!r}")]
    if isinstance(ms_raw, list) and len(ms_raw) == 1:  # a one-element list is an ordinary dataset
        ms_raw = ms_raw[0]
    if (not isinstance(ms_raw, str) or not ms_raw) and not isinstance(ms_raw, list):
        if ms_raw is None:
            return [err(fallback, (), "ms: missing (every dataset needs ms = \"path/to.ms\")")]
        return [err(fallback, ("ms",), f"ms: expected a path string, got {ms_raw!r}")]
    allowed = {*DATASET_KEYS, *TARGET_KEYS, *GROUP_KEYS, *(f.name for f in dataclasses.fields(PipelineConfig))}
    for key in entry:
        if key not in allowed:
            return [err(fallback, (key,), str(did_you_mean(key, "unknown key", key, sorted(allowed))))]
    group_kw, problem = parse_group_keys(entry)
    if problem:
        return [err(fallback, (problem[0],), problem[1])]
    if "eb_fields" in entry and not (isinstance(ms_raw, list) and not group_kw):
        return [err(fallback, ("eb_fields",), "eb_fields: only with a list of execution blocks in ms (without group)")]
    if isinstance(ms_raw, list) and not group_kw:
        return _resolve_ebs(i, entry, ms_raw, base_dict, base_dir, fallback, err, line)
    if simulate is not None and not isinstance(simulate, dict):
        return [err(fallback, ("simulate",), "simulate: expected a table (preset = ..., ...)")]
    target_kw, problem = parse_target_keys(entry)
    if problem:
        return [err(fallback, (problem[0],), problem[1])]
    if group_kw:
        target_kw = {**target_kw, **group_kw, "entry_name": raw_name or ""}

    is_glob = not isinstance(ms_raw, list) and any(c in ms_raw for c in "*?[")
    if isinstance(ms_raw, list):  # group over listed MSs: one dataset per MS, each expanded, then grouped
        ebs, problem = resolve_eb_list(ms_raw, entry, base_dir, exclusive=("simulate",))
        if problem:
            return [err(fallback, (problem[0],), problem[1])]
        pairs = [(raw_name or stem_name(m), m) for m in ebs]
    elif is_glob:
        if simulate is not None:
            return [err(fallback, ("simulate",), "simulate: cannot be combined with a glob in ms")]
        pattern = str(_resolve(base_dir, ms_raw))
        matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
        if not matches:
            return [err(fallback, ("ms",), f"ms: glob {ms_raw!r} matched no directory ({pattern})")]
        matches, dropped = unique_by_real_path(matches)
        for dup, kept in dropped:
            log.warning("datasets[%d]: glob %r matches %s twice (also as %s, a link): used once", i, ms_raw,
                        kept, dup)
        pairs = [(f"{raw_name}-{stem_name(m)}" if raw_name else stem_name(m), m) for m in matches]
    else:
        ms = _resolve(base_dir, ms_raw)
        nm = raw_name or stem_name(ms) or fallback
        pairs = [(nm, ms)]

    out: list[DatasetSpec] = []
    for nm, ms in pairs:
        if not _NAME_RE.match(nm):
            out.append(err(nm, ("name",), f"name: {nm!r} must be letters, digits, '.', '_', '+' or '-' "
                                          "(it names files and the Dask task)", ms))
            continue
        if simulate is None:
            if not ms.exists():
                out.append(err(nm, ("ms",), f"ms not found: {ms}{archive_hint(ms)}", ms))
                continue
            if not ms.is_dir():
                out.append(err(nm, ("ms",), f"ms is not a measurement set directory: {ms}{archive_hint(ms)}", ms))
                continue
        else:
            problem = check_simulate(simulate)
            if problem:
                out.append(err(nm, ("simulate",), f"simulate: {problem}", ms))
                continue
        merged = deep_merge(base_dict, overrides)
        try:
            cfg = PipelineConfig.from_dict(merged)
        except (ConfigError, ValueError, TypeError, KeyError) as exc:
            key = key_path_of(str(exc))
            ln = loc.best([("datasets", i), ("defaults",), ()], key) or line
            out.append(DatasetSpec(nm, ms, None, index=i, overrides=overrides, simulate=simulate,
                                   line=line, error=f"datasets[{i}] (name={nm!r}): {_one_line(exc)}"
                                   + (f" ({label}:{ln})" if ln else "")))
            continue
        threads = overrides.get("threads")
        out.append(DatasetSpec(nm, ms, cfg, index=i, overrides=overrides, simulate=simulate,
                               threads=threads if isinstance(threads, int) else None, line=line, **target_kw))
    return out


def _resolve_ebs(i: int, entry: dict[str, Any], ms_raw: list[Any], base_dict: dict, base_dir: Path,
                 fallback: str, err: Any, line: int | None) -> list[DatasetSpec]:
    """``ms = ["eb1.ms", "eb2.ms"]``: one dataset of several execution blocks (campaign/ebs.py)."""
    ebs, problem = resolve_eb_list(ms_raw, entry, base_dir)
    nm = fallback if entry.get("name") or not ebs else (stem_name(ebs[0]) or fallback)
    if problem or not _NAME_RE.match(nm):
        key, msg = problem or ("name", f"name: {nm!r} must be letters, digits, '.', '_', '+' or '-'")
        return [err(nm, (key,), msg, ebs[0] if ebs else None)]
    overrides = {k: v for k, v in entry.items() if k not in DATASET_KEYS}
    try:
        cfg = PipelineConfig.from_dict(deep_merge(base_dict, overrides))
    except (ConfigError, ValueError, TypeError, KeyError) as exc:
        return [err(nm, key_path_of(str(exc)), _one_line(exc), ebs[0])]
    if cfg.eb_fields and len(cfg.eb_fields) != len(ebs):  # also from [defaults]
        return [err(nm, ("eb_fields",), f"eb_fields: expected {len(ebs)} field selections (one per execution "
                                        f"block), got {list(cfg.eb_fields)!r}", ebs[0])]
    threads = overrides.get("threads")
    return [DatasetSpec(nm, ebs[0], cfg, index=i, overrides=overrides, line=line, ebs=ebs,
                        threads=threads if isinstance(threads, int) else None)]


def unique_by_real_path(paths: list[Path]) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """The paths of a glob with every MS once (tester s7 #3b: a glob matching an MS and a
    symbolic link to it ran the MS twice): per real path the first path that is not itself a
    symbolic link (else the first), in the input order. Returns ``(kept, [(dropped, kept
    instead)])``."""
    by_real: dict[Path, list[Path]] = {}
    for p in paths:
        by_real.setdefault(p.resolve(), []).append(p)
    keep = {real: next((p for p in ps if not p.is_symlink()), ps[0]) for real, ps in by_real.items()}
    kept = [p for p in paths if keep[p.resolve()] == p]
    return kept, [(p, keep[p.resolve()]) for p in paths if keep[p.resolve()] != p]


def check_simulate(sim: dict[str, Any]) -> str:
    """'' when the simulate table looks valid; else a one-line problem.

    Validated against the simulator when it is importable (a spec is built, nothing run).
    """
    preset = sim.get("preset")
    if not isinstance(preset, str) or not preset:
        return "needs preset = \"<name>\" (a simulator preset such as 'vla-c')"
    try:
        from selfcal_batch import simulate as simmod  # noqa: F401
    except ImportError:
        return ""
    try:
        build_sim_spec(sim)
    except ImportError:
        return ""
    except Exception as exc:  # the simulator's own validation (SimulationError, TypeError...)
        return _one_line(exc)
    return ""


def build_sim_spec(sim: dict[str, Any]) -> Any:
    """A simulator ``SimSpec`` from ``{"preset": name, **overrides}``."""
    from selfcal_batch import simulate as simmod  # lazy: loaded only on this path

    args = {k: v for k, v in sim.items() if k != "preset"}
    preset = sim["preset"]
    for helper in ("spec_from_preset", "make_spec", "preset_spec"):
        fn = getattr(simmod, helper, None)
        if callable(fn):
            return fn(preset, **args)
    presets = simmod.PRESETS
    if preset not in presets:
        raise did_you_mean("preset", f"unknown simulator preset {preset!r}", preset, sorted(presets))
    base = presets[preset]
    if dataclasses.is_dataclass(base):
        names = {f.name for f in dataclasses.fields(base)}
        for k in args:
            if k not in names:
                raise did_you_mean(k, "unknown simulator argument", k, sorted(names))
        return dataclasses.replace(base, **args)
    return simmod.SimSpec(**{**dict(base), **args})


# ----------------------------------------------------------------------------------------
# helpers


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge of two tables; ``over`` wins; inputs are not modified."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve(base_dir: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else (base_dir / q)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
