"""Unit tests: pure logic, no WSClean, CASA or Dask cluster; ``pytest tests/unit`` < 1 min."""
