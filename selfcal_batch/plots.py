"""Diagnostic PNGs: solution-SNR histograms, gain tables, per-dataset summaries, thumbnails.

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly (no pyplot
global state), so plotting is safe in Dask worker threads. Caltables are read with
python-casacore (``casacore.tables``), never casatools. Every PNG is written atomically.

These run once per dataset and must stay cheap (~0.5 s for all of a dataset's PNGs):
fixed axes positions (no tight/constrained layout); the per-antenna gain panels are small
multiples on ONE Axes; ticks are marker lines and all texts are drawn by PIL on the Agg
buffer (:class:`Label`; a matplotlib Text or Tick costs ~0.5 ms, a PIL text ~0.05 ms);
image cutouts are cached per file, so the summary and the thumbnails read each image once
(only the cutout, memory-mapped, when the pipeline's statistics rows describe the image).
"""
from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import TICKDOWN, TICKLEFT, TICKRIGHT
from matplotlib.patches import Ellipse, Rectangle
from matplotlib.ticker import MaxNLocator, NullLocator

from .imstats import array_statistics, read_image

log = logging.getLogger(__name__)

_POL_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")
#: zlib level of the PNGs (PIL's default 6 costs ~40 % more time for ~10 % smaller files).
PNG_COMPRESS_LEVEL = 3


# --------------------------------------------------------------------------- rendering
def _atomic_write(out_png: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` and rename ``tmp`` to ``out_png`` (no partial PNG is ever seen)."""
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.{threading.get_ident()}")
    try:
        write(tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def save_png(fig: Figure, out_png: str | Path, dpi: int = 100) -> Path:
    """Render ``fig`` to ``out_png`` atomically (temporary file, then rename)."""
    FigureCanvasAgg(fig)
    return _atomic_write(out_png, lambda tmp: fig.savefig(
        tmp, format="png", dpi=dpi, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL}))


class Label(NamedTuple):
    """A text drawn by PIL on the rendered figure (see :func:`save_png_labelled`).

    (``x``, ``y``) are data coordinates of ``ax`` (axes fractions with ``frac``), shifted
    by ``dx``, ``dy`` points (y up). ``anchor`` is PIL's ('ma' = middle/ascender, 'rm' =
    right/middle, ...); a text turned by ``angle`` degrees is anchored by its bounding box
    ('rt' = right/top). ``ax=None`` means the Axes given to save_png_labelled.
    """

    x: float
    y: float
    text: str
    size: float = 9.0
    anchor: str = "mm"
    color: str = "black"
    angle: float = 0.0
    dx: float = 0.0
    dy: float = 0.0
    frac: bool = False
    ax: Any = None
    mono: bool = False


_TLS = threading.local()


def _font(size_px: int, mono: bool = False) -> Any:
    """DejaVu Sans (Mono), matplotlib's default fonts, at ``size_px`` pixels; per thread."""
    cache = _TLS.__dict__.setdefault("fonts", {})
    font = cache.get((size_px, mono))
    if font is None:
        from PIL import ImageFont

        name = "DejaVuSansMono.ttf" if mono else "DejaVuSans.ttf"
        try:
            font = ImageFont.truetype(str(Path(matplotlib.get_data_path(), "fonts", "ttf", name)),
                                      size_px)
        except OSError:
            font = ImageFont.load_default(size_px)
        cache[(size_px, mono)] = font
    return font


def save_png_labelled(fig: Figure, ax: Any, labels: Sequence[Label],
                      out_png: str | Path) -> Path:
    """Render ``fig`` with Agg, draw ``labels`` with PIL, write an RGB PNG atomically."""
    from PIL import Image, ImageDraw

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    img = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    draw = ImageDraw.Draw(img)
    pt = fig.dpi / 72.0
    for lb in labels:
        a = lb.ax if lb.ax is not None else ax
        x, y = (a.transAxes if lb.frac else a.transData).transform((lb.x, lb.y))
        px, py = float(x) + lb.dx * pt, img.height - float(y) - lb.dy * pt
        font, fill = _font(max(6, round(lb.size * pt)), lb.mono), to_hex(lb.color)
        if lb.angle:
            _, _, right, bottom = font.getbbox(lb.text, anchor="lt")
            tile = Image.new("L", (max(right, 1), max(bottom, 1)))
            ImageDraw.Draw(tile).text((0, 0), lb.text, font=font, fill=255, anchor="lt")
            tile = tile.rotate(lb.angle, expand=True, resample=Image.Resampling.BILINEAR)
            fx = {"l": 0.0, "m": 0.5, "r": 1.0}[lb.anchor[0]]
            fy = {"t": 0.0, "a": 0.0, "m": 0.5}.get(lb.anchor[1], 1.0)
            draw.bitmap((round(px - fx * tile.width), round(py - fy * tile.height)), tile,
                        fill=fill)
        else:
            align = {"l": "left", "m": "center", "r": "right"}[lb.anchor[0]]
            draw.text((px, py), lb.text, fill=fill, font=font, anchor=lb.anchor, align=align)
    dpi = round(fig.dpi)
    return _atomic_write(out_png, lambda tmp: img.save(
        tmp, format="png", compress_level=PNG_COMPRESS_LEVEL, dpi=(dpi, dpi)))


def _bare_axes(ax: Any) -> Any:
    """Remove the tick machinery of ``ax`` (frame kept); ticks then come from :func:`_ticks`."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(NullLocator())
        axis.set_minor_locator(NullLocator())
    return ax


def _nice(lo: float, hi: float, nbins: int) -> list[float]:
    """'Nice' tick values inside [lo, hi]."""
    a, b = min(lo, hi), max(lo, hi)
    return [float(t) for t in MaxNLocator(nbins=nbins).tick_values(a, b) if a <= t <= b]


def _ticks(ax: Any, which: str, pos: Sequence[float], texts: Sequence[str], size: float = 10,
           right: bool = False, angle: float = 0.0) -> list[Label]:
    """Outward tick marks at data positions ``pos`` of the x (bottom) or y (left/right)
    axis of ``ax`` (limits are frozen first), and the :class:`Label` s of non-empty texts."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    style = {"ls": "none", "ms": 3.5, "mew": 0.8, "color": "k", "clip_on": False}
    if which == "x":
        ax.plot(pos, [0.0] * len(pos), marker=TICKDOWN, transform=ax.get_xaxis_transform(),
                **style)
        return [Label(p, y0, t, size, "rt" if angle else "ma", angle=angle, dy=-5, ax=ax)
                for p, t in zip(pos, texts) if t]
    ax.plot([1.0 if right else 0.0] * len(pos), pos, marker=TICKRIGHT if right else TICKLEFT,
            transform=ax.get_yaxis_transform(), **style)
    return [Label(x1 if right else x0, p, t, size, "lm" if right else "rm",
                  dx=5 if right else -5, ax=ax) for p, t in zip(pos, texts) if t]


def _legend(ax: Any, entries: Sequence[tuple[dict[str, Any], str]], x: float, y: float,
            width: float, size: float = 8) -> list[Label]:
    """A legend box whose top-left corner is at axes fraction (x, y): samples + labels."""
    step = 0.075
    ax.add_patch(Rectangle((x, y - step * len(entries) - 0.02), width,
                           step * len(entries) + 0.02, transform=ax.transAxes,
                           facecolor="white", edgecolor="0.8", alpha=0.8, zorder=5))
    labels = []
    for i, (style, text) in enumerate(entries):
        yy = y - step * (i + 0.5) - 0.01
        ax.plot([x + 0.015, x + 0.045, x + 0.075], [yy] * 3, transform=ax.transAxes,
                markevery=[1], zorder=6, **style)
        labels.append(Label(x + 0.09, yy, text, size, "lm", frac=True, ax=ax))
    return labels


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _message_figure(out_png: str | Path, text: str, size: tuple[float, float] = (6, 4)) -> Path:
    fig = Figure(figsize=size)
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return save_png(fig, out_png)


def _read_caltable(caltable: str | Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of a caltable as numpy arrays (empty dict for a table without rows)."""
    from casacore.tables import table

    with table(str(caltable), ack=False) as t:
        if t.nrows() == 0:
            return {}
        return {c: np.asarray(t.getcol(c)) for c in columns}


def _read_or_message(caltable: str | Path, columns: Sequence[str],
                     out_png: str | Path) -> dict[str, np.ndarray]:
    """:func:`_read_caltable`; on no rows or an unreadable table write a message PNG, return {}."""
    name = Path(caltable).name
    try:
        cols = _read_caltable(caltable, columns)
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
    cols = _read_or_message(caltable, ("SNR", "FLAG"), out_png)
    name = Path(caltable).name
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
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    xt, yt = _nice(x0, x1, 9), _nice(y0, y1, 8)
    labels = (_ticks(ax, "x", xt, [f"{t:g}" for t in xt])
              + _ticks(ax, "y", yt, [f"{t:g}" for t in yt])
              + _legend(ax, [({"ls": "--", "color": "tab:gray"}, "SNR = 3"),
                             ({"ls": "--", "color": "tab:red"}, f"minsnr = {minsnr:g}")],
                        0.76, 0.57, 0.225))
    labels += [Label(0.5, 0.0, "solution SNR", 10, "ma", dy=-20, frac=True),
               Label(0.0, 0.5, "density", 10, "mm", angle=90, dx=-40, frac=True),
               Label(0.5, 1.0, name, 12, "md", dy=6, frac=True),
               Label(0.97, 0.95, f"{100 * frac_below:.1f}% ≤ minsnr\n{100 * frac_flag:.1f}% "
                     f"flagged\nN = {snr.size}", 10, "ra", frac=True)]
    save_png_labelled(fig, ax, labels, out_png)
    return {"frac_below_minsnr": frac_below, "frac_flagged": frac_flag,
            "n_solutions": int(snr.size), "median_snr": med}


# Small-multiples geometry of plot_gains, in data units of its single Axes: a panel is
# 1 x 1; cells are separated by _GAP_X / _GAP_Y; one unit is _UNIT_W x _UNIT_H inches.
_GAP_X, _GAP_Y = 0.17, 0.42
_UNIT_W, _UNIT_H = 1.85, 1.05
_MARGIN_L, _MARGIN_R, _MARGIN_T, _MARGIN_B = 0.36, 0.03, 0.55, 0.40
_PHASE_TICKS = (-180.0, -90.0, 0.0, 90.0, 180.0)


def _time_axis(hours: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Shared time range (h, with 4 % margins) and its 'nice' tick values."""
    h0, h1 = float(np.nanmin(hours)), float(np.nanmax(hours))
    if not h1 > h0:
        h0, h1 = h0 - 0.05, h1 + 0.05
    pad = 0.04 * (h1 - h0)
    lo, hi = h0 - pad, h1 + pad
    ticks = MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]).tick_values(h0, h1)
    return lo, hi, ticks[(ticks >= lo - 1e-9) & (ticks <= hi + 1e-9)]


def _panel_lines(nant: int, ncols: int, per: int, xt: np.ndarray,
                 yticks: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames + tick marks, and light horizontal guide lines, of every gain panel.

    ``xt``: time tick positions within a panel (0..1); ``yticks[j]``: tick positions (0..1)
    of the j-th panel of a cell (phase, then amplitude).
    """
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
               amplitude: bool = False) -> dict[str, float]:
    """Gain phase (deg) vs time, one panel per antenna, each polarization; flagged excluded.

    With ``amplitude=True`` each antenna also gets an amplitude panel below its phase
    panel. ``antenna_names`` is indexed by antenna id (default: the caltable's ANTENNA
    subtable). Returns ``n_antennas``, ``n_points`` (unflagged) and ``frac_flagged``.
    The panels are small multiples drawn on one Axes (shared time axis, phase -180..180,
    amplitude 0..1.1·max), tick-labelled on the left column and under each column.
    """
    cols = _read_or_message(caltable, ("TIME", "ANTENNA1", "CPARAM", "FLAG"), out_png)
    name = Path(caltable).name
    if not cols:
        return {"n_antennas": 0, "n_points": 0, "frac_flagged": float("nan")}
    gains = _as_points(cols["CPARAM"])
    flags = _as_points(cols["FLAG"]).astype(bool)
    ant = cols["ANTENNA1"].astype(int)
    hours = (cols["TIME"] - np.min(cols["TIME"])) / 3600.0
    ids = np.unique(ant)
    label = _antenna_name_map(caltable, ids.tolist(), antenna_names)
    npol, nant = gains.shape[2], len(ids)
    good = ~flags
    amp = np.abs(gains)
    finite_amp = amp[good & np.isfinite(amp)]
    amp_lim = max(1.1 * float(np.max(finite_amp)), 1e-6) if finite_amp.size else 1.1
    amp_ticks = MaxNLocator(nbins=3).tick_values(0.0, amp_lim)
    amp_ticks = amp_ticks[(amp_ticks >= 0) & (amp_ticks <= amp_lim)]
    t_lo, t_hi, t_ticks = _time_axis(hours)
    xt = (t_ticks - t_lo) / (t_hi - t_lo)

    ncols = max(1, math.ceil(math.sqrt(nant)))
    nrows = math.ceil(nant / ncols)
    per = 2 if amplitude else 1
    step_x, step_y = 1.0 + _GAP_X, per + _GAP_Y
    # every solution -> its antenna's cell (column c, row r): panel x0..x0+1, ytop-1..ytop
    k = np.searchsorted(ids, ant)
    x0 = ((k % ncols) * step_x)[:, None, None]
    ytop = (-(k // ncols) * step_y)[:, None, None]
    tx = np.broadcast_to(x0 + ((hours - t_lo) / (t_hi - t_lo))[:, None, None], gains.shape)
    yp = ytop - 1.0 + (np.angle(gains, deg=True) + 180.0) / 360.0
    ya = ytop - 2.0 + amp / amp_lim

    width = ncols * step_x - _GAP_X
    xlim = (-_MARGIN_L, width + _MARGIN_R)
    ylim = (-(nrows - 1) * step_y - per - _MARGIN_B, _MARGIN_T)
    fig = Figure(figsize=((xlim[1] - xlim[0]) * _UNIT_W, (ylim[1] - ylim[0]) * _UNIT_H),
                 dpi=100)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    yticks = [(np.asarray(_PHASE_TICKS) + 180.0) / 360.0, amp_ticks / amp_lim]
    frames, guides = _panel_lines(nant, ncols, per, xt, yticks)
    ax.add_collection(LineCollection(guides, colors="0.85", linewidths=0.6, zorder=1))
    ax.add_collection(LineCollection(frames, colors="k", linewidths=0.8, zorder=3))

    # the data: one marker artist per polarization (phase and amplitude points together)
    labels: list[Label] = []
    for p in range(npol):
        sel = good[..., p]
        xs, ys = tx[..., p][sel], yp[..., p][sel]
        if amplitude:
            xs, ys = np.concatenate([xs, xs]), np.concatenate([ys, ya[..., p][sel]])
        color = _POL_COLORS[p % 4]
        ax.plot(xs, ys, ".", ms=2.5, color=color, zorder=2)
        lx = width - 0.45 * (npol - 1 - p) - 0.33  # legend entry, top right
        ax.plot([lx], [_MARGIN_T - 0.22], "o", ms=5, color=color)
        labels.append(Label(lx + 0.04, _MARGIN_T - 0.22, f"pol {p}", 9, "lm"))

    # labels: title, antenna names, tick labels (left column; under each column's last cell)
    labels.append(Label(width / 2, _MARGIN_T - 0.08, f"{name}: "
                        f"{'phase & amplitude' if amplitude else 'phase'}", 12, "ma"))
    for kk, aid in enumerate(ids.tolist()):
        r, c = divmod(kk, ncols)
        labels.append(Label(c * step_x + 0.5, -r * step_y + 0.03, label[aid], 9, "md"))
    for r in range(nrows):
        for j in range(per):
            yb = -r * step_y - 1.0 - j
            text = [f"{v:g}" for v in _PHASE_TICKS] if j == 0 else [f"{a:.3g}" for a in amp_ticks]
            labels.extend(Label(-0.025, yb + v, s, 7, "rm") for v, s in zip(yticks[j], text)
                          if j == 0 or v < 0.9)  # (no clash with the phase panel's -180)
            labels.append(Label(-_MARGIN_L + 0.07, yb + 0.5, "phase (deg)" if j == 0 else "amp",
                                9, angle=90))
    for c in range(min(ncols, nant)):
        x0c, yb = c * step_x, -((nant - 1 - c) // ncols) * step_y - per
        labels.extend(Label(x0c + v, yb - 0.03, f"{t:g}", 7, "ma") for v, t in zip(xt, t_ticks))
        labels.append(Label(x0c + 0.5, yb - 0.17, "time (h)", 9, "ma"))
    save_png_labelled(fig, ax, labels, out_png)
    return {"n_antennas": nant, "n_points": int(np.count_nonzero(good)),
            "frac_flagged": float(np.mean(flags))}


# --------------------------------------------------------------------------- images
_CUT_KEYS = ("peak", "peak_x", "peak_y", "C95radii", "rms_offsource", "snr",
             "bmaj_arcsec", "bmin_arcsec", "bpa_deg", "cell_arcsec")
_CUTOUTS: OrderedDict[tuple[str, int, int], dict[str, Any]] = OrderedDict()
_CUTOUTS_LOCK = threading.Lock()
_CUTOUTS_MAX = 8


def _file_key(path: str | Path) -> tuple[str, int, int] | None:
    """(real path, mtime_ns, size): identifies one version of a file; None if missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_mtime_ns, st.st_size)


def _row_stats(path: str | Path, rows: Sequence[Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """Statistics of ``path`` from the last image_properties row naming it (relative or not)."""
    target = Path(path).as_posix()
    for row in reversed(rows or ()):
        rp = str(row.get("path") or "")
        if not rp:
            continue
        rp = rp[2:] if rp.startswith("./") else rp
        if target == rp or target.endswith("/" + rp) or (
                os.path.isabs(rp) and os.path.realpath(rp) == os.path.realpath(path)):
            st = {k: row.get(k) for k in _CUT_KEYS}
            if np.isfinite(_num(st["peak_x"])) and np.isfinite(_num(st["peak_y"])):
                return st
            return None
    return None


def _cutout_box(st: Mapping[str, Any], nx: int, ny: int) -> tuple[int, int, int, int, int, int]:
    """(x0, x1, y0, y1, px, py): max(64 px, 4·C95radii) around the peak, inside the image."""
    px = int(_num(st["peak_x"])) if np.isfinite(_num(st["peak_x"])) else nx // 2
    py = int(_num(st["peak_y"])) if np.isfinite(_num(st["peak_y"])) else ny // 2
    c95 = _num(st["C95radii"])
    half = max(32, int(math.ceil(2 * c95)) if np.isfinite(c95) else 32)
    return (max(px - half, 0), min(px + half + 1, nx), max(py - half, 0),
            min(py + half + 1, ny), px, py)


def _read_box(path: str | Path, box: Callable[[int, int], tuple[int, ...]]
              ) -> tuple[np.ndarray, tuple[int, ...]]:
    """Memory-mapped read of the cutout ``box(nx, ny)`` of the first image plane (NaN -> 0)."""
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        hdu = next((h for h in hdul if h.is_image and h.data is not None), None)
        if hdu is None or hdu.data.ndim < 2:
            raise ValueError(f"{path}: no 2-D image data in FITS file")
        data = hdu.data
        plane = data[(0,) * (data.ndim - 2)]
        b = box(plane.shape[1], plane.shape[0])
        cut = np.array(plane[b[2]:b[3], b[0]:b[1]], dtype=np.float64)
        del data, plane
    cut[~np.isfinite(cut)] = 0.0
    return cut, b


def _make_cutout(img: np.ndarray, st: Mapping[str, Any],
                 box: tuple[int, ...]) -> dict[str, Any]:
    x0, x1, y0, y1, px, py = box
    cell = _num(st["cell_arcsec"])
    scale = cell if np.isfinite(cell) and cell > 0 else 1.0
    extent = ((x0 - px - 0.5) * scale, (x1 - px - 0.5) * scale,
              (y0 - py - 0.5) * scale, (y1 - py - 0.5) * scale)
    return {"data": img, "stats": dict(st), "extent": extent, "scale": scale,
            "unit": "arcsec" if scale != 1.0 else "px"}


def _load_cutout(path: str | Path,
                 rows: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any] | None:
    """Cutout of max(64 px, 4·C95radii) around the image peak, with its statistics.

    With a statistics row for this image in ``rows`` only the cutout is read (memory-mapped);
    otherwise the whole image is read and analysed. Results are cached per file version,
    so the summary and the thumbnails of a dataset share one read.
    """
    key = _file_key(path)
    if key is None:
        log.warning("cannot read image %s: no such file", path)
        return None
    with _CUTOUTS_LOCK:
        if key in _CUTOUTS:
            _CUTOUTS.move_to_end(key)
            return _CUTOUTS[key]
    cut = None
    st = _row_stats(path, rows)
    if st is not None:
        try:
            data, box = _read_box(path, lambda nx, ny: _cutout_box(st, nx, ny))
            x0, _, y0, _, px, py = box
            inside = 0 <= py - y0 < data.shape[0] and 0 <= px - x0 < data.shape[1]
            if inside and np.isclose(data[py - y0, px - x0], _num(st["peak"]), rtol=1e-4):
                cut = _make_cutout(data, st, box)
            else:  # the row describes another version of the file
                log.debug("%s: statistics row does not match the image; recomputing", path)
        except (OSError, ValueError, IndexError) as exc:
            log.debug("cutout read of %s failed (%s); reading the whole image", path, exc)
    if cut is None:
        try:
            img, header = read_image(path)
        except (OSError, ValueError) as exc:
            log.warning("cannot read image %s: %s", path, exc)
            return None
        st = array_statistics(img, header)
        box = _cutout_box(st, img.shape[1], img.shape[0])
        cut = _make_cutout(img[box[2]:box[3], box[0]:box[1]].copy(), st, box)
    with _CUTOUTS_LOCK:
        _CUTOUTS[key] = cut
        while len(_CUTOUTS) > _CUTOUTS_MAX:
            _CUTOUTS.popitem(last=False)
    return cut


def _norm(cuts: Sequence[dict[str, Any]]) -> tuple[float, float]:
    """One (vmin, vmax) shared by all cutouts: -3·rms .. max peak."""
    peaks = [_num(c["stats"]["peak"]) for c in cuts]
    rmss = [_num(c["stats"]["rms_offsource"]) for c in cuts]
    peaks = [p for p in peaks if np.isfinite(p)]
    rmss = [r for r in rmss if np.isfinite(r) and r > 0]
    vmax = max(peaks) if peaks else 1.0
    vmin = -3.0 * max(rmss) if rmss else -0.01 * abs(vmax)
    if not vmax > vmin:
        vmax = vmin + 1.0
    return vmin, vmax


def _stretch(x: Any, lims: tuple[float, float], a: float = 0.05) -> np.ndarray:
    """Asinh stretch of ``x`` clipped to ``lims`` onto 0..1 (astropy AsinhStretch(a))."""
    vmin, vmax = lims
    z = np.clip((np.asarray(x, dtype=np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
    return np.arcsinh(z / a) / math.asinh(1.0 / a)


def _draw_cutout(ax: Any, cut: dict[str, Any], lims: tuple[float, float]) -> Any:
    im = ax.imshow(_stretch(cut["data"], lims), origin="lower", cmap="inferno", vmin=0.0,
                   vmax=1.0, extent=cut["extent"], interpolation="nearest")
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


def _colorbar(fig: Figure, im: Any, cax: Any, lims: tuple[float, float]) -> None:
    """Colorbar in Jy/beam of the stretched image, ticks at -3·rms, 0 and fractions of max."""
    vmin, vmax = lims
    ticks: list[float] = []
    for t in (vmin, 0.0, 0.01 * vmax, 0.1 * vmax, 0.4 * vmax, vmax):
        if vmin <= t <= vmax and all(abs(_stretch(t, lims) - _stretch(u, lims)) > 0.04
                                     for u in ticks):
            ticks.append(t)
    cb = fig.colorbar(im, cax=cax, label="Jy/beam")
    cb.set_ticks(list(_stretch(ticks, lims)), labels=[f"{t:.2g}" for t in ticks])


def _steps_table(ax: Any, ticks: Sequence[str], snr: np.ndarray, dr: np.ndarray,
                 rms: np.ndarray, rows: Sequence[Mapping[str, Any]]) -> None:
    """The per-step numbers as one monospace text block (last 25 rows)."""
    w = max([len("step/role")] + [len(t) for t in ticks])
    lines = [f"{'step/role':<{w}} {'snr':>7} {'DR':>7} {'rms mJy':>8} {'peak mJy':>8}",
             "-" * (w + 34)]
    for t, s, d, r, row in list(zip(ticks, snr, dr, rms, rows))[-25:]:
        lines.append(f"{t:<{w}} {s:7.1f} {d:7.1f} {r:8.3g} {1e3 * _num(row.get('peak')):8.3g}")
    ax.text(0.0, 0.5, "\n".join(lines), family="monospace", fontsize=7.5, ha="left",
            va="center", transform=ax.transAxes, linespacing=1.5)


def _plain_log_axis(ax: Any, lo: float, hi: float) -> None:
    """Log y axis with plain-number labels (the default 10^n labels cost a mathtext parse each)."""
    ax.set_yscale("log")
    few = hi / lo < 30.0  # within ~1.5 decades also label 2, 3 and 5 x 10^n

    def fmt(v: float, _pos: Any = None) -> str:
        m = v / 10 ** math.floor(math.log10(v) + 1e-9)
        return f"{v:g}" if round(m, 6) == 1 or (few and round(m, 6) in (2, 3, 5)) else ""

    ax.yaxis.set_major_formatter(FuncFormatter(fmt))
    ax.yaxis.set_minor_formatter(FuncFormatter(fmt))


def plot_summary(out_png: str | Path, rows: list[dict[str, Any]],
                 images: Mapping[str, str | Path | None]) -> Path:
    """Per-dataset summary: image cutouts (shared scale), snr/DR/rms per step, a table.

    ``rows`` are image_properties rows in order (keys step, role, snr, dynamic_range,
    rms_offsource, peak; with ``path`` and the image statistics they also spare re-analysing
    the images); ``images`` maps a panel label (e.g. 'initial', 'final') to a FITS path.
    Missing or unreadable images become placeholder panels.
    """
    labels = list(images) or ["image"]
    cuts = {lab: (_load_cutout(p, rows) if p is not None else None)
            for lab, p in images.items()}
    present = [c for c in cuts.values() if c is not None]
    lims = _norm(present) if present else None

    width = max(4.2 * len(labels), 11)
    fig = Figure(figsize=(width, 9.5))
    n = len(labels)
    left, right, gap = 0.6 / width, 1.0 - 1.3 / width, 0.5 / width
    w = (right - left - gap * (n - 1)) / n
    im = None
    for i, lab in enumerate(labels):
        ax = fig.add_axes((left + i * (w + gap), 0.53, w, 0.42))
        cut = cuts.get(lab)
        if cut is None or lims is None:
            ax.text(0.5, 0.5, f"{lab}: missing", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_box_aspect(1.0)
            continue
        im = _draw_cutout(ax, cut, lims)
        st = cut["stats"]
        ax.set_title(f"{lab}: peak {1e3 * _num(st['peak']):.3g} mJy/bm, "
                     f"SNR {_num(st['snr']):.1f}", fontsize="small", y=1.0, pad=4)
        ax.set_xlabel(f"offset ({cut['unit']})", fontsize="small")
        ax.tick_params(labelsize="x-small")
    if im is not None and lims is not None:
        _colorbar(fig, im, fig.add_axes((right + 0.25 / width, 0.57, 0.18 / width, 0.34)), lims)

    axl = fig.add_axes((0.075, 0.13, 0.47, 0.32))
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
            _plain_log_axis(axl, float(good.min()), float(good.max()))
        axl.set_ylabel("snr / dynamic range")
        ax2 = axl.twinx()
        ax2.plot(x, rms, "^:", color="tab:red", label="rms_offsource")
        ax2.set_ylabel("rms_offsource (mJy/beam)", color="tab:red")
        axl.set_xticks(x)
        axl.set_xticklabels(ticks, rotation=45, ha="right", fontsize="x-small")
        h1, l1 = axl.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        axl.legend(h1 + h2, l1 + l2, fontsize="x-small", loc="upper left")
        axt = fig.add_axes((0.64, 0.05, 0.35, 0.42))
        axt.set_axis_off()
        _steps_table(axt, ticks, snr, dr, rms, rows)
    else:
        axl.text(0.5, 0.5, "no image statistics", ha="center", va="center",
                 transform=axl.transAxes)
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
