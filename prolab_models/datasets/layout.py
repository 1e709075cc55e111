"""Layout and label checks that make a badly prepared dataset fail at once, naming the file.

Three levels, from cheap to thorough: every dataset here checks its folders and image/annotation
pairing when it is built (one ``stat`` a file); ``CheckLabelRange`` checks each label map as the
pipeline loads it (one pass over the array); ``validate_dataset`` reads every file up front, for
a pre-flight check before a long run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.datasets.transforms import LoadAnnotations
from PIL import Image

from prolab_models.errors import DatasetLayoutError


class SplitLayoutDataset(BaseSegDataset):
    """A ``BaseSegDataset`` whose folders follow from a split name, checked when it is built.

    Subclasses set ``SPLIT_DIRS``, the image and annotation folders relative to ``data_root``
    with a ``{split}`` field, and may set ``VOID_LABEL``, a raw label value that means
    "unlabelled" and is mapped to 255, mmseg's ignore value.
    """

    SPLIT_DIRS: ClassVar[tuple[str, str]]
    VOID_LABEL: ClassVar[int | None] = None

    def __init__(self, split: str | None = None, data_prefix: dict | None = None, **kwargs) -> None:
        if (split is None) == (data_prefix is None):
            raise ValueError(
                f"{type(self).__name__}: give exactly one of split (e.g. 'train') and data_prefix")
        if split is not None:
            image_dir, annotation_dir = self.split_dirs(split)
            data_prefix = dict(img_path=image_dir, seg_map_path=annotation_dir)
        super().__init__(data_prefix=data_prefix, **kwargs)

    @classmethod
    def split_dirs(cls, split: str) -> tuple[str, str]:
        """The image and annotation folders of ``split``, relative to the data root."""
        image_dir, annotation_dir = (folder.format(split=split) for folder in cls.SPLIT_DIRS)
        return image_dir, annotation_dir

    @classmethod
    def get_label_map(cls, new_classes: Sequence[str] | None = None) -> dict[int, int] | None:
        """mmseg's class-subset mapping, plus ``VOID_LABEL`` -> 255."""
        label_map = super().get_label_map(new_classes)
        if cls.VOID_LABEL is None:
            return label_map
        return {**(label_map or {}), cls.VOID_LABEL: 255}

    def load_data_list(self) -> list[dict]:
        name = type(self).__name__
        image_dir = Path(self.data_prefix["img_path"])
        annotation_dir = Path(self.data_prefix["seg_map_path"])
        if self.data_root is not None and not Path(self.data_root).is_dir():
            expected = " and ".join(
                os.path.relpath(folder, self.data_root) for folder in (image_dir, annotation_dir))
            raise DatasetLayoutError(
                f"{self.data_root}: data root not found; expected a {name} root holding {expected} "
                f"(see data/README.md)")
        for folder, what in ((image_dir, f"images (*{self.img_suffix})"),
                             (annotation_dir, f"annotations (*{self.seg_map_suffix})")):
            if not folder.is_dir():
                raise DatasetLayoutError(f"{folder}: folder not found; expected the {name} {what}")
        if self.ann_file and not Path(self.ann_file).is_file():
            raise DatasetLayoutError(f"{self.ann_file}: split list not found")

        data_list = super().load_data_list()
        if not data_list:
            raise DatasetLayoutError(f"{image_dir}: no images ending in {self.img_suffix!r}")
        missing_images = [info["img_path"] for info in data_list if not Path(info["img_path"]).is_file()]
        if missing_images:
            raise DatasetLayoutError(
                f"{missing_images[0]}: image listed in {self.ann_file} not found"
                f"{_more(len(missing_images))}")
        unpaired = [info for info in data_list if not Path(info["seg_map_path"]).is_file()]
        if unpaired:
            raise DatasetLayoutError(
                f"{unpaired[0]['img_path']}: image without its annotation; expected "
                f"{unpaired[0]['seg_map_path']}{_more(len(unpaired))}")
        return data_list


def _more(count: int) -> str:
    return f" (and {count - 1} more)" if count > 1 else ""


def check_label_values(label: np.ndarray, num_classes: int, ignore_index: int, path: str) -> None:
    """Raise ``DatasetLayoutError`` naming ``path`` if ``label`` holds a value that is neither a
    class index below ``num_classes`` nor ``ignore_index``."""
    if label.size == 0 or int(label.max()) < num_classes:
        return
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if bad.size:
        raise DatasetLayoutError(
            f"{path}: label values {bad[:10].tolist()} outside the classes 0..{num_classes - 1} "
            f"(ignore value {ignore_index})")


def _image_size(path: str) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DatasetLayoutError(f"{path}: file not found") from None
    return height, width


def validate_dataset(dataset: BaseSegDataset, check_values: bool = True) -> int:
    """Check every image/annotation pair of a built dataset; return how many were checked.

    Sizes come from the file headers (fast); with ``check_values`` each label map is also
    decoded, through mmseg's ``LoadAnnotations`` so ``reduce_zero_label`` and label maps apply
    exactly as in training. Works for any ``BaseSegDataset``, mmseg's own included.
    """
    num_classes = len(dataset.metainfo["classes"])
    loader = LoadAnnotations()
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        image_size = _image_size(info["img_path"])
        label_size = _image_size(info["seg_map_path"])
        if image_size != label_size:
            raise DatasetLayoutError(
                f"{info['seg_map_path']}: annotation is {label_size[0]}x{label_size[1]} (HxW) but its "
                f"image {info['img_path']} is {image_size[0]}x{image_size[1]}")
        if check_values:
            label = loader(dict(info, seg_fields=[]))["gt_seg_map"]
            check_label_values(label, num_classes, dataset.ignore_index, info["seg_map_path"])
    return len(dataset)
