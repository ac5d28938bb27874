"""Docs generated from the schema: `config --defaults` parses back as a valid manifest with
the default values, `config --explain`, and the checked-in docs/configuration.md is current."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import tomllib
from click.testing import CliRunner

from selfcal_batch import config_docs
from selfcal_batch.campaign.manifest import load_manifest
from selfcal_batch.campaign_config import CampaignSection, ClusterSpec
from selfcal_batch.cli import main
from selfcal_batch.config import PipelineConfig
from selfcal_batch.errors import ConfigError
from selfcal_batch.selfcal.templates import STEP_KEYS

REPO = Path(__file__).resolve().parents[2]


def _field_paths(cls: type, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type) or f.name in ("wsclean", "gate", "solint", "guard"):
            out += _field_paths(type(getattr(cls(), f.name)), f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_defaults_toml_loads_as_a_manifest_with_the_default_values(tmp_path):
    text = config_docs.defaults_toml()
    (tmp_path / "data.ms").mkdir()
    manifest = tmp_path / "campaign.toml"
    manifest.write_text(text + '\n[[datasets]]\nname = "one"\nms = "data.ms"\n')
    c = load_manifest(manifest)
    assert c.base_config == PipelineConfig()
    assert c.datasets[0].ok and c.datasets[0].config == PipelineConfig()
    assert c.cluster == ClusterSpec()
    assert c.name == "campaign" and c.output_dir == tmp_path / "campaign-out"
    # every key is written (templates as the empty [defaults.templates] table)
    data = tomllib.loads(text)
    written = {f"{k}" for k in data["defaults"] if not isinstance(data["defaults"][k], dict)}
    for table in ("wsclean", "gate", "solint", "guard"):
        written |= {f"{table}.{k}" for k in data["defaults"][table]}
    assert written | {"templates"} == set(_field_paths(PipelineConfig))
    assert set(data["cluster"]) == {f.name for f in dataclasses.fields(ClusterSpec)}
    assert set(data["campaign"]) == {f.name for f in dataclasses.fields(CampaignSection)}
    for key in STEP_KEYS:  # template override keys: commented, with an example value
        assert f"\n# {key} = " in text


def test_defaults_toml_comments_carry_help_unit_and_choices():
    text = config_docs.defaults_toml()
    block = text[text.index("imsize = 512") - 200:text.index("imsize = 512")]
    assert "Image width and height" in block and "unit px" in block
    at = text.index('ladder_imaging = "initial"')
    block = text[at - 400:at]
    assert "initial | shared | template" in block


def test_cli_defaults_and_explain():
    runner = CliRunner()
    res = runner.invoke(main, ["config", "--defaults"])
    assert res.exit_code == 0 and res.output == config_docs.defaults_toml()
    res = runner.invoke(main, ["config", "--explain", "cell"])
    assert res.exit_code == 0
    assert res.output.startswith("cell  ([defaults])") and "default: \"auto\"" in res.output
    assert "arcsec" in res.output
    res = runner.invoke(main, ["config", "--explain", "wsclean.mgian"])
    assert res.exit_code == 2
    assert "error: no setting 'wsclean.mgian' (did you mean 'wsclean.mgain'?)" in res.output
    res = runner.invoke(main, ["config"])
    assert res.exit_code == 2


@pytest.mark.parametrize("name, first", [
    ("defaults.cell", "cell"), ("wsclean.mgain", "wsclean.mgain"), ("cluster.kind", "cluster.kind"),
    ("templates.faint.p0.solint", "templates.solint"), ("templates.solint", "templates.solint"),
    ("datasets.ms", "datasets.ms"), ("campaign.output_dir", "campaign.output_dir"),
])
def test_explain_finds_keys(name, first):
    keys = config_docs.find_key(name)
    assert [k.name for k in keys] == [first]
    assert config_docs.explain(name).startswith(first)


def test_explain_table_lists_its_keys():
    names = [k.name for k in config_docs.find_key("guard")]
    assert names == [f"guard.{f.name}" for f in dataclasses.fields(PipelineConfig().guard)]
    with pytest.raises(ConfigError,
                       match=r"no setting 'clustre\.kind' \(did you mean 'cluster\.kind'\?\)"):
        config_docs.find_key("clustre.kind")


def test_checked_in_reference_is_current():
    """Regenerate with: selfcal-batch config --markdown > docs/configuration.md"""
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == config_docs.markdown(), "docs/configuration.md is stale: regenerate it"


def test_reference_documents_every_key():
    doc = config_docs.markdown()
    for k in config_docs.all_keys():
        assert f"| `{k.name}` |" in doc
    assert len(config_docs.all_keys()) >= 64 + 12 + 21
    readme = (REPO / "README.md").read_text()
    assert "docs/configuration.md" in readme


def test_a_table_key_given_without_its_table_is_named_exactly():
    """'config --explain targets' suggested 'datasets' (a spelling match): every key of a
    table given bare is answered with its full name (generated over all table keys)."""
    names = [k.name for k in config_docs.all_keys()]
    top = {n for n in names if "." not in n} | {n.split(".")[0] for n in names}
    for full in (n for n in names if "." in n):
        bare = full.rsplit(".", 1)[1]
        if bare in top or bare in names:
            continue  # a top-level key of that name exists: it is found itself
        with pytest.raises(ConfigError) as err:
            config_docs.find_key(bare)
        assert repr(full) in str(err.value) and "did you mean" in str(err.value), (bare, str(err.value))
