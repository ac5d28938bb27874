"""Findings F4-F9 of the s6 review, pure parts (no WSClean, no CASA): the CASA child's line
protocol with odd paths, ASCII-safe FITS cards, our private view told apart from the input,
run-one's output lock, the shared field rule and `compare` without common datasets."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from selfcal_batch.campaign.lock import LOCK_NAME, CampaignLock
from selfcal_batch.casa.runner import done_line, parse_done_line, parse_request_line, request_line
from selfcal_batch.cli import main
from selfcal_batch.imaging.provenance import fits_text, provenance_cards, stamp
from selfcal_batch.ms.selection import field_selection_problem, has_science_intents
from selfcal_batch.ms.view import read_only_view, view_disturbed, view_identity
from selfcal_batch.report.compare import no_common_problem

ODD = ["/data/My Survey/out/datasets/base ü/casa_calls/1-0001-working copy.json",
       "/tmp/a  b/ trailing space .json", "/tmp/tab\there/x.json", "/tmp/plain/x.json"]


@pytest.mark.parametrize("path", ODD)
def test_casa_protocol_round_trips_any_path(path: str) -> None:
    line = request_line(path)
    assert line.endswith("\n") and line.count("\n") == 1 and line.isascii()
    assert parse_request_line(line) == path
    done = done_line(path, 1)
    assert done.isascii() and "\n" not in done
    assert parse_done_line(done + "\n") == (path, 1)


def test_casa_protocol_other_lines() -> None:
    assert parse_request_line("\n") == ""
    assert parse_request_line("/old/parent path.json\n") == "/old/parent path.json"  # bare path: kept whole
    assert parse_done_line("2026-12-03 INFO gaincal something\n") is None
    assert parse_done_line("@@selfcal-batch-casa-done garbage\n") is None


def test_fits_text_is_printable_ascii() -> None:
    assert fits_text("base ü.ms") == "base \\u00fc.ms"
    assert fits_text("plain_name-1.ms") == "plain_name-1.ms"
    assert fits_text("a\tb😀") == "a\\u0009b\\U0001f600"


def test_stamp_with_non_ascii_input(tmp_path: Path) -> None:
    from astropy.io import fits  # test-only

    img = tmp_path / "i.fits"
    fits.PrimaryHDU(np.zeros((4, 4), np.float32)).writeto(img)
    ms = "/data/Überblick ü/baseü.ms"
    stamp(img, provenance_cards("1.0", "standard_2", [("p0", "inf")], {"snr": 10.0}, ms), ms)
    h = fits.getheader(img)
    assert h["SCB_INMS"] == "base\\u00fc.ms"
    assert "\\u00dcberblick" in str(h["HISTORY"])


def test_view_disturbed_tells_our_view_from_the_input(tmp_path: Path) -> None:
    src = tmp_path / "in.ms"
    (src / "FEED").mkdir(parents=True)
    (src / "table.dat").write_bytes(b"t")
    (src / "FEED" / "table.dat").write_bytes(b"f")
    view = read_only_view(src, tmp_path / "out" / "input_view.ms")
    ident = view_identity(view)
    assert view_disturbed(view, ident) == ""
    import shutil  # test-only
    shutil.rmtree(view / "FEED")
    assert "lost FEED" in view_disturbed(view, ident)
    read_only_view(src, view)  # another run rebuilds it (often with the same inode number)
    assert "rebuilt" in view_disturbed(view, ident)
    view_identity(view)        # ... and marks it as its own
    assert "rebuilt" in view_disturbed(view, ident)
    shutil.rmtree(view)
    assert "removed" in view_disturbed(view, ident)


def test_run_one_refuses_an_output_directory_in_use(tmp_path: Path) -> None:
    ms, out = tmp_path / "a.ms", tmp_path / "out"
    ms.mkdir()
    with CampaignLock(out, "other"):  # held by this (live) process
        res = CliRunner().invoke(main, ["run-one", str(ms), "--out", str(out)])
        assert res.exit_code == 3, res.output
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and "is in use by pid" in lines[0], res.output
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing else written
    assert not (out / LOCK_NAME).exists()
    (out / "datasets").mkdir()
    with CampaignLock(out, "other"):  # `apply` never writes into datasets a run is writing
        res = CliRunner().invoke(main, ["apply", str(out)])
        assert res.exit_code == 3 and "is in use by pid" in res.output, res.output


@pytest.mark.parametrize("field, names, intents, want", [
    ("", ["T"], False, ""),
    ("", ["T", "T"], False, ""),  # one target over two FIELD rows (concat of EBs): not "2 fields"
    ("", ["CAL", "T", "T"], False, "the MS has 2 fields (CAL, T);"),
    ("T1", ["CAL", "T1"], True, ""),
    ("1", ["CAL", "T1"], False, ""),
    ("J*", ["CAL", "T1"], False, ""),
    ("X", ["CAL", "T1"], False, "field 'X' not in the MS (fields: CAL, T1)"),
    ("", ["CAL", "T1"], True, 'the MS has 2 fields (CAL, T1); set \'field\' to the target or use targets = "science"'),
    ("", ["CAL", "T1"], False, "the MS has 2 fields (CAL, T1); set 'field' to the target or use targets = [\"pattern\""),
])
def test_field_selection_problem(field: str, names: list[str], intents: bool, want: str) -> None:
    why = field_selection_problem(field, names, intents)
    assert why.startswith(want) and (why == "") == (want == "")


def test_science_intents() -> None:
    assert has_science_intents(["CALIBRATE_PHASE#UNSPECIFIED", "OBSERVE_TARGET#ON_SOURCE"])
    assert not has_science_intents(["CALIBRATE_PHASE#UNSPECIFIED,CALIBRATE_AMPLI#UNSPECIFIED", ""])
    assert not has_science_intents([])


def test_compare_without_common_dataset_is_one_line_exit_2(tmp_path: Path) -> None:
    assert no_common_problem(["a", "b"], ["b"], Path("A"), Path("B")) == ""
    assert no_common_problem(["a"], [], Path("A"), Path("B")).startswith("no dataset in common: A has a; B has none")
    a, b = tmp_path / "run_a", tmp_path / "run_b"
    (a / "datasets" / "base").mkdir(parents=True)
    (b / "datasets" / "rev_chan").mkdir(parents=True)
    res = CliRunner().invoke(main, ["compare", str(a), str(b)])
    assert res.exit_code == 2, res.output
    assert [ln for ln in res.output.splitlines() if ln.strip()] == [
        f"error: no dataset in common: {a} has base; {b} has rev_chan (compare compares runs of the same datasets)"]
    assert not (tmp_path / "compare-run_a-vs-run_b").exists()


def test_failed_dataset_traceback_stays_off_the_console(tmp_path: Path, caplog) -> None:
    from selfcal_batch.config import PipelineConfig  # test-only
    from selfcal_batch.pipeline.runner import run_dataset  # test-only

    with caplog.at_level(logging.ERROR, logger="selfcal_batch"):
        res = run_dataset("gone", tmp_path / "missing.ms", PipelineConfig(), tmp_path / "out")
    assert res.status == "failed" and "\n" not in res.error
    with_tb = [r for r in caplog.records if "Traceback" in r.getMessage()]
    assert with_tb and all(getattr(r, "console", True) is False for r in with_tb)
    log_text = (tmp_path / "out" / "datasets" / "gone" / "logs" / "pipeline.log").read_text()
    assert "Traceback" in log_text
    assert json.loads((tmp_path / "out" / "datasets" / "gone" / "result.json").read_text())["error"] == res.error
    assert os.path.basename(res.ms) == "missing.ms"


def test_batch_script_paths_with_spaces_are_refused() -> None:
    from selfcal_batch.campaign import cluster as cl  # test-only
    from selfcal_batch.campaign_config import ClusterSpec  # test-only
    from selfcal_batch.errors import ConfigError  # test-only

    spec = ClusterSpec(kind="slurm", workers=1, threads_per_dataset=2, memory="4GiB")
    assert cl.jobqueue_kwargs(spec, Path("/data/out"))["log_directory"] == "/data/out/dask-jobs"
    with pytest.raises(ConfigError, match=r"cluster.log_directory: '/data/My Survey/out/dask-jobs' holds a space"):
        cl.jobqueue_kwargs(spec, Path("/data/My Survey/out"))
    assert cl.batch_path_problem({"python": "/opt/my env/bin/python"}).startswith("cluster.python: ")
    assert cl.batch_path_problem({"python": "/opt/env/bin/python", "log_directory": "/l"}) == ""


def test_target_names_from_an_ms_stem_with_spaces_are_safe() -> None:
    from selfcal_batch.campaign.targets import target_dataset_name  # test-only

    assert target_dataset_name("{stem}__{field}", "x", "my obs ü", "NGC 1234") == "my_obs____NGC_1234"
