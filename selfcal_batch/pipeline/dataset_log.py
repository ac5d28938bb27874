"""Per-dataset log files that never receive another dataset's lines.

Every dataset's ``logs/pipeline.log`` handler hangs on the package logger, so a worker
process running two datasets at once (a Dask worker with several threads) would write
each line into both files. The handler made here carries a filter that accepts a record
only when the thread that emits it is running that dataset (a context variable set by
:func:`in_dataset`; Dask runs each task in its own thread with its own context).
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
from pathlib import Path
from typing import Iterator

_DATASET: contextvars.ContextVar[str] = contextvars.ContextVar("selfcal_dataset", default="")

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def in_dataset(name: str) -> Iterator[None]:
    """Mark the code in the block (this thread) as working on dataset ``name``."""
    token = _DATASET.set(name)
    try:
        yield
    finally:
        _DATASET.reset(token)


def current_dataset() -> str:
    """The dataset this thread is working on ('' outside :func:`in_dataset`)."""
    return _DATASET.get()


class OnlyDataset(logging.Filter):
    """Accept records emitted while ``name`` is the current dataset."""

    def __init__(self, name: str):
        super().__init__()
        self.dataset = name

    def filter(self, record: logging.LogRecord) -> bool:
        return _DATASET.get() == self.dataset


def dataset_handler(path: Path, name: str) -> logging.FileHandler:
    """A file handler for ``path`` that only takes dataset ``name``'s records.

    Raises:
        OSError: the file cannot be opened.
    """
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(OnlyDataset(name))
    return handler
