"""Pure decisions of joint EB self-calibration (selfcal/ebjoint.py)."""
from __future__ import annotations

import math

import pytest

from selfcal_batch.selfcal.ebjoint import (
    SpwInfo, alignment_scales, angular_separation_arcsec, group_targets, map_spws,
)


def _t(ms: str, field: str, ra: float, dec: float) -> dict:
    return {"ms": ms, "field": field, "ra_deg": ra, "dec_deg": dec}


def test_separation() -> None:
    assert angular_separation_arcsec(150.0, 40.0, 150.0, 40.001) == pytest.approx(3.6, rel=1e-6)
    assert angular_separation_arcsec(10.0, 60.0, 10.002, 60.0) == pytest.approx(7.2 * 0.5, rel=1e-3)


def test_group_by_name_and_position() -> None:
    ts = [_t("eb1", "A", 150.0, 40.0), _t("eb1", "B", 150.0, 41.0), _t("eb2", "A", 150.0, 40.0001),
          _t("eb2", "B2", 150.0, 41.0002), _t("eb3", "A", 150.2, 40.0)]
    assert group_targets(ts, "name") == [[0, 2, 4], [1], [3]]
    assert group_targets(ts, "position", 1.0) == [[0, 2], [1, 3], [4]]
    assert group_targets(ts, "position", 0.5) == [[0, 2], [1], [3], [4]]
    # two fields of one MS never join one group, even when close
    assert group_targets([_t("eb1", "A", 150, 40), _t("eb1", "A2", 150, 40)], "position") == [[0], [1]]
    with pytest.raises(ValueError, match="group"):
        group_targets(ts, "scan")
    with pytest.raises(ValueError, match="tolerance"):
        group_targets(ts, "position", 0)


def test_spw_map_different_numbering_and_channels() -> None:
    eb1 = [SpwInfo(0, 4.936e9, 128e6, 64), SpwInfo(1, 5.064e9, 128e6, 64)]
    eb2 = [SpwInfo(7, 5.064e9, 128e6, 32), SpwInfo(2, 4.936e9, 128e6, 128), SpwInfo(3, 6.0e9, 128e6, 64)]
    m = map_spws([eb1, eb2])
    assert m == [{0: 0, 1: 1}, {2: 0, 7: 1, 3: 2}]
    with pytest.raises(ValueError, match="both match"):
        map_spws([eb1, [SpwInfo(0, 4.93e9, 128e6, 8), SpwInfo(1, 4.94e9, 128e6, 8)]])


def test_alignment_scales_keep_weighted_mean() -> None:
    # EB2 5 % brighter in visibility amplitude -> gains sqrt(1.05)
    g = [1.0, math.sqrt(1.05)]
    s = alignment_scales(g, [1.0, 1.0])
    assert s[1] / s[0] == pytest.approx(math.sqrt(1.05))
    assert (s[0] ** 2 + s[1] ** 2) / 2 == pytest.approx(1.0)
    assert alignment_scales([2.0], [3.0]) == [1.0]
    for bad in ([0.0, 1.0], [float("nan"), 1.0]):
        with pytest.raises(ValueError):
            alignment_scales(bad, [1, 1])
    with pytest.raises(ValueError):
        alignment_scales([1.0], [1.0, 2.0])


def _eb_amps(seed: int, scale: float, n_ant: int = 26, scatter: float = 0.03, snr: float = 40.0):
    """Generated per-antenna ``inf`` amplitudes of one EB: gain sqrt(scale) (a visibility flux
    scale ``scale``), antenna gain scatter ``scatter``, thermal error 1/snr per antenna."""
    import numpy as np

    rng = np.random.default_rng(seed)
    amps = math.sqrt(scale) * (1 + scatter * rng.standard_normal(n_ant)) * (1 + rng.standard_normal(n_ant) / snr)
    return list(amps), [snr] * n_ant


def test_scale_estimate_error_from_scatter_or_snr() -> None:
    from selfcal_batch.selfcal.ebjoint import eb_scale_estimate

    amps = [0.9, 1.0, 1.1, 1.0, 1.05, 0.95]
    mean, se = eb_scale_estimate(amps, [1000.0] * 6)
    std = math.sqrt(sum((a - 1.0) ** 2 for a in amps) / 5)
    assert mean == pytest.approx(1.0) and se == pytest.approx(std / math.sqrt(6))
    mean, se = eb_scale_estimate([1.0] * 4, [10.0] * 4)  # no scatter: the solutions' own noise
    assert se == pytest.approx(0.1 / 2)
    mean, se = eb_scale_estimate([1.0, float("nan"), 2.0], [10.0, 5.0, 0.0])  # invalid entries dropped
    assert mean == 1.0 and se == pytest.approx(0.1)
    wild = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0, 1.01, 0.99, 3.0]  # one wild antenna is clipped
    assert eb_scale_estimate(wild, [1000.0] * 10)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        eb_scale_estimate([0.0], [3.0])


@pytest.mark.parametrize("seed", range(20))
def test_equal_flux_scales_are_not_aligned_a_5_percent_offset_is(seed: int) -> None:
    """Generated EBs (26 antennas, 1 % antenna scatter, solution SNR 200): equal flux scales
    -> no factor applied (p >= 0.0027 in all 20 seeds: a false alignment is a 0.3 % event);
    EB2 5 % high -> applied, EB1 / EB2 visibility factors = 1.05 within 2 % (3 sigma). With SNR 15
    per solution the same 5 % is within the noise (z ~ 1.5): not applied."""
    from selfcal_batch.selfcal.ebjoint import (alignment_significance, applied_alignment_scales,
                                               eb_scale_estimate, significant_alignment_scales)

    def run(scale2: float, snr: float = 200.0) -> tuple[list[float], str]:
        est = [eb_scale_estimate(*_eb_amps(2 * seed, 1.0, scatter=0.01, snr=snr)),
               eb_scale_estimate(*_eb_amps(2 * seed + 1, scale2, scatter=0.01, snr=snr))]
        measured = alignment_scales([e[0] for e in est], [1.0, 1.0])
        scales, why = applied_alignment_scales(measured)
        assert why == ""
        return significant_alignment_scales(scales, alignment_significance([e[0] for e in est], [e[1] for e in est]))

    scales, why = run(1.0)
    assert scales == [1.0, 1.0] and why.startswith("flux alignment not applied: the EBs' flux scales agree within")
    scales, why = run(1.05)
    assert why == "" and (scales[1] / scales[0]) ** 2 == pytest.approx(1.05, abs=0.02)  # 3 sigma: 0.019
    if seed < 5:  # the same offset in noisy solutions: not above the noise (z about 1.5 per EB)
        scales, why = run(1.05, snr=15.0)
        assert scales == [1.0, 1.0] and "within their noise" in why


def test_significance_statistic() -> None:
    from selfcal_batch.selfcal.ebjoint import alignment_significance

    s = alignment_significance([1.0, 1.03], [0.01, 0.01])
    assert s["q"] == pytest.approx(4.5) and s["dof"] == 1 and s["z"] == pytest.approx([-1.5, 1.5])
    assert s["p"] == pytest.approx(math.erfc(math.sqrt(4.5 / 2)))  # chi2 with 1 dof = z^2
    with pytest.raises(ValueError):
        alignment_significance([1.0], [0.1])
    with pytest.raises(ValueError):
        alignment_significance([1.0, 1.0], [0.1, 0.0])


def test_antenna_amplitudes_per_eb() -> None:
    import numpy as np

    from selfcal_batch.pipeline.steps_joint import antenna_amplitudes

    obs = np.array([0, 0, 0, 1, 1])
    ant = np.array([0, 1, 0, 0, 1])
    gains = np.ones((5, 1, 2), complex) * np.array([1.0, 1.2, 1.1, 2.0, 3.0])[:, None, None]
    snr = np.full((5, 1, 2), 10.0)
    flags = np.zeros((5, 1, 2), bool)
    flags[1] = True  # antenna 1 of EB 0: no solution
    amps, snrs = antenna_amplitudes(obs, ant, gains, snr, flags, 0)
    assert amps == pytest.approx([1.05]) and snrs[0] == pytest.approx(1.05 / (np.sqrt((1.0 / 10) ** 2 / 2 + (1.1 / 10) ** 2 / 2) / 2))
    amps, _ = antenna_amplitudes(obs, ant, gains, snr, flags, 1)
    assert amps == pytest.approx([2.0, 3.0])


def test_noise_coherence_of_noisy_phases_divided_out() -> None:
    """Generated: phase errors of rms 1/SNR rad keep exp(-1/(2 SNR^2)) of the mean phasor
    (checked by drawing them), and antenna_amplitudes divides each antenna's amplitude by
    its own phase solutions' coherence."""
    import numpy as np

    from selfcal_batch.pipeline.steps_joint import antenna_amplitudes
    from selfcal_batch.selfcal.ebjoint import noise_coherence

    rng = np.random.default_rng(7)
    for snr in (3.0, 4.0, 8.0):
        drawn = float(np.mean(np.cos(rng.standard_normal(200_000) / snr)))
        assert noise_coherence([snr] * 5) == pytest.approx(drawn, abs=2e-3)
    assert noise_coherence([]) == 1.0 and noise_coherence([float("nan"), 0.0]) == 1.0
    obs, ant = np.array([0, 0]), np.array([0, 1])
    gains = np.full((2, 1, 1), 0.97 + 0j)
    snr, flags = np.full((2, 1, 1), 100.0), np.zeros((2, 1, 1), bool)
    p_obs, p_ant = np.array([0, 0, 0, 0]), np.array([0, 0, 1, 1])
    p_snr = np.array([4.0, 4.0, 8.0, 8.0]).reshape(4, 1, 1)
    p_flags = np.zeros((4, 1, 1), bool)
    amps, _ = antenna_amplitudes(obs, ant, gains, snr, flags, 0, (p_obs, p_ant, p_snr, p_flags))
    assert amps == pytest.approx([0.97 / math.exp(-0.5 / 16), 0.97 / math.exp(-0.5 / 64)])
