"""Write a synthetic MS: casatools ``simulator`` lays out the MS, numpy fills DATA.

``simulator`` is used only for setconfig/setspwindow/setfeed/setfield/settimes/observe
(UVW, subtables, FLAG). It is never asked to predict (``sm.predict`` segfaults on arrays
with unequal dish diameters such as e-MERLIN): the model is a direct DFT
(:func:`sky.predict`), corrupted by :mod:`corrupt`, written with ``casatools.table``.

:func:`simulate_ms` imports casatools in the calling process; use
:func:`simulate_ms_isolated` (a child ``python -m selfcal_batch.simulate``) from any
process that may import python-casacore.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from selfcal_batch.errors import SimulationError
from . import arrays, corrupt, sky
from .spec import SimSpec

log = logging.getLogger(__name__)

TRUTH_VERSION = 1
ERROR_MARKER = "selfcal-batch simulate error: "
_CONVENTION = (
    "V_ij_obs = g_i * conj(g_j) * V_ij_true + noise, g = amp * exp(i * radians(phase)); "
    "i = ANTENNA1, j = ANTENNA2; phase in spw s = phase_deg[t] + spw_phase_offset_deg[s]; "
    "same gain for both polarisations"
)


def truth_path_for(ms_path: str | os.PathLike[str]) -> Path:
    """``X.ms`` -> ``X.truth.json`` (any other name: ``<name>.truth.json``)."""
    p = Path(ms_path)
    stem = p.name[:-3] if p.name.lower().endswith(".ms") else p.name
    return p.with_name(stem + ".truth.json")


def _casatools(logfile: Path) -> Any:
    """Import casatools, configuring the offline measures first if not yet imported."""
    fresh = "casatools" not in sys.modules
    if fresh:
        from selfcal_batch.casa.env import configure_inprocess  # lazy: loaded only on this path

        configure_inprocess(logfile)
    import casatools  # child only: CASA runs inside the CASA child

    if fresh and getattr(casatools, "logger", None) is not None:
        casatools.logger.showconsole(False)
    return casatools


def _layout_ms(ct: Any, spec: SimSpec, antennas: list[arrays.Antenna], ms: Path) -> list[int]:
    """Create the MS with the simulator; return the scan number of each observe call."""
    sm, me = ct.simulator(), ct.measures()
    xyz = np.array([a.position_m for a in antennas])
    site = arrays.geodetic_to_ecef(*arrays.SITES[spec.instrument])
    n = len(antennas)
    try:
        if not sm.open(str(ms)):
            raise SimulationError(f"casatools simulator cannot create {ms}")
        sm.setconfig(
            telescopename=arrays.TELESCOPE_NAMES[spec.instrument],
            x=xyz[:, 0].tolist(), y=xyz[:, 1].tolist(), z=xyz[:, 2].tolist(),
            dishdiameter=[arrays.MS_DISH_M] * n,
            mount=["alt-az"] * n,
            antname=[a.name for a in antennas],
            padname=[a.station for a in antennas],
            coordsystem="global",
            referencelocation=me.position("ITRF", f"{float(site[0])!r}m", f"{float(site[1])!r}m", f"{float(site[2])!r}m"),
        )
        for s in range(spec.n_spw):
            f = spec.chan_freqs(s)
            width = spec.spw_bw_hz / spec.n_chan
            sm.setspwindow(
                spwname=f"spw{s}", freq=f"{float(f[0])!r}Hz", deltafreq=f"{float(width)!r}Hz",
                freqresolution=f"{float(width)!r}Hz", nchannels=spec.n_chan, stokes=spec.correlations,
            )
        circular = spec.correlations.startswith("R")
        sm.setfeed(mode="perfect R L" if circular else "perfect X Y", pol=[""])
        if spec.fields:
            for fs in spec.fields:
                ra, dec = fs.centre(spec.ra_deg, spec.dec_deg)
                sm.setfield(sourcename=fs.name, sourcedirection=me.direction("J2000", f"{ra!r}deg", f"{dec!r}deg"))
        else:
            sm.setfield(
                sourcename=spec.source_name,
                sourcedirection=me.direction("J2000", f"{spec.ra_deg!r}deg", f"{spec.dec_deg!r}deg"),
            )
        sm.setlimits(shadowlimit=0.001, elevationlimit="5deg")
        sm.setauto(autocorrwt=0.0)
        date = spec.start_date.replace("-", "/")
        sm.settimes(
            integrationtime=f"{spec.integration_s!r}s", usehourangle=True,
            referencetime=me.epoch("utc", f"{date}/00:00:00"),
        )
        calls: list[int] = []
        for scan in spec.scan_plan():
            for s in scan["spws"]:
                ok = sm.observe(
                    sourcename=scan.get("field", spec.source_name), spwname=f"spw{s}",
                    starttime=f"{float(scan['ha_start_s'])!r}s", stoptime=f"{float(scan['ha_stop_s'])!r}s",
                )
                if ok is False:
                    raise SimulationError(f"casatools simulator observe failed (scan {scan['scan']}, spw {s})")
                calls.append(scan["scan"])
    finally:
        sm.close()
        me.done()
    return calls


def _fill(ct: Any, spec: SimSpec, ms: Path, calls: list[int], n_ant: int) -> dict[str, Any]:
    """Write DATA (and MODEL_DATA), SIGMA, WEIGHT, SCAN_NUMBER; return truth pieces."""
    tb = ct.table()
    tb.open(str(ms) + "/DATA_DESCRIPTION")
    dd_spw = np.asarray(tb.getcol("SPECTRAL_WINDOW_ID"), dtype=int)
    tb.close()
    tb.open(str(ms), nomodify=False)
    try:
        nrow = int(tb.nrows())
        if nrow == 0:
            raise SimulationError("the simulator produced no rows (source below the horizon?)")
        a1 = np.asarray(tb.getcol("ANTENNA1"), dtype=int)
        a2 = np.asarray(tb.getcol("ANTENNA2"), dtype=int)
        t = np.asarray(tb.getcol("TIME"), dtype=np.float64)
        ddid = np.asarray(tb.getcol("DATA_DESC_ID"), dtype=int)
        scan_in = np.asarray(tb.getcol("SCAN_NUMBER"), dtype=int)
        if scan_in.max() != len(calls) or scan_in.min() < 1:
            raise SimulationError(f"unexpected simulator scan numbering ({scan_in.min()}..{scan_in.max()})")
        scan = np.asarray(calls, dtype=int)[scan_in - 1]
        tb.putcol("SCAN_NUMBER", scan.astype(np.int32))
        spw_row = dd_spw[ddid]
        field_row = np.asarray(tb.getcol("FIELD_ID"), dtype=int)
        # Sky per FIELD_ID (the simulator numbers fields in setfield order).
        skies = [f.components for f in spec.fields] if spec.fields else [spec.components]
        times, tidx = np.unique(np.round(t, 3), return_inverse=True)
        gains = corrupt.make_gains(
            spec.seed, times, n_ant, spec.n_spw,
            phase_rms_deg=spec.phase_rms_deg, phase_timescale_s=spec.phase_timescale_s,
            spw_phase_rms_deg=spec.spw_phase_rms_deg, amp_rms=spec.amp_rms, delay_rms_ns=spec.delay_rms_ns,
        )
        if spec.dead_antenna is not None:
            gains.amp[spec.dead_antenna] = 0.0  # no signal: its baselines are pure noise
        corrs = spec.corr_list
        par = [k for k, c in enumerate(corrs) if c[0] == c[1]]
        ncorr, nchan = len(corrs), spec.n_chan
        rng = corrupt.rng_for(spec.seed, "noise")
        chunk = max(1000, 4_000_000 // (nchan * ncorr))
        uvw_all = np.asarray(tb.getcol("UVW"), dtype=np.float64).T  # (nrow, 3)
        ref = spec.reference_frequency_hz
        freqs = [spec.chan_freqs(s) for s in range(spec.n_spw)]
        for r0 in range(0, nrow, chunk):
            r1 = min(nrow, r0 + chunk)
            model = np.zeros((r1 - r0, nchan), dtype=np.complex64)
            obs = np.zeros((r1 - r0, nchan), dtype=np.complex64)
            for s in np.unique(spw_row[r0:r1]):
                for fid in np.unique(field_row[r0:r1]):
                    sel = np.nonzero((spw_row[r0:r1] == s) & (field_row[r0:r1] == fid))[0]
                    if sel.size == 0:
                        continue
                    rows = sel + r0
                    m = sky.predict(uvw_all[rows], freqs[s], skies[fid], ref, primary_beam=spec.primary_beam)
                    model[sel] = m
                    obs[sel] = corrupt.apply_gains(m, a1[rows], a2[rows], tidx[rows], int(s), gains, freqs[s])
            data = corrupt.noise(rng, (ncorr, nchan, r1 - r0), spec.noise_jy)
            for k in par:
                data[k] += obs.T
            tb.putcol("DATA", data, startrow=r0, nrow=r1 - r0)
            if spec.write_model:
                mdata = np.zeros((ncorr, nchan, r1 - r0), dtype=np.complex64)
                for k in par:
                    mdata[k] = model.T
                tb.putcol("MODEL_DATA", mdata, startrow=r0, nrow=r1 - r0)
        sigma = spec.noise_jy if spec.noise_jy > 0 else 1.0
        tb.putcol("SIGMA", np.full((ncorr, nrow), sigma, dtype=np.float32))
        tb.putcol("WEIGHT", np.full((ncorr, nrow), 1.0 / sigma**2, dtype=np.float32))
        drop = [c for c in ("CORRECTED_DATA", "MODEL_DATA") if c in tb.colnames()]
        if spec.write_model:
            drop.remove("MODEL_DATA")
        if drop:
            tb.removecols(drop)
        flagged = float(np.mean(tb.getcol("FLAG")))
        if spec.fields and any(f.intent for f in spec.fields):
            _write_intents(tb, ct, ms, spec, field_row)
    finally:
        tb.close()
    scans = []
    for sc in sorted(set(scan.tolist())):
        sel = scan == sc
        scans.append({
            "scan": int(sc),
            **({"field": spec.fields[int(field_row[sel][0])].name} if spec.fields else {}),
            "spws": sorted(int(x) for x in np.unique(spw_row[sel])),
            "start_time": float(t[sel].min()),
            "end_time": float(t[sel].max()),
            "n_integrations": int(np.unique(tidx[sel]).size),
        })
    return {"gains": gains, "scans": scans, "nrows": nrow, "flagged_fraction": flagged}


def _write_intents(tb: Any, ct: Any, ms: Path, spec: SimSpec, field_row: np.ndarray) -> None:
    """One STATE row per field (OBS_MODE = its intents, as VLA/ALMA data carry them) and
    STATE_ID of every main-table row (``tb``: the open main table)."""
    st = ct.table()
    st.open(str(ms) + "/STATE", nomodify=False)
    try:
        n = len(spec.fields)
        if st.nrows():  # the simulator's own rows: replaced (every main row is re-pointed below)
            st.removerows(list(range(st.nrows())))
        st.addrows(n)
        st.putcol("OBS_MODE", [f.obs_mode for f in spec.fields])
        st.putcol("SIG", np.ones(n, dtype=bool))
        st.putcol("REF", np.zeros(n, dtype=bool))
        st.putcol("FLAG_ROW", np.zeros(n, dtype=bool))
        st.putcol("CAL", np.zeros(n, dtype=np.float64))
        st.putcol("LOAD", np.zeros(n, dtype=np.float64))
        st.putcol("SUB_SCAN", np.zeros(n, dtype=np.int32))
    finally:
        st.close()
    tb.putcol("STATE_ID", field_row.astype(np.int32))


def build_truth(spec: SimSpec, antennas: list[arrays.Antenna], filled: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The truth sidecar (see the package docstring for the layout)."""
    g: corrupt.Gains = filled["gains"]
    names = [a.name for a in antennas]
    ref = spec.reference_frequency_hz
    dead = spec.dead_antenna
    missing = None
    if spec.missing_spw is not None:
        missing = {
            "spw": spec.missing_spw,
            "absent_from_scans": [s["scan"] for s in filled["scans"] if spec.missing_spw not in s["spws"]],
        }
    return {
        "version": TRUTH_VERSION,
        "spec": spec.to_dict(),
        "phase_centre": {"ra_deg": spec.ra_deg, "dec_deg": spec.dec_deg, "frame": "J2000"},
        "components": [{**sky.component_truth(c, spec.ra_deg, spec.dec_deg, ref),
                        "pb_attenuation": float(sky.vla_primary_beam(sky.component_offset_arcsec(c), np.array([ref]))[0])
                        if spec.primary_beam else 1.0} for c in spec.components],
        **({"fields": [_field_truth(f, spec, ref) for f in spec.fields]} if spec.fields else {}),
        "antennas": [a.to_dict() for a in antennas],
        "max_baseline_m": arrays.max_baseline_m(antennas),
        "spws": [
            {"id": s, "chan_freqs_hz": spec.chan_freqs(s).tolist(), "chan_width_hz": spec.spw_bw_hz / spec.n_chan}
            for s in range(spec.n_spw)
        ],
        "correlations": spec.corr_list,
        "scans": filled["scans"],
        "gains": {
            "convention": _CONVENTION,
            "times": [round(float(x), 3) for x in g.times],
            "phase_deg": {n: np.round(g.phase_deg[i], 4).tolist() for i, n in enumerate(names)},
            "spw_phase_offset_deg": {n: np.round(g.spw_offset_deg[i], 4).tolist() for i, n in enumerate(names)},
            "amp": {n: round(float(g.amp[i]), 6) for i, n in enumerate(names)},
            "phase_rms_deg": spec.phase_rms_deg,
            "phase_timescale_s": spec.phase_timescale_s,
            "spw_phase_rms_deg": spec.spw_phase_rms_deg,
            "amp_rms": spec.amp_rms,
            "delay_ns": {n: round(float(g.delay_ns[i]), 4) if g.delay_ns is not None else 0.0
                         for i, n in enumerate(names)},
            "delay_rms_ns": spec.delay_rms_ns,
        },
        "noise_jy": spec.noise_jy,
        "noise_note": "Gaussian sigma per real and imaginary part of each visibility; SIGMA=noise_jy, WEIGHT=1/noise_jy**2",
        "seed": spec.seed,
        "dead_antenna": names[dead] if dead is not None else None,
        "dead_antenna_id": dead,
        "dead_antenna_treatment": None if dead is None else "DATA pure noise (no signal), FLAG false",
        "missing_spw": missing,
        "model_data_written": spec.write_model,
        "nrows": filled["nrows"],
        "flagged_fraction": filled["flagged_fraction"],
        "generation_s": round(seconds, 3),
    }


def _field_truth(f: Any, spec: SimSpec, ref: float) -> dict[str, Any]:
    ra, dec = f.centre(spec.ra_deg, spec.dec_deg)
    return {"name": f.name, "intent": f.intent, "obs_mode": f.obs_mode,
            "phase_centre": {"ra_deg": ra, "dec_deg": dec, "frame": "J2000"},
            "components": [sky.component_truth(c, ra, dec, ref) for c in f.components]}


def simulate_ms(spec: SimSpec, out_path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write the MS ``out_path`` and its truth JSON (in this process; imports casatools)."""
    t0 = time.monotonic()
    if not isinstance(spec, SimSpec):
        raise SimulationError(f"spec must be a SimSpec (got {type(spec).__name__})")
    out = Path(out_path).absolute()
    if out.exists() and not overwrite:
        raise SimulationError(f"--out {out} already exists (use --force to overwrite)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    except OSError as exc:
        raise SimulationError(f"--out {out}: cannot create it ({exc.strerror or exc})") from None
    try:
        ct = _casatools(work / "casa.log")
        tmp_ms = work / out.name
        antennas = spec.antennas()
        try:
            calls = _layout_ms(ct, spec, antennas, tmp_ms)
            filled = _fill(ct, spec, tmp_ms, calls, len(antennas))
        except SimulationError:
            raise
        except Exception as exc:  # noqa: BLE001  (casatools raises plain RuntimeError)
            raise SimulationError(f"building {out.name} failed: {type(exc).__name__}: {str(exc).strip()[:300]}") from exc
        truth = build_truth(spec, antennas, filled, time.monotonic() - t0)
        truth["ms"] = out.name
        tpath = truth_path_for(out)
        tmp_truth = work / tpath.name
        tmp_truth.write_text(json.dumps(truth, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.rename(tmp_ms, out)
        os.replace(tmp_truth, tpath)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("simulated %s (%d rows) in %.2f s", out, filled["nrows"], time.monotonic() - t0)
    return out


def simulate_ms_isolated(
    spec: SimSpec,
    out_path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    timeout: float = 1800.0,
    log_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Like :func:`simulate_ms`, but in a child ``python -m selfcal_batch.simulate``."""
    from selfcal_batch.casa.env import casa_child_env  # lazy: loaded only on this path
    from selfcal_batch.process import describe_returncode, run_tool  # lazy: loaded only on this path

    if not isinstance(spec, SimSpec):
        raise SimulationError(f"spec must be a SimSpec (got {type(spec).__name__})")
    out = Path(out_path).absolute()
    if out.exists() and not overwrite:
        raise SimulationError(f"--out {out} already exists (use --force to overwrite)")
    tmp = Path(tempfile.mkdtemp(prefix="selfcal-sim-"))
    try:
        spec_file = spec.to_json(tmp / "spec.json")
        argv = [sys.executable, "-m", "selfcal_batch.simulate", str(spec_file), str(out)]
        if overwrite:
            argv.append("--force")
        env = casa_child_env(threads=2)
        # The child must import this very package, installed or not.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        res = run_tool(
            argv, tool="simulate", log_path=Path(log_path) if log_path else tmp / "simulate.log",
            env=env, timeout=timeout, category="simulate", check=False,
        )
        if res.returncode != 0:
            lines = res.tail.splitlines()
            msg = next((ln[len(ERROR_MARKER):] for ln in reversed(lines) if ln.startswith(ERROR_MARKER)), None)
            if msg is None:
                last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
                msg = f"simulator child failed ({describe_returncode(res.returncode)}): {last[:300]}"
            raise SimulationError(msg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not out.is_dir():
        raise SimulationError(f"simulator child finished but {out} was not written")
    return out


def main(argv: list[str] | None = None) -> int:
    """Child entry point: ``python -m selfcal_batch.simulate SPEC.json OUT.ms [--force]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    force = "--force" in args
    args = [a for a in args if a != "--force"]
    if len(args) != 2:
        print(f"{ERROR_MARKER}usage: python -m selfcal_batch.simulate SPEC.json OUT.ms [--force]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec = SimSpec.from_json(args[0])
        out = simulate_ms(spec, args[1], overwrite=force)
    except SimulationError as exc:
        print(f"{ERROR_MARKER}{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {truth_path_for(out)}")
    return 0
