"""Survey plots (matplotlib Agg, no pyplot): every function writes one PNG and returns it.

Each plot is drawn even with no usable data (a labelled "no data" figure), so the report
never links a missing file; :func:`survey_plots` additionally isolates failures per plot.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from selfcal_batch.fileio import atomic_write
from selfcal_batch.imaging.plots import save_png
from .aggregate import Survey, ratio

log = logging.getLogger(__name__)
PLOT_FILES = {
    "dr_before_after": "dr_before_after.png",
    "snr_gain_vs_flux": "snr_gain_vs_flux.png",
    "snr_steps": "snr_steps.png",
    "template_usage": "template_usage.png",
    "wall_time": "wall_time.png",
    "thumbnails": "thumbnails.png",
}
TIME_PARTS = (("time_wsclean_s", "WSClean", "tab:blue"), ("time_casa_s", "CASA", "tab:orange"),
              ("time_python_s", "Python", "tab:green"),
              ("time_core_wait_s", "waiting for cores", "tab:gray"))  # 0 in outputs before issue 16


save = save_png  # one atomic PNG writer for the whole package (selfcal_batch.imaging.plots)


def message_figure(out_png: Path, title: str, text: str) -> Path:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()
    return save(fig, out_png)


def colours(keys: Sequence[str]) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10" if len(keys) <= 10 else "tab20"]
    return {k: cmap(i % cmap.N) for i, k in enumerate(keys)}


def _num(df: pd.DataFrame, col: str) -> np.ndarray:
    if col not in df:
        return np.full(len(df), np.nan)
    return pd.to_numeric(df[col], errors="coerce").astype(float).to_numpy()


def _positive(*arrays: np.ndarray) -> np.ndarray:
    ok = np.ones(len(arrays[0]), bool)
    for a in arrays:
        ok &= np.isfinite(a) & (a > 0)
    return ok


# ---------------------------------------------------------------------------- plots
def plot_dr_before_after(ds: pd.DataFrame, out_png: Path) -> Path:
    """Final vs initial dynamic range (log-log), coloured by initial template, 1:1 line."""
    title = "Dynamic range before vs after self-calibration"
    x, y = _num(ds, "dr_initial"), _num(ds, "dr_final")
    ok = _positive(x, y)
    if not ok.any():
        return message_figure(out_png, title, "no dataset has both an initial and a final dynamic range")
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot()
    tmpl = ds["template_initial"].replace("", "(none)").to_numpy()
    cmap = colours(sorted(set(tmpl[ok])))
    for t, c in cmap.items():
        m = ok & (tmpl == t)
        ax.scatter(x[m], y[m], color=c, label=t, s=40, edgecolor="k", linewidth=0.5, zorder=3)
    if ok.sum() <= 30:
        for xi, yi, n in zip(x[ok], y[ok], ds["name"].to_numpy()[ok], strict=True):
            ax.annotate(n, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    lo, hi = min(x[ok].min(), y[ok].min()) / 1.5, max(x[ok].max(), y[ok].max()) * 1.5
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="1:1")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), title=title,
           xlabel="initial dynamic range (test image)", ylabel="final dynamic range")
    ax.legend(title="template (initial)", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return save(fig, out_png)


def plot_snr_gain_vs_flux(ds: pd.DataFrame, out_png: Path, thresholds_mjy: Sequence[float]) -> Path:
    """SNR gain vs initial total flux (mJy, log x) with the template thresholds marked."""
    title = "SNR gain vs initial flux density"
    flux = _num(ds, "total_flux_initial") * 1e3
    gain = ratio(ds, "snr_final", "snr_initial").to_numpy(dtype=float)
    ok = _positive(flux, gain)
    fig = Figure(figsize=(7, 5))
    ax = fig.add_subplot()
    if ok.any():
        tmpl = ds["template_initial"].replace("", "(none)").to_numpy()
        for t, c in colours(sorted(set(tmpl[ok]))).items():
            m = ok & (tmpl == t)
            ax.scatter(flux[m], gain[m], color=c, label=t, s=40, edgecolor="k", linewidth=0.5, zorder=3)
        if ok.sum() <= 30:
            for xi, yi, n in zip(flux[ok], gain[ok], ds["name"].to_numpy()[ok], strict=True):
                ax.annotate(n, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        xs = np.concatenate([flux[ok], np.asarray(thresholds_mjy, float)])
        ax.set_xlim(xs.min() / 2, xs.max() * 2)
    else:
        ax.text(0.5, 0.6, "no dataset has an initial flux and an SNR gain", ha="center",
                transform=ax.transAxes)
        ax.set_xlim(min(thresholds_mjy) / 2, max(thresholds_mjy) * 2)
    for t in thresholds_mjy:
        ax.axvline(t, color="grey", ls=":", lw=1)
        ax.text(t, 1.0, f" {t:g} mJy", rotation=90, va="top", ha="right", fontsize=7, color="grey",
                transform=ax.get_xaxis_transform())
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xscale="log", title=title, xlabel="initial total flux in mask (mJy)",
           ylabel="SNR gain (final / initial)")
    if ok.any():
        ax.legend(title="template (initial)", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return save(fig, out_png)


def step_label(step: str, role: str) -> str:
    if role in ("pre", "post"):
        return f"{step} {role}"
    return "test" if role == "test" else (role or step)


def merge_orders(sequences: Sequence[Sequence[str]]) -> list[str]:
    """One x order containing every sequence's labels, each sequence's order kept."""
    merged: list[str] = []
    for seq in sequences:
        prev: str | None = None
        for lab in seq:
            if lab not in merged:
                merged.insert(merged.index(prev) + 1 if prev is not None else 0, lab)
            prev = lab
    return merged


def gapped(xs: Sequence[int], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points in run order with NaN breaks, so a line joins only neighbours on the x order:
    no line through a step the dataset did not run (or whose value is missing / <= 0 on a
    log axis). ``xs`` are positions in the merged step order, ``ys`` the values."""
    out_x: list[float] = []
    out_y: list[float] = []
    prev: int | None = None  # x of the last point drawn
    for x, y in zip(xs, ys, strict=True):
        y = float(y)
        if not (np.isfinite(y) and y > 0):
            continue
        if prev is not None and x != prev + 1:
            out_x.append(np.nan)
            out_y.append(np.nan)
        out_x.append(float(x))
        out_y.append(y)
        prev = x
    return np.asarray(out_x, float), np.asarray(out_y, float)


def plot_snr_steps(images: pd.DataFrame, out_png: Path) -> Path:
    """SNR of every image of every dataset in run order (test, p0 pre/post, ..., final);
    lines join only consecutive steps on the x axis (:func:`gapped`)."""
    title = "SNR through the self-calibration steps"
    if images.empty or "snr" not in images:
        return message_figure(out_png, title, "no image statistics")
    seqs: dict[str, tuple[list[str], np.ndarray]] = {}
    for name, g in images.groupby("dataset", sort=False):
        labels = [step_label(s, r) for s, r in zip(g["step"], g["role"], strict=True)]
        seqs[str(name)] = (labels, _num(g, "snr"))
    order = merge_orders([s for s, _ in seqs.values()])
    pos = {lab: i for i, lab in enumerate(order)}
    fig = Figure(figsize=(max(7.0, 0.55 * len(order) + 2), 5))
    ax = fig.add_subplot()
    cmap = colours(list(seqs))
    for name, (labels, snr) in seqs.items():
        xs, ys = gapped([pos[lab] for lab in labels], snr)
        if np.isfinite(ys).any():
            ax.plot(xs, ys, "o-", color=cmap[name], label=name, ms=4)
    ax.set_xticks(range(len(order)), order, rotation=45, ha="right")
    ax.set(yscale="log", title=title, ylabel="SNR (peak / off-source rms)")
    if len(seqs) <= 15:
        ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return save(fig, out_png)


def plot_template_usage(ds: pd.DataFrame, out_png: Path) -> Path:
    """Number of datasets per template at the initial and final selection."""
    title = "Template usage"
    ini = ds["template_initial"][ds["template_initial"] != ""]
    fin = ds["template_final"][ds["template_final"] != ""]
    names = sorted(set(ini) | set(fin))
    if not names:
        return message_figure(out_png, title, "no dataset got a template")
    fig = Figure(figsize=(max(5.0, 1.2 * len(names) + 2), 4))
    ax = fig.add_subplot()
    x = np.arange(len(names))
    ci, cf = ini.value_counts(), fin.value_counts()
    ax.bar(x - 0.2, [ci.get(n, 0) for n in names], 0.4, label="initial", color="tab:blue")
    ax.bar(x + 0.2, [cf.get(n, 0) for n in names], 0.4, label="final", color="tab:orange")
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set(title=title, ylabel="datasets")
    ax.legend()
    fig.tight_layout()
    return save(fig, out_png)


#: Above this many datasets the wall-time chart drops its per-dataset labels.
WALL_LABELS_MAX = 60


def plot_wall_time(ds: pd.DataFrame, out_png: Path) -> Path:
    """Wall time per dataset, stacked into WSClean / CASA / Python."""
    title = "Wall time per dataset"
    if ds.empty:
        return message_figure(out_png, title, "no datasets")
    if len(ds) > WALL_LABELS_MAX:
        # Survey scale: datasets sorted by wall time, no per-dataset labels (1000 tick
        # labels took 19 s to draw and cannot be read).
        ds = ds.assign(_w=np.nan_to_num(_num(ds, "wall_s"), nan=0.0)).sort_values("_w")
        title += f" ({len(ds)} datasets, sorted)"
    fig = Figure(figsize=(min(14.0, max(6.0, 0.6 * len(ds) + 2)), 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(ds))
    bottom = np.zeros(len(ds))
    for col, label, colour in TIME_PARTS:
        v = np.nan_to_num(_num(ds, col), nan=0.0)
        ax.bar(x, v, 0.7, bottom=bottom, label=label, color=colour)
        bottom += v
    failed = (ds["status"] == "failed").to_numpy()
    for xi in x[failed]:
        ax.text(xi, bottom[xi], "failed", ha="center", va="bottom", fontsize=7, color="tab:red")
    if len(ds) > WALL_LABELS_MAX:
        ax.set(xlabel="datasets (sorted by wall time)")
    else:
        ax.set_xticks(x, list(ds["name"]), rotation=45, ha="right")
    ax.set(title=title, ylabel="seconds")
    ax.legend()
    fig.tight_layout()
    return save(fig, out_png)


# ---------------------------------------------------------------------------- thumbnails
def dataset_thumbnails(out: Path, name: str, thumb_dir: Path, notes: list[str]) -> dict[str, Path]:
    """``{'initial': png, 'final': png}`` for one dataset (reused or made from the FITS)."""
    from selfcal_batch.imaging.plots import thumbnail  # lazy: loaded only on this path

    root = Path(out) / "datasets" / name
    sources = {"initial": root / "images" / "test_image-MFS-image.fits",
               "final": root / "final-image.fits"}
    found: dict[str, Path] = {}
    for which, fits in sources.items():
        reuse = root / "plots" / f"thumb_{which}.png"
        if reuse.is_file() and reuse.stat().st_size > 0:
            found[which] = reuse
            continue
        if not fits.is_file():
            notes.append(f"no {which} image ({fits.relative_to(Path(out))}) for a thumbnail")
            continue
        png = thumb_dir / f"{name}_{which}.png"
        try:
            found[which] = thumbnail(fits, png, size_px=200)
        except (OSError, ValueError) as exc:
            notes.append(f"{which} thumbnail failed: {exc}")
    if all(f.is_file() for f in sources.values()):
        try:  # one field of view, one colour scale, colour bar and scale bar
            found["pair"] = plot_before_after(sources["initial"], sources["final"],
                                               thumb_dir / f"{name}_before_after.png")
        except (OSError, ValueError) as exc:
            notes.append(f"before/after figure failed: {exc}")
    return found


#: Rows (datasets) of the before/after contact sheet; every dataset's thumbnails are on
#: its own section or page, so the sheet shows a first page of the sample.
SHEET_MAX_ROWS = 48


def plot_thumbnail_sheet(names: Sequence[str], thumbs: dict[str, dict[str, Path]], out_png: Path,
                         max_rows: int = SHEET_MAX_ROWS) -> Path:
    """A before/after contact sheet, one row per dataset (the first ``max_rows``).

    Pasted with PIL (a matplotlib figure of one Axes per thumbnail took 89 s and 2.6 GB for
    1000 datasets); each cell is the 200-px thumbnail with its label drawn above it.
    """
    from PIL import Image, ImageDraw  # lazy: heavy library, only on this path

    title = "Before / after images"
    rows = [n for n in names if thumbs.get(n)]
    if not rows:
        return message_figure(out_png, title, "no thumbnails available")
    shown = rows[:max_rows]
    cell, label_h, pad = 200, 14, 6
    width = 2 * cell + 3 * pad
    head = 22
    sheet = Image.new("RGB", (width, head + len(shown) * (cell + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    more = f" (first {len(shown)} of {len(rows)})" if len(rows) > len(shown) else ""
    draw.text((pad, 4), title + more, fill="black")
    for i, name in enumerate(shown):
        y = head + i * (cell + label_h + pad)
        for j, which in enumerate(("initial", "final")):
            x = pad + j * (cell + pad)
            draw.text((x, y), f"{name}: {which}"[:34], fill="black")
            png = thumbs[name].get(which)
            try:
                if png is None:
                    raise FileNotFoundError(which)
                with Image.open(png) as im:
                    sheet.paste(im.convert("RGB").resize((cell, cell)), (x, y + label_h))
            except (OSError, ValueError, SyntaxError):
                draw.rectangle((x, y + label_h, x + cell - 1, y + label_h + cell - 1), outline="grey")
                draw.text((x + 60, y + label_h + cell // 2), f"no {which} image", fill="grey")
    return atomic_write(out_png, sheet.save)


def survey_plots(s: Survey, plot_dir: Path) -> tuple[dict[str, Path], dict[str, dict[str, Path]]]:
    """Draw every survey plot into ``plot_dir``; returns (plots, thumbnails per dataset)."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    thumb_dir = plot_dir / "thumbs"
    if thumb_dir.is_dir():
        shutil.rmtree(thumb_dir)
    thumbs: dict[str, dict[str, Path]] = {}
    for name in s.datasets["name"]:
        dn = s.dataset_notes.setdefault(name, [])
        try:
            thumbs[name] = dataset_thumbnails(s.out, name, thumb_dir, dn)
        except Exception as exc:  # noqa: BLE001 - one dataset's files must not stop the report
            log.exception("thumbnails of %s", name)
            dn.append(f"thumbnails failed: {type(exc).__name__}: {exc}")
    jobs: dict[str, Callable[[Path], Path]] = {
        "dr_before_after": lambda p: plot_dr_before_after(s.datasets, p),
        "snr_gain_vs_flux": lambda p: plot_snr_gain_vs_flux(s.datasets, p, s.thresholds_mjy),
        "snr_steps": lambda p: plot_snr_steps(s.images, p),
        "template_usage": lambda p: plot_template_usage(s.datasets, p),
        "wall_time": lambda p: plot_wall_time(s.datasets, p),
        "thumbnails": lambda p: plot_thumbnail_sheet(list(s.datasets["name"]), thumbs, p),
    }
    made: dict[str, Path] = {}
    for key, job in jobs.items():
        path = plot_dir / PLOT_FILES[key]
        try:
            made[key] = job(path)
        except Exception as exc:  # noqa: BLE001 - a broken plot is reported, not fatal
            log.exception("survey plot %s", key)
            s.notes.append(f"plot {PLOT_FILES[key]} failed: {type(exc).__name__}: {exc}")
            path.unlink(missing_ok=True)
    return made, thumbs


# ---------------------------------------------------------------------------- before / after
def _nice_length(span: float) -> float:
    """A round scale-bar length near a quarter of ``span`` (1, 2, 5 x 10^n)."""
    target = max(span / 4.0, 1e-9)
    e = 10.0 ** np.floor(np.log10(target))
    return float(max(m * e for m in (1, 2, 5) if m * e <= target) if target >= e else e)


def before_after_box(shape: tuple[int, int], peak_xy: tuple[int, int], half: int) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) of a square box of half-size ``half`` px around ``peak_xy``, shifted
    (not shrunk) to stay inside an image of ``shape`` (ny, nx) when it can."""
    ny, nx = shape
    size = min(2 * half + 1, nx, ny)
    x0 = int(min(max(peak_xy[0] - half, 0), nx - size))
    y0 = int(min(max(peak_xy[1] - half, 0), ny - size))
    return x0, x0 + size, y0, y0 + size


def plot_before_after(initial_fits: Path, final_fits: Path, out_png: Path, half: int = 48) -> Path:
    """Before (test image) and after (final image) side by side with ONE field of view (the
    same box of sky around the final image's peak), ONE colour scale (asinh, -3 x the larger
    robust rms .. the larger peak, in mJy/beam) with its colour bar, and a scale bar (arcsec).
    Both images must share a pixel grid (the pipeline images one grid); otherwise ValueError."""
    from astropy.stats import mad_std  # lazy: heavy library, only on this path
    from astropy.visualization import AsinhStretch, ImageNormalize  # lazy: heavy library, only on this path
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar  # lazy: heavy library, only on this path

    from selfcal_batch.imaging.imstats import cell_size_deg, read_image  # lazy: loaded only on this path

    (a, _), (b, hb) = read_image(initial_fits), read_image(final_fits)
    if a.shape != b.shape:
        raise ValueError(f"before {a.shape} and after {b.shape} images are on different grids")
    py, px = np.unravel_index(int(np.nanargmax(b)), b.shape)
    x0, x1, y0, y1 = before_after_box(b.shape, (int(px), int(py)), half)
    cell = cell_size_deg(hb) * 3600.0
    cell = cell if np.isfinite(cell) and cell > 0 else 1.0
    unit = "arcsec" if cell != 1.0 else "px"
    extent = ((x0 - px - 0.5) * cell, (x1 - px - 0.5) * cell, (y0 - py - 0.5) * cell, (y1 - py - 0.5) * cell)
    cuts = [1e3 * a[y0:y1, x0:x1], 1e3 * b[y0:y1, x0:x1]]
    rms = max(float(mad_std(1e3 * a, ignore_nan=True)), float(mad_std(1e3 * b, ignore_nan=True)))
    vmax = max(float(np.nanmax(c)) for c in cuts)
    vmin = -3.0 * rms if np.isfinite(rms) and rms > 0 else -0.01 * abs(vmax)
    norm = ImageNormalize(vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1.0, stretch=AsinhStretch(0.05))
    fig = Figure(figsize=(8.4, 4.0))
    axes = [fig.add_axes((0.04 + i * 0.43, 0.06, 0.40, 0.82)) for i in range(2)]
    im = None
    for ax, cut, title in zip(axes, cuts, ("before (test image)", "after (final image)"), strict=True):
        im = ax.imshow(cut, origin="lower", cmap="inferno", norm=norm, extent=extent, interpolation="nearest")
        ax.set_title(f"{title}\npeak {np.nanmax(cut):.3g} mJy/beam", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        length = _nice_length(extent[1] - extent[0])
        ax.add_artist(AnchoredSizeBar(ax.transData, length, f"{length:g} {unit if unit == 'px' else '″'}",
                                      "lower right", color="white", frameon=False, size_vertical=0))
    cax = fig.add_axes((0.91, 0.10, 0.02, 0.74))
    fig.colorbar(im, cax=cax).set_label("mJy/beam", fontsize=9)
    return save(fig, out_png)
