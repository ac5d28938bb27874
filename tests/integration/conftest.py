"""Fixtures of the integration tests."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def campaign_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real small campaign output shared by the report tests (report_fixtures.make_campaign;
    runs the real pipeline, so only integration tests may ask for it)."""
    from report_fixtures import campaign_out_dir

    return campaign_out_dir(tmp_path_factory)
