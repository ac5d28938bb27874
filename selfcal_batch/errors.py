"""Exception hierarchy. Every error a user can cause carries a one-line message."""
from __future__ import annotations


class SelfcalBatchError(Exception):
    """Base class of all selfcal-batch errors."""


class ConfigError(SelfcalBatchError):
    """Invalid manifest or pipeline configuration (message names the key)."""


class DatasetError(SelfcalBatchError):
    """A problem with one dataset's input (missing MS, no data, bad field...)."""

    def __init__(self, dataset: str, problem: str):
        self.dataset = dataset
        self.problem = problem
        super().__init__(f"dataset '{dataset}': {problem}")


class ToolError(SelfcalBatchError):
    """An external program failed (non-zero exit, signal, timeout)."""

    def __init__(self, tool: str, message: str, returncode: int | None = None, log_tail: str = ""):
        self.tool = tool
        self.returncode = returncode
        self.log_tail = log_tail
        super().__init__(f"{tool}: {message}")


class WSCleanError(ToolError):
    """WSClean failed."""


class CasaTaskError(ToolError):
    """A CASA task raised or its child process died."""


class MeasuresDataError(SelfcalBatchError):
    """CASA measures data could not be found or prepared."""


class SimulationError(SelfcalBatchError):
    """Bad simulator arguments or a failed simulation."""


class CampaignLockedError(SelfcalBatchError):
    """Another live campaign holds the output directory."""


class OutputDirError(SelfcalBatchError):
    """The output directory cannot be created or written (one line naming the path)."""
