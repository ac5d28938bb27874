"""The keep_products policy (pure: file names only)."""
from __future__ import annotations

import pytest

from selfcal_batch.pipeline.products import prune, removable

KINDS = ("dirty", "image", "model", "psf", "residual")


def _run(prefix: str, nchan: int) -> list[str]:
    if nchan == 1:
        return [f"{prefix}-{k}.fits" for k in KINDS]
    chans = [f"{c:04d}" for c in range(nchan)] + ["MFS"]
    return [f"{prefix}-{c}-{k}.fits" for c in chans for k in KINDS]


def test_default_keeps_mfs_image_residual_model_and_channel_models() -> None:
    names = _run("p1_post", 4) + _run("p1_post_x", 2) + ["p1_post-mask.fits", "notes.txt"]
    gone = removable(names, "p1_post")
    kept = sorted(set(_run("p1_post", 4)) - set(gone))
    assert kept == ["p1_post-0000-model.fits", "p1_post-0001-model.fits", "p1_post-0002-model.fits",
                    "p1_post-0003-model.fits", "p1_post-MFS-image.fits", "p1_post-MFS-model.fits",
                    "p1_post-MFS-residual.fits"]
    assert len(gone) == 25 - 7
    assert not any(g.startswith("p1_post_x") for g in gone)   # another run's files are not touched


def test_single_channel_and_all_policy() -> None:
    assert removable(_run("final", 1), "final") == ["final-dirty.fits", "final-psf.fits"]
    assert removable(_run("final", 4), "final", "all") == []
    with pytest.raises(ValueError, match="keep_products: unknown policy 'some'"):
        removable([], "final", "some")


def test_prune_deletes_and_counts(tmp_path) -> None:
    for n in _run("t", 2):
        (tmp_path / n).write_bytes(b"x" * 100)
    assert prune(tmp_path, "t") == 100 * len(removable(_run("t", 2), "t"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t-0000-model.fits", "t-0001-model.fits",
                                                           "t-MFS-image.fits", "t-MFS-model.fits",
                                                           "t-MFS-residual.fits"]


def test_prune_finished_removes_channel_models_only(tmp_path) -> None:
    from selfcal_batch.pipeline.products import prune_finished

    for n in _run("a", 3) + _run("b", 1):
        (tmp_path / n).write_bytes(b"x" * 10)
    assert prune_finished(tmp_path, "all") == 0
    assert prune_finished(tmp_path) == 30
    left = sorted(p.name for p in tmp_path.iterdir())
    assert not any(n.startswith("a-000") and n.endswith("-model.fits") for n in left)
    assert "a-MFS-model.fits" in left and "b-model.fits" in left
