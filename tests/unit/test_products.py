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


def test_compress_finished_gzips_models_and_masks_only(tmp_path) -> None:
    import gzip

    from selfcal_batch.pipeline.products import compress_finished

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "caltables" / "find_refant.phase").mkdir(parents=True)
    (tmp_path / "caltables" / "find_refant.phase" / "table.dat").write_bytes(b"x" * 100)
    (tmp_path / "caltables" / "p0.G").mkdir()
    zeros = bytes(200_000)
    for n in ("p0_post-MFS-model.fits", "p0_post-MFS-image.fits", "p0_post-MFS-residual.fits"):
        (tmp_path / "images" / n).write_bytes(zeros)
    (tmp_path / "masks" / "p0_post.mask.fits").write_bytes(zeros)
    assert compress_finished(tmp_path, "all") == 0
    freed = compress_finished(tmp_path)
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == ["p0_post-MFS-image.fits", "p0_post-MFS-model.fits.gz", "p0_post-MFS-residual.fits"]
    assert [p.name for p in (tmp_path / "masks").iterdir()] == ["p0_post.mask.fits.gz"]
    assert gzip.decompress((tmp_path / "masks" / "p0_post.mask.fits.gz").read_bytes()) == zeros
    assert not (tmp_path / "caltables" / "find_refant.phase").exists()
    assert (tmp_path / "caltables" / "p0.G").is_dir()
    assert freed > 2 * 200_000 - 2 * 2_000
