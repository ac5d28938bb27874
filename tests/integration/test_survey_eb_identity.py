"""Survey inputs as delivered (issue 18, tester s7 break 8), on two generated EBs read by the
real fields reader (private read-only views, a child process), through ``--dry-run`` (the run
makes the same up-front check, ``plan.input_check``):

* #3a an explicit list of an EB and its byte copy is refused in one line naming both MSs;
* #3b a glob matching an MS and a symbolic link to it uses the MS once, with a warning;
* #4 an EB whose target rows are all flagged is left out of that target's group, which goes
  on from the other EB with a note naming it ("no unflagged data (100% ...)");
* #5 an explicit list with that EB is refused up front, naming it;
* the inputs are untouched.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from selfcal_batch.ms.checksum import tree_checksums

from tests.integration.survey_data import QUICK_TOML, group_eb_spec, make

pytestmark = pytest.mark.integration
TARGET = "J1001+4000"


def _flag_field(ms: Path, name: str) -> int:
    """Flag every row of field ``name`` of the generated copy ``ms`` (FLAG and FLAG_ROW)."""
    from casacore.tables import table

    with table(str(ms / "FIELD"), ack=False) as f:
        fid = list(f.getcol("NAME")).index(name)
    with table(str(ms), readonly=False, ack=False) as t:
        sub = t.query(f"FIELD_ID=={fid}")
        flags = sub.getcol("FLAG")
        sub.putcol("FLAG", np.ones_like(flags))
        sub.putcol("FLAG_ROW", np.ones(sub.nrows(), bool))
        n = sub.nrows()
        sub.close()
    return n


def test_same_eb_flagged_eb_and_linked_glob(tmp_path: Path) -> None:
    g = tmp_path / "g"
    a = make(group_eb_spec(51, "2024-01-03"), g / "ebA.ms")
    b = make(group_eb_spec(52, "2024-01-01"), g / "ebB_flag.ms")
    n_flagged = _flag_field(b, TARGET)
    (g / "ebA_link.ms").symlink_to("ebA.ms")
    copy = tmp_path / "ebA_copy.ms"
    shutil.copytree(a, copy)
    before = {p: tree_checksums(p) for p in (a, b, copy)}
    m = tmp_path / "m.toml"
    m.write_text(QUICK_TOML + f"""
[[datasets]]
name = "twice"
ms = ["{a}", "{copy}"]
field = "{TARGET}"

[[datasets]]
name = "dead"
ms = ["{a}", "{b}"]
field = "{TARGET}"

[[datasets]]
name = "svy"
ms = "{g}/*.ms"
targets = "science"
group = "name"
""")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "1000"  # the console wraps long warning lines, also inside a path
    res = subprocess.run([sys.executable, "-m", "selfcal_batch.cli", str(m), "--dry-run"], capture_output=True,
                         text=True, env=env, timeout=600, cwd=tmp_path)
    text = " ".join((res.stdout + res.stderr).split())  # the console wraps long lines
    assert res.returncode == 2, text
    assert (f"twice: INVALID -> will be reported failed: {copy} is the same execution block as {a}: same "
            "observation time range") in text
    assert (f"dead: INVALID -> will be reported failed: {b} (execution block 2 of 2): no unflagged data in field "
            f"{TARGET} (100% of its {n_flagged} rows flagged)") in text
    assert f"matches {a} twice (also as {g / 'ebA_link.ms'}, a link): used once" in text
    assert "ebA_link.ms:" not in text  # no target of the link expanded or skipped
    assert (f"- svy__{TARGET} ms {a} target field {TARGET} (id 1; OBSERVE_TARGET; 120 s on source)") in text
    assert (f"note execution block {b} not included: field {TARGET}: no unflagged data (100% of its "
            f"{n_flagged} rows flagged)") in text
    assert "svy__J1003+4100 ms" in text and "2 execution blocks, self-calibrated jointly (grouped by name" in text
    assert "not a science target (intents none)" not in text and "2 of 4 dataset(s) are invalid" in text
    assert {p: tree_checksums(p) for p in (a, b, copy)} == before
