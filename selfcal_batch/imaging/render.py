"""Fast PNG rendering shared by the diagnostic plots (imaging/plots.py) and the report.

Figures use ``matplotlib.figure.Figure`` and the Agg canvas directly (no pyplot global
state: safe in Dask worker threads). Ticks are marker lines and texts are drawn by PIL on
the Agg buffer (:class:`Label`, ~0.05 ms each, where a matplotlib Text or Tick costs
~0.5 ms). Every PNG is written atomically (selfcal_batch.fileio).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import TICKDOWN, TICKLEFT, TICKRIGHT
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, NullLocator

from selfcal_batch.fileio import atomic_write

log = logging.getLogger("selfcal_batch.imaging.plots")  # the name the logs always had

#: zlib level of the PNGs (PIL's default 6 costs ~40 % more time for ~10 % smaller files).
PNG_COMPRESS_LEVEL = 3


# --------------------------------------------------------------------------- rendering
def save_png(fig: Figure, out_png: str | Path, dpi: int = 100) -> Path:
    """Render ``fig`` to ``out_png`` atomically (temporary file, then rename)."""
    FigureCanvasAgg(fig)
    return atomic_write(out_png, lambda tmp: fig.savefig(
        tmp, format="png", dpi=dpi, pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL}))


class Label(NamedTuple):
    """A text drawn by PIL (:func:`save_png_labelled`) at (x, y) + (dx, dy) points: data
    coordinates of ``ax`` (default: the Axes given to save_png_labelled), axes fractions with
    ``frac``, figure fractions if ``ax`` is the Figure. ``anchor`` is PIL's ('rm' = right/
    middle, ...); a text turned by ``angle`` degrees is anchored by its box ('rt': right/top).
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
    from PIL import ImageFont  # PIL loaded on the first labelled PNG (import cost off the CLI path)

    cache = _TLS.__dict__.setdefault("fonts", {})
    if (size_px, mono) not in cache:
        name = "DejaVuSansMono.ttf" if mono else "DejaVuSans.ttf"
        path = Path(matplotlib.get_data_path(), "fonts", "ttf", name)
        cache[size_px, mono] = (ImageFont.truetype(str(path), size_px) if path.is_file()
                                else ImageFont.load_default(size_px))
    return cache[size_px, mono]


def save_png_labelled(fig: Figure, ax: Any, labels: Sequence[Label],
                      out_png: str | Path) -> Path:
    """Render ``fig`` with Agg, draw ``labels`` with PIL, write an RGB PNG atomically."""
    from PIL import Image, ImageDraw  # (same reason)

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    img = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    draw = ImageDraw.Draw(img)
    pt = fig.dpi / 72.0
    for lb in labels:
        a = lb.ax if lb.ax is not None else ax
        tr = a.transFigure if isinstance(a, Figure) else a.transAxes if lb.frac else a.transData
        x, y = tr.transform((lb.x, lb.y))
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
    return atomic_write(out_png, lambda tmp: img.save(
        tmp, format="png", compress_level=PNG_COMPRESS_LEVEL, dpi=(dpi, dpi)))


def _bare_axes(ax: Any) -> Any:
    """Drop the tick machinery of ``ax`` (the frame stays); ticks then come from _ticks."""
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(NullLocator())
        axis.set_minor_locator(NullLocator())
    return ax


def _nice(lo: float, hi: float, nbins: int) -> list[float]:
    """'Nice' tick values inside [lo, hi] (steps as matplotlib's AutoLocator)."""
    a, b = min(lo, hi), max(lo, hi)
    loc = MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10])
    return [float(t) for t in loc.tick_values(a, b) if a <= t <= b]


def _ticks(ax: Any, which: str, pos: Sequence[float] | None = None,
           texts: Sequence[str] | None = None, size: float = 10, right: bool = False,
           angle: float = 0.0, nbins: int = 6) -> list[Label]:
    """Outward tick marks on the bottom ('x') or left/right ('y') of ``ax`` (limits are
    frozen) at ``pos`` (default: 'nice' values) and Labels of the non-empty ``texts``."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    ax.set(xlim=(x0, x1), ylim=(y0, y1))
    pos = _nice(*((x0, x1) if which == "x" else (y0, y1)), nbins) if pos is None else pos
    texts = [f"{t:g}" for t in pos] if texts is None else texts
    style = {"ls": "none", "ms": 3.5, "mew": 0.8, "color": "k", "clip_on": False}
    if which == "x":
        ax.plot(pos, [0.0] * len(pos), marker=TICKDOWN, transform=ax.get_xaxis_transform(), **style)
        return [Label(p, y0, t, size, "rt" if angle else "ma", angle=angle, dy=-5, ax=ax)
                for p, t in zip(pos, texts, strict=False) if t]
    ax.plot([1.0 if right else 0.0] * len(pos), pos, marker=TICKRIGHT if right else TICKLEFT,
            transform=ax.get_yaxis_transform(), **style)
    return [Label(x1 if right else x0, p, t, size, "lm" if right else "rm",
                  dx=5 if right else -5, ax=ax) for p, t in zip(pos, texts, strict=False) if t]


def _legend(ax: Any, entries: Sequence[tuple[dict[str, Any], str]], x: float, y: float,
            width: float, size: float = 8) -> list[Label]:
    """Legend box with its top-left corner at axes fraction (x, y): line samples + labels."""
    step = 0.065
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


def _message_figure(out_png: str | Path, text: str) -> Path:
    fig = Figure(figsize=(6, 4))
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return save_png(fig, out_png)
