"""WSClean: typed options, a pure argv builder, and a thin runner.

Targets WSClean 3.1 (Debian bookworm): ``-use-wgridder`` (no ``-gridder``), MODEL_DATA
written only with ``-mgain < 1``, and ``-local-rms`` never combined with ``-multiscale``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from selfcal_batch import corepool
from selfcal_batch.errors import WSCleanError
from selfcal_batch.process import StopTool, run_tool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WSCleanOptions:
    """One WSClean imaging run (field names follow WSClean's flags)."""

    name: str
    size: int
    scale: str
    data_column: str = "DATA"
    niter: int = 100000
    mgain: float = 0.8
    gain: float = 0.1
    nmiter: int = 12
    robust: float = 0.0
    auto_mask: float = 5.0
    auto_threshold: float = 3.0
    fits_mask: str = ""
    multiscale: bool = False
    multiscale_scales: str = ""
    multiscale_max_scales: int = 6
    multiscale_scale_bias: float = 0.7
    channels_out: int = 1
    #: -channel-division-frequencies (Hz, ascending) with channels_out == len + 1; () = even division
    #: (imaging/spw_order.py: windows out of frequency order).
    channel_division_hz: tuple[float, ...] = ()
    fit_spectral_pol: int = 0
    deconvolution_channels: int = 0
    negative: bool = True
    taper_gaussian: str = ""
    #: uv limits in wavelengths (-minuv-l / -maxuv-l; 0 = none).
    minuv_l: float = 0.0
    maxuv_l: float = 0.0
    update_model: bool = False
    threads: int = 1
    parallel_gridding: int = 1
    parallel_deconvolution: int = 0
    use_wgridder: bool = True
    abs_mem_gb: float = 0.0
    local_rms: bool = False
    predict: bool = False
    #: WSClean -pol: 'i' (Stokes I, needs both parallel hands) or one hand ('rr', 'xx', ...).
    pol: str = "i"
    #: Directory for WSClean's reordered temporary files (cleaned after a failure).
    temp_dir: str = ""
    extra_args: tuple[str, ...] = ()

    def imaging_key(self) -> tuple:
        """Fields that change what the image looks like (for reuse decisions)."""
        key = (self.size, self.scale, self.data_column, self.robust, self.multiscale,
               self.multiscale_scales, self.channels_out, self.taper_gaussian, self.negative)
        key = key if self.pol == "i" else key + (self.pol,)
        key = key + (tuple(self.channel_division_hz),) if self.channel_division_hz else key
        return key + (self.minuv_l, self.maxuv_l) if (self.minuv_l or self.maxuv_l) else key

    def replace(self, **kw: object) -> "WSCleanOptions":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **kw)


@dataclass(frozen=True)
class ImageSet:
    """The MFS (or single-channel) products of one WSClean run."""

    prefix: str
    image: str
    residual: str
    model: str
    psf: str
    #: The model images ``wsclean -predict`` reads (per channel; the model itself for one channel).
    channel_models: tuple[str, ...] = ()

    def exists(self) -> bool:
        """True when the restored image and residual are on disk."""
        return Path(self.image).exists() and Path(self.residual).exists()

    def can_predict(self) -> bool:
        """True when every model image ``wsclean -predict`` needs is on disk (the
        ``keep_products`` policy removes per-channel models once a dataset has finished)."""
        return all(Path(m).exists() for m in (self.channel_models or (self.model,)))


def _division_args(opts: WSCleanOptions) -> list[str]:
    """``-channel-division-frequencies`` for ``opts`` (channels_out > 1), [] without cuts.
    Raises ValueError unless there is one output channel per cut segment (more channels would
    let WSClean divide the segments again, undoing imaging/spw_order.py's plan)."""
    cuts = tuple(opts.channel_division_hz)
    if not cuts:
        return []
    if opts.channels_out != len(cuts) + 1:
        raise ValueError(f"{len(cuts)} channel division frequencies need channels_out = {len(cuts) + 1}, "
                         f"got {opts.channels_out}")
    return ["-channel-division-frequencies", ",".join(f"{c:.10g}" for c in sorted(cuts))]


def build_argv(opts: WSCleanOptions, ms: str | os.PathLike[str], binary: str = "wsclean") -> list[str]:
    """The WSClean command line for ``opts`` (pure; no file system access)."""
    if not 0 < opts.mgain <= 1:
        raise ValueError(f"mgain must be in (0, 1], got {opts.mgain}")
    if opts.update_model and opts.mgain >= 1 and not opts.predict:
        raise ValueError("WSClean 3.1 writes MODEL_DATA only with mgain < 1")
    if opts.local_rms and opts.multiscale:
        raise ValueError("-local-rms with -multiscale crashes WSClean 3.1; use one of them")
    a: list[str] = [binary, "-name", opts.name]
    if opts.temp_dir:
        a += ["-temp-dir", opts.temp_dir]
    if opts.predict:
        a += ["-predict", "-j", str(max(1, opts.threads))]
        if opts.pol != "i":
            a += ["-pol", opts.pol]
        if opts.channels_out > 1:
            a += ["-channels-out", str(opts.channels_out), *_division_args(opts)]
        else:
            # WSClean 3.1 refuses to predict one channel into a multi-spw MS without reordering
            # ("This set contains multiple spws ... adding -reorder"); harmless for one spw.
            a += ["-reorder"]
        if opts.use_wgridder:
            a += ["-use-wgridder"]
        return a + [str(ms)]
    a += ["-size", str(opts.size), str(opts.size), "-scale", opts.scale]
    a += ["-niter", str(opts.niter), "-mgain", f"{opts.mgain:g}", "-gain", f"{opts.gain:g}"]
    a += ["-nmiter", str(opts.nmiter)]
    a += ["-weight", "briggs", f"{opts.robust:g}"]
    if opts.pol != "i":
        a += ["-pol", opts.pol]
    a += ["-auto-mask", f"{opts.auto_mask:g}", "-auto-threshold", f"{opts.auto_threshold:g}"]
    if opts.local_rms:
        a += ["-local-rms"]
    if opts.fits_mask:
        a += ["-fits-mask", opts.fits_mask]
    if opts.multiscale:
        a += ["-multiscale", "-multiscale-scale-bias", f"{opts.multiscale_scale_bias:g}"]
        if opts.multiscale_scales:
            a += ["-multiscale-scales", opts.multiscale_scales]
        else:
            a += ["-multiscale-max-scales", str(opts.multiscale_max_scales)]
    a += ["-j", str(max(1, opts.threads))]
    if opts.parallel_gridding > 1:
        a += ["-parallel-gridding", str(opts.parallel_gridding)]
    if opts.parallel_deconvolution > 0:
        a += ["-parallel-deconvolution", str(opts.parallel_deconvolution)]
    if opts.use_wgridder:
        a += ["-use-wgridder"]
    if opts.abs_mem_gb > 0:
        a += ["-abs-mem", f"{opts.abs_mem_gb:g}"]
    if opts.channels_out > 1:
        a += ["-channels-out", str(opts.channels_out), *_division_args(opts), "-join-channels"]
        if opts.fit_spectral_pol > 0:
            a += ["-fit-spectral-pol", str(min(opts.fit_spectral_pol, opts.channels_out))]
        if 0 < opts.deconvolution_channels < opts.channels_out:
            a += ["-deconvolution-channels", str(opts.deconvolution_channels)]
    a += ["-negative" if opts.negative else "-no-negative"]
    if opts.taper_gaussian:
        a += ["-taper-gaussian", opts.taper_gaussian]
    if opts.minuv_l > 0:
        a += ["-minuv-l", f"{opts.minuv_l:.6g}"]
    if opts.maxuv_l > 0:
        a += ["-maxuv-l", f"{opts.maxuv_l:.6g}"]
    a += ["-update-model-required" if opts.update_model else "-no-update-model-required"]
    a += list(opts.extra_args)
    a += ["-data-column", opts.data_column, str(ms)]
    return a


def expected_products(opts: WSCleanOptions) -> ImageSet:
    """Output file names WSClean 3.1 writes for ``opts``."""
    p = opts.name
    tag = "-MFS" if opts.channels_out > 1 else ""
    chans = tuple(f"{p}-{i:04d}-model.fits" for i in range(opts.channels_out)) if opts.channels_out > 1 else ()
    return ImageSet(
        prefix=p,
        image=f"{p}{tag}-image.fits",
        residual=f"{p}{tag}-residual.fits",
        model=f"{p}{tag}-model.fits",
        psf=f"{p}{tag}-psf.fits",
        channel_models=chans,
    )


def zero_nonfinite_models(paths: tuple[str, ...] | list[str]) -> list[str]:
    """Set non-finite pixels of our own model images to 0 (in place); returns the files changed.

    WSClean writes an all-NaN model for an output channel with no unflagged data (e.g. a
    fully flagged spw), and ``wsclean -predict`` then refuses the whole set ("The input
    image contains non-finite values"). No data means no model there: 0 is the model.
    """
    import numpy as np  # lazy: loaded only on this path
    from astropy.io import fits  # lazy: heavy library, only on this path

    changed = []
    for p in paths:
        with fits.open(p, mode="update", memmap=False) as hdul:
            data = hdul[0].data
            if data is not None and not np.all(np.isfinite(data)):
                hdul[0].data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
                changed.append(p)
    return changed


def container_prefix(runtime: str, image: str, bind: list[str]) -> list[str]:
    """``apptainer exec --bind a,b IMAGE`` (the WSClean argv follows)."""
    if not image:
        return []
    if not Path(image).exists():
        raise WSCleanError("wsclean", f"container image not found: {image}")
    prefix = [runtime, "exec"]
    if bind:
        prefix += ["--bind", ",".join(sorted(set(bind)))]
    return prefix + [image]


#: A clean iteration whose peak is in kJy (finite blow-up) or not a number at all ('inf KJy',
#: 'nan Jy': WSClean 3.1 then iterates forever, e.g. with most antennas flagged).
_DIVERGE = re.compile(r"Iteration.*(KJy|\b(-?inf|nan)\s*[a-zA-Zµ]*Jy)", re.IGNORECASE)


def diverged_line(line: str) -> str:
    """The one-line reason to stop WSClean for a clean-iteration line, or ''. Pure."""
    if not _DIVERGE.search(line):
        return ""
    return f"clean diverged: {line.strip()[:200]}"


def run_wsclean(
    opts: WSCleanOptions,
    ms: str | os.PathLike[str],
    *,
    log_path: Path,
    cwd: Path,
    binary: str = "wsclean",
    container: str = "",
    container_runtime: str = "apptainer",
    timeout: float | None = None,
) -> ImageSet:
    """Run WSClean; raise :class:`WSCleanError` on failure, divergence or missing output.

    ``opts.threads`` is what the dataset asks for: the run claims the free cores of the
    worker's core pool up to that many (:mod:`selfcal_batch.corepool`; waits while none is
    free) and gets exactly the granted number as ``-j`` and ``OMP_NUM_THREADS``, and at most
    that many parallel gridders.
    """
    with corepool.claim(opts.threads) as grant:
        # -parallel-gridding N runs N gridder threads: never more than the cores granted.
        granted = opts.replace(threads=grant.cores, parallel_gridding=min(opts.parallel_gridding, grant.cores))
        return _run_wsclean(granted, ms, log_path=log_path, cwd=cwd,
                            binary=binary, container=container, container_runtime=container_runtime,
                            timeout=timeout, grant=grant)


def _run_wsclean(opts: WSCleanOptions, ms: str | os.PathLike[str], *, log_path: Path, cwd: Path,
                 binary: str, container: str, container_runtime: str, timeout: float | None,
                 grant: corepool.Grant) -> ImageSet:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(max(1, opts.threads))
    env["OPENBLAS_NUM_THREADS"] = "1"
    ms = Path(ms).resolve()
    argv = build_argv(opts, ms, binary=binary)
    bind = [str(ms.parent), str(Path(cwd).resolve())]
    if opts.fits_mask:
        bind.append(str(Path(opts.fits_mask).resolve().parent))
    if opts.temp_dir:
        bind.append(str(Path(opts.temp_dir).resolve()))
    argv = container_prefix(container_runtime, container, bind) + argv

    def watch(line: str) -> None:
        # Stopped at the first such line: a diverged clean never recovers, and it may never
        # end (an 'inf' peak) while the log grows by ~24 KB/s until the timeout.
        if why := diverged_line(line):
            raise StopTool(why)

    try:
        run_tool(argv, tool="wsclean", log_path=log_path, env=env, cwd=cwd, timeout=timeout,
                 category="wsclean", on_line=watch, error_cls=WSCleanError, grant=grant)
    finally:
        if opts.temp_dir:
            # Reordered copies of the data (as large as the MS) must not outlive the run.
            for leftover in Path(opts.temp_dir).glob("*.tmp"):
                leftover.unlink(missing_ok=True)
    products = expected_products(opts)
    if opts.predict:
        return products
    if not Path(cwd, products.image).exists() and not Path(products.image).exists():
        raise WSCleanError("wsclean", f"finished but wrote no {products.image} (log: {log_path})")
    return products
