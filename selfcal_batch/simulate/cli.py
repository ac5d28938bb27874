"""``selfcal-batch simulate``: write a synthetic MS and its truth JSON.

The main CLI group adds :data:`simulate_command`. The MS is built in a child process
(:func:`simulate_ms_isolated`), so this command never imports casatools.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from selfcal_batch.errors import SimulationError
from . import arrays
from .msbuild import simulate_ms_isolated, truth_path_for
from .sky import default_components
from .spec import CORRELATIONS, DEFAULT_NOISE_JY, SimSpec, spec_from_preset

#: CLI option (python name) -> SimSpec field.
_FIELDS = {
    "array_config": "array_config", "duration": "duration_s", "integration": "integration_s",
    "n_scans": "n_scans", "scan_gap": "scan_gap_s", "n_spw": "n_spw", "n_chan": "n_chan",
    "phase_rms": "phase_rms_deg", "phase_timescale": "phase_timescale_s",
    "spw_phase_rms": "spw_phase_rms_deg", "amp_rms": "amp_rms", "delay_rms": "delay_rms_ns", "dead_antenna": "dead_antenna",
    "missing_spw": "missing_spw", "noise": "noise_jy", "seed": "seed",
    "correlations": "correlations", "ra": "ra_deg", "dec": "dec_deg",
}


def build_spec(preset: str | None, spec_file: str | None, flux: float | None,
               extended_flux: float | None, write_model: bool, **options: Any) -> SimSpec:
    """SimSpec from ``--preset`` or ``--spec`` plus the options given (None = not given)."""
    overrides = {_FIELDS[k]: v for k, v in options.items() if v is not None}
    if write_model:
        overrides["write_model"] = True
    if preset and spec_file:
        raise SimulationError("give either --preset or --spec, not both")
    if spec_file:
        spec = SimSpec.from_json(spec_file).replace(**overrides)
        if flux is not None or extended_flux is not None:
            for name, v in (("--flux", flux), ("--extended-flux", extended_flux)):
                if v is not None and v < 0:
                    raise SimulationError(f"{name} must be >= 0, got {v!r}")
            beam = arrays.beam_arcsec(spec.centre_hz, arrays.max_baseline_m(spec.antennas()))
            spec = spec.replace(components=default_components(
                0.1 if flux is None else flux, extended_flux or 0.0, beam))
        return spec
    if not preset:
        raise SimulationError(f"--preset or --spec is required (presets: {', '.join(arrays.PRESETS)})")
    return spec_from_preset(
        preset.lower(), flux_jy=0.1 if flux is None else flux,
        extended_flux_jy=0.0 if extended_flux is None else extended_flux, **overrides,
    )


@click.command("simulate")
@click.option("--preset", help=f"Instrument/band preset: {', '.join(arrays.PRESETS)}.")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False), help="Full SimSpec JSON file (instead of --preset).")
@click.option("--out", required=True, type=click.Path(), help="Output MS (its truth goes to <name>.truth.json).")
@click.option("--array-config", type=click.Choice(["A", "B", "C", "D"], case_sensitive=False), help="VLA configuration (default B).")
@click.option("--duration", type=float, help="Total on-source time in s (default 1200).")
@click.option("--integration", type=float, help="Integration time in s (default 10).")
@click.option("--n-scans", type=int, help="Number of scans (default 1).")
@click.option("--scan-gap", type=float, help="Gap between scans in s (default 60).")
@click.option("--n-spw", type=int, help="Number of spectral windows (default 2).")
@click.option("--n-chan", type=int, help="Channels per spw (default 8).")
@click.option("--flux", type=float, help="Flux (Jy) of the brightest point source (default 0.1).")
@click.option("--extended-flux", type=float, help="Flux (Jy) of the Gaussian component (default 0: none).")
@click.option("--phase-rms", type=float, help="Phase random-walk rms per antenna, deg (default 0).")
@click.option("--phase-timescale", type=float, help="Phase random-walk correlation time, s (default 300).")
@click.option("--spw-phase-rms", type=float, help="Rms of constant per-spw phase offsets, deg (default 0).")
@click.option("--amp-rms", type=float, help="Fractional amplitude offset rms (default 0).")
@click.option("--delay-rms", type=float, help="Rms of constant per-antenna delays, ns (default 0).")
@click.option("--dead-antenna", type=int, help="Index of an antenna whose data are pure noise.")
@click.option("--missing-spw", type=int, help="Spw absent from every other scan (needs --n-scans >= 2).")
@click.option("--noise", type=float, help=f"Noise sigma per real/imag part of a visibility, Jy (default {DEFAULT_NOISE_JY}).")
@click.option("--seed", type=int, help="Random seed (default 1).")
@click.option("--correlations", help=f"One of {', '.join(repr(c) for c in CORRELATIONS)} (default 'RR LL').")
@click.option("--ra", type=float, help="Phase centre RA, deg (default 150).")
@click.option("--dec", type=float, help="Phase centre Dec, deg (default +40 VLA, +50 e-MERLIN).")
@click.option("--write-model", is_flag=True, help="Also write MODEL_DATA with the true (uncorrupted) model.")
@click.option("--force", is_flag=True, help="Overwrite an existing MS.")
def simulate_command(preset: str | None, spec_file: str | None, out: str, flux: float | None,
                     extended_flux: float | None, write_model: bool, force: bool, **options: Any) -> None:
    """Write a synthetic MS with a known sky and known gain corruptions, plus its truth JSON."""
    t0 = time.monotonic()
    try:
        if options.get("array_config"):
            options["array_config"] = options["array_config"].upper()
        spec = build_spec(preset, spec_file, flux, extended_flux, write_model, **options)
        ms = simulate_ms_isolated(spec, Path(out), overwrite=force)
    except SimulationError as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    click.echo(
        f"wrote {ms} ({spec.instrument} {spec.band}, {len(spec.antennas())} antennas, "
        f"{spec.n_spw} spw x {spec.n_chan} chan, {spec.n_scans} scan(s)) and "
        f"{truth_path_for(ms)} in {time.monotonic() - t0:.1f} s"
    )
