"""Template sweeps (issue 20 item 1): manifest expansion and the report's tables (pure)."""
from __future__ import annotations

import math
import textwrap
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from selfcal_batch.campaign.manifest import parse_manifest
from selfcal_batch.campaign.variants import check, split_name
from selfcal_batch.config import PipelineConfig
from selfcal_batch.errors import ConfigError
from selfcal_batch.report.sweep import bin_winners, propose_thresholds, snippet, sweep_matrix

VARIANTS = ("auto", "faint", "bright")


def _manifest(tmp: Path, variants: str) -> str:
    return textwrap.dedent(f"""
        [campaign]
        name = "sw"
        variants = {variants}
        [[datasets]]
        name = "J1+02"
        ms = "{tmp}/a.ms"
        [datasets.simulate]
        preset = "vla-c"
        flux_jy = 0.1
        [[datasets]]
        name = "b"
        ms = "{tmp}/b.ms"
        force_template = "standard_1"
        [datasets.simulate]
        preset = "vla-c"
        flux_jy = 0.01
        """)


def test_manifest_expands_each_dataset_per_variant(tmp_path: Path) -> None:
    c = parse_manifest(_manifest(tmp_path, '["auto", "faint", "bright"]'), tmp_path / "m.toml")
    assert [d.name for d in c.datasets] == ["J1+02__auto", "J1+02__faint", "J1+02__bright",
                                            "b__auto", "b__faint", "b__bright"]
    forced = {d.name: d.config.force_template for d in c.datasets}
    assert forced["J1+02__auto"] == "" and forced["J1+02__faint"] == "faint"
    assert forced["b__auto"] == ""  # the variant decides, also over a per-dataset force_template
    assert all(d.base in ("J1+02", "b") and d.ms == tmp_path / f"{d.base[0].lower() if d.base == 'b' else 'a'}.ms"
               for d in c.datasets)
    assert [d.name for d in c.select(["b"]).datasets] == ["b__auto", "b__faint", "b__bright"]
    assert [d.name for d in c.select(["b__faint"]).datasets] == ["b__faint"]
    assert c.to_dict()["campaign"]["variants"] == ["auto", "faint", "bright"]
    assert c.datasets[1].to_dict()["base"] == "J1+02" and c.datasets[1].to_dict()["variant"] == "faint"
    with pytest.raises(ConfigError, match="unknown variant 'briht'"):
        parse_manifest(_manifest(tmp_path, '["auto", "briht"]'), tmp_path / "m.toml")
    with pytest.raises(ConfigError, match="campaign.variants: expected a list"):
        parse_manifest(_manifest(tmp_path, '"auto"'), tmp_path / "m.toml")
    assert check(["auto", "auto"]).endswith("duplicate variant in ['auto', 'auto']")
    assert split_name("J1+02__faint", VARIANTS) == ("J1+02", "faint")
    assert split_name("plain", VARIANTS) == ("plain", "")


def _rows() -> pd.DataFrame:
    """3 datasets x 3 variants: 5, 30 and 150 mJy; faint wins at 5, bright at 30 and 150."""
    rows = []
    dr = {("s5", "auto"): 50, ("s5", "faint"): 60, ("s5", "bright"): 40,
          ("s30", "auto"): 300, ("s30", "faint"): 200, ("s30", "bright"): 320,
          ("s150", "auto"): 900, ("s150", "faint"): 700, ("s150", "bright"): 1000}
    for (base, v), d in dr.items():
        flux = {"s5": 0.005, "s30": 0.03, "s150": 0.15}[base]
        rows.append({"name": f"{base}__{v}", "status": "finished", "dr_final": float(d),
                     "rms_final": 2e-5, "thermal_noise_jy": 1e-5, "total_flux_initial": flux,
                     "total_flux_final": flux * 1.01, "steps_accepted": "p0;p1"})
    rows.append({"name": "s5__broken", "status": "failed", "dr_final": 1e9})  # not a variant
    return pd.DataFrame(rows)


def test_matrix_matches_the_rows() -> None:
    m = sweep_matrix(_rows(), VARIANTS).set_index("dataset")
    assert sorted(m.index) == ["s150", "s30", "s5"]
    assert m.loc["s30", "dr_bright"] == 320 and m.loc["s5", "dr_faint"] == 60
    assert m.loc["s5", "rms_thermal_auto"] == pytest.approx(2.0)
    assert m.loc["s5", "flux_auto"] == pytest.approx(1.01)
    assert m.loc["s5", "kept_auto"] == "p0 p1" and m.loc["s5", "flux_mjy"] == pytest.approx(5.0)
    assert list(m["winner"]) == ["faint", "bright", "bright"]
    assert m.loc["s5", "margin"] == pytest.approx(60 / 50)


def test_failed_run_never_wins() -> None:
    df = _rows()
    df.loc[df["name"] == "s5__faint", "status"] = "failed"
    m = sweep_matrix(df, VARIANTS).set_index("dataset")
    assert math.isnan(m.loc["s5", "dr_faint"]) and m.loc["s5", "winner"] == "auto"


def test_bin_winners_and_thresholds() -> None:
    m = sweep_matrix(_rows(), VARIANTS)
    bins = bin_winners(m, VARIANTS, (10.0, 20.0, 50.0, 100.0))
    assert [(b["bin"], b["winner"], b["n"]) for b in bins] == [
        ("0–10 mJy", "faint", 1), ("20–50 mJy", "bright", 1), ("≥ 100 mJy", "bright", 1)]
    assert bins[0]["margin"] == pytest.approx(60 / 50)
    th, why = propose_thresholds(m, (10.0, 20.0, 50.0, 100.0))
    # faint (rank 1) wins at 5 mJy, bright (rank 4) at 30 and 150 mJy: the boundaries from
    # faint upward move to sqrt(5 x 30) = 12.2 mJy; very_faint|faint has no evidence.
    assert th[0] == 10.0 and th[1] == pytest.approx(math.sqrt(5 * 30), rel=1e-3)
    assert th == sorted(th) and len(set(th)) == 4
    text = snippet(th, why)
    cfg = tomllib.loads(text)["defaults"]
    assert PipelineConfig.from_dict(cfg).template_thresholds_mjy == tuple(th)
    assert "kept 10 mJy (no decisive winner on one side)" in text
    # winners by < 5 % (within the scatter of re-runs) do not move a threshold
    close = m.assign(margin=1.01)
    assert propose_thresholds(close, (10.0, 20.0, 50.0, 100.0))[0] == [10.0, 20.0, 50.0, 100.0]


def test_variants_overriding_force_template_are_said_at_load(tmp_path: Path, caplog) -> None:
    """Breaker: [campaign] variants silently replaced a dataset's force_template. The sweep
    still runs every variant (what it is for); the load says so, one line per key, file:line."""
    text = _manifest(tmp_path, '["auto", "faint"]').replace(
        "[campaign]", '[defaults]\nforce_template = "bright"\n[campaign]', 1)
    with caplog.at_level("WARNING", logger="selfcal_batch.campaign"):
        c = parse_manifest(text, tmp_path / "m.toml")
    said = [r.getMessage() for r in caplog.records]
    tail = "is replaced by each of [campaign] variants ['auto', 'faint'] (a sweep runs every variant)"
    assert said == [f"m.toml:3: [defaults] force_template = 'bright' {tail}",
                    f"m.toml:16: datasets[1] (name='b'): force_template = 'standard_1' {tail}"], said
    assert {d.name: d.config.force_template for d in c.datasets}["b__faint"] == "faint"
    caplog.clear()
    with caplog.at_level("WARNING", logger="selfcal_batch.campaign"):
        parse_manifest(_manifest(tmp_path, "[]").replace('force_template = "standard_1"\n', ""), tmp_path / "m.toml")
    assert not caplog.records  # nothing overridden, nothing said
