"""``selfcal-batch``: the command line (thin; the work is in campaign/manifest/cluster).

``selfcal-batch CAMPAIGN.toml [options]`` is short for ``selfcal-batch run CAMPAIGN.toml``.
Exit codes: 0 all datasets finished, 1 some dataset failed, 2 invalid input (manifest,
options, an output directory that cannot be created or written, a dataset rejected before
it ran: bad manifest entry, unmet resource claim, input MS failing the up-front check; the
other datasets still run), 3 output directory locked by another run, 130 interrupted.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler

from selfcal_batch import __version__
from selfcal_batch.errors import CampaignLockedError, ConfigError, SelfcalBatchError

log = logging.getLogger(__name__)
DEMO_MANIFEST = Path(__file__).resolve().parent.parent / "campaigns" / "demo.toml"
# NB: never name an option --configfile, --noconfig or --nositeconfig: casaconfig parses
# those from sys.argv in any process that imports casatools.


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet or verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=verbose > 0,
                          markup=False, rich_tracebacks=False)
    handler.setLevel(level)
    # per-dataset outcomes are already printed by the progress display
    handler.addFilter(lambda record: getattr(record, "console", True))
    root = logging.getLogger()
    root.addHandler(handler)
    pkg = logging.getLogger("selfcal_batch")
    pkg.setLevel(min(logging.INFO, level))
    logging.getLogger("distributed").setLevel(logging.WARNING if verbose < 2 else logging.INFO)


def unknown_command(word: str, commands: list[str]) -> str | None:
    """Why ``word`` (the first argument) is neither a subcommand nor a manifest, or None.

    A manifest is a path: an existing file, or a name ending in .toml or containing a path
    separator (the run then says it is missing). Anything else (``reprot``) is a mistyped
    subcommand: the message names the closest commands (difflib, cutoff 0.6)."""
    import difflib  # lazy: the CLI starts fast
    import os  # lazy: the CLI starts fast

    if word.startswith("-") or word.endswith(".toml") or os.sep in word or Path(word).exists():
        return None
    close = difflib.get_close_matches(word, commands, n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return (f"no such command {word!r}{hint}; commands: {', '.join(commands)}; "
            f"a campaign manifest is a .toml file")


class _DefaultRunGroup(click.Group):
    """A group whose default command is ``run`` (``selfcal-batch x.toml`` == ``run x.toml``)."""

    LAZY = ("simulate",)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in self.LAZY \
                and args[0] not in ("--help", "-h", "--version"):
            if (problem := unknown_command(args[0], self.list_commands(ctx))) is not None:
                ctx.fail(problem)
            args = ["run", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = self.commands.get(name)
        if cmd is not None or name != "simulate":
            return cmd
        try:
            from .simulate.cli import simulate_command  # lazy: the CLI starts fast
        except ImportError as exc:
            msg = f"the simulator is not available: {exc}"

            @click.command("simulate", help="Generate a synthetic MS (simulator unavailable).",
                           context_settings={"ignore_unknown_options": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def _missing(args: tuple[str, ...]) -> None:
                raise click.ClickException(msg)

            return _missing
        return simulate_command


@click.group(cls=_DefaultRunGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="selfcal-batch")
def main() -> None:
    """Survey-scale automated self-calibration (WSClean + CASA on Dask).

    \b
    selfcal-batch CAMPAIGN.toml [--dry-run] [--workers N] ...   (same as `run`)
    selfcal-batch run-one MS --out DIR [--config FILE.toml]
    selfcal-batch simulate ...
    selfcal-batch report OUTDIR
    selfcal-batch compare OUT_A OUT_B [--out DIR]
    selfcal-batch config --defaults | --explain KEY | --markdown
    """


@main.command("run")
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--workers", type=int, default=None, help="Local worker processes / batch jobs.")
@click.option("--threads-per-dataset", type=int, default=None,
              help="Cores each dataset claims (WSClean -j); overrides the manifest.")
@click.option("--scheduler-address", default=None, metavar="tcp://HOST:PORT",
              help="Use an existing Dask scheduler (also $DASK_SCHEDULER_ADDRESS).")
@click.option("--only", multiple=True, metavar="NAME", help="Run only this dataset (repeatable).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output directory (overrides [campaign] output_dir).")
@click.option("--dry-run", is_flag=True, help="Print the resolved plan and exit.")
@click.option("--restart", is_flag=True, help="Run every dataset from scratch.")
@click.option("--restart-from", default=None, metavar="STEP", help="Redo STEP and everything after it.")
@click.option("--quiet", is_flag=True, help="No live display: one line per finished dataset.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv: debug).")
@click.option("--task", default=None, hidden=True, help="Task function 'module:function' (testing).")
def run_cmd(manifest: Path | None, workers: int | None, threads_per_dataset: int | None,
            scheduler_address: str | None, only: tuple[str, ...], out_dir: Path | None,
            dry_run: bool, restart: bool, restart_from: str | None, quiet: bool, verbose: int,
            task: str | None) -> None:
    """Run the campaign in MANIFEST (default: the built-in demo campaign)."""
    from selfcal_batch.campaign.run import DEFAULT_TASK, RunOptions, plan_text, run_campaign  # lazy: the CLI starts fast
    from selfcal_batch.campaign.manifest import load_manifest  # lazy: the CLI starts fast

    _setup_logging(verbose, quiet)
    console = _console()
    if manifest is None:
        if not DEMO_MANIFEST.exists():
            raise click.UsageError("no MANIFEST given and the demo campaign is not installed")
        manifest = DEMO_MANIFEST
        console.print(f"no manifest given: running the demo campaign {manifest}", markup=False)
    opts = RunOptions(workers=workers, threads_per_dataset=threads_per_dataset,
                      scheduler_address=scheduler_address, only=tuple(only), restart=restart,
                      restart_from=restart_from, quiet=quiet, task=task or DEFAULT_TASK)
    try:
        campaign = load_manifest(manifest)
        if out_dir is not None:
            campaign = campaign.with_output_dir(out_dir)
        if dry_run:
            text, invalid = plan_text(campaign, opts)
            click.echo(text)
            sys.exit(2 if invalid else 0)
        outcome = run_campaign(campaign, opts, console=console)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except CampaignLockedError as exc:
        _fail(str(exc), 3)
    except SelfcalBatchError as exc:
        _fail(str(exc), 2)
    except KeyboardInterrupt:
        _interrupted()
    if outcome.interrupted:
        _interrupted()
    sys.exit(outcome.exit_code)


INTERRUPTED = "interrupted: rerun the same command to resume"


def _interrupted() -> None:
    """End a Ctrl-C / SIGTERM with one line (last) and exit 130."""
    sys.stdout.flush()
    click.echo(INTERRUPTED, err=True)
    sys.exit(130)


def _console() -> Console:
    """Rich console; wide when not a terminal (batch logs) so tables are not truncated, and
    line-buffered there: a step line must reach a batch log or `| tee` when it happens, not
    when the campaign ends (stdout to a file is block-buffered)."""
    c = Console()
    if c.is_terminal:
        return c
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(line_buffering=True)
    return Console(width=200)


def _fail(msg: str, code: int) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


@main.command("run-one")
@click.argument("ms_list", metavar="MS [MS ...]", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output directory (results under OUT/datasets/NAME/).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="TOML of pipeline settings (top level, or a manifest's [defaults]).")
@click.option("--name", default=None, help="Dataset name (default: the MS stem).")
@click.option("--threads", type=int, default=None, help="Cores for WSClean/CASA (default: config threads).")
@click.option("--restart", is_flag=True, help="Run from scratch.")
@click.option("--restart-from", default=None, metavar="STEP", help="Redo STEP and everything after it.")
@click.option("--dry-run", is_flag=True, help="Print the resolved plan (the campaign's up-front checks) and exit.")
@click.option("-v", "--verbose", count=True, help="More log output.")
def run_one_cmd(ms_list: tuple[Path, ...], out_dir: Path, config_file: Path | None, name: str | None,
                threads: int | None, restart: bool, restart_from: str | None, dry_run: bool, verbose: int) -> None:
    """Self-calibrate one MS in this process (no Dask); several MSs are the execution blocks
    of one target, self-calibrated jointly (as ``ms = [...]`` in a manifest)."""
    import tomllib  # lazy: the CLI starts fast

    from selfcal_batch.campaign.lock import CampaignLock  # lazy: the CLI starts fast
    from selfcal_batch.config import STEP_ALIASES, STEP_NAMES, PipelineConfig  # lazy: the CLI starts fast
    from selfcal_batch.errors import OutputDirError  # lazy: the CLI starts fast
    from selfcal_batch.campaign.manifest import deep_merge  # lazy: the CLI starts fast
    from selfcal_batch.campaign.preflight import ensure_output_dir, output_inside_input  # lazy: the CLI starts fast

    _setup_logging(verbose, False)
    console = _console()
    data: dict[str, Any] = {}
    try:
        if config_file is not None:
            try:
                data = tomllib.loads(config_file.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{config_file.name}: TOML syntax error: {exc}") from None
            if "defaults" in data:  # a campaign manifest: use its [defaults] + [templates]
                data = deep_merge(data["defaults"], {"templates": data.get("templates", {})})
        cfg = PipelineConfig.from_dict(data)
        if threads is not None:
            cfg = cfg.with_updates(threads=threads)
    except ConfigError as exc:
        _fail(_at_line(config_file, str(exc)), 2)
    # absolute(), not resolve(): a symbolic link names the dataset after the path given.
    ebs = tuple(p.expanduser().absolute() for p in ms_list)
    ms = ebs[0]
    if len(ebs) > 1:
        from selfcal_batch.campaign.ebs import resolve_eb_list  # lazy: the CLI starts fast

        if (bad := resolve_eb_list([str(p) for p in ebs], {}, Path.cwd())[1]) is not None:
            _fail(bad[1].removeprefix("ms: "), 2)
    elif not ms.exists():
        from selfcal_batch.ms.view import archive_hint  # lazy: the CLI starts fast

        _fail(f"ms not found: {ms}{archive_hint(ms)}", 2)
    if restart_from and STEP_ALIASES.get(restart_from, restart_from) not in STEP_NAMES:
        _fail(f"--restart-from: unknown step {restart_from!r} (choose from: {', '.join(STEP_NAMES)})", 2)
    name = name or ms.name.rsplit(".", 1)[0]
    out_dir = out_dir.expanduser().resolve()
    if dry_run:
        from selfcal_batch.campaign.plan import RunOptions, run_one_plan_text  # lazy: the CLI starts fast

        text, invalid = run_one_plan_text(name, ebs, cfg, out_dir, RunOptions(restart=restart, restart_from=restart_from))
        click.echo(text)
        sys.exit(2 if invalid else 0)
    if problem := output_inside_input(out_dir, list(ebs)):
        _fail(problem, 2)
    try:
        ensure_output_dir(out_dir)
        # The same lock as a campaign's: a second run into this --out (second terminal, a
        # batch script submitted twice) would rebuild the first one's private view and
        # work.ms under it. Released when this process exits (a dead owner's lock is stale).
        lock = CampaignLock(out_dir, f"run-one {name}").acquire()
    except OutputDirError as exc:
        _fail(str(exc), 2)
    except CampaignLockedError as exc:
        _fail(str(exc), 3)
    try:
        _run_one_locked(ebs, out_dir, cfg, name, restart, restart_from, console)
    finally:
        lock.release()


def _run_one_locked(ebs: tuple[Path, ...], out_dir: Path, cfg: Any, name: str, restart: bool,
                    restart_from: str | None, console: Console) -> None:
    """run-one after its output lock is held: input check, restart notes, the dataset, the table."""
    from selfcal_batch.pipeline import restart as restart_plan  # lazy: the CLI starts fast
    from selfcal_batch.campaign.run import (DEFAULT_TASK, _install_sigterm, _restore_sigterm,  # lazy: the CLI starts fast
                                            execute_dataset, normalise_row)
    from selfcal_batch.config import STEP_ALIASES  # lazy: the CLI starts fast
    from selfcal_batch.campaign.preflight import input_problems  # lazy: the CLI starts fast
    from selfcal_batch.campaign.progress import failed_row, summary_table  # lazy: the CLI starts fast
    from selfcal_batch.pipeline.runner import input_change  # lazy: the CLI starts fast

    ms = ebs[0]
    problems = (input_problems([(ms, cfg.input_column)], cfg.field).get(str(ms), []) if len(ebs) == 1
                else _joint_problems(name, ebs, cfg))
    if problems:
        row = failed_row(name, ms, "; ".join(problems))
        for p in problems:
            click.echo(f"error: {p}", err=True)
        console.print(summary_table([row], title=f"{name}"))
        sys.exit(2)
    if restart_from:
        import json  # lazy: the CLI starts fast

        root = out_dir / "datasets" / name
        try:
            state = json.loads((root / "state.json").read_text())
        except (OSError, ValueError):
            state = None
        plan = restart_plan.plan_from_state(state, STEP_ALIASES.get(restart_from, restart_from),
                                            (root / "work.ms").exists(), cfg.keep_work_ms)
        console.print(f"{name}: {restart_plan.describe(plan)}", markup=False, highlight=False, soft_wrap=True)
    if not restart and (why := input_change(out_dir / "datasets" / name / "state.json", ms.resolve(), (cfg.steps or ("startup",))[0])):
        console.print(f"{name}: {why}", markup=False, highlight=False, soft_wrap=True)
    old_term = _install_sigterm()  # SIGTERM is recorded like Ctrl-C (interrupted, rerun to resume)
    try:
        res = execute_dataset(DEFAULT_TASK, name, str(ms), cfg, str(out_dir), threads=cfg.threads,
                              restart=restart, restart_from=restart_from,
                              ebs=[str(p) for p in ebs] if len(ebs) > 1 else None)
    except KeyboardInterrupt:
        _interrupted()
    finally:
        _restore_sigterm(old_term)
    row = normalise_row(res, name, ms)
    console.print(summary_table([row], title=f"{name}"))
    sys.exit(1 if row["status"] == "failed" else 0)


def _joint_problems(name: str, ebs: tuple[Path, ...], cfg: Any) -> list[str]:
    """run-one with several MSs: the campaign's up-front checks of a joint dataset (every EB's
    input check, then the EBs' layout: field, pointing, channels), one line each."""
    from selfcal_batch.campaign.ebs import eb_layout_problems  # lazy: reads the EBs in a child
    from selfcal_batch.campaign.manifest import DatasetSpec  # lazy: the CLI starts fast
    from selfcal_batch.campaign.preflight import dataset_input_problems  # lazy: the CLI starts fast

    spec = DatasetSpec(name=name, ms=ebs[0], config=cfg, ebs=ebs)
    problems = dataset_input_problems([spec]).get(name, [])
    return problems or [line for line in [eb_layout_problems([spec]).get(name, "")] if line]


def _at_line(config_file: Path | None, msg: str) -> str:
    """``FILE:LINE: msg`` for a key error of a run-one config file (the line where most of the
    key's path is written, top level or [defaults], as manifest errors give it); ``msg``
    unchanged when it already names the file or no line is found."""
    from selfcal_batch.campaign.keylines import KeyLocator, key_path_of  # lazy: the CLI starts fast

    if config_file is None or msg.startswith(f"{config_file.name}:"):
        return msg
    try:
        line = KeyLocator(config_file.read_text()).best([("defaults",), ()], key_path_of(msg))
    except OSError:
        return msg
    return f"{config_file.name}:{line}: {msg}" if line else f"{config_file.name}: {msg}"


@main.command("config")
@click.option("--defaults", "what", flag_value="defaults",
              help="Print every setting with its default as commented TOML (a valid manifest).")
@click.option("--markdown", "what", flag_value="markdown",
              help="Print the configuration reference (docs/configuration.md).")
@click.option("--explain", "key", default=None, metavar="KEY",
              help="Explain one setting (e.g. cell, wsclean.mgain, cluster.kind) or a table (gate).")
def config_cmd(what: str | None, key: str | None) -> None:
    """Show the configuration schema: defaults, one key, or the reference."""
    from selfcal_batch import config_docs  # lazy: the CLI starts fast

    if key is not None:
        try:
            click.echo(config_docs.explain(key), nl=False)
        except ConfigError as exc:
            _fail(str(exc), 2)
    elif what == "markdown":
        click.echo(config_docs.markdown(), nl=False)
    elif what == "defaults":
        click.echo(config_docs.defaults_toml(), nl=False)
    else:
        raise click.UsageError("give --defaults, --explain KEY or --markdown")


@main.command("report")
@click.argument("outdir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report_cmd(outdir: Path) -> None:
    """(Re)build the survey report of a campaign output directory."""
    _require_campaign_output(outdir)
    try:
        from selfcal_batch.report import build_report  # lazy: the CLI starts fast
    except ImportError as exc:
        _fail(f"the report package is not available: {exc}", 2)
    res = build_report(outdir)
    if res:
        click.echo(str(res))


def _require_campaign_output(path: Path) -> None:
    """Exit 2 (nothing written) unless ``path`` holds a campaign's output: campaign.json or
    a datasets/ folder. An MS or any other folder is refused (a report written into an MS
    would modify the user's data)."""
    if (path / "table.dat").exists():
        _fail(f"{path} is a measurement set, not a campaign output directory", 2)
    if not (path / "campaign.json").is_file() and not (path / "datasets").is_dir():
        _fail(f"{path} is not a campaign output directory (no campaign.json or datasets/)", 2)


@main.command("compare")
@click.argument("out_a", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_b", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the comparison (default: compare-A-vs-B beside OUT_B).")
def compare_cmd(out_a: Path, out_b: Path, out: Path | None) -> None:
    """Compare two campaign output directories."""
    _require_campaign_output(out_a)
    _require_campaign_output(out_b)
    try:
        from selfcal_batch.report import compare_runs  # lazy: the CLI starts fast
        from selfcal_batch.report.compare import compare_problem, default_compare_dir, runs_problem  # lazy: as above
    except ImportError as exc:
        _fail(f"the report package is not available: {exc}", 2)
    dest = out or default_compare_dir(out_a.resolve(), out_b.resolve())
    if problem := compare_problem(dest, [out_a, out_b]) or runs_problem(out_a, out_b):
        _fail(problem, 2)  # nothing written
    res = compare_runs(out_a, out_b, dest)
    if res:
        click.echo(str(res))


@main.command("apply")
@click.argument("outdir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--datasets", "datasets", multiple=True, metavar="NAME",
              help="Only these datasets (repeatable or comma-separated).")
@click.option("--in-place", is_flag=True,
              help="Write CORRECTED_DATA into the input MS itself (default: a new applied.ms per dataset).")
@click.option("-v", "--verbose", count=True, help="More log output.")
def apply_cmd(outdir: Path, datasets: tuple[str, ...], in_place: bool, verbose: int) -> None:
    """Apply each finished dataset's accepted gain chain to its original (full-resolution) MS."""
    _require_campaign_output(outdir)
    _setup_logging(verbose, False)
    from selfcal_batch.campaign.apply import apply_outputs  # lazy: the CLI starts fast
    from selfcal_batch.campaign.lock import CampaignLock  # lazy: the CLI starts fast
    from selfcal_batch.errors import OutputDirError  # lazy: the CLI starts fast

    names = [n.strip() for d in datasets for n in d.split(",") if n.strip()]
    try:
        # The campaign's lock: never apply while a run (or another apply) writes these datasets.
        with CampaignLock(outdir, "apply"):
            rows = apply_outputs(outdir, names or None, in_place=in_place)
    except ValueError as exc:
        _fail(str(exc), 2)
    except CampaignLockedError as exc:
        _fail(str(exc), 3)
    except OutputDirError as exc:
        _fail(str(exc), 2)
    for r in rows:
        click.echo(f"{r['name']}: {r['status']}: {r['detail']}" + (f" -> {r['output']}" if r["output"] else ""))
    sys.exit(1 if any(r["status"] == "failed" for r in rows) else 0)


if __name__ == "__main__":
    main()
