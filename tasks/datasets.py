"""Datasets known by name, with their class lists in label order.

The class lists come from the dataset classes registered in mmsegmentation (and ours for
CamVid, BDD100K and the demo), so the label space and the model agree on label order.
"""

from __future__ import annotations

from collections.abc import Callable

from tasks.errors import ProLabError


def _mmseg_classes(class_name: str, renames: dict[str, str] | None = None) -> Callable[[], list[str]]:
    """mmseg's class names, stripped ('bed ' in ADE20K), with the full names where mmseg shortened one."""

    def classes() -> list[str]:
        import mmseg.datasets

        names = [name.strip() for name in getattr(mmseg.datasets, class_name).METAINFO["classes"]]
        return [(renames or {}).get(name, name) for name in names]

    return classes


def _prolab_classes(class_name: str) -> Callable[[], list[str]]:
    def classes() -> list[str]:
        import prolab_models.datasets

        return list(getattr(prolab_models.datasets, class_name).METAINFO["classes"])

    return classes


def _demo_classes() -> list[str]:
    from data.demo import DEMO_CLASSES

    return list(DEMO_CLASSES)


KNOWN_DATASETS: dict[str, Callable[[], list[str]]] = {
    # ADE20K's objectInfo150 names class 136 "tank, storage tank"; the paper's descriptors say "storage tank".
    "ade20k": _mmseg_classes("ADE20KDataset", {"tank": "storage tank"}),
    "coco-stuff": _mmseg_classes("COCOStuffDataset"),
    "pascal-context-59": _mmseg_classes("PascalContextDataset59"),
    "cityscapes": _mmseg_classes("CityscapesDataset"),
    "bdd100k": _prolab_classes("ProLabBDD100KDataset"),
    "camvid": _prolab_classes("CamVidDataset"),
    "demo": _demo_classes,
}


class UnknownDatasetError(ProLabError, ValueError):
    """A dataset name that is not one of KNOWN_DATASETS."""


def dataset_classes(name: str) -> list[str]:
    """The class names of a known dataset, in label order."""
    try:
        return KNOWN_DATASETS[name]()
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}") from None
