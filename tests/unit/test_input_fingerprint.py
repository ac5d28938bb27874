"""The input fingerprint covers the whole MS tree (main table and every sub-table), cheaply
(stat only), and a change is named on one line (breaker: a sub-table change was missed)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from selfcal_batch.ms.checksum import fingerprint_change, input_fingerprint
from selfcal_batch.pipeline.restart import input_change_message
from selfcal_batch.pipeline.runner import input_change

SUBTABLES = ("ANTENNA", "SPECTRAL_WINDOW", "FIELD", "FLAG_CMD", "POINTING")


def _fake_ms(ms: Path) -> Path:
    ms.mkdir()
    for rel in ("table.dat", "table.f0", "table.info",
                *(f"{s}/{f}" for s in SUBTABLES for f in ("table.dat", "table.f0", "table.info"))):
        (ms / rel).parent.mkdir(exist_ok=True)
        (ms / rel).write_bytes(b"x" * 16)
    return ms


@pytest.mark.parametrize("sub", SUBTABLES)
@pytest.mark.parametrize("how", ["rewrite", "grow", "add", "remove"])
def test_every_subtable_change_is_seen_and_named(tmp_path, sub, how) -> None:
    ms = _fake_ms(tmp_path / "a.ms")
    before = input_fingerprint(ms)
    f = ms / sub / "table.f0"
    if how == "rewrite":  # same size, new modification time
        f.write_bytes(b"y" * 16)
        os.utime(f, ns=(1, 1))
    elif how == "grow":
        f.write_bytes(b"x" * 17)
    elif how == "add":
        (ms / sub / "table.f1").write_bytes(b"z")
    else:
        f.unlink()
    word = {"rewrite": "changed", "grow": "changed", "add": "added", "remove": "removed"}[how]
    assert fingerprint_change(before, input_fingerprint(ms)) == f"{sub} {word}"


def test_main_table_lock_files_and_unchanged(tmp_path) -> None:
    ms = _fake_ms(tmp_path / "a.ms")
    before = input_fingerprint(ms)
    assert fingerprint_change(before, input_fingerprint(ms)) == ""
    # casacore writes table.lock on every open, also read-only: not a data change.
    (ms / "table.lock").write_bytes(b"lock")
    (ms / "ANTENNA" / "table.lock").write_bytes(b"lock")
    assert fingerprint_change(before, input_fingerprint(ms)) == ""
    (ms / "table.f0").write_bytes(b"x" * 99)
    (ms / "FIELD" / "table.dat").write_bytes(b"x" * 99)
    (ms / "HISTORY").mkdir()
    (ms / "HISTORY" / "table.dat").write_bytes(b"h")
    assert fingerprint_change(before, input_fingerprint(ms)) == "main table, FIELD changed; HISTORY added"
    assert fingerprint_change(before, input_fingerprint(tmp_path / "gone.ms")) == "the MS is gone"
    assert fingerprint_change(None, input_fingerprint(ms)) == ""  # nothing recorded: trusted


def test_fingerprint_follows_links_and_is_json(tmp_path) -> None:
    real = _fake_ms(tmp_path / "real.ms")
    link = tmp_path / "link.ms"
    link.symlink_to(real)
    fp = input_fingerprint(link)
    assert fp == input_fingerprint(real) and "SPECTRAL_WINDOW/table.f0" in fp["files"]
    assert json.loads(json.dumps(fp)) == fp


def test_older_main_table_record_compares_main_table_only(tmp_path) -> None:
    """A state.json written before sub-tables were covered: no redo for that alone."""
    ms = _fake_ms(tmp_path / "a.ms")
    old = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(ms.glob("table.*"))
           if p.name == "table.dat" or p.name.startswith("table.f")]
    assert fingerprint_change(old, input_fingerprint(ms)) == ""
    (ms / "table.f0").write_bytes(b"new")
    assert fingerprint_change(old, input_fingerprint(ms)) == "main table changed"


def test_the_console_line_and_the_runner_agree(tmp_path) -> None:
    ms = _fake_ms(tmp_path / "a.ms")
    state = tmp_path / "state.json"
    assert input_change(state, ms, "startup") == ""  # never ran
    state.write_text(json.dumps({"steps": {}}))
    assert input_change(state, ms, "startup") == ""  # an earlier version's state: trusted
    state.write_text(json.dumps({"input_fingerprint": input_fingerprint(ms)}))
    assert input_change(state, ms, "startup") == ""
    (ms / "POINTING" / "table.f0").write_bytes(b"moved")
    line = "input MS changed since the last run (POINTING changed): redoing from startup"
    assert input_change(state, ms, "startup") == line
    assert input_change_message(json.loads(state.read_text()), input_fingerprint(ms), "startup") == line


def test_a_real_subtable_write_is_seen(tmp_path, tiny_ms) -> None:
    """python-casacore writing one cell of SPECTRAL_WINDOW (what a user's CASA task would do)."""
    import numpy as np
    from casacore.tables import table

    ms = tiny_ms(tmp_path / "t.ms")
    before = input_fingerprint(ms)
    with table(str(ms / "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        t.putcell("CHAN_FREQ", 0, np.array([6e9]))
    assert "SPECTRAL_WINDOW changed" in fingerprint_change(before, input_fingerprint(ms))


def test_campaign_lines_and_dry_run(tmp_path, tiny_ms) -> None:
    """The campaign's up-front lines (printed before anything runs, and by --dry-run) come
    from the same decision as the runner's; none with --restart (everything is redone)."""
    from selfcal_batch.campaign.manifest import load_manifest
    from selfcal_batch.campaign.plan import RunOptions, input_change_lines, plan_text

    a, b = tiny_ms(tmp_path / "a.ms"), tiny_ms(tmp_path / "b.ms")  # real MSs: --dry-run checks them
    (tmp_path / "c.toml").write_text('[campaign]\nname = "c"\noutput_dir = "out"\n[defaults]\nimsize = 128\n'
                                     '[[datasets]]\nms = "a.ms"\n[[datasets]]\nms = "b.ms"\n')
    camp = load_manifest(tmp_path / "c.toml")
    for name, ms in (("a", a), ("b", b)):
        (tmp_path / "out" / "datasets" / name).mkdir(parents=True)
        (tmp_path / "out" / "datasets" / name / "state.json").write_text(
            json.dumps({"input_fingerprint": input_fingerprint(ms)}))
    assert input_change_lines(camp, RunOptions()) == {}
    from casacore.tables import table

    with table(str(a / "ANTENNA"), readonly=False, ack=False) as t:  # an antenna moved
        t.putcell("POSITION", 0, t.getcell("POSITION", 0) + 1.0)
    line = "input MS changed since the last run (ANTENNA changed): redoing from startup"
    assert input_change_lines(camp, RunOptions()) == {"a": line}
    assert input_change_lines(camp, RunOptions(restart=True)) == {}
    text, _ = plan_text(camp, RunOptions())
    assert f"      restart   {line}" in text.splitlines()
