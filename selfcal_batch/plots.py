"""Diagnostic PNGs: solution-SNR histograms, gain tables, per-dataset summaries, thumbnails.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly (no pyplot
global state), so plotting is safe in Dask worker threads. Caltables are read with
python-casacore (``casacore.tables``), never casatools. Every PNG is written atomically.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.visualization import AsinhStretch, ImageNormalize
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from .imstats import array_statistics, read_image

log = logging.getLogger(__name__)

_POL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


# --------------------------------------------------------------------------- helpers
def save_png(fig: Figure, out_png: str | Path, dpi: int = 100) -> Path:
    """Render ``fig`` to ``out_png`` atomically (temporary file, then rename)."""
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    FigureCanvasAgg(fig)
    try:
        fig.savefig(tmp, format="png", dpi=dpi)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _message_figure(out_png: str | Path, text: str, size: tuple[float, float] = (6, 4)) -> Path:
    fig = Figure(figsize=size)
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    return save_png(fig, out_png)


def _read_caltable(caltable: str | Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of a caltable as numpy arrays (empty dict for a table without rows)."""
    from casacore.tables import table

    with table(str(caltable), ack=False) as t:
        if t.nrows() == 0:
            return {}
        return {c: np.asarray(t.getcol(c)) for c in columns}


def _antenna_name_map(caltable: str | Path, ids: Sequence[int],
                      antenna_names: Sequence[str] | None) -> dict[int, str]:
    """Antenna id -> name, by id (row of the ANTENNA subtable); 'ant<id>' when unknown."""
    names: list[str] = list(antenna_names) if antenna_names is not None else []
    if antenna_names is None:
        sub = Path(caltable) / "ANTENNA"
        if sub.is_dir():
            from casacore.tables import table

            try:
                with table(str(sub), ack=False) as t:
                    names = [str(n) for n in t.getcol("NAME")]
            except RuntimeError as exc:
                log.warning("%s: cannot read ANTENNA subtable: %s", caltable, exc)
    return {int(i): (names[i] if 0 <= i < len(names) and names[i] else f"ant{i}")
            for i in ids}


def _as_points(arr: np.ndarray) -> np.ndarray:
    """(nrow, [nchan,] npol) caltable cell data -> (nrow, nchan, npol)."""
    if arr.ndim == 2:
        return arr[:, None, :]
    if arr.ndim == 3:
        return arr
    raise ValueError(f"unexpected caltable column shape {arr.shape}")


# --------------------------------------------------------------------------- caltables
def plot_solution_snr_hist(caltable: str | Path, out_png: str | Path,
                           minsnr: float) -> dict[str, float]:
    """Histogram of the SNR column (all solutions), dashed lines at 3 and ``minsnr``.

    Returns ``frac_below_minsnr`` (finite SNR ≤ minsnr), ``frac_flagged`` (FLAG fraction),
    ``n_solutions`` and ``median_snr``.
    """
    cols = _read_caltable(caltable, ("SNR", "FLAG"))
    name = Path(caltable).name
    if not cols:
        _message_figure(out_png, f"{name}: no solutions")
        return {"frac_below_minsnr": float("nan"), "frac_flagged": float("nan"),
                "n_solutions": 0, "median_snr": float("nan")}
    snr = cols["SNR"].astype(np.float64).ravel()
    flag = cols["FLAG"].astype(bool).ravel()
    vals = snr[np.isfinite(snr)]
    frac_below = float(np.mean(vals <= minsnr)) if vals.size else float("nan")
    frac_flag = float(np.mean(flag)) if flag.size else float("nan")
    med = float(np.median(vals)) if vals.size else float("nan")

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    if vals.size:
        ax.hist(vals, bins=50, histtype="step", density=True, color="k")
    ax.axvline(3.0, ls="--", color="tab:gray", label="SNR = 3")
    ax.axvline(minsnr, ls="--", color="tab:red", label=f"minsnr = {minsnr:g}")
    ax.text(0.97, 0.95, f"{100 * frac_below:.1f}% ≤ minsnr\n{100 * frac_flag:.1f}% flagged\n"
            f"N = {snr.size}", transform=ax.transAxes, ha="right", va="top")
    ax.set_xlabel("solution SNR")
    ax.set_ylabel("density")
    ax.set_title(name)
    ax.legend(loc="center right", fontsize="small")
    fig.tight_layout()
    save_png(fig, out_png)
    return {"frac_below_minsnr": frac_below, "frac_flagged": frac_flag,
            "n_solutions": int(snr.size), "median_snr": med}


def plot_gains(caltable: str | Path, out_png: str | Path,
               antenna_names: list[str] | None = None,
               amplitude: bool = False) -> dict[str, float]:
    """Gain phase (deg) vs time, one panel per antenna, each polarization; flagged excluded.

    With ``amplitude=True`` each antenna also gets an amplitude panel below its phase
    panel. ``antenna_names`` is indexed by antenna id (default: the caltable's ANTENNA
    subtable). Returns ``n_antennas``, ``n_points`` (unflagged) and ``frac_flagged``.
    """
    cols = _read_caltable(caltable, ("TIME", "ANTENNA1", "CPARAM", "FLAG"))
    name = Path(caltable).name
    if not cols:
        _message_figure(out_png, f"{name}: no solutions")
        return {"n_antennas": 0, "n_points": 0, "frac_flagged": float("nan")}
    gains = _as_points(cols["CPARAM"])
    flags = _as_points(cols["FLAG"]).astype(bool)
    ant = cols["ANTENNA1"].astype(int)
    hours = (cols["TIME"] - np.min(cols["TIME"])) / 3600.0
    ids = sorted({int(a) for a in ant})
    label = _antenna_name_map(caltable, ids, antenna_names)
    npol = gains.shape[2]
    phase = np.angle(gains, deg=True)
    amp = np.abs(gains)
    t = np.broadcast_to(hours[:, None, None], gains.shape)

    ncols = max(1, math.ceil(math.sqrt(len(ids))))
    nrows = math.ceil(len(ids) / ncols)
    per = 2 if amplitude else 1
    fig = Figure(figsize=(2.6 * ncols + 0.5, (1.9 * per) * nrows + 0.8))
    axes = fig.subplots(nrows * per, ncols, sharex=True, squeeze=False)
    amp_max = float(np.max(amp[~flags])) if np.any(~flags) else 1.0
    for k, aid in enumerate(ids):
        r, c = divmod(k, ncols)
        axp = axes[r * per, c]
        rowsel = ant == aid
        for p in range(npol):
            good = ~flags[rowsel][..., p]
            tp = t[rowsel][..., p][good]
            axp.plot(tp, phase[rowsel][..., p][good], ".", ms=2.5,
                     color=_POL_COLORS[p % 4], label=f"pol {p}")
            if amplitude:
                axes[r * per + 1, c].plot(tp, amp[rowsel][..., p][good], ".", ms=2.5,
                                          color=_POL_COLORS[p % 4])
        axp.set_ylim(-180, 180)
        axp.set_yticks([-180, -90, 0, 90, 180])
        axp.set_title(label[aid], fontsize="small")
        axp.tick_params(labelsize="x-small")
        if amplitude:
            axa = axes[r * per + 1, c]
            axa.set_ylim(0, max(1.1 * amp_max, 1e-6))
            axa.tick_params(labelsize="x-small")
            if c == 0:
                axa.set_ylabel("amp", fontsize="small")
        if c == 0:
            axp.set_ylabel("phase (deg)", fontsize="small")
    for k in range(len(ids), nrows * ncols):
        r, c = divmod(k, ncols)
        for j in range(per):
            axes[r * per + j, c].set_axis_off()
    for c in range(ncols):
        axes[-1, c].set_xlabel("time (h)", fontsize="small")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize="small", markerscale=3)
    fig.suptitle(f"{name}: {'phase & amplitude' if amplitude else 'phase'}")
    fig.tight_layout()
    save_png(fig, out_png)
    return {"n_antennas": len(ids), "n_points": int(np.count_nonzero(~flags)),
            "frac_flagged": float(np.mean(flags))}


# --------------------------------------------------------------------------- images
def _load_cutout(path: str | Path) -> dict[str, Any] | None:
    """Read an image, compute its stats and cut out max(64 px, 4·C95radii) around the peak."""
    try:
        img, header = read_image(path)
    except (OSError, ValueError) as exc:
        log.warning("cannot read image %s: %s", path, exc)
        return None
    st = array_statistics(img, header)
    ny, nx = img.shape
    px = int(st["peak_x"]) if np.isfinite(_num(st["peak_x"])) else nx // 2
    py = int(st["peak_y"]) if np.isfinite(_num(st["peak_y"])) else ny // 2
    c95 = _num(st["C95radii"])
    half = max(32, int(math.ceil(2 * c95)) if np.isfinite(c95) else 32)
    x0, x1 = max(px - half, 0), min(px + half + 1, nx)
    y0, y1 = max(py - half, 0), min(py + half + 1, ny)
    cell = _num(st["cell_arcsec"])
    scale = cell if np.isfinite(cell) and cell > 0 else 1.0
    extent = ((x0 - px - 0.5) * scale, (x1 - px - 0.5) * scale,
              (y0 - py - 0.5) * scale, (y1 - py - 0.5) * scale)
    return {"data": img[y0:y1, x0:x1], "stats": st, "extent": extent, "scale": scale,
            "unit": "arcsec" if scale != 1.0 else "px"}


def _norm(cuts: Sequence[dict[str, Any]]) -> ImageNormalize:
    """One asinh normalization shared by all cutouts: -3·rms .. max peak."""
    peaks = [_num(c["stats"]["peak"]) for c in cuts]
    rmss = [_num(c["stats"]["rms_offsource"]) for c in cuts]
    peaks = [p for p in peaks if np.isfinite(p)]
    rmss = [r for r in rmss if np.isfinite(r) and r > 0]
    vmax = max(peaks) if peaks else 1.0
    vmin = -3.0 * max(rmss) if rmss else -0.01 * abs(vmax)
    if not vmax > vmin:
        vmax = vmin + 1.0
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(0.05), clip=True)


def _draw_cutout(ax: Any, cut: dict[str, Any], norm: ImageNormalize) -> Any:
    im = ax.imshow(cut["data"], origin="lower", cmap="inferno", norm=norm,
                   extent=cut["extent"], interpolation="nearest")
    st = cut["stats"]
    bmaj, bmin = _num(st["bmaj_arcsec"]), _num(st["bmin_arcsec"])
    bpa = _num(st["bpa_deg"])
    if np.isfinite(bmaj) and np.isfinite(bmin):
        f = 1.0 if cut["unit"] == "arcsec" else 1.0 / max(_num(st["cell_arcsec"]), 1e-30)
        x0, x1, y0, y1 = cut["extent"]
        w, h = bmin * f, bmaj * f
        pad = 0.6 * max(w, h)
        ax.add_patch(Ellipse((x0 + pad, y0 + pad), width=w, height=h,
                             angle=bpa if np.isfinite(bpa) else 0.0,
                             facecolor="none", edgecolor="cyan", lw=1.2))
    return im


def plot_summary(out_png: str | Path, rows: list[dict[str, Any]],
                 images: Mapping[str, str | Path | None]) -> Path:
    """Per-dataset summary: image cutouts (shared scale), snr/DR/rms per step, a table.

    ``rows`` are image_properties rows in order (keys step, role, snr, dynamic_range,
    rms_offsource, peak); ``images`` maps a panel label (e.g. 'initial', 'final') to a FITS
    path. Missing or unreadable images become placeholder panels.
    """
    labels = list(images) or ["image"]
    cuts = {lab: (_load_cutout(p) if p is not None and Path(p).exists() else None)
            for lab, p in images.items()}
    present = [c for c in cuts.values() if c is not None]
    norm = _norm(present) if present else None

    fig = Figure(figsize=(max(4.2 * len(labels), 11), 9.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.15, 1.0])
    axes = top.subplots(1, len(labels), squeeze=False)[0]
    im = None
    for ax, lab in zip(axes, labels):
        cut = cuts.get(lab)
        if cut is None or norm is None:
            ax.text(0.5, 0.5, f"{lab}: missing", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_box_aspect(1.0)
            continue
        im = _draw_cutout(ax, cut, norm)
        st = cut["stats"]
        ax.set_title(f"{lab}: peak {1e3 * _num(st['peak']):.3g} mJy/bm, "
                     f"SNR {_num(st['snr']):.1f}", fontsize="small")
        ax.set_xlabel(f"offset ({cut['unit']})", fontsize="small")
        ax.tick_params(labelsize="x-small")
    if im is not None and norm is not None:
        vmin, vmax = float(norm.vmin), float(norm.vmax)
        ticks = [t for t in (vmin, 0.0, 0.01 * vmax, 0.1 * vmax, 0.4 * vmax, vmax)
                 if vmin <= t <= vmax]
        cb = top.colorbar(im, ax=list(axes), shrink=0.85, label="Jy/beam", ticks=ticks)
        cb.ax.set_yticklabels([f"{t:.2g}" for t in ticks])

    axl, axt = bottom.subplots(1, 2, width_ratios=[3, 2])
    if rows:
        x = np.arange(len(rows))
        ticks = [f"{r.get('step', '?')}/{r.get('role', '?')}" for r in rows]
        snr = np.array([_num(r.get("snr")) for r in rows])
        dr = np.array([_num(r.get("dynamic_range")) for r in rows])
        rms = np.array([_num(r.get("rms_offsource")) for r in rows]) * 1e3
        axl.plot(x, snr, "o-", label="snr (peak / rms_offsource)")
        axl.plot(x, dr, "s--", label="dynamic_range", alpha=0.7)
        good = np.concatenate([snr, dr])
        good = good[np.isfinite(good)]
        if good.size and np.all(good > 0):
            axl.set_yscale("log")
        axl.set_ylabel("snr / dynamic range")
        ax2 = axl.twinx()
        ax2.plot(x, rms, "^:", color="tab:red", label="rms_offsource")
        ax2.set_ylabel("rms_offsource (mJy/beam)", color="tab:red")
        axl.set_xticks(x)
        axl.set_xticklabels(ticks, rotation=45, ha="right", fontsize="x-small")
        h1, l1 = axl.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        axl.legend(h1 + h2, l1 + l2, fontsize="x-small", loc="best")
        cell = [[t, f"{s:.1f}", f"{d:.1f}", f"{r:.3g}", f"{1e3 * _num(row.get('peak')):.3g}"]
                for t, s, d, r, row in zip(ticks, snr, dr, rms, rows)]
        tab = axt.table(cellText=cell[-25:], loc="center",
                        colLabels=["step/role", "snr", "DR", "rms mJy", "peak mJy"])
        tab.auto_set_font_size(False)
        tab.set_fontsize(7)
        tab.scale(1.0, 1.1)
    else:
        axl.text(0.5, 0.5, "no image statistics", ha="center", va="center",
                 transform=axl.transAxes)
    axt.set_axis_off()
    return save_png(fig, out_png)


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
