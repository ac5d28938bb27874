"""Self-calibration decisions (pure): acceptance, solution intervals, chaining, reference antenna, spw maps, templates, final guard, outcomes."""
