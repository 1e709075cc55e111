"""Datasets known by name (``prolab_models.dataset_catalog``), with their class lists in label order.

The class lists come from the dataset classes registered in mmsegmentation (and ours for
CamVid, BDD100K and the demo), so the label space and the model agree on label order.
"""

from __future__ import annotations

from prolab_models.dataset_catalog import DATASET_CATALOG
from tasks.errors import ProLabError


class UnknownDatasetError(ProLabError, ValueError):
    """A dataset name that is not in the catalog."""


def dataset_classes(name: str) -> list[str]:
    """The class names of a known dataset, in label order."""
    try:
        entry = DATASET_CATALOG[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known: {', '.join(DATASET_CATALOG)}") from None
    return entry.classes()
