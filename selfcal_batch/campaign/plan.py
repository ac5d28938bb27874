"""The plan of a campaign run: the run options, the up-front checks and the ``--dry-run`` text."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from selfcal_batch.campaign.cluster import capacity, check_claims, describe, render_job_script, resolve_cluster
from selfcal_batch.campaign.ebs import eb_layout
from selfcal_batch.campaign.manifest import Campaign, DatasetSpec
from selfcal_batch.campaign_config import ClusterSpec
from selfcal_batch.campaign.preflight import (dataset_input_problems, input_change_messages, output_dir_problem,
                                              output_inside_input, restart_messages)
from selfcal_batch.config import STEP_ALIASES, STEP_NAMES, PipelineConfig
from selfcal_batch.errors import ConfigError
from selfcal_batch.pipeline.registry import steps_for

DEFAULT_TASK = "selfcal_batch.pipeline.runner:run_dataset"


@dataclass(frozen=True)
class RunOptions:
    """Command-line choices for one campaign run."""

    workers: int | None = None
    threads_per_dataset: int | None = None
    scheduler_address: str | None = None
    only: tuple[str, ...] = ()
    restart: bool = False
    restart_from: str | None = None
    quiet: bool = False
    task: str = DEFAULT_TASK


def _claim(d: DatasetSpec, threads_per_dataset: int, cli_threads: int | None) -> int:
    if cli_threads is not None:
        return cli_threads
    return d.threads or threads_per_dataset


def input_check(camp: Campaign, opts: RunOptions, notes: dict[str, str] | None = None,
                shifts: dict[str, tuple[float, ...]] | None = None) -> dict[str, list[str]]:
    """The up-front input check (:func:`preflight.dataset_input_problems`, then
    :func:`ebs.eb_layout` for joint datasets), only for the pipeline task (a ``--task``
    stand-in reads no MS). ``notes`` receives the joint datasets' channel averaging lines
    (:func:`ebs.channel_note`); ``shifts``, when given, ``{dataset: per-EB re-phasing offsets
    (arcsec)}`` of the joint datasets whose working copies will be re-phased."""
    if opts.task != DEFAULT_TASK:
        return {}
    found = dataset_input_problems(camp.datasets)
    # joint EBs whose inputs are sound: pointings re-phasable, one channel count (startup's own refusal)
    layout, per = eb_layout([d for d in camp.datasets if d.name not in found], notes=notes)
    if shifts is not None:
        shifts.update(per)
    return {**found, **{name: [line] for name, line in layout.items()}}


def restart_lines(camp: Campaign, opts: RunOptions) -> dict[str, str]:
    """``{dataset name: what --restart-from will redo and why}`` (empty without it)."""
    if not opts.restart_from:
        return {}
    return restart_messages(camp.datasets, camp.output_dir, STEP_ALIASES.get(opts.restart_from, opts.restart_from))


def input_change_lines(camp: Campaign, opts: RunOptions) -> dict[str, str]:
    """``{dataset name: "input MS changed since the last run (...): redoing from <step>"}``
    (:func:`preflight.input_change_messages`); empty with ``--restart`` (everything is redone
    anyway) or a ``--task`` stand-in (it keeps no step records)."""
    if opts.restart or opts.task != DEFAULT_TASK:
        return {}
    return input_change_messages(camp.datasets, camp.output_dir)


def check_restart_step(opts: RunOptions) -> None:
    """Raise ConfigError for an unknown ``--restart-from`` step (in runs and dry runs alike)."""
    if opts.restart_from and STEP_ALIASES.get(opts.restart_from, opts.restart_from) not in STEP_NAMES:
        raise ConfigError(f"--restart-from: unknown step {opts.restart_from!r} "
                          f"(choose from: {', '.join(STEP_NAMES)})")


def _start(mjd_s: float | None) -> str:
    """MJD seconds (MS TIME) -> ``YYYY-MM-DD HH:MM`` UTC ('?' when unknown)."""
    if mjd_s is None:
        return "?"
    return datetime.fromtimestamp(float(mjd_s) - 3506716800.0, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _target_text(t: dict) -> str:
    return (f"field {t['field']} (id {t['field_id']}; {', '.join(t['intents']) or 'no intents'}; "
            f"{t['time_on_source_s']:g} s on source)")


def _eb_lines(d: DatasetSpec, shifts: tuple[float, ...] = ()) -> list[str]:
    """The dry-run lines of a dataset's EBs and target (a grouped target: each EB's field);
    ``shifts``: per EB, the offset its working copy is re-phased by (arcsec, 0: not)."""
    lines = []
    per = (d.target or {}).get("ebs") or []
    if d.ebs:
        lines.append(f"      ebs       {len(d.ebs)} execution blocks, self-calibrated jointly"
                     + (f" (grouped by {d.group}, in order of observation):" if per else ":"))
        for k, p in enumerate(d.ebs):
            t = per[k] if k < len(per) else None
            lines.append(f"        eb{k}  {p}" + (f"  {_target_text(t)}, start {_start(t.get('start_s'))}" if t else "")
                         + (f"  re-phased to EB 1's centre ({shifts[k]:.3g} arcsec)"
                            if k < len(shifts) and shifts[k] > 0 else ""))
    if d.target and not per:
        lines.append(f"      target    {_target_text(d.target)}")
    return lines


def _resources_text(spec: ClusterSpec, threads: int) -> str:
    """The dry-run's cores line: a fixed claim, or (``share_cores``) the most a phase is granted."""
    if spec.share_cores:
        return f"WSClean -j up to {threads}, CASA 1 core (cores shared phase by phase in the worker)"
    return f"cores={threads} (WSClean -j {threads})"


def run_one_plan_text(name: str, ebs: tuple[Path, ...], cfg: PipelineConfig, out_dir: Path,
                      opts: RunOptions) -> tuple[str, int]:
    """``run-one --dry-run``: :func:`plan_text` of a one-dataset campaign (several ``ebs``: a
    joint dataset), with the same up-front checks, and a ``process`` line instead of the
    cluster (run-one runs in its own process: no Dask, no core sharing, WSClean ``-j`` =
    ``threads``)."""
    spec = DatasetSpec(name=name, ms=ebs[0], config=cfg, ebs=ebs if len(ebs) > 1 else ())
    camp = Campaign(name=name, path=Path("run-one"), output_dir=out_dir, description="",
                    defaults={}, templates={}, cluster=ClusterSpec(workers=1, threads_per_dataset=cfg.threads,
                                                                  share_cores=False),
                    datasets=(spec,), base_config=cfg)
    return plan_text(camp, opts, process=f"this process (no Dask): WSClean -j {cfg.threads}, CASA in a child process")


def plan_text(campaign: Campaign, opts: RunOptions, process: str = "") -> tuple[str, int]:
    """The resolved plan printed by ``--dry-run``; also the number of problems (invalid
    datasets, including those failing the input check, plus an unusable output directory).
    ``process``: a line that replaces the cluster and retry lines (``run-one``)."""
    check_restart_step(opts)
    camp = campaign.select(opts.only)
    spec = resolve_cluster(camp.cluster, default_threads=camp.base_config.threads,
                           workers=opts.workers, threads_per_dataset=opts.threads_per_dataset,
                           scheduler_address=opts.scheduler_address, n_datasets=len(camp.datasets))
    out_problem = output_inside_input(camp.output_dir, [p for d in camp.datasets for p in d.inputs]) \
        or output_dir_problem(camp.output_dir)
    lines = [f"run-one  {camp.name}" if process else f"campaign {camp.name}  (manifest {camp.path})",
             f"output   {camp.output_dir}" + (f"  PROBLEM: {out_problem}" if out_problem else "")]
    lines += [f"process  {process}"] if process else [
        f"cluster  {describe(spec)}", f"retries  {spec.retries} worker death(s) per dataset"
        + ("" if spec.kind != "address" else " (here: the scheduler's allowed-failures)")]
    if opts.restart or opts.restart_from:
        lines.append(f"restart  {'all steps' if opts.restart else 'from ' + str(opts.restart_from)}")
    max_cores, _ = capacity(spec, None)
    invalid = 0
    notes: dict[str, str] = {}
    shifts: dict[str, tuple[float, ...]] = {}
    inputs = input_check(camp, opts, notes, shifts)
    restarts = {**restart_lines(camp, opts), **input_change_lines(camp, opts)}
    lines.append(f"datasets ({len(camp.datasets)}):")
    for d in camp.datasets:
        t = _claim(d, spec.threads_per_dataset, opts.threads_per_dataset)
        problems = [d.error] if d.error else []
        if not problems and spec.kind != "address":
            problems = [p for p in [check_claims({d.name: t}, max_cores, "this cluster").get(d.name, "")] if p]
        problems = problems or inputs.get(d.name, [])
        if problems:
            invalid += 1
            lines.append(f"  - {d.name}: INVALID -> will be reported failed: {problems[0]}")
            lines.extend(f"      {p}" for p in problems[1:])
            continue
        cfg = d.config
        assert cfg is not None
        sim = ""
        if d.simulate:
            sim = ("  [exists]" if d.ms and d.ms.exists()
                   else f"  [absent: simulated on first use, preset {d.simulate.get('preset')}]")
        templ = cfg.force_template or ("auto by flux, thresholds "
                                       + "/".join(f"{x:g}" for x in cfg.template_thresholds_mjy) + " mJy")
        lines.append(f"  - {d.name}")
        lines.append(f"      ms        {d.ms}{sim}")
        lines.extend(_eb_lines(d, shifts.get(d.name, ())))
        if d.name in notes:
            lines.append(f"      channels  {notes[d.name]}")
        lines.append(f"      template  {templ}")
        lines.append(f"      steps     {' '.join(steps_for(cfg.steps, joint=True) if d.ebs else cfg.steps)}")
        fields = cfg.field or (f"per EB {' | '.join(cfg.eb_fields)}" if cfg.eb_fields else "(all)")
        lines.append(f"      imaging   imsize {cfg.imsize}, cell {cfg.cell}, field {fields}, "
                     f"{cfg.instrument} {cfg.band}")
        lines.append(f"      resources {_resources_text(spec, t)}")
        if d.overrides:
            lines.append(f"      overrides {json.dumps(d.overrides, sort_keys=True)}")
        if d.name in restarts:
            lines.append(f"      restart   {restarts[d.name]}")
        lines.extend(f"      note      {n}" for n in d.notes)
    if campaign.skipped_targets:
        lines.append(f"skipped target fields and MSs without a target ({len(campaign.skipped_targets)}):")
        lines.extend(f"  - {where}: {why}" for where, why in campaign.skipped_targets)
    if spec.kind in ("slurm", "pbs"):
        lines.append("worker job script:")
        try:
            lines.extend("  " + ln for ln in render_job_script(spec, camp.output_dir).splitlines())
        except ConfigError as exc:  # the run would stop on it too (make_client): dry-run says invalid
            lines.append(f"error: cannot render the worker job script: {exc}")
            invalid += 1
    if invalid:
        lines.append(f"{invalid} of {len(camp.datasets)} dataset(s) are invalid")
    if out_problem:
        lines.append(f"error: {out_problem}")
        invalid += 1
    return "\n".join(lines), invalid
