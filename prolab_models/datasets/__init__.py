"""Datasets for mmseg's registry, with layout checks that name the offending file.

Importing this package registers ``CamVidDataset``, ``ProLabDemoDataset``,
``ProLabBDD100KDataset`` (in mmseg's DATASETS) and ``CheckLabelRange`` (in TRANSFORMS).
"""

from prolab_models.datasets.bdd100k import ProLabBDD100KDataset
from prolab_models.datasets.camvid import CamVidDataset
from prolab_models.datasets.demo import ProLabDemoDataset
from prolab_models.datasets.fingerprint import dataset_fingerprint
from prolab_models.datasets.layout import (
    DatasetLayoutError,
    SplitLayoutDataset,
    check_label_values,
    validate_dataset,
)
from prolab_models.datasets.transforms import CheckLabelRange

__all__ = [
    "CamVidDataset",
    "CheckLabelRange",
    "DatasetLayoutError",
    "ProLabBDD100KDataset",
    "ProLabDemoDataset",
    "SplitLayoutDataset",
    "check_label_values",
    "dataset_fingerprint",
    "validate_dataset",
]
