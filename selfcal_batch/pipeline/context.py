"""The per-dataset run context: paths, state, and the side-effect helpers steps use.

Steps never call WSClean or CASA directly: they go through :meth:`Context.image` (runs
WSClean, measures the image once, appends the statistics row) and :meth:`Context.casa`.
"""
from __future__ import annotations

import csv
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfcal_batch.imaging import imstats
from selfcal_batch.imaging.reuse import remember_data_image, same_data_image
from selfcal_batch.imaging.spw_order import ChannelPlan, ddid_channel_frequencies, plan_output_channels
from selfcal_batch.casa.calibration import Call, run_casa
from selfcal_batch.config import PipelineConfig
from selfcal_batch.contract import FINAL_MS, IMAGE_PROPERTIES_CSV, IMAGE_ROW_KEYS, WORK_MS
from selfcal_batch.errors import DatasetError
from selfcal_batch.imaging.wsclean import ImageSet, WSCleanOptions, expected_products, run_wsclean, zero_nonfinite_models
from selfcal_batch.pipeline.products import prune
from selfcal_batch.pipeline.state import DatasetState, atomic_write_json
from selfcal_batch.selfcal.templates import band_defaults, cell_from_baseline, normalise_instrument

log = logging.getLogger("selfcal_batch.pipeline")

ROW_KEYS = IMAGE_ROW_KEYS


@dataclass
class Context:
    """One dataset's run: configuration, directories, state and helpers."""

    name: str
    ms: Path
    cfg: PipelineConfig
    root: Path
    threads: int
    #: Joint EBs (issue 18): every execution block's input MS (``ms`` is the first); empty for
    #: one MS. The EBs are joined into the one working copy (pipeline/steps_joint.py).
    ebs: tuple[Path, ...] = ()
    state: DatasetState = field(init=False)
    #: The dataset's long-lived CASA child (cfg.casa_persistent); started on first use.
    casa_child: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        for sub in ("images", "caltables", "logs", "plots", "masks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.state = DatasetState.load(self.root / "state.json")

    # -- paths ----------------------------------------------------------------------
    @property
    def work_ms(self) -> Path:
        return self.root / WORK_MS

    @property
    def final_ms(self) -> Path:
        return self.root / FINAL_MS

    def img(self, prefix: str) -> str:
        return str(self.root / "images" / prefix)

    def caltable(self, step: str) -> str:
        return str(self.root / "caltables" / f"{step}.G")

    @property
    def info(self) -> dict[str, Any]:
        """MS description from ``casa_jobs.inspect_ms`` (set by the startup step)."""
        return self.state.get("msinfo") or {}

    @property
    def instrument(self) -> str:
        return normalise_instrument(self.cfg.instrument)

    # -- external programs ---------------------------------------------------------
    def casa(self, calls: list[Call], label: str) -> list[Any]:
        """Run CASA calls in a child process (logged to logs/casa.log): the dataset's
        long-lived child with ``cfg.casa_persistent``, else a new child per batch."""
        log_path = self.root / "logs" / "casa.log"
        if self.cfg.casa_persistent:
            if self.casa_child is None:
                from selfcal_batch.casa.child import CasaChild  # lazy: loaded only on this path

                self.casa_child = CasaChild(self.root, log_path)
            return self.casa_child.run(calls, label=label, timeout=self.cfg.casa_timeout_s)
        return run_casa(calls, workdir=self.root, label=label, log_path=log_path, timeout=self.cfg.casa_timeout_s)

    def close(self) -> None:
        """End the dataset's CASA child (if any)."""
        if self.casa_child is not None:
            self.casa_child.close()

    def base_options(self, **kw: Any) -> WSCleanOptions:
        """WSClean options with the dataset-wide settings filled in."""
        w = self.cfg.wsclean
        opts = WSCleanOptions(
            name="", size=self.cfg.imsize, scale=self.cell(), niter=self.cfg.niter,
            mgain=w.mgain, gain=w.gain, nmiter=w.nmiter, channels_out=self.channels_out(),
            channel_division_hz=self.channel_plan().division_hz,
            fit_spectral_pol=min(2, self.channels_out()), negative=self.cfg.allow_negative,
            threads=self.threads, parallel_gridding=w.parallel_gridding,
            parallel_deconvolution=w.parallel_deconvolution, use_wgridder=w.use_wgridder,
            abs_mem_gb=w.abs_mem_gb, extra_args=tuple(w.extra_args),
            pol=(self.info.get("polarisation") or {}).get("wsclean_pol", "i"),
        )
        if self.cfg.uvrange_image:
            from selfcal_batch.selfcal.uvrange import image_limits  # lazy: only with a uv range set

            opts = opts.replace(**dict(zip(("minuv_l", "maxuv_l"), image_limits(self), strict=True)))
        return opts.replace(**kw)

    def cell(self) -> str:
        """The pixel size: configured, or beam / pixels_per_beam from the data."""
        if self.cfg.cell != "auto":
            return self.cfg.cell
        cached = self.state.get("cell")
        if cached:
            return cached
        info = self.info
        fmax = max(s["freq_max"] for s in info["spws"])
        arcsec = cell_from_baseline(info["max_baseline_m"], fmax, self.cfg.pixels_per_beam)
        cell = f"{arcsec:.4g}arcsec"
        self.state.set("cell", cell)
        return cell

    def channels_out(self) -> int:
        """-channels-out: configured or the band default, never above the channel count, and
        no more than WSClean 3.1 can write MODEL_DATA back for (:meth:`channel_plan`)."""
        return self.channel_plan().channels_out

    def channel_plan(self) -> ChannelPlan:
        """Output channels (count, -channel-division-frequencies) from the working copy's spw
        layout (imaging/spw_order.py); a changed plan is logged with its reason once and kept in
        state.json ``channel_plan``."""
        nchan = sum(s["nchan"] for s in self.info.get("spws", [])) or 1
        want = max(1, min(self.cfg.channels_out or band_defaults(self.instrument, self.cfg.band).nc, nchan))
        freqs = ddid_channel_frequencies(self.info)
        plan = plan_output_channels(freqs, want) if freqs else ChannelPlan(want)
        if plan.reason and self.state.get("channel_plan", {}).get("reason") != plan.reason:
            log.warning("%s: %s", self.name, plan.reason)
            self.state.set("channel_plan", {"channels_out": plan.channels_out,
                                            "division_hz": list(plan.division_hz), "reason": plan.reason})
        return plan

    def image(
        self,
        opts: WSCleanOptions,
        *,
        step: str,
        role: str,
        template: str = "",
        sigma: float = 6.0,
        ms: Path | None = None,
    ) -> tuple[ImageSet, dict[str, Any]]:
        """Run WSClean (or reuse a complete earlier result), measure and record the image."""
        ms = ms or self.work_ms
        products = expected_products(opts)
        done = self.state.data.setdefault("images_done", {})
        reusable = products.exists() and (not opts.update_model or products.can_predict())
        same = same_data_image(self, opts, ms)
        if same is not None:  # each image once: this data with these settings was imaged before
            products = same
        elif not (opts.name in done and reusable and done[opts.name] == list(opts.imaging_key())):
            if opts.update_model:
                self.state.set("model_in_ms", "")
                self.state.save()
            self._wsclean(opts, ms)
            prune(self.root / "images", Path(opts.name).name, self.cfg.keep_products)
            done[opts.name] = list(opts.imaging_key())
            if opts.update_model:
                self.state.set("model_in_ms", opts.name)
            remember_data_image(self, opts, ms)
        elif opts.update_model and self.state.get("model_in_ms") != opts.name:
            self.predict(opts.name)
        stats = imstats.image_statistics(products.image, products.residual, sigma=sigma)
        row = {"dataset": self.name, "step": step, "role": role, "template": template,
               "robust": opts.robust, "path": str(Path(products.image).relative_to(self.root))}
        row.update(stats)
        self._record_row(row)
        self.state.save()
        log.info("%s %s/%s: peak %.4g Jy, rms %.3g Jy, SNR %.1f, flux(mask) %.4g Jy",
                 self.name, step, role, stats.get("peak", math.nan), stats.get("rms_offsource", math.nan),
                 stats.get("snr", math.nan), stats.get("total_flux_mask", math.nan))
        return products, stats

    def _wsclean(self, opts: WSCleanOptions, ms: Path) -> None:
        """Run WSClean with the dataset's logging, binary/container and timeout; count it."""
        w = self.cfg.wsclean
        tmp = self.root / "tmp"
        tmp.mkdir(exist_ok=True)
        opts = opts.replace(temp_dir=str(tmp))
        run_wsclean(opts, ms, log_path=self.root / "logs" / "wsclean.log", cwd=self.root / "images",
                    binary=w.binary, container=w.container, container_runtime=w.container_runtime,
                    timeout=w.timeout_s)
        self.state.set("wsclean_runs", int(self.state.get("wsclean_runs", 0)) + 1)

    def predict(self, prefix: str) -> None:
        """Refill MODEL_DATA from an existing image's model (``wsclean -predict``)."""
        # A ladder image may have one output channel (imaging/economy.py): predict what it wrote.
        single = Path(f"{prefix}-model.fits").exists() and not Path(f"{prefix}-MFS-model.fits").exists()
        opts = self.base_options(name=prefix, predict=True, **({"channels_out": 1} if single else {}))
        if not expected_products(opts).can_predict():
            raise DatasetError(self.name, f"cannot refill MODEL_DATA from {Path(prefix).name}: its per-channel "
                                          "model images were removed (keep_products); rerun with --restart")
        products = expected_products(opts)
        for p in zero_nonfinite_models(products.channel_models or (products.model,)):
            log.warning("%s: %s has no data (non-finite model): predicting 0 there", self.name, Path(p).name)
        self.state.set("model_in_ms", "")
        self.state.save()
        self._wsclean(opts, self.work_ms)
        self.state.set("wsclean_predicts", int(self.state.get("wsclean_predicts", 0)) + 1)
        self.state.set("model_in_ms", prefix)
        self.state.save()

    # -- statistics rows -------------------------------------------------------------
    def _record_row(self, row: dict[str, Any]) -> None:
        rows = [r for r in self.state.data.setdefault("image_rows", [])
                if not (r["step"] == row["step"] and r["role"] == row["role"] and r["path"] == row["path"])]
        rows.append(row)
        self.state.data["image_rows"] = rows
        self.write_properties_csv()

    def rows(self) -> list[dict[str, Any]]:
        return list(self.state.data.get("image_rows", []))

    def write_properties_csv(self) -> None:
        """image_properties.csv: one row per image, identity columns first."""
        rows = self.rows()
        keys = list(ROW_KEYS) + [k for k in imstats.STAT_COLUMNS if k not in ROW_KEYS]
        extra = sorted({k for r in rows for k in r} - set(keys))
        path = self.root / IMAGE_PROPERTIES_CSV
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=keys + extra, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow(r)
        tmp.replace(path)

    def write_gain_tables_json(self) -> None:
        """gain_tables.json: per step, the tables and spwmaps applied."""
        atomic_write_json(self.root / "gain_tables.json", self.state.get("applied", {}))

    def remove(self, *paths: Path | str) -> None:
        """Delete files or directories (ignore missing)."""
        for p in paths:
            p = Path(p)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()

