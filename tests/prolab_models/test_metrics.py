"""The evaluation metrics on cases small enough to compute by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import prolab_models.register  # noqa: F401  (registers the modules)
from prolab_models.evaluation import PerClassIoUMetric, PropertyMetric
from tests.helpers.label_space_factory import make_label_space


def sample(gt: list[list[int]], pred: list[list[int]] | None = None, properties: torch.Tensor | None = None) -> dict:
    out = {"gt_sem_seg": {"data": torch.tensor(gt)[None]}}
    if pred is not None:
        out["pred_sem_seg"] = {"data": torch.tensor(pred)[None]}
    if properties is not None:
        out["pred_properties"] = {"data": properties}
    return out


def test_miou_and_per_class_iou_match_a_hand_computation() -> None:
    metric = PerClassIoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": ("a", "b", "c")}
    # gt  0 0 1 255 | pred 0 1 1 2
    metric.process({}, [sample([[0, 0, 1, 255]], [[0, 1, 1, 2]])])
    metrics = metric.compute_metrics(metric.results)
    # a: I=1 U=2 -> 50; b: I=1 U=2 -> 50; c: absent from gt and (valid) pred -> NaN, left out
    assert metrics["IoU.a"] == 50.0 and metrics["IoU.b"] == 50.0 and np.isnan(metrics["IoU.c"])
    assert metrics["mIoU"] == pytest.approx(50.0)
    assert metrics["aAcc"] == pytest.approx(100 * 2 / 3, abs=0.01)
    assert metric.confusion.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_property_precision_and_recall_by_hand(tmp_path: Path) -> None:
    multi_hot = np.array([[1, 0], [1, 1]], dtype=np.float32)  # class 0: {p0}; class 1: {p0, p1}
    space = make_label_space(tmp_path / "ls", ["x", "y"], dim=4, multi_hot=multi_hot)
    metric = PropertyMetric(label_space=str(space))
    # three pixels: gt 0, 1, 255 (ignored)
    properties = torch.tensor([[[0.9, 0.2, 0.9]], [[0.8, 0.7, 0.9]]])  # (K=2, 1, 3)
    metric.process({}, [sample([[0, 1, 255]], properties=properties)])
    metrics = metric.compute_metrics(metric.results)
    # p0: predicted on pixel 0 only, true on both -> precision 1, recall 1/2
    # p1: predicted on both, true on pixel 1 -> precision 1/2, recall 1
    assert metrics["precision.000"] == 100.0 and metrics["recall.000"] == 50.0
    assert metrics["precision.001"] == 50.0 and metrics["recall.001"] == 100.0
    assert metrics["mPrecision"] == 75.0 and metrics["mRecall"] == 75.0
