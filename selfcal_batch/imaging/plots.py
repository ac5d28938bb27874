"""Diagnostic PNGs: solution-SNR histograms, gain tables, per-dataset summaries, thumbnails.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly (no pyplot
global state), so plotting is safe in Dask worker threads. Caltables are read with
python-casacore (``casacore.tables``), never casatools. Every PNG is written atomically.

All PNGs of a dataset must cost well under a second, hence: fixed axes positions (no tight
layout); all antennas' gain panels are small multiples on ONE Axes; ticks are marker lines
and texts are drawn by PIL on the Agg buffer (:class:`Label`, ~0.05 ms each, where a
matplotlib Text or Tick costs ~0.5 ms); image statistics are taken from the pipeline's rows.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from selfcal_batch.imaging.imstats import array_statistics, read_image
from selfcal_batch.numeric import float_or_nan
from selfcal_batch.imaging.render import (PNG_COMPRESS_LEVEL, Label, _bare_axes, _legend,  # noqa: F401 (re-exported)
                                          _message_figure, _nice, _ticks, save_png, save_png_labelled)

log = logging.getLogger(__name__)

_POL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


# --------------------------------------------------------------------------- caltables
def _read_caltable(caltable: str | Path, columns: Sequence[str],
                   out_png: str | Path) -> dict[str, np.ndarray]:
    """Columns of a caltable as arrays; {} (and a message PNG) if it has no rows or fails."""
    from casacore.tables import table  # python-casacore only where a caltable is read

    name = Path(caltable).name
    try:
        with table(str(caltable), ack=False) as t:
            cols = {c: np.asarray(t.getcol(c)) for c in columns} if t.nrows() else {}
    except (RuntimeError, OSError, ValueError) as exc:
        log.warning("cannot read caltable %s: %s", caltable, exc)
        _message_figure(out_png, f"{name}: cannot read table\n{str(exc)[:200]}")
        return {}
    if not cols:
        _message_figure(out_png, f"{name}: no solutions")
    return cols


def _antenna_name_map(caltable: str | Path, ids: Sequence[int],
                      antenna_names: Sequence[str] | None) -> dict[int, str]:
    """Antenna id -> name, by id (row of the ANTENNA subtable); 'ant<id>' when unknown."""
    names: list[str] = list(antenna_names) if antenna_names is not None else []
    sub = Path(caltable) / "ANTENNA"
    if antenna_names is None and sub.is_dir():
        from casacore.tables import table  # (same reason)

        try:
            with table(str(sub), ack=False) as t:
                names = [str(n) for n in t.getcol("NAME")]
        except RuntimeError as exc:
            log.warning("%s: cannot read ANTENNA subtable: %s", caltable, exc)
    return {int(i): (names[i] if 0 <= i < len(names) and names[i] else f"ant{i}")
            for i in ids}


def _as_points(arr: np.ndarray) -> np.ndarray:
    """(nrow, [nchan,] npol) caltable cell data -> (nrow, nchan, npol)."""
    if arr.ndim not in (2, 3):
        raise ValueError(f"unexpected caltable column shape {arr.shape}")
    return arr[:, None, :] if arr.ndim == 2 else arr


#: Title suffix of the plots of a gain table whose step was reverted (not applied).
REVERTED_MARK = " — REVERTED (not applied)"


def plot_solution_snr_hist(caltable: str | Path, out_png: str | Path,
                           minsnr: float, reverted: bool = False) -> dict[str, float]:
    """Histogram of the SNR column (all solutions), dashed lines at 3 and ``minsnr`` (pass the
    minsnr gaincal used for this table); ``reverted`` adds REVERTED_MARK (red) to the title.

    Returns ``frac_below_minsnr`` (finite SNR ≤ minsnr), ``frac_flagged`` (FLAG fraction),
    ``n_solutions`` and ``median_snr``.
    """
    cols = _read_caltable(caltable, ("SNR", "FLAG"), out_png)
    if not cols:
        return {"frac_below_minsnr": float("nan"), "frac_flagged": float("nan"),
                "n_solutions": 0, "median_snr": float("nan")}
    snr = cols["SNR"].astype(np.float64).ravel()
    flag = cols["FLAG"].astype(bool).ravel()
    vals = snr[np.isfinite(snr)]
    frac_below = float(np.mean(vals <= minsnr)) if vals.size else float("nan")
    frac_flag = float(np.mean(flag)) if flag.size else float("nan")
    med = float(np.median(vals)) if vals.size else float("nan")

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    ax = _bare_axes(fig.add_axes((0.11, 0.12, 0.86, 0.80)))
    if vals.size:
        ax.hist(vals, bins=50, histtype="step", density=True, color="k")
    ax.axvline(3.0, ls="--", color="tab:gray")
    ax.axvline(minsnr, ls="--", color="tab:red")
    labels = (_ticks(ax, "x", nbins=9) + _ticks(ax, "y", nbins=8)
              + _legend(ax, [({"ls": "--", "color": "tab:gray"}, "SNR = 3"),
                             ({"ls": "--", "color": "tab:red"}, f"minsnr = {minsnr:g}")],
                        0.76, 0.57, 0.225))
    labels += [Label(0.5, 0.0, "solution SNR", 10, "ma", dy=-20, frac=True),
               Label(0.0, 0.5, "density", 10, angle=90, dx=-40, frac=True),
               Label(0.5, 1.0, Path(caltable).name + (REVERTED_MARK if reverted else ""), 12, "md",
                     color="#c62828" if reverted else "black", dy=6, frac=True),
               Label(0.97, 0.95, f"{100 * frac_below:.1f}% ≤ minsnr\n{100 * frac_flag:.1f}% "
                     f"flagged\nN = {snr.size}", 10, "ra", frac=True)]
    save_png_labelled(fig, ax, labels, out_png)
    return {"frac_below_minsnr": frac_below, "frac_flagged": frac_flag,
            "n_solutions": int(snr.size), "median_snr": med}


# Small multiples of plot_gains, in data units of its one Axes: a panel is 1 x 1, cells are
# _GAP_X / _GAP_Y apart, one unit is _UNIT_W x _UNIT_H inches (a panel ~185 x 105 px).
_GAP_X, _GAP_Y, _UNIT_W, _UNIT_H = 0.17, 0.42, 1.85, 1.05
_MARGIN_L, _MARGIN_R, _MARGIN_T, _MARGIN_B = 0.36, 0.03, 0.55, 0.40
_PHASE_TICKS = (-180.0, -90.0, 0.0, 90.0, 180.0)


def _panel_lines(nant: int, ncols: int, per: int, xt: np.ndarray,
                 yticks: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames with tick marks, and light guide lines, of every gain panel: ``xt`` are time
    ticks (0..1 in a panel), ``yticks[j]`` the ticks of a cell's j-th panel (phase, amp)."""
    frames: list[np.ndarray] = []
    guides: list[np.ndarray] = []
    box = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=float)
    for k in range(nant):
        r, c = divmod(k, ncols)
        x0 = c * (1.0 + _GAP_X)
        for j in range(per):
            yb = -r * (per + _GAP_Y) - 1.0 - j
            frames.append(box + (x0, yb))
            frames.extend(np.array([[x0 + t, yb], [x0 + t, yb + 0.05]]) for t in xt)
            for v in yticks[j]:
                frames.append(np.array([[x0, yb + v], [x0 + 0.03, yb + v]]))
                if 0.0 < v < 1.0:
                    guides.append(np.array([[x0, yb + v], [x0 + 1.0, yb + v]]))
    return frames, guides


def plot_gains(caltable: str | Path, out_png: str | Path,
               antenna_names: list[str] | None = None,
               amplitude: bool = False, reverted: bool = False) -> dict[str, float]:
    """Gain phase (deg) vs time, one panel per antenna, each polarization; flagged excluded.
    ``reverted`` adds REVERTED_MARK (red) to the title.

    With ``amplitude=True`` each antenna also gets an amplitude panel (0..1.1·max) below its
    phase panel. ``antenna_names`` is indexed by antenna id (default: the caltable's ANTENNA
    subtable). Returns ``n_antennas``, ``n_points`` (unflagged) and ``frac_flagged``.
    """
    cols = _read_caltable(caltable, ("TIME", "ANTENNA1", "CPARAM", "FLAG"), out_png)
    if not cols:
        return {"n_antennas": 0, "n_points": 0, "frac_flagged": float("nan")}
    gains = _as_points(cols["CPARAM"])
    flags = _as_points(cols["FLAG"]).astype(bool)
    ant = cols["ANTENNA1"].astype(int)
    hours = (cols["TIME"] - np.min(cols["TIME"])) / 3600.0
    ids = np.unique(ant)
    label = _antenna_name_map(caltable, ids.tolist(), antenna_names)
    npol, nant, good = gains.shape[2], len(ids), ~flags
    amp = np.abs(gains)
    finite_amp = amp[good & np.isfinite(amp)]
    amp_lim = max(1.1 * float(np.max(finite_amp)), 1e-6) if finite_amp.size else 1.1
    amp_ticks = np.asarray(_nice(0.0, amp_lim, 3))
    h0, h1 = float(np.nanmin(hours)), float(np.nanmax(hours))
    h0, h1 = (h0, h1) if h1 > h0 else (h0 - 0.05, h1 + 0.05)
    t_ticks = np.asarray(_nice(h0, h1, 4))
    t_lo, t_hi = h0 - 0.04 * (h1 - h0), h1 + 0.04 * (h1 - h0)  # shared time axis, 4 % margins
    xt = (t_ticks - t_lo) / (t_hi - t_lo)

    ncols = max(1, math.ceil(math.sqrt(nant)))
    nrows, per = math.ceil(nant / ncols), 2 if amplitude else 1
    step_x, step_y = 1.0 + _GAP_X, per + _GAP_Y
    # each solution -> its antenna's cell: phase panel x0..x0+1, ytop-1..ytop
    k = np.searchsorted(ids, ant)
    x0 = ((k % ncols) * step_x)[:, None, None]
    ytop = (-(k // ncols) * step_y)[:, None, None]
    tx = np.broadcast_to(x0 + ((hours - t_lo) / (t_hi - t_lo))[:, None, None], gains.shape)
    yp = ytop - 1.0 + (np.angle(gains, deg=True) + 180.0) / 360.0
    ya = ytop - 2.0 + amp / amp_lim

    title = f"{Path(caltable).name}: {'phase & amplitude' if amplitude else 'phase'}" \
        + (REVERTED_MARK if reverted else "")
    width = max(ncols * step_x - _GAP_X, 0.06 * len(title) + 0.45 * npol + 0.3)  # title, legend
    xlim = (-_MARGIN_L, width + _MARGIN_R)
    ylim = (-(nrows - 1) * step_y - per - _MARGIN_B, _MARGIN_T)
    fig = Figure(figsize=((xlim[1] - xlim[0]) * _UNIT_W, (ylim[1] - ylim[0]) * _UNIT_H),
                 dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0), xlim=xlim, ylim=ylim)
    ax.set_axis_off()
    yticks = [(np.asarray(_PHASE_TICKS) + 180.0) / 360.0, amp_ticks / amp_lim]
    frames, guides = _panel_lines(nant, ncols, per, xt, yticks)
    ax.add_collection(LineCollection(guides, colors="0.85", linewidths=0.6, zorder=1))
    ax.add_collection(LineCollection(frames, colors="k", linewidths=0.8, zorder=3))

    labels: list[Label] = []
    for p in range(npol):  # one marker artist per polarization (phase and amplitude)
        sel = good[..., p]
        xs, ys = tx[..., p][sel], yp[..., p][sel]
        if amplitude:
            xs, ys = np.concatenate([xs, xs]), np.concatenate([ys, ya[..., p][sel]])
        color = _POL_COLORS[p % 4]
        ax.plot(xs, ys, ".", ms=2.5, color=color, zorder=2)
        lx = width - 0.45 * (npol - 1 - p) - 0.33  # legend entry, top right
        ax.plot([lx], [_MARGIN_T - 0.22], "o", ms=5, color=color)
        labels.append(Label(lx + 0.04, _MARGIN_T - 0.22, f"pol {p}", 9, "lm"))

    labels.append(Label(0.0, _MARGIN_T - 0.08, title, 12, "la", color="#c62828" if reverted else "black"))
    for kk, aid in enumerate(ids.tolist()):
        r, c = divmod(kk, ncols)
        labels.append(Label(c * step_x + 0.5, -r * step_y + 0.03, label[aid], 9, "md"))
    for r in range(nrows):
        for j in range(per):
            yb = -r * step_y - 1.0 - j
            text = [f"{v:g}" for v in _PHASE_TICKS] if j == 0 else [f"{a:.3g}" for a in amp_ticks]
            labels.extend(Label(-0.025, yb + v, s, 7, "rm") for v, s in zip(yticks[j], text, strict=True)
                          if j == 0 or v < 0.9)  # no clash with the phase panel's -180
            labels.append(Label(-_MARGIN_L + 0.07, yb + 0.5, "phase (deg)" if j == 0 else "amp",
                                9, angle=90))
    for c in range(min(ncols, nant)):  # time ticks under the last cell of each column
        x0c, yb = c * step_x, -((nant - 1 - c) // ncols) * step_y - per
        labels.extend(Label(x0c + v, yb - 0.03, f"{t:g}", 7, "ma") for v, t in zip(xt, t_ticks, strict=True))
        labels.append(Label(x0c + 0.5, yb - 0.17, "time (h)", 9, "ma"))
    save_png_labelled(fig, ax, labels, out_png)
    return {"n_antennas": nant, "n_points": int(np.count_nonzero(good)),
            "frac_flagged": float(np.mean(flags))}


# --------------------------------------------------------------------------- images
_CUT_KEYS = ("peak", "peak_x", "peak_y", "C95radii", "rms_offsource", "snr",
             "bmaj_arcsec", "bmin_arcsec", "bpa_deg", "cell_arcsec")
_CUTOUTS: dict[tuple[str, int, int], dict[str, Any]] = {}  # (path, mtime, size) -> cutout
_CUTOUTS_LOCK = threading.Lock()


def _row_stats(path: str | Path, rows: Sequence[Mapping[str, Any]] | None,
               img: np.ndarray) -> dict[str, Any] | None:
    """Statistics of ``path`` from the last image_properties row naming it (relative or not),
    if its peak pixel and value match ``img`` (else the row describes another version)."""
    target = Path(path).as_posix()
    for row in reversed(rows or ()):
        rp = str(row.get("path") or "").removeprefix("./")
        if rp and (target == rp or target.endswith("/" + rp) or (
                os.path.isabs(rp) and os.path.realpath(rp) == os.path.realpath(path))):
            st = {k: row.get(k) for k in _CUT_KEYS}
            px, py = float_or_nan(st["peak_x"]), float_or_nan(st["peak_y"])
            ok = 0 <= px < img.shape[1] and 0 <= py < img.shape[0]
            return st if ok and np.isclose(img[int(py), int(px)], float_or_nan(st["peak"]),
                                           rtol=1e-4) else None
    return None


def _load_cutout(path: str | Path,
                 rows: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any] | None:
    """Cutout of max(64 px, 4·C95radii) around the image peak, with its statistics: from the
    image's row in ``rows`` if any, else computed (~1 s for 2048² px). Cached per file
    version (path, mtime, size): the summary and the thumbnails share one read."""
    try:
        fst = os.stat(path)
        key = (os.path.realpath(path), fst.st_mtime_ns, fst.st_size)
        with _CUTOUTS_LOCK:
            if key in _CUTOUTS:
                return _CUTOUTS[key]
        img, header = read_image(path)
    except (OSError, ValueError) as exc:
        log.warning("cannot read image %s: %s", path, exc)
        return None
    st = _row_stats(path, rows, img) or array_statistics(img, header)
    ny, nx = img.shape
    px = int(float_or_nan(st["peak_x"])) if np.isfinite(float_or_nan(st["peak_x"])) else nx // 2
    py = int(float_or_nan(st["peak_y"])) if np.isfinite(float_or_nan(st["peak_y"])) else ny // 2
    c95 = float_or_nan(st["C95radii"])
    half = max(32, int(math.ceil(2 * c95)) if np.isfinite(c95) else 32)
    x0, x1 = max(px - half, 0), min(px + half + 1, nx)
    y0, y1 = max(py - half, 0), min(py + half + 1, ny)
    cell = float_or_nan(st["cell_arcsec"])
    scale = cell if np.isfinite(cell) and cell > 0 else 1.0
    extent = ((x0 - px - 0.5) * scale, (x1 - px - 0.5) * scale,
              (y0 - py - 0.5) * scale, (y1 - py - 0.5) * scale)
    cut = {"data": img[y0:y1, x0:x1].copy(), "stats": st, "extent": extent, "scale": scale,
           "unit": "arcsec" if scale != 1.0 else "px"}
    with _CUTOUTS_LOCK:
        if len(_CUTOUTS) >= 8:
            _CUTOUTS.clear()
        _CUTOUTS[key] = cut
    return cut


def _norm(cuts: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """One (vmin, vmax) shared by all cutouts: -3·rms .. max peak."""
    peaks = [p for p in (float_or_nan(c["stats"]["peak"]) for c in cuts) if np.isfinite(p)]
    rmss = [r for r in (float_or_nan(c["stats"]["rms_offsource"]) for c in cuts) if 0 < r < math.inf]
    vmax = max(peaks) if peaks else 1.0
    vmin = -3.0 * max(rmss) if rmss else -0.01 * abs(vmax)
    return vmin, (vmax if vmax > vmin else vmin + 1.0)


def _stretch(x: Any, lims: tuple[float, float], a: float = 0.05) -> np.ndarray:
    """Asinh stretch of ``x`` clipped to ``lims`` onto 0..1 (astropy's AsinhStretch(a))."""
    z = np.clip((np.asarray(x, dtype=np.float64) - lims[0]) / (lims[1] - lims[0]), 0.0, 1.0)
    return np.arcsinh(z / a) / math.asinh(1.0 / a)


def _draw_cutout(ax: Any, cut: dict[str, Any], lims: tuple[float, float]) -> None:
    """The stretched cutout and, bottom left, the restoring beam."""
    ax.imshow(_stretch(cut["data"], lims), origin="lower", cmap="inferno", vmin=0.0, vmax=1.0,
              extent=cut["extent"], interpolation="nearest")
    st = cut["stats"]
    bmaj, bmin, bpa = float_or_nan(st["bmaj_arcsec"]), float_or_nan(st["bmin_arcsec"]), float_or_nan(st["bpa_deg"])
    if np.isfinite(bmaj) and np.isfinite(bmin):
        f = 1.0 if cut["unit"] == "arcsec" else 1.0 / max(float_or_nan(st["cell_arcsec"]), 1e-30)
        w, h = bmin * f, bmaj * f
        pad = 0.6 * max(w, h)
        ax.add_patch(Ellipse((cut["extent"][0] + pad, cut["extent"][2] + pad), width=w,
                             height=h, angle=bpa if np.isfinite(bpa) else 0.0,
                             facecolor="none", edgecolor="cyan", lw=1.2))


def _colorbar(fig: Figure, rect: tuple[float, float, float, float],
              lims: tuple[float, float]) -> list[Label]:
    """Colorbar (Jy/beam) of the stretched images; ticks at -3·rms, 0 and fractions of max."""
    vmin, vmax = lims
    ticks: list[float] = []
    for t in (vmin, 0.0, 0.01 * vmax, 0.1 * vmax, 0.4 * vmax, vmax):
        if vmin <= t <= vmax and all(abs(_stretch(t, lims) - _stretch(u, lims)) > 0.06
                                     for u in ticks):
            ticks.append(t)
    cax = _bare_axes(fig.add_axes(rect))
    cax.imshow(np.linspace(0.0, 1.0, 256)[:, None], aspect="auto", cmap="inferno", vmin=0.0,
               vmax=1.0, origin="lower", extent=(0.0, 1.0, 0.0, 1.0))
    return (_ticks(cax, "y", list(_stretch(ticks, lims)), [f"{t:.2g}" for t in ticks],
                   right=True)
            + [Label(1.0, 0.5, "Jy/beam", 10, angle=90, dx=58, frac=True, ax=cax)])


def _log_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Log-axis ticks m·10^n in [lo, hi]; labels at 10^n (and 2, 3, 5·10^n when narrow)."""
    pos = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
           for m in range(1, 10) if lo <= m * 10.0 ** e <= hi]
    show = (1,) if hi / lo >= 30 else (1, 2, 3, 5)
    texts = [f"{v:g}" if round(v / 10 ** math.floor(math.log10(v) + 1e-9)) in show else ""
             for v in pos]
    if sum(map(bool, texts)) < 2:  # narrow range: linear 'nice' values
        pos = pos if len(pos) >= 2 else _nice(lo, hi, 4)
        texts = [f"{v:g}" for v in pos]
    return pos, texts


def _steps_plot(fig: Figure, rows: Sequence[Mapping[str, Any]]) -> list[Label]:
    """snr and DR (log axis when positive) and rms (right axis) per step, and a table."""
    axl = fig.add_axes((0.075, 0.13, 0.47, 0.32))
    if not rows:
        _bare_axes(axl)
        return [Label(0.5, 0.5, "no image statistics", 10, frac=True, ax=axl)]
    x = np.arange(len(rows))
    ticks = [f"{r.get('step', '?')}/{r.get('role', '?')}" for r in rows]
    snr = np.array([float_or_nan(r.get("snr")) for r in rows])
    dr = np.array([float_or_nan(r.get("dynamic_range")) for r in rows])
    rms = np.array([float_or_nan(r.get("rms_offsource")) for r in rows]) * 1e3
    styles = [{"marker": "o", "color": "C0"},
              {"marker": "s", "ls": "--", "color": "C1", "alpha": 0.7},
              {"marker": "^", "ls": ":", "color": "tab:red"}]
    axl.plot(x, snr, **styles[0])
    axl.plot(x, dr, **styles[1])
    good = np.concatenate([snr, dr])
    logy = bool(np.isfinite(good).any() and np.all(good[np.isfinite(good)] > 0))
    axl.set_yscale("log" if logy else "linear")
    ax2 = axl.twinx()
    ax2.plot(x, rms, **styles[2])
    _bare_axes(axl)
    _bare_axes(ax2)
    ypos, ytext = _log_ticks(*axl.get_ylim()) if logy else (None, None)
    w = max([len("step/role")] + [len(t) for t in ticks])
    table = [f"{'step/role':<{w}} {'snr':>7} {'DR':>7} {'rms mJy':>8} {'peak mJy':>8}",
             "-" * (w + 34)]
    table += [f"{t:<{w}} {s:7.1f} {d:7.1f} {r:8.3g} {1e3 * float_or_nan(row.get('peak')):8.3g}"
              for t, s, d, r, row in list(zip(ticks, snr, dr, rms, rows, strict=True))[-25:]]
    return (_ticks(axl, "x", list(x), ticks, size=7, angle=45)
            + _ticks(axl, "y", ypos, ytext) + _ticks(ax2, "y", right=True)
            + _legend(axl, list(zip(styles, ["snr (peak / rms_offsource)", "dynamic_range",
                                             "rms_offsource"], strict=True)), 0.01, 0.985, 0.4, size=7)
            + [Label(0.0, 0.5, "snr / dynamic range", 10, angle=90, dx=-42, frac=True, ax=axl),
               Label(1.0, 0.5, "rms_offsource (mJy/beam)", 10, color="tab:red", angle=90,
                     dx=45, frac=True, ax=ax2),
               Label(0.655, 0.45, "\n".join(table), 7.5, "la", ax=fig, mono=True)])


def plot_summary(out_png: str | Path, rows: list[dict[str, Any]],
                 images: Mapping[str, str | Path | None]) -> Path:
    """Per-dataset summary: image cutouts (shared scale), snr/DR/rms per step, a table.

    ``rows`` are image_properties rows in order (keys step, role, snr, dynamic_range,
    rms_offsource, peak; with ``path``, their statistics spare re-analysing the images);
    ``images`` maps a panel label (e.g. 'initial') to a FITS path; missing -> placeholder.
    """
    names = list(images) or ["image"]
    cuts = {lab: (_load_cutout(p, rows) if p is not None else None)
            for lab, p in images.items()}
    present = [c for c in cuts.values() if c is not None]
    lims = _norm(present) if present else None

    width = max(4.2 * len(names), 11)
    fig = Figure(figsize=(width, 9.5), dpi=100)
    left, right, gap = 0.6 / width, 1.0 - 1.5 / width, 0.5 / width
    w = (right - left - gap * (len(names) - 1)) / len(names)
    labels: list[Label] = []
    for i, lab in enumerate(names):
        ax = _bare_axes(fig.add_axes((left + i * (w + gap), 0.53, w, 0.42)))
        cut = cuts.get(lab)
        if cut is None or lims is None:
            ax.set_box_aspect(1.0)
            labels.append(Label(0.5, 0.5, f"{lab}: missing", 10, frac=True, ax=ax))
            continue
        _draw_cutout(ax, cut, lims)
        st = cut["stats"]
        title = f"{lab}: peak {1e3 * float_or_nan(st['peak']):.3g} mJy/bm, SNR {float_or_nan(st['snr']):.1f}"
        labels += _ticks(ax, "x", size=7) + _ticks(ax, "y", size=7) + [
            Label(0.5, 1.0, title, 8.3, "md", dy=4, frac=True, ax=ax),
            Label(0.5, 0.0, f"offset ({cut['unit']})", 8.3, "ma", dy=-16, frac=True, ax=ax)]
    if lims is not None:
        labels += _colorbar(fig, (right + 0.2 / width, 0.57, 0.18 / width, 0.34), lims)
    labels += _steps_plot(fig, rows)
    return save_png_labelled(fig, fig.axes[0], labels, out_png)


def thumbnail(image_fits: str | Path, out_png: str | Path, size_px: int = 200) -> Path:
    """Square ``size_px`` PNG of the image around its peak (asinh stretch, beam drawn)."""
    cut = _load_cutout(image_fits)
    if cut is None:
        raise FileNotFoundError(f"cannot read image {image_fits}")
    fig = Figure(figsize=(size_px / 100.0, size_px / 100.0))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    _draw_cutout(ax, cut, _norm([cut]))
    ax.set_axis_off()
    return save_png(fig, out_png, dpi=100)
