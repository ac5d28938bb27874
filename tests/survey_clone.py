"""Make a large synthetic campaign output from a few real finished datasets (issue 17:
report and survey tables at survey scale without running 1000 pipelines).

    .venv/bin/python tests/survey_clone.py SRC_OUT N DEST   (also used by scripts/bench_report.py)

Each of the N datasets is a copy of one of SRC_OUT's finished dataset directories (round
robin: result.json, state.json, image_properties.csv, gain_tables.json, plots/, the FITS
images the report reads), renamed ``<source>-<i>`` in every record. Measurement sets are
not copied (the report does not read them).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

SMALL = ("result.json", "state.json", "image_properties.csv", "gain_tables.json", "final-image.fits")


def clone(src_out: Path, n: int, dest: Path) -> list[str]:
    sources = [d for d in sorted((src_out / "datasets").iterdir()) if (d / "result.json").exists()]
    if not sources:
        raise SystemExit(f"{src_out}: no finished dataset to clone")
    names = []
    for i in range(n):
        src = sources[i % len(sources)]
        name = f"{src.name}-{i:04d}"
        root = dest / "datasets" / name
        root.mkdir(parents=True, exist_ok=True)
        for f in SMALL:
            if (src / f).exists():
                text_like = f.endswith((".json", ".csv"))
                if text_like:
                    (root / f).write_text((src / f).read_text().replace(src.name, name))
                else:
                    shutil.copyfile(src / f, root / f)
        for sub in ("plots", "logs"):
            if (src / sub).is_dir():
                shutil.copytree(src / sub, root / sub, dirs_exist_ok=True)
        (root / "images").mkdir(exist_ok=True)
        for img in (src / "images").glob("test_image*-image.fits"):
            shutil.copyfile(img, root / "images" / img.name)
        names.append(name)
    camp = json.loads((src_out / "campaign.json").read_text()) if (src_out / "campaign.json").exists() else {}
    camp.update(output_dir=str(dest), campaign=f"{camp.get('campaign', 'clone')}-x{n}")
    (dest / "campaign.json").write_text(json.dumps(camp, indent=1))
    return names


if __name__ == "__main__":
    src, n, dest = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    print(f"{len(clone(src, n, dest))} datasets in {dest}")
