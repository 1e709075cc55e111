"""BDD100K semantic segmentation (the 10K images), with the layout checks of this package."""

from __future__ import annotations

from mmseg.datasets import BDD100KDataset
from mmseg.registry import DATASETS

from prolab_models.datasets.layout import SplitLayoutDataset


@DATASETS.register_module()
class ProLabBDD100KDataset(SplitLayoutDataset):
    """BDD100K as its archives unpack: ``images/10k/<split>/*.jpg`` and
    ``labels/sem_seg/masks/<split>/*.png`` holding Cityscapes' 19 train ids, 255 unlabelled.

    mmseg's ``BDD100KDataset`` (same classes and palette) holds this name's plain variant; this
    one adds ``split=`` and the layout checks.
    """

    METAINFO = BDD100KDataset.METAINFO
    SPLIT_DIRS = ("images/10k/{split}", "labels/sem_seg/masks/{split}")

    def __init__(self, img_suffix: str = ".jpg", seg_map_suffix: str = ".png", **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)
