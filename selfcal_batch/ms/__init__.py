"""Measurement-set access: read-only view of the input, inspection, checksums, correlation choice."""
