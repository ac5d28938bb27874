"""Pure parts of the up-front input checks."""
from selfcal_batch.campaign.preflight import data_column


def test_input_column_names_the_ms_column() -> None:
    """Breaker finding: input_column = "corrected" was checked as a column named CORRECTED."""
    assert data_column("corrected") == "CORRECTED_DATA"
    assert data_column("Corrected") == "CORRECTED_DATA"
    assert data_column("data") == "DATA" and data_column("") == "DATA"
