"""Per-EB share of a joint step's failed solutions (pipeline/eb_solutions.py; pure parts)."""
from __future__ import annotations

import numpy as np

from selfcal_batch.pipeline.eb_solutions import eb_reason, flagged_per_observation


def test_flagged_fraction_per_observation() -> None:
    # 4 solutions of EB 0 (none flagged), 4 of EB 1 (3 flagged in both correlations, one in one)
    obs = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    flags = np.zeros((8, 1, 2), bool)
    flags[4:7] = True
    flags[7, 0, 0] = True
    assert flagged_per_observation(flags, obs, 3) == [0.0, 0.875, None]


def test_reason_names_the_ebs_only_for_failed_solutions() -> None:
    names = ["ebA.ms", "ebF_faint.ms"]
    r = eb_reason("27% of solutions flagged (> 20%)", [0.0, 0.54], names)
    assert r == "27% of solutions flagged (> 20%) (per EB: ebA.ms 0%, ebF_faint.ms 54%)"
    assert eb_reason(r, [0.0, 0.54], names) == r  # once
    other = "no improvement beyond 2 sigma (SNR +0.4)"
    assert eb_reason(other, [0.0, 0.54], names) == other
    applied = "applying the solutions flagged 36% of the data (> 20%)"
    assert eb_reason(applied, [0.0, 0.37], names).endswith("(per EB: ebA.ms 0%, ebF_faint.ms 37%)")
    assert eb_reason("30% of solutions flagged", [None, 0.3], names).endswith("(per EB: ebA.ms no rows, ebF_faint.ms 30%)")
