"""Fault-injection tests: bad input, kill-and-resume, input integrity, data variety."""
