"""Offline CASA: a fresh environment imports casatools/casatasks with no SEVERE line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASA")}
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), SELFCAL_BATCH_CASADATA=str(tmp_path / "casadata"),
               # Any attempt to download measures data would hit a dead proxy and be logged.
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    return env


def test_casa_child_imports_offline_without_severe(tmp_path):
    code = (
        "from pathlib import Path\n"
        "import sys\n"
        "import selfcal_batch.casa.calibration  # the CASA wrappers\n"
        "from selfcal_batch.casa.env import configure_inprocess\n"
        "configure_inprocess(Path(sys.argv[1]) / 'casa.log')\n"
        "import casatools, casatasks\n"
        "me = casatools.measures()\n"
        "print('EPOCH', me.epoch('utc', 'today')['m0']['value'] > 50000)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=_fresh_env(tmp_path),
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "EPOCH True" in out
    assert "SEVERE" not in out
    log = (tmp_path / "casa.log").read_text() if (tmp_path / "casa.log").exists() else ""
    assert "SEVERE" not in log
    # Nothing was written to ~/.casa: the user never configures CASA by hand.
    assert not (tmp_path / "home" / ".casa" / "data").exists()
    data = tmp_path / "casadata"
    assert (data / "geodetic" / "IERSeop2000").is_dir()
    assert (data / "readme.txt").read_text().startswith("#")
    assert (data.parent / "casasiteconfig.py").read_text().count("auto_update = False") == 2


def test_run_casa_reports_task_errors_in_one_line(tmp_path):
    from selfcal_batch.casa import calibration
    from selfcal_batch.errors import CasaTaskError

    with pytest.raises(CasaTaskError) as exc:
        calibration.run_casa([calibration.task("applycal", vis=str(tmp_path / "nope.ms"),
                                               gaintable=["missing.G"])], workdir=tmp_path, label="bad")
    msg = str(exc.value)
    assert "applycal" in msg and "\n" not in msg
