"""A real, small campaign output shared by the report tests (runs once per pytest process).

Two simulated VLA-C datasets (10 min, 30 deg phase noise) run through the real pipeline
(WSClean + CASA, imsize 128, no extended ladder), plus one dataset pointed at a
non-existent MS (fails). ``build_report`` is NOT called here: it must rebuild
``survey/datasets.csv`` from the ``result.json`` files itself.

Test modules use it through the ``campaign_out`` fixture of tests/integration/conftest.py.
"""
from __future__ import annotations

import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

#: name -> simulated flux density (Jy) and seed; two fluxes so templates differ.
DATASETS: dict[str, tuple[float, int]] = {"bright": (0.12, 11), "faint": (0.03, 12)}
FAILED = "broken"
_CACHE: dict[str, Any] = {}


def make_campaign(root: Path) -> Path:
    """Simulate the MSs and run the pipeline for each dataset; return the output dir."""
    from selfcal_batch.config import DEFAULT_STEPS, PipelineConfig
    from selfcal_batch.pipeline.runner import run_dataset
    from selfcal_batch.simulate import simulate_ms_isolated, spec_from_preset

    root.mkdir(parents=True, exist_ok=True)
    out = root / "out"
    cfg = PipelineConfig.from_dict({"imsize": 128, "steps": list(DEFAULT_STEPS),
                                    "solint": {"extend_ladder": False}})
    for name, (flux, seed) in DATASETS.items():
        ms = root / f"{name}.ms"
        if not ms.exists():
            spec = spec_from_preset("vla-c", flux_jy=flux, phase_rms_deg=30.0, duration_s=600.0,
                                    seed=seed)
            simulate_ms_isolated(spec, ms)
        run_dataset(name, ms, cfg, out, threads=2)
    run_dataset(FAILED, root / "does-not-exist.ms", cfg, out, threads=2)
    return out


def campaign_out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The campaign output directory (built on first use, then reused in this process).
    The ``campaign_out`` fixture (tests/integration/conftest.py) returns this."""
    if "out" not in _CACHE:
        t0 = time.monotonic()
        _CACHE["out"] = make_campaign(tmp_path_factory.mktemp("report-campaign"))
        print(f"\n[report fixture] campaign built in {time.monotonic() - t0:.0f} s: {_CACHE['out']}")
    return _CACHE["out"]


# ---------------------------------------------------------------------------- HTML helpers
class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for k, v in attrs:
            if k in ("src", "href") and v is not None:
                self.refs.append((tag, k, v))
            if k == "id" and v:
                self.ids.add(v)


def html_refs(html_path: Path) -> tuple[list[tuple[str, str, str]], set[str]]:
    """Every (tag, attribute, value) of src/href in a page, and the element ids."""
    p = _Refs()
    p.feed(Path(html_path).read_text(encoding="utf-8"))
    return p.refs, p.ids


def check_links(html_path: Path) -> int:
    """Assert every src/href is relative and resolves (files exist; #anchors exist).

    Returns the number of file references checked.
    """
    refs, ids = html_refs(html_path)
    n = 0
    for tag, attr, value in refs:
        parsed = urlsplit(value)
        assert not parsed.scheme and not parsed.netloc, f"<{tag} {attr}> not relative: {value}"
        assert not value.startswith("/"), f"<{tag} {attr}> absolute path: {value}"
        if value.startswith("#"):
            assert value[1:] in ids, f"<{tag} {attr}> points to a missing anchor: {value}"
            continue
        target = (Path(html_path).parent / unquote(parsed.path)).resolve()
        assert target.is_file(), f"<{tag} {attr}={value!r}> -> {target} does not exist"
        n += 1
    return n
