"""Functions that run inside the CASA child process (they import casatools).

Called by name through :func:`selfcal_batch.casa.calibration.job`; never import this module in
a Dask worker or any process that imports python-casacore.
"""
from __future__ import annotations

import math
import os
import tempfile
from typing import Any

from selfcal_batch.ms.selection import field_selection_problem, has_science_intents
from selfcal_batch.ms.inspection import zero_weight_rows
from selfcal_batch.ms.nonfinite import flag_nonfinite
from selfcal_batch.ms.repair import (honour_flag_row, merge_same_name_fields, merge_tolerance_rad, remap_id_column,
                                     repair_working_copy)
from selfcal_batch.ms.polarisation import PolarisationError, choose_polarisation
from selfcal_batch.selfcal.spwmap import spw_correspondence


def inspect_ms(vis: str, field: str = "", column: str = "data") -> dict[str, Any]:
    """Describe an MS (see :func:`selfcal_batch.ms.inspection.inspect_ms`), reading the visibility
    column ``column`` (``"data"`` or ``"corrected"``: input_column); ``ValueError`` (one line) for
    an MS we cannot self-calibrate."""
    from selfcal_batch.ms.inspection import inspect_ms as _inspect  # CASA child only (reads with casatools)

    return _inspect(vis, field, "CORRECTED_DATA" if column.lower() == "corrected" else "DATA")


def flag_fraction(vis: str) -> float:
    """Fraction of flagged visibilities (all rows)."""
    from casatasks import flagdata  # casatasks: CASA child only

    s = flagdata(vis=vis, mode="summary", display="", flagbackup=False)
    return float(s["flagged"]) / float(s["total"]) if s and s.get("total") else 1.0


def rmtables(paths: list[str]) -> None:
    """Remove CASA tables (ignores ones that do not exist)."""
    from casatasks import rmtables as _rm  # (same reason)

    for p in paths:
        if os.path.exists(p):
            _rm(p)


def flag_checkpoint(vis: str, versionname: str, resume: bool = False) -> str:
    """Save the flags as ``versionname``; when resuming a step whose first attempt already
    saved it, restore it instead (the interrupted attempt may have changed flags since).

    Deciding here, from the MS's own flag-version list, keeps the save and the calls after
    it in one child without losing the pre-step flags if the child is killed half-way.
    """
    from casatasks import flagmanager  # (same reason)

    listing = os.path.join(vis.rstrip("/") + ".flagversions", "FLAG_VERSION_LIST")
    names: set[str] = set()
    if os.path.exists(listing):
        with open(listing) as fh:
            names = {ln.split(" : ")[0].strip() for ln in fh if ln.strip()}
    table = os.path.join(os.path.dirname(listing), f"flags.{versionname}")
    if versionname in names and not _version_complete(table):
        # The first attempt was killed while flagmanager wrote this version (casacore writes
        # table.dat last: it is then empty). Nothing after the save ran in that attempt, so
        # the MS still holds the flags the step starts from: save them anew.
        _forget_version(listing, table, versionname)
        names.discard(versionname)
    if resume and versionname in names and os.path.isdir(table):
        flagmanager(vis=vis, mode="restore", versionname=versionname)
        return "restored"
    flagmanager(vis=vis, mode="save", versionname=versionname, comment=versionname, merge="replace")
    return "saved"


def _version_complete(table: str) -> bool:
    """True when a saved flag version's table was closed (non-empty table.dat)."""
    dat = os.path.join(table, "table.dat")
    return os.path.isfile(dat) and os.path.getsize(dat) > 0


def _forget_version(listing: str, table: str, versionname: str) -> None:
    """Remove an incomplete flag version: its table and its line in FLAG_VERSION_LIST."""
    import shutil  # (same reason: only on this path)

    shutil.rmtree(table, ignore_errors=True)
    with open(listing) as fh:
        keep = [ln for ln in fh if ln.split(" : ")[0].strip() != versionname]
    with open(listing, "w") as fh:
        fh.writelines(keep)


def _has_column(vis: str, name: str) -> bool:
    """Whether the main table of ``vis`` has the column ``name``."""
    from casatools import table  # (same reason)

    tb = table()
    tb.open(vis)
    try:
        return name in tb.colnames()
    finally:
        tb.close()


def _polarisation(vis: str, info: dict[str, Any]) -> Any:
    """The correlation choice for an inspected MS; ValueError naming ``vis`` if none fits."""
    try:
        return choose_polarisation(info["correlations"])
    except PolarisationError as exc:
        raise ValueError(f"{vis}: {exc}") from None


def _obs_modes(vis: str) -> list[str]:
    """The STATE table's OBS_MODE strings ([] without a STATE table or column)."""
    from selfcal_batch.ms.inspection import _subtable_rows  # CASA child only (reads with casatools)

    if not os.path.isfile(os.path.join(vis, "STATE", "table.dat")):
        return []
    return [str(r.get("OBS_MODE") or "") for r in _subtable_rows(vis, "STATE", ["OBS_MODE"])]


def working_copy(view: str, work: str, field: str = "", spw: str = "", column: str = "data",
                 timebin: str = "", width: int = 1) -> dict[str, Any]:
    """Inspect the (mirrored) input, split the private working copy, inspect the copy.

    One child instead of three. ``ValueError`` (one line) for an MS we cannot use.
    """
    from casatasks import split  # (same reason)

    if column == "corrected" and not _has_column(view, "CORRECTED_DATA"):
        raise ValueError("input_column = 'corrected' but the MS has no CORRECTED_DATA column")
    src = inspect_ms(view, field, column)  # DATA is not needed when the corrected column is read
    problem = field_selection_problem(field, src["fields"], has_science_intents(_obs_modes(view)))
    if not field and problem:  # the up-front check's rule and line (campaign.preflight); one name = one target
        raise ValueError(problem)
    kw: dict[str, Any] = dict(vis=view, outputvis=work, datacolumn=column, field=field, spw=spw, keepflags=True)
    if timebin:
        kw["timebin"] = timebin
    if width > 1:
        kw["width"] = width
    if not spw:
        # Refuse before the (long) split when no correlation choice fits every spw.
        _polarisation(view, src)
        if src["spws_unused"] or [s["id"] for s in src["spws"]] != list(range(len(src["spws"]))):
            # Select the spws with data: split then renumbers them 0..n-1 (CASA gaincal loses
            # the solutions of a spw whose id follows an unused one: measured, CASA 6.7).
            kw["spw"] = ",".join(str(s["id"]) for s in src["spws"])
    split(**kw)
    if not os.path.exists(os.path.join(work, "table.dat")):
        raise RuntimeError(f"split did not write the working copy {work} (see casa.log)")
    fields = merge_same_name_fields(work, merge_tolerance_rad(max(s["freq_max"] for s in src["spws"]),
                                                               src["max_baseline_m"]))
    rowflags = honour_flag_row(work)  # WSClean reads FLAG only; applycal/split lose FLAG_ROW
    nonfinite = flag_nonfinite(work)  # before any statistic: NaN/inf would spread into all of them
    first = inspect_ms(work)
    choice = _polarisation(view, first)
    zero = zero_weight_rows(view) if src["zero_weight_fraction"] > 0 else []
    fixes = {"zero_weight_flagged": 0, "unflagged_before": 0, "time_columns_fixed": False}
    if zero or first["zero_weight_fraction"] > 0 or first["time_warning"]:
        fixes = repair_working_copy(work, first["integration_s"], fix_time=bool(first["time_warning"]),
                                    zero_weights=zero, spw_ids=spw_correspondence(src["spws"], first["spws"]))
    info = inspect_ms(work) if fixes["zero_weight_flagged"] or fixes["time_columns_fixed"] else first
    info["polarisation"] = choice.as_dict()
    info["repairs"] = {**fixes, "nonfinite_flagged": nonfinite["nonfinite_flagged"], **rowflags, **fields}
    info["warnings"] = list(first["warnings"]) + repair_warnings(rowflags, fields)
    if nonfinite["nonfinite_flagged"]:
        info["warnings"].append(f"{nonfinite['nonfinite_flagged']} unflagged visibilities "
                                f"({100 * nonfinite['nonfinite_flagged'] / max(1, nonfinite['n_samples']):.2g}%) "
                                "are NaN/inf (data or weight): flagged in the working copy (the input is unchanged)")
    if fixes["zero_weight_flagged"]:
        pct = 100 * fixes["zero_weight_flagged"] / max(1, fixes["unflagged_before"])
        info["warnings"].append(f"{pct:.3g}% of the unflagged samples have weight 0 (or NaN/inf): "
                                f"{fixes['zero_weight_flagged']} samples flagged in the working copy "
                                "(only those channels and correlations) so that they stay excluded (also in final.ms)")
    if zero and (timebin or width > 1):
        info["warnings"].append("zero weights in the input cannot be matched after time/channel averaging: "
                                "flag them in the input to keep them excluded")
    if fixes["time_columns_fixed"]:
        info["warnings"].append(f"INTERVAL/EXPOSURE set to the TIME spacing {first['integration_s']:.4g} s "
                                "in the working copy")
    if choice.single_hand:
        info["warnings"].append(f"imaging and calibrating {choice.note}: Stokes I needs both parallel hands "
                                "in every spw")
    return {"src": src, "work": info}


def repair_warnings(rowflags: dict[str, int], fields: dict[str, int]) -> list[str]:
    """Warning lines for the FLAG_ROW (:func:`~selfcal_batch.ms.repair.honour_flag_row`) and
    FIELD-row (:func:`~selfcal_batch.ms.repair.merge_same_name_fields`) repairs of a working copy. Pure."""
    out = []
    if rowflags.get("flag_row_flagged"):
        out.append(f"{rowflags['flag_row_rows']} rows are flagged by FLAG_ROW but not (all) in FLAG: "
                   f"{rowflags['flag_row_flagged']} samples flagged in the working copy so that imaging, "
                   "calibration and final.ms exclude them (the input is unchanged)")
    if fields.get("field_rows_merged"):
        out.append(f"{fields['field_rows_merged']} more FIELD row(s) with the target's name and direction "
                   f"(as concat writes): their {fields['rows_refielded']} rows merged into one FIELD_ID in the "
                   "working copy so that all of them are imaged and calibrated")
    return out


#: Largest side (pixels) of the grid CASA evaluates an off-centre beam's radial profile on.
PB_PROFILE_MAX_PIX = 1024


def primary_beam_image(vis: str, template_fits: str, out_fits: str, workdir: str,
                       extent_arcmin: float = 0.0) -> dict[str, Any]:
    """CASA's primary beam of ``vis`` on the grid of ``template_fits`` (a WSClean image):
    ``tclean`` with ``niter=0`` (same size, cell, phase centre, reference frequency) writes
    the ``.pb`` image from PBMath's model for the MS's telescope; exported to ``out_fits``.
    ``extent_arcmin`` > 0: a square grid instead, same centre, reaching that radius from it
    (cell coarsened to keep at most :data:`PB_PROFILE_MAX_PIX` pixels a side), for the beam's
    radial profile (imaging/primary_beam.py).

    Returns ``{"model": ...}`` naming the model CASA used (vpmanager.getvp)."""
    import shutil  # child only: CASA runs inside the CASA child

    from astropy.io import fits  # child only: CASA runs inside the CASA child
    from casatasks import exportfits, tclean  # child only: CASA runs inside the CASA child
    from casatools import msmetadata, vpmanager  # child only: CASA runs inside the CASA child

    h = fits.getheader(template_fits)
    freq_axis = next(ax for ax in range(1, int(h["NAXIS"]) + 1) if str(h.get(f"CTYPE{ax}", "")).startswith("FREQ"))
    freq = float(h[f"CRVAL{freq_axis}"])
    msmd = msmetadata()
    msmd.open(vis)
    telescope = msmd.observatorynames()[0]
    msmd.close()
    stem = os.path.join(workdir, "pbgrid")
    for suffix in (".pb", ".psf", ".image", ".residual", ".model", ".sumwt", ".weight"):
        shutil.rmtree(stem + suffix, ignore_errors=True)
    cell, size = abs(float(h["CDELT2"])) * 3600.0, [int(h["NAXIS1"]), int(h["NAXIS2"])]
    if extent_arcmin > 0:
        n = int(math.ceil(2 * extent_arcmin * 60.0 / cell)) + 4
        if n > PB_PROFILE_MAX_PIX:
            cell, n = 2 * extent_arcmin * 60.0 / (PB_PROFILE_MAX_PIX - 4), PB_PROFILE_MAX_PIX
        size = [n + n % 2, n + n % 2]
    tclean(vis=vis, imagename=stem, imsize=size, cell=f"{cell:.10g}arcsec",
           phasecenter=f"J2000 {float(h['CRVAL1']):.10f}deg {float(h['CRVAL2']):.10f}deg",
           specmode="mfs", reffreq=f"{freq:.6f}Hz", gridder="standard", niter=0, pblimit=0.001,
           datacolumn="data", restoration=False, calcres=False)
    if not os.path.isdir(stem + ".pb"):
        raise RuntimeError(f"tclean wrote no primary-beam image for {vis}")
    exportfits(imagename=stem + ".pb", fitsimage=out_fits, overwrite=True, dropdeg=True)
    vp = vpmanager()
    rec = vp.getvp(telescope=telescope, freq=f"{freq:.6f}Hz")
    model = f"CASA PBMath {rec.get('name', '?')} {rec.get('commonpb', '')} ({telescope}) at {freq / 1e9:.4g} GHz"
    for suffix in (".pb", ".psf", ".image", ".residual", ".model", ".sumwt", ".weight"):
        shutil.rmtree(stem + suffix, ignore_errors=True)
    return {"model": model.replace("  ", " "), "telescope": telescope, "freq_hz": freq}


def apply_to_copy(view: str, out: str, gaintable: list[str], spwmap: list[list[int]], interp: list[str],
                  field: str = "", spw: str = "", column: str = "data", calwt: bool = False) -> dict[str, Any]:
    """Split the full-resolution input (read-only ``view``) with the SAME field/spw selection
    as the pipeline's working copy (so spw ids match the caltables'), no averaging, then
    ``applycal`` the gain chain to the copy (CORRECTED_DATA; DATA keeps the input column).

    The copy gets the working copy's repairs first (FIELD rows merged, FLAG_ROW and zero
    weights flagged: :mod:`selfcal_batch.ms.repair`), so that it holds what final.ms holds.

    Returns the exact applycal keyword arguments used, the repairs and the flagged fraction after it."""
    from casatasks import applycal, split  # child only: CASA runs inside the CASA child

    src = inspect_ms(view, field, column)
    kw: dict[str, Any] = dict(vis=view, outputvis=out, datacolumn=column, field=field, spw=spw, keepflags=True)
    if not spw and (src["spws_unused"] or [s["id"] for s in src["spws"]] != list(range(len(src["spws"])))):
        kw["spw"] = ",".join(str(s["id"]) for s in src["spws"])  # as working_copy selects them
    split(**kw)
    if not os.path.exists(os.path.join(out, "table.dat")):
        raise RuntimeError(f"split did not write {out} (see casa.log)")
    repairs = {**merge_same_name_fields(out, merge_tolerance_rad(max(s["freq_max"] for s in src["spws"]),
                                                                  src["max_baseline_m"])),
               **honour_flag_row(out), **flag_nonfinite(out)}
    if src["zero_weight_fraction"] > 0:
        copy_spws = inspect_ms(out)["spws"]
        repairs.update(repair_working_copy(out, 0.0, False, zero_weight_rows(view),
                                           spw_correspondence(src["spws"], copy_spws)))
    call = dict(vis=out, field=field, gaintable=list(gaintable), spwmap=[list(m) for m in spwmap],
                interp=list(interp), calwt=[bool(calwt)] * len(gaintable), applymode="calflag", flagbackup=False)
    applycal(**call)
    return {"applycal": call, "split": kw, "repairs": repairs, "flagged_fraction": flag_fraction(out)}


def apply_in_place(vis: str, gaintable: list[str], spwmap: list[list[int]], interp: list[str],
                   field: str = "", calwt: bool = False) -> dict[str, Any]:
    """``applycal`` straight into the user's MS (CORRECTED_DATA), only on explicit request
    (``apply --in-place``). ValueError when the MS's spw ids are not those of the caltables
    (the working copy renumbered them: unused spws or gaps)."""
    from casatasks import applycal  # child only: CASA runs inside the CASA child

    src = inspect_ms(vis, field)
    if src["spws_unused"] or [s["id"] for s in src["spws"]] != list(range(len(src["spws"]))):
        raise ValueError("the working copy renumbered this MS's spws (unused spws or gaps): "
                         "apply without --in-place")
    call = dict(vis=vis, field=field, gaintable=list(gaintable), spwmap=[list(m) for m in spwmap],
                interp=list(interp), calwt=[bool(calwt)] * len(gaintable), applymode="calflag", flagbackup=True)
    applycal(**call)
    return {"applycal": call, "flagged_fraction": flag_fraction(vis)}


def average_channels(vis: str, widths: dict[str, int]) -> dict[str, Any]:
    """Joint EBs of different channelisation (DESIGN.md, "Mixed channel counts"): average the
    working copy ``vis`` in place, spw id (str) -> channels per bin (CASA ``split`` ``width``,
    one per spw; every count is a whole multiple, ``selfcal.channels.common_channels``), and
    inspect the result (:func:`~selfcal_batch.ms.inspection.inspect_ms`). Flags: split averages
    unflagged channels only; a bin is flagged when all its channels are."""
    import shutil  # child only: CASA runs inside the CASA child

    from casatasks import split  # (same reason)

    ids = sorted(widths, key=int)
    tmp = vis.rstrip("/") + ".averaging"
    shutil.rmtree(tmp, ignore_errors=True)
    split(vis=vis, outputvis=tmp, datacolumn="data", spw=",".join(ids), width=[int(widths[i]) for i in ids],
          keepflags=True)
    if not os.path.exists(os.path.join(tmp, "table.dat")):
        raise RuntimeError(f"split did not write the averaged working copy {tmp} (see casa.log)")
    shutil.rmtree(vis)
    shutil.rmtree(vis.rstrip("/") + ".flagversions", ignore_errors=True)
    os.rename(tmp, vis)
    return inspect_ms(vis)


def concat_copies(parts: list[str], work: str) -> dict[str, Any]:
    """Joint EBs (DESIGN.md, "Joint EBs"): concatenate the per-EB working copies ``parts``
    into ``work`` (CASA ``concat``: each EB keeps its own OBSERVATION_ID, scans are
    renumbered, spws of equal frequency and channelisation are merged, others kept apart)
    and inspect it. ``per_eb``: per input part (= observation id), its spw ids and scans
    in ``work``. ``ValueError`` when ``concat`` merged two EBs into one observation (then no
    solve could keep them apart)."""
    from casatasks import concat  # (same reason)
    from casatools import msmetadata  # (same reason)

    # concat's setup check splits a table's subtable keywords ("Table: <absolute path>") at
    # the first space: an output path with a space failed ("Table /tmp/out does not exist",
    # tester s7-break #1). It reads the EBs through a space-free link to the dataset directory
    # (a parent directory, not a link inside an MS: the tables written are real files).
    base = os.path.dirname(os.path.abspath(work))
    with tempfile.TemporaryDirectory(prefix="concat-") as tmp:
        root = base
        if " " in base:
            if " " in tmp:
                raise ValueError(f"cannot concatenate in {base!r}: CASA concat fails on paths with a space, "
                                 f"and the temporary directory {tmp!r} has one too")
            root = os.path.join(tmp, "d")
            os.symlink(base, root)
        concat(vis=[os.path.join(root, os.path.relpath(os.path.abspath(p), base)) for p in parts],
               concatvis=os.path.join(root, os.path.basename(work)), copypointing=False)
    if not os.path.exists(os.path.join(work, "table.dat")):
        raise RuntimeError(f"concat did not write the joint working copy {work} (see casa.log)")
    md = msmetadata()
    md.open(work)
    try:
        if md.nobservations() != len(parts):
            raise ValueError(f"the {len(parts)} execution blocks share observation ids after concat "
                             f"({md.nobservations()} observations): they cannot be solved apart")
        per_eb = []
        for obs in range(len(parts)):
            scans = sorted(int(s) for s in md.scannumbers(obsid=obs))
            spws = sorted({int(w) for s in scans for w in md.spwsforscan(s, obsid=obs)})
            per_eb.append({"observation_id": obs, "scans": scans, "spws": spws})
    finally:
        md.close()
    merged = merge_duplicate_data_descriptions(work)
    info = inspect_ms(work)
    # concat keeps a second FIELD row for the target when the EBs' rows differ (e.g. SOURCE_ID):
    # WSClean would image field 0 only. Merged like a single MS's (working_copy).
    fields = merge_same_name_fields(work, merge_tolerance_rad(max(s["freq_max"] for s in info["spws"]),
                                                              info["max_baseline_m"]))
    info["fields"] = list(dict.fromkeys(info["fields"]))
    info["warnings"] = list(info["warnings"]) + repair_warnings({}, fields)
    info["data_descriptions_merged_rows"] = merged
    info["field_rows_merged"] = fields["field_rows_merged"]
    info["polarisation"] = _polarisation(work, info).as_dict()
    info["per_eb"] = per_eb
    return info


def merge_duplicate_data_descriptions(vis: str) -> int:
    """Point rows of data descriptions that differ only by an identical POLARIZATION row at
    one data description per (spw, correlation setup); returns the rows rewritten.

    ``concat`` keeps every POLARIZATION row of its inputs (an MS may hold one per spw) and
    then makes a second data description for a spw merged across EBs; WSClean 3.1 aborts on
    such an MS while predicting ("Error reading from temporary model data file", measured)."""
    from casatools import table  # (same reason)

    tb = table()
    tb.open(os.path.join(vis, "POLARIZATION"))
    corr = [tuple(int(c) for c in tb.getcell("CORR_TYPE", i)) for i in range(tb.nrows())]
    tb.close()
    tb.open(os.path.join(vis, "DATA_DESCRIPTION"))
    spw, pol = tb.getcol("SPECTRAL_WINDOW_ID"), tb.getcol("POLARIZATION_ID")
    tb.close()
    first: dict[tuple[int, tuple[int, ...]], int] = {}
    target = [first.setdefault((int(s), corr[int(p)]), d) for d, (s, p) in enumerate(zip(spw, pol, strict=True))]
    if target == list(range(len(target))):
        return 0
    keep = sorted(set(target))
    changed = remap_id_column(vis, "DATA_DESC_ID", [keep.index(t) for t in target])
    # WSClean reorders into one part per DATA_DESCRIPTION row, also an unused one (which
    # then aborts the predict): the merged rows are removed.
    tb.open(os.path.join(vis, "DATA_DESCRIPTION"), nomodify=False)
    try:
        tb.removerows([d for d in range(len(target)) if d not in keep])
    finally:
        tb.close()
    return changed
