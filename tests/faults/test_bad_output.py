"""Up-front checks (``preflight``), also in ``--dry-run``: a bad output location or a damaged
input MS is one line naming the path and the problem, exit code 2, never a traceback; the
other datasets still run, and no input is modified (not even by the check)."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from selfcal_batch.ms.checksum import tree_checksums, tree_diff

from .conftest import REPO, GuardedMS, MSFactory

pytestmark = pytest.mark.integration


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


CLI = [sys.executable, "-m", "selfcal_batch.cli"]


def _manifest(tmp: Path, out: Path, datasets: dict[str, Path], steps: list[str]) -> Path:
    p = tmp / "c.toml"
    p.write_text(textwrap.dedent(f"""
        [campaign]
        name = "checks"
        output_dir = "{out}"
        [defaults]
        imsize = 128
        threads = 1
        plots = false
        steps = {steps!r}
        [cluster]
        workers = 1
        threads_per_dataset = 1
        dashboard = false
        """).replace("'", '"') + "".join(f'[[datasets]]\nname = "{n}"\nms = "{m}"\n' for n, m in datasets.items()))
    return p


def _one_error_line(res: subprocess.CompletedProcess[str], path: Path) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and str(path) in lines[0], lines[0]
    return lines[0]


# -- output locations ---------------------------------------------------------------------------


def _readonly_cmd(ro_dir: Path, argv: list[str]) -> list[str]:
    """argv run in a private mount namespace where ``ro_dir`` is a read-only bind mount."""
    inner = f'mount --bind -o ro "{ro_dir}" "{ro_dir}" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", inner, "sh", *argv]


@pytest.fixture(scope="module")
def readonly_ok() -> str:
    """'' when a read-only bind mount in a private namespace works here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare not installed"
    r = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro /tmp /tmp && ! touch /tmp/.ro-probe"],
                       capture_output=True, text=True)
    return "" if r.returncode == 0 else f"cannot make a read-only bind mount: {r.stderr.strip()[:200]}"


@pytest.mark.parametrize("kind", ["file-in-place", "parent-is-file", "read-only", "read-only-parent"])
def test_bad_output_location(kind: str, tmp_path: Path, tiny_ms, readonly_ok: str) -> None:
    ms = tiny_ms(tmp_path / "in" / "a.ms")
    blocker = tmp_path / "blocker"
    ro = tmp_path / "ro"
    ro.mkdir()
    blocker.write_text("a file\n")
    out = {"file-in-place": blocker, "parent-is-file": blocker / "out",
           "read-only": ro, "read-only-parent": ro / "new" / "out"}[kind]
    manifest = _manifest(tmp_path, out, {"a": ms}, ["startup"])
    def wrap(argv: list[str]) -> list[str]:
        return argv

    if kind.startswith("read-only"):
        if readonly_ok:
            pytest.skip(readonly_ok)

        def wrap(argv: list[str]) -> list[str]:
            return _readonly_cmd(ro, argv)

    expected = {"file-in-place": "is a file, not a directory", "parent-is-file": "is a file, not a directory",
                "read-only": "is not writable (Read-only file system)",
                "read-only-parent": "is not writable (Read-only file system)"}[kind]
    t0 = time.monotonic()
    run = subprocess.run(wrap([*CLI, str(manifest), "--quiet"]), capture_output=True, text=True, env=_env(),
                         timeout=120)
    line = _one_error_line(run, out)
    assert expected in line, line
    one = subprocess.run(wrap([*CLI, "run-one", str(ms), "--out", str(out)]), capture_output=True, text=True,
                         env=_env(), timeout=120)
    assert _one_error_line(one, out) == line
    dry = subprocess.run(wrap([*CLI, str(manifest), "--dry-run"]), capture_output=True, text=True, env=_env(),
                         timeout=120)
    assert dry.returncode == 2 and "Traceback" not in dry.stdout + dry.stderr, dry.stderr
    assert f"error: {line[len('error: '):]}" in dry.stdout.splitlines(), dry.stdout
    assert blocker.read_text() == "a file\n" and not list(ro.iterdir())
    print(f"\n{kind}: {line}  ({time.monotonic() - t0:.1f} s for run, run-one, dry-run)")


# -- damaged inputs -----------------------------------------------------------------------------


def _damage(base_ms: GuardedMS, tmp: Path, how: str) -> Path:
    ms = MSFactory.copy(base_ms, tmp / f"{how}.ms")
    if how == "antenna-truncated":
        with open(ms / "ANTENNA" / "table.f0", "r+b") as fh:
            fh.truncate(10)
    elif how == "antenna-f0-deleted":
        (ms / "ANTENNA" / "table.f0").unlink()
    elif how == "field-removed":
        shutil.rmtree(ms / "FIELD")
    elif how == "data-truncated":
        # the tiled storage file holding DATA loses its second half
        big = max((p for p in ms.glob("table.f*_TSM*")), key=lambda p: p.stat().st_size)
        with open(big, "r+b") as fh:
            fh.truncate(big.stat().st_size // 2)
    return ms


DAMAGE = {"antenna-truncated": "ANTENNA table is damaged", "antenna-f0-deleted": "ANTENNA table is damaged",
          "field-removed": "FIELD table is missing", "data-truncated": "main table is damaged"}


def test_damaged_inputs_fail_up_front_and_the_good_one_finishes(base_ms: GuardedMS, tmp_path: Path) -> None:
    t0 = time.monotonic()
    (tmp_path / "data").mkdir()
    inputs = {how: _damage(base_ms, tmp_path / "data", how) for how in DAMAGE}
    before = {how: tree_checksums(ms) for how, ms in inputs.items()}
    out = tmp_path / "out"
    manifest = _manifest(tmp_path, out, {"good": base_ms.path, **inputs}, ["startup"])

    dry = subprocess.run([*CLI, str(manifest), "--dry-run"], capture_output=True, text=True, env=_env(), timeout=120)
    assert dry.returncode == 2 and "Traceback" not in dry.stdout + dry.stderr, dry.stdout + dry.stderr
    for how, ms in inputs.items():
        line = next(ln for ln in dry.stdout.splitlines() if ln.startswith(f"  - {how}: INVALID"))
        assert f"{ms}: {DAMAGE[how]}" in line, line
    assert "  - good\n" in dry.stdout + "\n" and f"{len(DAMAGE)} of {len(DAMAGE) + 1} dataset(s) are invalid" in dry.stdout

    res = subprocess.run([*CLI, str(manifest), "--quiet"], capture_output=True, text=True, env=_env(), timeout=600)
    print("\n" + "\n".join(ln for ln in res.stdout.splitlines() if ln.startswith("[")))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    rows = {r["name"]: r for r in csv.DictReader(open(out / "survey" / "datasets.csv"))}
    assert rows["good"]["status"] == "finished", rows["good"]["error"]
    for how, ms in inputs.items():
        err = rows[how]["error"]
        assert rows[how]["status"] == "failed" and "\n" not in err
        assert err.startswith(f"{ms}: {DAMAGE[how]}"), err
        assert "view" not in err.replace(str(ms), ""), err  # never the internal view's path
        assert f"{how} failed: {err}" in res.stdout, res.stdout
        assert not (out / "datasets" / how / "work.ms").exists()  # never ran
    for how, ms in inputs.items():
        assert tree_diff(before[how], tree_checksums(ms)) == [], f"the check modified {how}"
    assert base_ms.changes() == []  # no table.lock appeared: the input itself was never opened

    one = subprocess.run([*CLI, "run-one", str(inputs["field-removed"]), "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=_env(), timeout=120)
    assert one.returncode == 2 and "Traceback" not in one.stdout + one.stderr
    assert [ln for ln in one.stderr.splitlines() if ln.strip()] == \
        [f"error: {inputs['field-removed']}: FIELD table is missing"]
    print(f"damaged-input campaign: {time.monotonic() - t0:.1f} s")
