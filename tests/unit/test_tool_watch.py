"""Stopping a program from its output: WSClean's diverged clean ('inf KJy' forever) is
stopped at the first such line, and the step fails with one line (no WSClean run here: the
watcher is pure, and run_tool is exercised with a shell loop)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from selfcal_batch.errors import WSCleanError
from selfcal_batch.imaging.wsclean import diverged_line
from selfcal_batch.process import StopTool, run_tool


@pytest.mark.parametrize("value", ["inf KJy", "-inf KJy", "inf Jy", "nan Jy", "-nan mJy", "NaN Jy",
                                   "inf MJy", "1.5 KJy", "12.3 kJy"])
@pytest.mark.parametrize("scale", ["", ", scale 0 px", ", scale 12 px"])
def test_diverged_iterations_are_recognised(value, scale):
    line = f"Iteration 13259{scale} : {value}"
    why = diverged_line(line)
    assert why == f"clean diverged: {line}"


@pytest.mark.parametrize("line", ["Iteration 100, scale 0 px : 1.23 mJy", "Iteration 5 : 0.5 Jy",
                                  "Iteration 7, scale 3 px : 850 µJy", "Peak flux: inf-nity",
                                  "Writing informational image", "== Converged after 100 iterations. =="])
def test_normal_lines_are_not(line):
    assert diverged_line(line) == ""


def test_run_tool_stops_an_endless_program_on_a_watched_line(tmp_path: Path):
    """A program printing 'inf KJy' forever is killed at the first line, the log ends there
    (bounded) and the error is one line naming the reason and the log."""
    script = "import itertools\nfor i in itertools.count():\n    print(f'Iteration {i}, scale 0 px : inf KJy', flush=True)\n"
    log = tmp_path / "w.log"

    def watch(line: str) -> None:
        if why := diverged_line(line):
            raise StopTool(why)

    t0 = time.monotonic()
    with pytest.raises(WSCleanError) as err:
        run_tool([sys.executable, "-c", script], tool="wsclean", log_path=log, timeout=60,
                 on_line=watch, error_cls=WSCleanError)
    assert time.monotonic() - t0 < 15
    msg = str(err.value)
    assert "clean diverged: Iteration 0, scale 0 px : inf KJy" in msg and f"(log: {log})" in msg
    assert "\n" not in msg
    assert log.stat().st_size < 64_000
    assert "# wsclean: stopped: clean diverged" in log.read_text()
