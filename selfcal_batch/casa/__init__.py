"""CASA in a child process: offline environment, child runner, the jobs run in the child, calibration wrappers."""
