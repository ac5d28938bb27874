"""Extension of the ladder: after the template's last phase step, the next shorter solution
interval when the data support it (the decision is :func:`selfcal.solint.extension_solints`)."""
from __future__ import annotations

import dataclasses
import logging
import math

from selfcal_batch.ms.polarisation import gaintype_for
from selfcal_batch.pipeline import measure, registry
from selfcal_batch.pipeline.context import Context
from selfcal_batch.pipeline.ladder import estimation_snr, params_for
from selfcal_batch.pipeline.state_records import MSInfo
from selfcal_batch.selfcal import solint

log = logging.getLogger("selfcal_batch.pipeline")


def plan_extension(ctx: Context, after: str) -> str | None:
    """After the template's last phase step, the next shorter phase step (or None)."""
    st = ctx.state
    if st.get("ladder_stopped") or not ctx.cfg.solint.extend_ladder:
        return None
    template = st.get("template_final")
    exts = st.data.setdefault("extensions", {})
    rec = st.steps.get(after, {})
    if not rec.get("accepted"):
        return None
    if not solint.worth_extending(float(rec.get("snr_pre") or math.nan), float(rec.get("snr_post") or math.nan),
                                  ctx.cfg.solint.extend_min_gain):
        log.info("%s: no shorter interval after %s: SNR gain %.2f%% < %.2g%%", ctx.name, after,
                 100 * (float(rec.get("snr_post") or 0) / float(rec.get("snr_pre") or 1) - 1),
                 100 * ctx.cfg.solint.extend_min_gain)
        return None
    info = MSInfo.from_json(ctx.info)  # halve the interval gaincal really used (solint.effective_solint_s)
    solint_s = solint.effective_solint_s(rec["solint"], rec.get("combine", ""), integration_s=info.integration_s,
                                         scan_s=info.scan_s(), span_s=info.time_span_s)
    base = exts.get(after, {}).get("base") or after
    n = len([s for s in exts]) + 1
    if n > ctx.cfg.solint.max_extra_steps:
        return None
    params = params_for(ctx, template, base)
    gaintype = gaintype_for(params.gaintype, ctx.info.get("polarisation"))
    options = solint.extension_solints(solint_s, ctx.info["integration_s"],
                                       image_snr=estimation_snr(ctx, st.get("current")["stats"]),
                                       n_antennas=ctx.info["n_antennas_present"] - len(st.get("bad_antennas", [])),
                                       time_on_source_s=ctx.info["time_on_source_s"],
                                       gaintype=gaintype, cfg=dataclasses.replace(ctx.cfg.solint, max_extra_steps=1),
                                       measured=measure.measured_snr(ctx),
                                       fraction=solint.data_fraction(params.combine, gaintype, len(info.spws)))
    if not options:
        return None
    name = registry.extension_name(n)
    exts[name] = {"base": base, "solint": options[0][0], "est_snr": options[0][1]}
    st.save()
    return name
