"""The selfcal-batch performance benchmark as an importable package; the entry point is
``bash scripts/bench`` (scripts/bench_selfcal.py). Modules: common (constants), report (pure
helpers and the text report), machinery (Bench, inputs, sampler), campaigns (runs), sections."""
