"""The generated street-scene demo dataset (``data/demo.py``), in CamVid's SegNet layout."""

from __future__ import annotations

from mmseg.registry import DATASETS

from data.demo import DEMO_CLASSES, DEMO_PALETTE
from prolab_models.datasets.layout import SplitLayoutDataset


@DATASETS.register_module()
class ProLabDemoDataset(SplitLayoutDataset):
    """``<split>/`` RGB PNGs and ``<split>annot/`` label PNGs holding class indices, 255 for
    unlabelled pixels; splits train, val and test.

    ``dict(type="ProLabDemoDataset", data_root="data/generated/demo", split="train", ...)``
    """

    METAINFO = dict(classes=DEMO_CLASSES, palette=[list(colour) for colour in DEMO_PALETTE])
    SPLIT_DIRS = ("{split}", "{split}annot")

    def __init__(self, img_suffix: str = ".png", seg_map_suffix: str = ".png", **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)
