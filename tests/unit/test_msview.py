"""The input view and the self-containment check (pure file-system logic, no CASA)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from selfcal_batch.campaign.manifest import load_manifest
from selfcal_batch.campaign.preflight import structure_problems
from selfcal_batch.ms.view import archive_hint

from selfcal_batch.ms.view import (
    LINK_MIN_BYTES,
    LeakingLinkError,
    check_self_contained,
    input_problem,
    leaving_links,
    read_only_view,
)


def _fake_ms(root: Path) -> Path:
    ms = root / "in.ms"
    (ms / "POINTING").mkdir(parents=True)
    (ms / "table.dat").write_bytes(b"desc")
    (ms / "table.lock").write_bytes(b"sync")
    (ms / "table.f0").write_bytes(b"x" * 10)                       # small: copied
    (ms / "table.f1_TSM1").write_bytes(b"\0" * LINK_MIN_BYTES)      # bulk column data: linked
    (ms / "POINTING" / "table.f0").write_bytes(b"\0" * LINK_MIN_BYTES)  # subtable: copied
    (ms / "POINTING" / "table.info").write_bytes(b"Type = \n")
    return ms


def test_view_links_only_bulk_main_table_files(tmp_path: Path) -> None:
    ms = _fake_ms(tmp_path)
    view = read_only_view(ms, tmp_path / "view.ms")
    links = sorted(p.name for p in view.rglob("*") if p.is_symlink())
    assert links == ["table.f1_TSM1"]
    assert os.readlink(view / "table.f1_TSM1") == str(ms / "table.f1_TSM1")
    assert (view / "POINTING").is_dir() and not (view / "POINTING").is_symlink()
    assert (view / "table.lock").read_bytes() == b"sync"
    # Writing through the view's subtables cannot reach the input.
    (view / "POINTING" / "table.info").write_bytes(b"rewritten")
    assert (ms / "POINTING" / "table.info").read_bytes() == b"Type = \n"


def test_view_of_a_linked_ms_and_rebuild(tmp_path: Path) -> None:
    ms = _fake_ms(tmp_path)
    link = tmp_path / "alias.ms"
    link.symlink_to(ms)
    view = tmp_path / "view.ms"
    view.mkdir()
    (view / "stale").write_text("old attempt")
    read_only_view(link, view)
    assert not (view / "stale").exists()
    assert os.readlink(view / "table.f1_TSM1") == str(ms / "table.f1_TSM1")


def test_leaving_links_and_check(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "final.ms" / "SUB").mkdir(parents=True)
    (out / "final.ms" / "table.dat").write_text("x")
    (out / "final.ms" / "inside").symlink_to(out / "final.ms" / "table.dat")
    assert leaving_links(out) == []
    check_self_contained(out / "final.ms", "final.ms")
    outside = tmp_path / "input.dat"
    outside.write_text("input")
    (out / "final.ms" / "SUB" / "table.f0").symlink_to(outside)
    (out / "final.ms" / "dangling").symlink_to(tmp_path / "gone")
    assert leaving_links(out) == [("final.ms/SUB/table.f0", str(outside)),
                                  ("final.ms/dangling", str(tmp_path / "gone"))]
    with pytest.raises(LeakingLinkError, match=r"final.ms is not self-contained: SUB/table.f0 links to .*\(and 1 more\)"):
        check_self_contained(out / "final.ms", "final.ms")


def test_input_problem_names_the_users_ms() -> None:
    view, src = Path("/out/datasets/a/input_view.ms"), Path("/archive/a.ms")
    msg = ("casa: working-copy: working_copy: Traceback (most recent call last):\n  File x\n"
           "RuntimeError: TSM: no array in row 7 of /out/datasets/a/input_view.ms/table.f9\n")
    assert input_problem(msg, view, src) == "TSM: no array in row 7 of /archive/a.ms/table.f9"
    assert input_problem("ValueError: field 'X' not in the MS", view, src) == "field 'X' not in the MS"
    assert input_problem("something odd", view, src) == "something odd"


@pytest.mark.parametrize("tail", ["has no unflagged data (100.0% flagged)", "has no cross-correlations",
                                  ": DATA column is all zeros in the first rows",
                                  ": main-table rows use DATA_DESC_ID 3, which DATA_DESCRIPTION does not define"])
def test_input_problem_never_repeats_the_path(tail) -> None:
    """Every caller prefixes the MS ('<ms>: <problem>'): a child message that starts with the
    view's path ('allflag.ms: /tmp/.../allflag.ms has no unflagged data') loses it."""
    view, src = Path("/out/datasets/a/input_view.ms"), Path("/tmp/x/allflag.ms")
    sep = "" if tail.startswith(":") else " "
    one = input_problem(f"casa: working-copy: ValueError: {view}{sep}{tail}\n", view, src)
    assert str(src) not in one and one == tail.lstrip(": ")
    assert input_problem(str(view), view, src) == str(src)  # nothing else to say: the path stays


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz", ".zip", ".gz"])
def test_an_archive_given_as_ms_gets_an_unpack_hint(tmp_path, suffix) -> None:
    """A '.ms.tar.gz' given as ms: the manifest, the up-front check and startup say 'unpack it
    first'; a missing x.ms next to x.ms<suffix> too."""
    arc = tmp_path / f"day2.ms{suffix}"
    arc.write_bytes(b"\x1f\x8b archive")
    assert "unpack it first" in archive_hint(arc)
    assert "unpack it first" in archive_hint(tmp_path / "day2.ms")      # missing, archive beside it
    assert archive_hint(tmp_path / "other.ms") == ""
    (tmp_path / "real.ms").mkdir()
    assert archive_hint(tmp_path / "real.ms") == ""
    assert "unpack it first" in structure_problems(arc)[0]
    m = tmp_path / "c.toml"
    m.write_text(f'[[datasets]]\nname = "a"\nms = "{arc.name}"\n[[datasets]]\nname = "b"\nms = "day2.ms"\n')
    errs = [d.error for d in load_manifest(m).datasets]
    assert all("unpack it first" in e for e in errs), errs
