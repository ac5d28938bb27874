"""Solution intervals against the scan length (selfcal.solint.effective_solint_s,
scan_limited_solint): pure numbers, no program runs."""
from __future__ import annotations

import pytest

from selfcal_batch.selfcal.solint import effective_solint_s, interval_s, scan_limited_solint

#: 60 s scans of 10 s integrations over a 410 s span (the joint-EB test data, issue 18)
SHORT = dict(integration_s=10.0, scan_s=60.0, span_s=410.0)
#: one 1200 s scan (scripts/bench_quality.py)
LONG = dict(integration_s=10.0, scan_s=1200.0, span_s=1200.0)


@pytest.mark.parametrize(("solint", "combine", "expected"), [
    ("96s", "", 60.0),      # cut at the scan boundary: one solution per scan
    ("60s", "", 60.0),
    ("48s", "", 30.0),      # 5 + 1 integrations: mean 30 s
    ("30s", "", 30.0),
    ("20s", "", 20.0),
    ("int", "", 10.0),
    ("inf", "", 60.0),
    ("inf", "scan", 410.0),
    ("96s", "scan", 96.0),  # intervals span scans
    ("5s", "", 10.0),       # never shorter than one integration
])
def test_effective_interval_in_short_scans(solint: str, combine: str, expected: float) -> None:
    assert effective_solint_s(solint, combine, **SHORT) == pytest.approx(expected)


def test_effective_interval_in_a_long_scan() -> None:
    assert effective_solint_s("96s", "", **LONG) == pytest.approx(100.0)  # [t, t + 96 s) holds 10 integrations
    assert effective_solint_s("60s", "", **LONG) == pytest.approx(60.0)
    assert effective_solint_s("48s", "", **LONG) == pytest.approx(50.0)  # 5 integrations
    assert interval_s("inf", "", **LONG) == 1200.0 and interval_s("inf", "scan", **SHORT) == 410.0


def test_bad_solint_raises() -> None:
    with pytest.raises(ValueError, match="bad solint"):
        effective_solint_s("often", "", **SHORT)


def test_standard_ladder_in_60s_scans_is_made_shorter() -> None:
    """standard_1: p0 96 s, p1 60 s, p2 48 s. In 60 s scans p1 repeats p0's one solution per
    scan and p2 (mean 30 s) repeats a 30 s p1: each gets the next equal split of the scan."""
    p1, why1 = scan_limited_solint("60s", "", [(96.0, 60.0)], **SHORT)
    assert p1 == "30s" and "60s is 60 s in 60 s scans" in why1
    p2, why2 = scan_limited_solint("48s", "", [(96.0, 60.0), (60.0, 30.0)], **SHORT)
    assert p2 == "20s" and why2
    # p1 lengthened or skipped by the SNR check (it ran at 60 s): p2's 48 s is shorter already
    assert scan_limited_solint("48s", "", [(96.0, 60.0), (60.0, 60.0)], **SHORT) == ("48s", "")
    # an earlier step already at 20 s: one integration is the next
    assert scan_limited_solint("48s", "", [(96.0, 60.0), (60.0, 20.0)], **SHORT)[0] == "int"


def test_template_kept_when_already_shorter_or_not_meant_shorter() -> None:
    # long scans (the benchmarks): the templates' intervals decrease, nothing changes
    assert scan_limited_solint("60s", "", [(96.0, 100.0)], **LONG) == ("60s", "")
    assert scan_limited_solint("48s", "", [(96.0, 100.0), (60.0, 60.0)], **LONG) == ("48s", "")
    # the 'faint' template's p1 has p0's interval on purpose (a new model, same interval)
    assert scan_limited_solint("60s", "", [(60.0, 60.0)], **SHORT) == ("60s", "")
    # no earlier step (p0 skipped)
    assert scan_limited_solint("60s", "", [], **SHORT) == ("60s", "")
    # nothing shorter than one integration exists: the template's interval
    assert scan_limited_solint("48s", "", [(96.0, 60.0), (60.0, 10.0)], **SHORT) == ("48s", "")


def test_uneven_scan_gets_nearly_equal_parts() -> None:
    """7 integrations per scan: two parts of 4 + 3 (mean 35 s) before anything shorter."""
    kw = dict(integration_s=10.0, scan_s=70.0, span_s=500.0)
    assert scan_limited_solint("70s", "", [(96.0, 70.0)], **kw)[0] == "40s"
    assert effective_solint_s("40s", "", **kw) == pytest.approx(35.0)


def test_non_integer_integration_time_keeps_precision() -> None:
    """2.5 s integrations: 7.5 s is written with its decimals, so gaincal gets 3 integrations."""
    kw = dict(integration_s=2.5, scan_s=15.0, span_s=100.0)
    sol, _ = scan_limited_solint("15s", "", [(30.0, 15.0)], **kw)
    assert sol == "7.50s" and effective_solint_s(sol, "", **kw) == pytest.approx(7.5)


def _gate_reasons(per_antenna: dict[str, tuple[int, int]], before: float = 0.0, after: float = 0.0) -> list[str]:
    """The gate's own reasons for a step's solutions (acceptance + applied-flags check)."""
    from selfcal_batch.config import GateConfig
    from selfcal_batch.selfcal.acceptance import SolutionStats, evaluate_solutions
    from selfcal_batch.selfcal.applied_flags import gate_applied_flags

    cfg = GateConfig()
    dec = evaluate_solutions(SolutionStats(per_antenna), cfg=cfg)
    return list(gate_applied_flags(dec, before, after, cfg.max_flagged_solutions).reasons)


def test_retry_after_flagged_solutions_uses_one_solution_per_scan() -> None:
    """Tester finding F7: 23 % of the 96 s solutions flagged in 300 s scans -> once more at
    one solution per scan ('inf' without combine='scan'). The reasons are made by the gate's
    own functions, so their wording and this rule cannot drift apart."""
    from selfcal_batch.selfcal.solint import longer_after_flagged

    flagged = _gate_reasons({f"ea{i:02d}": (10, 7 if i < 20 else 10) for i in range(27)})
    assert flagged and all("of solutions flagged" in r for r in flagged), flagged
    kw = dict(integration_s=10.0, scan_s=300.0, max_solint_s=1200.0)
    assert longer_after_flagged(flagged, "96s", **kw) == "inf"
    assert longer_after_flagged(flagged, "96s", **{**kw, "max_solint_s": 200.0}) == "200s"
    # data flagged by applycal (a reference antenna missing from part of the data) and one
    # antenna's lost solutions (a dead antenna) are not cured by a longer interval
    applied = _gate_reasons({"ea01": (10, 10), "ea02": (10, 10)}, before=0.1, after=0.5)
    assert applied and longer_after_flagged(applied, "96s", **kw) is None
    dead = _gate_reasons({**{f"ea{i:02d}": (10, 10) for i in range(26)}, "ea26": (10, 0)})
    assert dead and longer_after_flagged(dead, "96s", **kw) is None


@pytest.mark.parametrize("reasons, solint, scan_s", [
    ([], "96s", 300.0),                                                         # accepted
    (["SNR decreased 40.1 -> 38.0 (-2.1 sigma)"], "96s", 300.0),                 # harm: no retry
    (["23% of solutions flagged (> 20%)", "rms increased 1.0 -> 1.2"], "96s", 300.0),  # mixed
    (["23% of solutions flagged (> 20%)"], "96s", 100.0),                      # already one per 100 s scan
    (["23% of solutions flagged (> 20%)"], "inf", 300.0),                      # already per scan
])
def test_no_retry(reasons: list[str], solint: str, scan_s: float) -> None:
    from selfcal_batch.selfcal.solint import longer_after_flagged

    assert longer_after_flagged(reasons, solint, integration_s=10.0, scan_s=scan_s, max_solint_s=1200.0) is None
