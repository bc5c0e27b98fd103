"""Stage split: read the dataset named by data.format / data.path, skip unreadable files and
duplicates, and write stratified train/val/test manifests to data/splits/."""

from gclf.data.manifest import SPLITS_DIR
from gclf.data.split import build_splits
from gclf.io import write_json
from gclf.stage import run_stage


def main(p):
    d = p.data
    summary = build_splits(
        d.format,
        d.path,
        SPLITS_DIR,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=p.seed,
        synthetic_count=d.synthetic_count,
        synthetic_size=d.image_size,
        synthetic_female_fraction=d.synthetic_female_fraction,
    )
    write_json("metrics/data.json", summary)


if __name__ == "__main__":
    run_stage(main, stage="split")
