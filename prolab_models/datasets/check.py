"""Check a prepared dataset before a long run: every image has its annotation, of the same size,
with label values among the dataset's classes (after mmseg's own label mapping).

    python -m prolab_models.datasets.check camvid data/CamVid                 # all of its splits
    python -m prolab_models.datasets.check ade20k data/ade/ADEChallengeData2016 --split validation --headers-only

stdout gets one line a split checked; the first problem goes to stderr, naming the file, and the
exit code is 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmengine.registry import DefaultScope
from mmseg.registry import DATASETS

from prolab_models.dataset_catalog import DATASET_CATALOG
from prolab_models.datasets import DatasetLayoutError, validate_dataset


def check_split(dataset: str, root: Path, split: str, check_values: bool = True) -> int:
    """Build ``dataset``'s ``split`` under ``root`` and check every pair; return how many."""
    if not root.is_dir():
        raise DatasetLayoutError(f"{root}: data root not found; expected a {dataset} dataset")
    config = {**DATASET_CATALOG[dataset].split_config(split), "data_root": str(root)}
    # mmseg's own dataset classes do not check their folders; name the missing one here.
    relative = [*config.get("data_prefix", {}).values()]
    if "ann_file" in config:
        relative.append(config["ann_file"])
    for path in (root / item for item in relative):
        if not path.exists():
            raise DatasetLayoutError(
                f"{path}: not found; expected the {dataset} {split} split (see data/README.md)")
    with DefaultScope.overwrite_default_scope("mmseg"):
        return validate_dataset(DATASETS.build(config), check_values=check_values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prolab_models.datasets.check", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=list(DATASET_CATALOG))
    parser.add_argument("root", type=Path, help="the dataset root (data_root in configs)")
    parser.add_argument("--split", action="append", help="a split to check (repeatable; default: all)")
    parser.add_argument("--headers-only", action="store_true",
                        help="compare sizes from file headers only; skip decoding every label map")
    args = parser.parse_args(argv)
    for split in args.split or DATASET_CATALOG[args.dataset].splits:
        try:
            count = check_split(args.dataset, args.root, split, check_values=not args.headers_only)
        except DatasetLayoutError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"{args.dataset} {split}: {count} image/annotation pairs ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
