"""Template re-selection after the first phase step (seed §2.10): the newest image's masked
flux chooses the template of the rest of the ladder (selfcal.templates), with the seed's
faint re-image when the flux is low."""
from __future__ import annotations

import logging

from selfcal_batch.pipeline import work_ms
from selfcal_batch.pipeline.context import Context
from selfcal_batch.selfcal.templates import post_p0_faint_reimage, select_template

log = logging.getLogger("selfcal_batch.pipeline")


def reselect(ctx: Context) -> None:
    """Template re-selection after p0 from the newest image (seed §2.10)."""
    st = ctx.state
    current = st.get("current")
    flux = 1000 * current["stats"]["total_flux_mask"]
    robust = post_p0_faint_reimage(flux)
    if robust is not None:
        chain = st.get("chain", [])
        opts = ctx.base_options(name=ctx.img("p0_faint_check"), robust=robust, auto_mask=4.0,
                                auto_threshold=1.5, data_column=work_ms.data_column(chain))
        _, stats = ctx.image(opts, step="p0", role="reselect", template=st.get("template_initial"))
        flux = 1000 * stats["total_flux_mask"]
    new = ctx.cfg.force_template or select_template(flux, tuple(ctx.cfg.template_thresholds_mjy))
    if new != st.get("template_final"):
        log.info("%s: template re-selected after p0: %s -> %s (%.2f mJy)", ctx.name,
                 st.get("template_final"), new, flux)
    st.set("template_final", new)
    st.set("reselect_flux_mjy", flux)
