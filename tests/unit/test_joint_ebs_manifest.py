"""Joint EBs in the manifest (issue 18, item 2): ``ms = [eb1, eb2]`` -> one dataset with
``ebs``; a missing or damaged EB is that dataset's one-line error naming the EB (the other
datasets stay valid); ``--dry-run`` lists the EBs."""
from __future__ import annotations

import textwrap
from pathlib import Path

from selfcal_batch.campaign.manifest import load_manifest
from selfcal_batch.campaign.plan import RunOptions, plan_text
from selfcal_batch.campaign.preflight import dataset_input_problems


def _manifest(tmp_path: Path, ms_line: str, extra: str = "") -> Path:
    p = tmp_path / "c.toml"
    p.write_text(textwrap.dedent(f"""
        [campaign]
        output_dir = "out"
        [[datasets]]
        name = "joint"
        {ms_line}
        {extra}
        [[datasets]]
        ms = "other.ms"
    """).lstrip())
    return p


def test_list_of_ebs_is_one_dataset(tmp_path, tiny_ms):
    for n in ("eb1", "eb2", "other"):
        tiny_ms(tmp_path / f"{n}.ms")
    camp = load_manifest(_manifest(tmp_path, 'ms = ["eb1.ms", "eb2.ms"]', 'field = "T"'))
    joint, other = camp.datasets
    assert joint.ok and joint.name == "joint"
    assert joint.ms == tmp_path / "eb1.ms" and joint.ebs == (tmp_path / "eb1.ms", tmp_path / "eb2.ms")
    assert joint.inputs == joint.ebs and joint.config.field == "T"
    assert other.ebs == () and other.inputs == (tmp_path / "other.ms",)
    assert joint.to_dict()["ebs"] == [str(tmp_path / "eb1.ms"), str(tmp_path / "eb2.ms")]
    assert "ebs" not in other.to_dict()
    # a one-element list is an ordinary dataset
    one = load_manifest(_manifest(tmp_path, 'ms = ["eb1.ms"]')).datasets[0]
    assert one.ok and one.ebs == () and one.ms == tmp_path / "eb1.ms"


def test_missing_eb_fails_that_dataset_only_naming_it(tmp_path, tiny_ms):
    tiny_ms(tmp_path / "eb1.ms")
    tiny_ms(tmp_path / "other.ms")
    camp = load_manifest(_manifest(tmp_path, 'ms = ["eb1.ms", "eb2.ms"]'))
    joint, other = camp.datasets
    assert not joint.ok and other.ok
    assert f"ms not found: {tmp_path / 'eb2.ms'} (execution block 2 of 2)" in joint.error
    assert "\n" not in joint.error


def test_list_problems_one_line(tmp_path, tiny_ms):
    for n in ("eb1", "other"):
        tiny_ms(tmp_path / f"{n}.ms")
    (tmp_path / "link.ms").symlink_to(tmp_path / "eb1.ms")
    cases = {'ms = ["eb1.ms", "eb1.ms"]': "listed twice",
             'ms = ["eb1.ms", "sub/../eb1.ms/"]': "listed twice",  # the same EB spelled otherwise
             'ms = ["eb1.ms", "link.ms"]': "listed twice",  # or through a link
             'ms = ["eb1.ms", "e*.ms"]': "not globs",
             'ms = ["eb1.ms", 3]': "expected a path or a list of paths",
             'ms = ["eb1.ms", "other.ms"]\ntargets = "science"': "targets: cannot be combined"}
    for line, want in cases.items():
        d = load_manifest(_manifest(tmp_path, line)).datasets[0]
        assert not d.ok and want in d.error and "\n" not in d.error, (line, d.error)


def test_damaged_eb_is_named_by_preflight_and_dry_run(tmp_path, tiny_ms, fake_ms):
    tiny_ms(tmp_path / "eb1.ms")
    tiny_ms(tmp_path / "other.ms")
    fake_ms(tmp_path / "eb2.ms")  # table.dat that is no table, no subtables
    camp = load_manifest(_manifest(tmp_path, 'ms = ["eb1.ms", "eb2.ms"]'))
    problems = dataset_input_problems(camp.datasets)
    assert set(problems) == {"joint"}
    assert all(str(tmp_path / "eb2.ms") in p for p in problems["joint"])
    text, invalid = plan_text(camp, RunOptions())
    assert invalid == 1
    assert f"  - joint: INVALID -> will be reported failed: {tmp_path / 'eb2.ms'}:" in text
    assert "  - other\n" in text


def test_dry_run_lists_ebs(tmp_path, tiny_ms):
    for n in ("eb1", "eb2", "other"):
        tiny_ms(tmp_path / f"{n}.ms")
    text, invalid = plan_text(load_manifest(_manifest(tmp_path, 'ms = ["eb1.ms", "eb2.ms"]')), RunOptions())
    assert invalid == 0, text
    assert "      ebs       2 execution blocks, self-calibrated jointly:" in text
    assert f"        eb0  {tmp_path / 'eb1.ms'}" in text and f"        eb1  {tmp_path / 'eb2.ms'}" in text


def test_a_changed_second_eb_is_said_before_the_run(tmp_path, tiny_ms):
    """The campaign's and --dry-run's up-front line names a replaced second EB (only the
    first EB, DatasetSpec.ms, was fingerprinted before: the re-break's finding)."""
    import json
    import os

    from selfcal_batch.campaign.preflight import input_change_messages
    from selfcal_batch.ms.checksum import input_fingerprint

    for n in ("eb1", "eb2", "other"):
        tiny_ms(tmp_path / f"{n}.ms")
    camp = load_manifest(_manifest(tmp_path, 'ms = ["eb1.ms", "eb2.ms"]'))
    joint = camp.datasets[0]
    root = tmp_path / "out" / "datasets" / "joint"
    root.mkdir(parents=True)
    ebs = [p.resolve() for p in joint.ebs]
    (root / "state.json").write_text(json.dumps({
        "input_fingerprint": input_fingerprint(joint.ms),
        "eb_fingerprints": {str(p): input_fingerprint(p) for p in ebs}}))
    assert input_change_messages(camp.datasets, tmp_path / "out") == {}
    st = (ebs[1] / "table.dat").stat()
    os.utime(ebs[1] / "table.dat", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    line = input_change_messages(camp.datasets, tmp_path / "out")["joint"]
    assert line.startswith(f"execution block 2 ({ebs[1]}) changed since the last run"), line


def test_eb_fields_one_per_eb(tmp_path, tiny_ms):
    """eb_fields (set by grouping; may be written by hand): one field selection per EB, typed
    and checked at load with the key named; not for a one-MS dataset."""
    for n in ("eb1", "eb2", "other"):
        tiny_ms(tmp_path / f"{n}.ms")
    d = load_manifest(_manifest(tmp_path, 'ms = ["eb1.ms", "eb2.ms"]', 'eb_fields = ["0", "T"]')).datasets[0]
    assert d.ok and d.config.eb_fields == ("0", "T")
    for extra, needle in (('eb_fields = ["0"]', "expected 2 field selections"), ("eb_fields = 3", "eb_fields")):
        d = load_manifest(_manifest(tmp_path, 'ms = ["eb1.ms", "eb2.ms"]', extra)).datasets[0]
        assert not d.ok and needle in d.error and "\n" not in d.error, d.error
    d = load_manifest(_manifest(tmp_path, 'ms = "eb1.ms"', 'eb_fields = ["0"]')).datasets[0]
    assert not d.ok and "eb_fields: only with a list of execution blocks" in d.error
