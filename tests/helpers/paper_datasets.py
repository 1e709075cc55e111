"""Tiny stand-ins for the paper's datasets (and CamVid's SegNet layout), written in each one's
real mmseg layout and label convention, so the paper's configs can run end to end where the real
datasets are absent.

Each dataset gets a few small images per split, with blocky label maps that use every kind of
value the real annotations hold: class ids, the ignore value 255 where the dataset has one, and
the raw 0 ("other", "background") that ``reduce_zero_label`` turns into 255 for ADE20K and
Pascal Context.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Layout:
    """Where one image and its label map go, and which raw label values the dataset holds.

    ``image`` and ``label`` are paths under the root with ``{split}`` and ``{stem}`` fields;
    ``labels`` is ``(low, high)``, the raw class values, ``high`` included; ``ignore`` is the
    raw value that means unlabelled (0 for the reduce_zero_label datasets, else 255).
    """

    splits: tuple[str, str]  # (train, val) folder names
    image: str
    label: str
    labels: tuple[int, int]
    ignore: int
    size: tuple[int, int]  # (height, width): each dataset's aspect ratio, small
    split_lists: str | None = None  # Pascal Context: ImageSets/SegmentationContext/{split}.txt


LAYOUTS: dict[str, Layout] = {
    # ADEChallengeData2016: 150 classes as 1..150, 0 = "other" (reduce_zero_label)
    "ade20k": Layout(("training", "validation"), "images/{split}/{stem}.jpg", "annotations/{split}/{stem}.png",
                     (1, 150), 0, (48, 64)),
    # stuffthingmaps after mmseg's coco_stuff164k converter: train ids 0..170, 255 unlabelled
    "coco-stuff": Layout(("train2017", "val2017"), "images/{split}/{stem}.jpg",
                         "annotations/{split}/{stem}_labelTrainIds.png", (0, 170), 255, (48, 64)),
    # VOC2010 + mmseg's pascal_context converter: 59 classes as 1..59, 0 = background (reduce_zero_label)
    "pascal-context-59": Layout(("train", "val"), "JPEGImages/{stem}.jpg", "SegmentationClassContext/{stem}.png",
                                (1, 59), 0, (48, 64), "ImageSets/SegmentationContext/{split}.txt"),
    # leftImg8bit + gtFine after mmseg's cityscapes converter: train ids 0..18, 255 unlabelled
    "cityscapes": Layout(("train", "val"), "leftImg8bit/{split}/aachen/{stem}_leftImg8bit.png",
                         "gtFine/{split}/aachen/{stem}_gtFine_labelTrainIds.png", (0, 18), 255, (32, 64)),
    # BDD100K 10K sem_seg masks: Cityscapes' train ids 0..18, 255 unlabelled, no converter
    "bdd100k": Layout(("train", "val"), "images/10k/{split}/{stem}.jpg", "labels/sem_seg/masks/{split}/{stem}.png",
                      (0, 18), 255, (36, 64)),
    # SegNet's CamVid: 11 classes as 0..10, 11 unlabelled
    "camvid": Layout(("train", "val"), "{split}/{stem}.png", "{split}annot/{stem}.png", (0, 10), 11, (48, 64)),
}


def _label_map(layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """Blocks of 8x8 pixels, each a random class or (one block in five) the unlabelled value."""
    height, width = layout.size
    low, high = layout.labels
    blocks = rng.integers(low, high + 1, size=(-(-height // 8), -(-width // 8)))
    blocks[rng.random(blocks.shape) < 0.2] = layout.ignore
    return np.kron(blocks, np.ones((8, 8), dtype=blocks.dtype))[:height, :width].astype(np.uint8)


def fabricate(name: str, root: Path, n_train: int = 2, n_val: int = 1, seed: int = 0) -> Path:
    """Write a tiny ``name`` dataset (a key of ``LAYOUTS``) under ``root``; return ``root``."""
    layout = LAYOUTS[name]
    rng = np.random.default_rng(seed)
    for split, count in zip(layout.splits, (n_train, n_val)):
        stems = [f"{split}_{i:06d}" for i in range(count)]
        for stem in stems:
            image_path = root / layout.image.format(split=split, stem=stem)
            label_path = root / layout.label.format(split=split, stem=stem)
            image_path.parent.mkdir(parents=True, exist_ok=True)
            label_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*layout.size, 3), dtype=np.uint8)).save(image_path)
            Image.fromarray(_label_map(layout, rng)).save(label_path)
        if layout.split_lists is not None:
            split_list = root / layout.split_lists.format(split=split)
            split_list.parent.mkdir(parents=True, exist_ok=True)
            split_list.write_text("".join(f"{stem}\n" for stem in stems))
    return root
