"""The datasets the project knows by name, one entry each.

describe's class list (``tasks.datasets``), the layout check (``prolab_models.datasets.check``),
the config short names (``prolab_models.configs``) and the CLI's ``--dataset`` help all read this
table, so adding a dataset is its dataset class, one entry here and its ``_base_`` config.
Importing it costs nothing (no torch, no mmseg): planning reads it on every run.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset: the name users type, its mmseg dataset class, where its splits lie, where its
    class list comes from, and the config its name stands for."""

    name: str
    dataset_type: str  # registered in mmseg's DATASETS (ours by ``prolab_models.datasets``)
    layout: Mapping[str, Any]  # the dataset config beside ``type``; "{split}" is filled in per split
    splits: tuple[str, ...]  # the splits ``python -m prolab_models.datasets.check`` checks by default
    config: str  # under prolab_models/configs: what ``--config NAME`` means
    classes_from: str  # "module:attribute": a dataset class (its METAINFO) or a sequence of names
    renames: Mapping[str, str] = field(default_factory=dict)  # where mmseg shortened a class name

    def classes(self) -> list[str]:
        """The class names in label order (mmseg's, stripped: ADE20K's 'bed '), renamed where the
        paper's descriptors use the full name."""
        module, _, attribute = self.classes_from.partition(":")
        source = getattr(importlib.import_module(module), attribute)
        names = source.METAINFO["classes"] if hasattr(source, "METAINFO") else source
        return [self.renames.get(name.strip(), name.strip()) for name in names]

    def split_config(self, split: str) -> dict[str, Any]:
        """The dataset config of one split (without ``data_root``)."""
        return {"type": self.dataset_type, **_fill(dict(self.layout), split)}


def _fill(value: Any, split: str) -> Any:
    if isinstance(value, str):
        return value.format(split=split)
    if isinstance(value, dict):
        return {key: _fill(item, split) for key, item in value.items()}
    return value


def _folders(images: str, labels: str) -> dict[str, Any]:
    return {"data_prefix": {"img_path": images, "seg_map_path": labels}}


_SPLIT_NAMED = {"split": "{split}"}  # our dataset classes find a split's folders from its name

DATASET_CATALOG: dict[str, DatasetEntry] = {entry.name: entry for entry in (
    # CPU, minutes: the generated demo scenes, and CamVid (SegNet's layout) on a pretrained backbone
    DatasetEntry("demo", "ProLabDemoDataset", _SPLIT_NAMED, ("train", "val", "test"),
                 "prolab-upernet_vit-adapter-t_1xb8-300_demo-128x128.py", "data.demo:DEMO_CLASSES"),
    DatasetEntry("camvid", "CamVidDataset", _SPLIT_NAMED, ("train", "val", "test"),
                 "prolab-lraspp_efficientnet-lite0_1xb8-400_camvid-256x256.py",
                 "prolab_models.datasets.camvid:CamVidDataset"),
    # the paper's, ViT-Adapter-B on 8 GPUs
    DatasetEntry("ade20k", "ADE20KDataset", _folders("images/{split}", "annotations/{split}"),
                 ("training", "validation"), "prolab-upernet_vit-adapter-b_8xb2-320k_ade20k-512x512.py",
                 # objectInfo150 names class 136 "tank, storage tank"; the paper's descriptors say "storage tank"
                 "mmseg.datasets:ADE20KDataset", {"tank": "storage tank"}),
    DatasetEntry("coco-stuff", "COCOStuffDataset", _folders("images/{split}", "annotations/{split}"),
                 ("train2017", "val2017"), "prolab-upernet_vit-adapter-b_8xb2-160k_coco-stuff164k-512x512.py",
                 "mmseg.datasets:COCOStuffDataset"),
    DatasetEntry("pascal-context-59", "PascalContextDataset59",
                 {**_folders("JPEGImages", "SegmentationClassContext"),
                  "ann_file": "ImageSets/SegmentationContext/{split}.txt"},
                 ("train", "val"), "prolab-upernet_vit-adapter-b_8xb2-160k_pascal-context-59-512x512.py",
                 "mmseg.datasets:PascalContextDataset59"),
    DatasetEntry("cityscapes", "CityscapesDataset", _folders("leftImg8bit/{split}", "gtFine/{split}"),
                 ("train", "val"), "prolab-upernet_vit-adapter-b_8xb2-160k_cityscapes-768x768.py",
                 "mmseg.datasets:CityscapesDataset"),
    DatasetEntry("bdd100k", "ProLabBDD100KDataset", _SPLIT_NAMED, ("train", "val"),
                 "prolab-upernet_vit-adapter-b_8xb2-160k_bdd100k-768x768.py",
                 "prolab_models.datasets.bdd100k:ProLabBDD100KDataset"),
)}
