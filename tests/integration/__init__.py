"""Integration tests: real WSClean, CASA and Dask clusters on generated data."""
