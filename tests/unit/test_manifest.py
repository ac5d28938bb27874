"""Manifest parsing, merging, globs, relative paths, and one-line errors with line numbers."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfcal_batch.cli import main
from selfcal_batch.errors import ConfigError
from selfcal_batch.campaign.manifest import KeyLocator, load_manifest
from selfcal_batch.campaign.preflight import field_problem
from selfcal_batch.ms.checksum import input_fingerprint


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


@pytest.fixture
def data_dir(tmp_path, fake_ms):
    for n in ("a", "b", "c"):
        fake_ms(tmp_path / "data" / f"J{n}.ms")
    return tmp_path / "data"


def test_merge_defaults_templates_overrides_and_paths(tmp_path, data_dir):
    p = write(tmp_path, """
        [campaign]
        name = "survey1"
        output_dir = "out"

        [defaults]
        imsize = 256
        threads = 2
        final_robust = 0.0
        wsclean.mgain = 0.7

        [templates.faint.p0]
        solint = "240s"

        [cluster]
        workers = 1

        [[datasets]]
        name = "one"
        ms = "data/Ja.ms"
        imsize = 512
        force_template = "bright"
        [datasets.templates.faint.p1]
        solint = "60s"

        [[datasets]]
        ms = "data/Jb.ms"
        """)
    c = load_manifest(p)
    assert c.name == "survey1"
    assert c.output_dir == tmp_path / "out"
    one, two = c.datasets
    assert one.ok and two.ok
    assert one.name == "one" and one.ms == data_dir / "Ja.ms"
    assert two.name == "Jb"  # stem of the MS when no name
    assert one.config.imsize == 512 and two.config.imsize == 256
    assert one.config.force_template == "bright"
    assert one.config.final_robust == 0.0 and one.config.wsclean.mgain == 0.7
    # [templates.X.Y] merged into the templates field; per-dataset tables deep-merge
    assert one.config.templates["faint"] == {"p0": {"solint": "240s"}, "p1": {"solint": "60s"}}
    assert two.config.templates == {"faint": {"p0": {"solint": "240s"}}}
    assert c.cluster.workers == 1
    assert c.base_config.threads == 2


def test_glob_expands_one_dataset_per_match(tmp_path, data_dir):
    p = write(tmp_path, """
        [[datasets]]
        name = "field"
        ms = "data/*.ms"
        [[datasets]]
        ms = "data/Jc*.ms"
        """)
    c = load_manifest(p)
    names = [d.name for d in c.datasets]
    assert names == ["field-Ja", "field-Jb", "field-Jc", "Jc"]
    assert c.datasets[1].ms == data_dir / "Jb.ms"
    assert c.output_dir == tmp_path / "c-out"


def test_glob_matching_nothing_fails_that_dataset(tmp_path, data_dir):
    p = write(tmp_path, """
        [[datasets]]
        name = "none"
        ms = "nowhere/*.ms"
        [[datasets]]
        ms = "data/Ja.ms"
        """)
    c = load_manifest(p)
    assert "matched no directory" in c.datasets[0].error
    assert c.datasets[1].ok


def test_syntax_error_reports_line(tmp_path):
    p = write(tmp_path, """
        [campaign]
        name = "x"
        [defaults]
        imsize = = 3
        """)
    with pytest.raises(ConfigError, match=r"^c\.toml:4: TOML syntax error"):
        load_manifest(p)


def test_unknown_top_level_key_did_you_mean_and_line(tmp_path, data_dir):
    p = write(tmp_path, """
        [[datasets]]
        ms = "data/Ja.ms"

        [clustre]
        workers = 2
        """)
    with pytest.raises(ConfigError) as ei:
        load_manifest(p)
    msg = str(ei.value)
    assert msg.startswith("c.toml:4:") and "did you mean 'cluster'" in msg and "\n" not in msg


def test_unknown_cluster_key_and_wrong_type(tmp_path, data_dir):
    p = write(tmp_path, """
        [cluster]
        kind = "local"
        worker = 2
        [[datasets]]
        ms = "data/Ja.ms"
        """)
    with pytest.raises(ConfigError, match=r"^c\.toml:3: cluster\.worker: unknown key \(did you mean 'workers'\?\)"):
        load_manifest(p)
    p = write(tmp_path, """
        [cluster]
        workers = "two"
        [[datasets]]
        ms = "data/Ja.ms"
        """)
    with pytest.raises(ConfigError, match=r"^c\.toml:2: cluster\.workers: expected an integer"):
        load_manifest(p)
    p = write(tmp_path, """
        [cluster]
        kind = "slrum"
        [[datasets]]
        ms = "data/Ja.ms"
        """)
    with pytest.raises(ConfigError, match=r"c\.toml:2: cluster\.kind: .*did you mean 'slurm'"):
        load_manifest(p)


def test_defaults_errors_fail_fast_with_line(tmp_path, data_dir):
    p = write(tmp_path, """
        [defaults]
        band = "C"
        imsize = "big"
        [[datasets]]
        ms = "data/Ja.ms"
        """)
    with pytest.raises(ConfigError, match=r"^c\.toml:3: imsize: expected an integer"):
        load_manifest(p)
    # a negative solint in a [templates.X.Y] override
    p = write(tmp_path, """
        [templates.faint.p0]
        solint = "-30s"
        [[datasets]]
        ms = "data/Ja.ms"
        """)
    with pytest.raises(ConfigError, match=r"^c\.toml:2: templates\.faint\.p0\.solint: solint must be"):
        load_manifest(p)
    # an unknown template name
    p = write(tmp_path, """
        [templates.fiant.p0]
        solint = "30s"
        [[datasets]]
        ms = "data/Ja.ms"
        """)
    with pytest.raises(ConfigError, match=r"^c\.toml:1: templates: unknown template 'fiant' \(did you mean 'faint'\?\)"):
        load_manifest(p)


def test_per_dataset_problems_do_not_stop_the_others(tmp_path, data_dir):
    p = write(tmp_path, """
        [defaults]
        imsize = 256

        [[datasets]]
        name = "good"
        ms = "data/Ja.ms"

        [[datasets]]
        name = "missing"
        ms = "data/nope.ms"

        [[datasets]]
        name = "typo"
        ms = "data/Jb.ms"
        imsze = 128

        [[datasets]]
        name = "robust"
        ms = "data/Jc.ms"
        final_robust = 3.0

        [[datasets]]
        name = "tmpl"
        ms = "data/Jc.ms"
        force_template = "brigth"

        [[datasets]]
        name = "step"
        ms = "data/Jc.ms"
        steps = ["startup", "p0", "p9"]

        [[datasets]]
        name = "solint"
        ms = "data/Jc.ms"
        [datasets.templates.bright.p1]
        solint = "-5s"

        [[datasets]]
        name = "wrongtype"
        ms = "data/Jc.ms"
        plots = "yes"
        """)
    c = load_manifest(p)
    by = {d.name: d for d in c.datasets}
    assert by["good"].ok
    assert by["missing"].error.startswith("datasets[1] (name='missing'): ms not found:")
    assert by["missing"].error.endswith("(c.toml:10)")
    assert by["typo"].error == ("datasets[2] (name='typo'): imsze: unknown key "
                                "(did you mean 'imsize'?) (c.toml:15)")
    assert "datasets[3] (name='robust')" in by["robust"].error and "robust" in by["robust"].error
    assert "(c.toml:20)" in by["robust"].error
    assert "did you mean 'bright'" in by["tmpl"].error and "(c.toml:25)" in by["tmpl"].error
    assert "unknown step 'p9'" in by["step"].error and "(c.toml:30)" in by["step"].error
    assert "templates.bright.p1.solint" in by["solint"].error and "(c.toml:36)" in by["solint"].error
    assert "plots: expected true/false" in by["wrongtype"].error
    for d in c.datasets:
        assert "\n" not in d.error


def test_duplicate_name_fails_fast(tmp_path, data_dir):
    p = write(tmp_path, """
        [[datasets]]
        name = "x"
        ms = "data/Ja.ms"

        [[datasets]]
        name = "x"
        ms = "data/Jb.ms"
        """)
    with pytest.raises(ConfigError, match=r"^c\.toml:6: datasets\[1\]: duplicate dataset name 'x' \(also datasets\[0\], line 1\)"):
        load_manifest(p)


def test_glob_names_colliding_fail_that_dataset_not_the_manifest(tmp_path, data_dir, fake_ms):
    """Same kind as colliding sanitised field names: a glob over two directories holding an MS
    of one stem generates one name twice; that dataset fails with one line naming both MSs,
    under its own name, and the manifest's other datasets still load."""
    for sub in ("n1", "n2"):
        fake_ms(tmp_path / "nights" / sub / "eb.ms")
    p = write(tmp_path, """
        [[datasets]]
        ms = "nights/*/eb.ms"

        [[datasets]]
        ms = "data/Ja.ms"
        """)
    c = load_manifest(p)
    assert [(d.name, d.ok) for d in c.datasets] == [("eb", True), ("eb-dup2", False), ("Ja", True)]
    n1, n2 = (tmp_path / "nights" / s / "eb.ms" for s in ("n1", "n2"))
    assert c.datasets[1].error == (f"datasets[0]: {n2} gives the dataset name 'eb' of {n1} (datasets[0]): "
                                   "not run; give it its own [[datasets]] entry with a distinct name")


def test_simulate_table_allows_absent_ms(tmp_path):
    p = write(tmp_path, """
        [[datasets]]
        name = "sim"
        ms = "gen/sim.ms"
        [datasets.simulate]
        preset = "vla-c"
        flux_jy = 0.04

        [[datasets]]
        name = "badsim"
        ms = "gen/badsim.ms"
        simulate = { flux_jy = 0.04 }
        """)
    c = load_manifest(p)
    assert c.datasets[0].ok and c.datasets[0].simulate == {"preset": "vla-c", "flux_jy": 0.04}
    assert c.datasets[0].ms == tmp_path / "gen" / "sim.ms"
    assert "simulate: needs preset" in c.datasets[1].error


def test_simulate_arguments_validated_when_simulator_present(tmp_path):
    pytest.importorskip("selfcal_batch.simulate")
    p = write(tmp_path, """
        [[datasets]]
        name = "sim"
        ms = "gen/sim.ms"
        simulate = { preset = "vla-w", flux_jy = 0.04 }
        [[datasets]]
        name = "sim2"
        ms = "gen/sim2.ms"
        simulate = { preset = "vla-c", flux = 0.04 }
        """)
    c = load_manifest(p)
    assert "unknown preset 'vla-w'" in c.datasets[0].error
    assert "flux" in c.datasets[1].error


def test_select_only(tmp_path, data_dir):
    p = write(tmp_path, """
        [[datasets]]
        ms = "data/Ja.ms"
        [[datasets]]
        ms = "data/Jb.ms"
        """)
    c = load_manifest(p)
    assert [d.name for d in c.select(["Jb"]).datasets] == ["Jb"]
    with pytest.raises(ConfigError, match="did you mean 'Ja'"):
        c.select(["Jaa"])


def test_key_locator():
    text = textwrap.dedent("""
        [defaults]
        imsize = 3   # comment
        wsclean.mgain = 0.5
        [[datasets]]
        name = "a"
        [[datasets]]
        name = "b"
        simulate = { preset = "x", flux_jy = 1 }
        [datasets.templates.faint.p0]
        solint = "1s"
        """).lstrip()
    loc = KeyLocator(text)
    assert loc.find(("defaults", "imsize")) == 2
    assert loc.find(("defaults", "wsclean", "mgain")) == 3
    assert loc.find(("datasets", 0)) == 4
    assert loc.find(("datasets", 1, "name")) == 7
    assert loc.find(("datasets", 1, "simulate", "flux_jy")) == 8
    assert loc.find(("datasets", 1, "templates", "faint", "p0", "solint")) == 10
    assert loc.find(("datasets", 1, "nothing")) == 6
    assert loc.find(("datasets", 1, "nothing"), exact=True) is None


# -- CLI: dry run and error exits -------------------------------------------------------


@pytest.fixture
def tiny_data_dir(tmp_path, tiny_ms):
    """Like data_dir, but MSs that pass the up-front input check of --dry-run."""
    for n in ("a", "b"):
        tiny_ms(tmp_path / "data" / f"J{n}.ms")
    return tmp_path / "data"


def test_dry_run_prints_plan(tmp_path, tiny_data_dir):
    data_dir = tiny_data_dir
    p = write(tmp_path, """
        [defaults]
        imsize = 256
        [cluster]
        threads_per_dataset = 1
        [[datasets]]
        name = "one"
        ms = "data/Ja.ms"
        force_template = "faint"
        steps = ["startup", "test_image", "p0", "split_calibrated"]
        [[datasets]]
        name = "two"
        ms = "data/Jb.ms"
        """)
    res = CliRunner().invoke(main, [str(p), "--dry-run", "--workers", "1"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "campaign c" in out and str(tmp_path / "c-out") in out
    assert "local: 1 worker process(es) x 1 thread" in out
    assert str(data_dir / "Ja.ms") in out
    assert "template  faint" in out and "template  auto by flux" in out
    assert "steps     startup test_image p0 split_calibrated" in out
    assert "resources WSClean -j up to 1, CASA 1 core (cores shared phase by phase in the worker)" in out
    # options may come first too; --only selects
    res = CliRunner().invoke(main, ["--dry-run", str(p), "--only", "two", "--threads-per-dataset", "2"])
    assert res.exit_code == 0, res.output
    assert "- one" not in res.output and "- two" in res.output and "cores=2" in res.output


def test_dry_run_resources_follow_share_cores(tmp_path, tiny_data_dir):
    """The dry-run's cores line says what the run does: a fixed -j only without sharing."""
    for share, want in (("true", "resources WSClean -j up to 2, CASA 1 core"),
                        ("false", "resources cores=2 (WSClean -j 2)")):
        p = write(tmp_path, f"""
            [cluster]
            threads_per_dataset = 2
            share_cores = {share}
            [[datasets]]
            name = "one"
            ms = "data/Ja.ms"
            """)
        res = CliRunner().invoke(main, [str(p), "--dry-run", "--workers", "1"])
        assert res.exit_code == 0, res.output
        assert want in res.output, res.output


def test_dry_run_invalid_dataset_exits_2(tmp_path, tiny_data_dir):
    p = write(tmp_path, """
        [[datasets]]
        ms = "data/Ja.ms"
        [[datasets]]
        name = "gone"
        ms = "data/gone.ms"
        """)
    res = CliRunner().invoke(main, [str(p), "--dry-run"])
    assert res.exit_code == 2
    assert "gone: INVALID -> will be reported failed: datasets[1] (name='gone'): ms not found" in res.output


def test_cli_config_error_exit_2(tmp_path):
    p = write(tmp_path, "[defaults]\nimsize = = 1\n")
    res = CliRunner().invoke(main, [str(p)])
    assert res.exit_code == 2
    assert "error: c.toml:2: TOML syntax error" in res.output
    res = CliRunner().invoke(main, [str(tmp_path / "missing.toml"), "--dry-run"])
    assert res.exit_code == 2 and "manifest not found" in res.output


def test_cli_help_lists_commands():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    for cmd in ("run", "run-one", "simulate", "report", "compare"):
        assert cmd in res.output
    for bad in ("--configfile", "--noconfig", "--nositeconfig"):
        assert bad not in CliRunner().invoke(main, ["run", "--help"]).output


def test_shipped_manifests_parse(repo_root):
    demo = load_manifest(repo_root / "campaigns" / "demo.toml")
    assert [d.name for d in demo.datasets] == ["bright", "standard", "faint", "very-faint"]
    assert all(d.ok and d.simulate for d in demo.datasets)
    assert demo.output_dir == repo_root / "campaigns" / "demo-out"
    fluxes = [d.simulate["flux_jy"] for d in demo.datasets]
    assert fluxes == sorted(fluxes, reverse=True)
    slurm = load_manifest(repo_root / "campaigns" / "example-slurm.toml")
    assert slurm.cluster.kind == "slurm"
    addr = load_manifest(repo_root / "campaigns" / "example-address.toml")
    assert addr.cluster.kind == "address" and addr.cluster.address.startswith("tcp://")


_TYPO_CASES = [  # (manifest text after [defaults], the line holding the typo, the error's text)
    ('[templates.brigth.p1]\nsolint = "60s"', 7, "templates: unknown template 'brigth' (did you mean 'bright'?)"),
    ('[templates.bright.p1]\nsolnt = "60s"', 8, "templates.bright.p1.solnt: unknown key (did you mean 'solint'?)"),
    ('[templates.bright.p9]\nsolint = "60s"', 8, "templates.bright.p9.solint: unknown step 'p9'"),
    ('[templates.bright.p1]\nsolint = "sixty"', 8, "templates.bright.p1.solint: solint must be"),
    ('[templates.bright]\np1 = { solnt = "60s" }', 8, "templates.bright.p1.solnt: unknown key"),
    ('[templates]\nbright.p1.solnt = "60s"', 8, "templates.bright.p1.solnt: unknown key"),
    ('[templates.bright.p1]\nsolint = "60s"\n[templates.faint.p0]\nuvrange_cal = "9 furlongs"', 10,
     "templates.faint.p0.uvrange_cal: expected a uv range"),
]


@pytest.mark.parametrize("tables, line, text", _TYPO_CASES)
def test_template_typos_name_file_line_and_key(tmp_path, data_dir, tables, line, text):
    """Breaker: a typo in [templates] was reported at the [defaults] line (the longest known
    prefix of defaults.templates... was 'defaults'). Every case: the typo's own line."""
    p = write(tmp_path, f'[campaign]\nname = "x"\n\n[defaults]\nimsize = 128\n\n{tables}\n\n'
                        '[[datasets]]\nms = "data/Ja.ms"\n')
    with pytest.raises(ConfigError) as err:
        load_manifest(p)
    assert str(err.value).startswith(f"c.toml:{line}: {text}"), str(err.value)


@pytest.mark.parametrize("tables, line, text", _TYPO_CASES[:5])
def test_template_typos_in_a_dataset_name_its_line(tmp_path, data_dir, tables, line, text):
    head, body = tables.split("\n", 1)
    p = write(tmp_path, f'[campaign]\nname = "x"\n\n[defaults]\nimsize = 128\n\n[[datasets]]\nms = "data/Ja.ms"\n'
                        f'{head.replace("[templates", "[datasets.templates")}\n{body}\n\n'
                        '[[datasets]]\nms = "data/Jb.ms"\n')
    c = load_manifest(p)
    bad, good = c.datasets
    assert good.ok and not bad.ok  # the other dataset still runs
    assert bad.error.startswith(f"datasets[0] (name='Ja'): {text}") and bad.error.endswith(f"(c.toml:{line + 2})"), \
        bad.error


@pytest.mark.parametrize("tables, line, text", _TYPO_CASES)
def test_run_one_config_typos_name_file_line_and_key(tmp_path, tables, line, text):
    """Same kind for run-one --config (the error had no file:line at all): a manifest's
    [defaults] + [templates], the same line as the campaign gives."""
    from click.testing import CliRunner

    from selfcal_batch.cli import main

    p = write(tmp_path, f'[campaign]\nname = "x"\n\n[defaults]\nimsize = 128\n\n{tables}\n', name="one.toml")
    res = CliRunner().invoke(main, ["run-one", str(tmp_path / "x.ms"), "--out", str(tmp_path / "o"), "--config", str(p)])
    assert res.exit_code == 2
    assert f"error: one.toml:{line}: {text}" in res.output, res.output


@pytest.mark.parametrize("steps, refused", [
    # generated: every ladder step named twice, also under an old name of split_calibrated
    *[([ "startup", "test_image", step, "split_calibrated", step], f"step {step!r} given twice")
      for step in ("p0", "p1", "p2", "ap1")],
    (["startup", "p0", "split_calibrated", "split_trial_1"], "step 'split_calibrated' (as 'split_calibrated' "
                                                              "and 'split_trial_1') given twice"),
    # a ladder without its guard and delivery step: nothing delivered although "finished"
    *[(["startup", "test_image", *ladder], f"ladder steps ({', '.join(ladder)}) without split_calibrated")
      for ladder in (["p0"], ["p0", "p1"], ["p1", "ap1"])],
    (["startup", "test_image"], None),                       # diagnostics only: no ladder, allowed
    (["startup", "test_image", "p0", "split_trial_1"], None),
])
def test_steps_list_checked_at_load(tmp_path, data_dir, steps, refused):
    """A duplicate step (silently dropped before) and a ladder with no split_calibrated
    (reported 'finished' with nothing delivered and work.ms removed) are refused at load with
    one line naming the dataset, the key and the manifest line; other datasets still run."""
    p = write(tmp_path, f"""
        [[datasets]]
        name = "good"
        ms = "data/Ja.ms"

        [[datasets]]
        name = "x"
        ms = "data/Jb.ms"
        steps = {steps!r}
        """.replace("'", '"'))
    by = {d.name: d for d in load_manifest(p).datasets}
    assert by["good"].ok
    if refused is None:
        assert by["x"].ok, by["x"].error
        return
    err = by["x"].error
    assert err.startswith("datasets[1] (name='x'): steps: ") and refused.replace("'", '"') in err.replace("'", '"')
    assert "(c.toml:8)" in err and "\n" not in err


def test_dry_run_checks_column_and_field_per_dataset_on_a_shared_ms(tmp_path, tiny_data_dir):
    """One MS used by several datasets: each dataset's input column and field are checked
    (the answers were keyed by MS path, so the last dataset's check hid the others': a missing
    CORRECTED_DATA passed the dry run and failed only at startup)."""
    p = write(tmp_path, """
        [[datasets]]
        name = "plain"
        ms = "data/Ja.ms"
        [[datasets]]
        name = "corr"
        ms = "data/Ja.ms"
        input_column = "corrected"
        [[datasets]]
        name = "fld"
        ms = "data/Ja.ms"
        field = "0,J1008+0730"
        [[datasets]]
        name = "fld0"
        ms = "data/Ja.ms"
        field = "0"
        """)
    res = CliRunner().invoke(main, [str(p), "--dry-run"])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    ms = tiny_data_dir / "Ja.ms"
    assert f"corr: INVALID -> will be reported failed: {ms}: no CORRECTED_DATA column" in out
    assert f"fld: INVALID -> will be reported failed: {ms}: field 'J1008+0730' not in the MS" in out
    assert "plain: INVALID" not in out and "fld0: INVALID" not in out


@pytest.mark.parametrize("field, names, bad", [
    ("", ["A"], ""), ("A", ["A", "B"], ""), ("1", ["A", "B"], ""), ("2", ["A", "B"], "2"),
    ("A, C", ["A", "B"], "C"), ("J*", ["A"], ""), ("0~3", ["A"], ""), ("a", ["A"], "a"),
])
def test_field_problem(field, names, bad):
    why = field_problem(field, names)
    assert (why == "") == (bad == "")
    if bad:
        assert why.startswith(f"field '{bad}' not in the MS (fields: ")


def test_dry_run_says_settings_changed(tmp_path, tiny_data_dir):
    """A changed setting of a finished run is said before anything runs, like a changed input."""
    p = write(tmp_path, """
        [defaults]
        imsize = 192
        [[datasets]]
        name = "one"
        ms = "data/Ja.ms"
        """)
    d = load_manifest(p).datasets[0]
    old = d.config.with_updates(imsize=128).to_dict()
    root = tmp_path / "c-out" / "datasets" / "one"
    root.mkdir(parents=True)
    (root / "work.ms").mkdir()
    (root / "state.json").write_text(json.dumps({
        "config": old, "input_fingerprint": input_fingerprint(d.ms),
        "steps": {s: {"status": "done"} for s in d.config.steps}}))
    res = CliRunner().invoke(main, [str(p), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "restart   settings changed since the last run (imsize): redoing from test_image" in res.output
