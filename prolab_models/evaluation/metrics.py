"""Metrics the evaluate stage reports beyond mmseg's summary.

- ``PerClassIoUMetric``: mmseg's ``IoUMetric`` (same numbers) plus ``IoU.<class>`` for every
  class and the confusion matrix (rows: ground truth, columns: prediction) for the pictures.
- ``PropertyMetric``: pixel-level precision and recall of every property, predicted where
  p > threshold, true where the ground-truth class has the property; needs the
  ``pred_properties`` that ``PropertyEncoderDecoder`` returns.
- ``CalibrationSweepMetric``: the pixel counts behind calibrated stacking's sweep over γ
  (``tasks.model.calibration`` turns them into the seen-unseen curve).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS

from prolab_models.label_space import load_label_space


def _valid_pixels(sample: dict, num_classes: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat (ground truth, mask of the pixels that count) of one sample."""
    label = sample["gt_sem_seg"]["data"].squeeze(0).flatten().long()
    return label, (label != ignore_index) & (label >= 0) & (label < num_classes)


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """``IoUMetric`` that also returns per-class IoU (percent; NaN for a class absent from both
    ground truth and prediction) and keeps the dataset's confusion matrix in ``confusion``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.confusion: np.ndarray | None = None

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        num_classes = len(self.dataset_meta["classes"])
        for sample in data_samples:
            pred = sample["pred_sem_seg"]["data"].squeeze(0).flatten().long()
            label, valid = _valid_pixels(sample, num_classes, self.ignore_index)
            areas = self.intersect_and_union(pred, label, num_classes, self.ignore_index)
            confusion = torch.bincount(label[valid] * num_classes + pred[valid].to(label.device),
                                       minlength=num_classes**2).reshape(num_classes, num_classes)
            self.results.append((*areas, confusion.cpu()))

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics = super().compute_metrics([r[:4] for r in results])
        intersect = sum(r[0] for r in results).double()
        union = sum(r[1] for r in results).double()
        iou = (intersect / union).numpy()  # NaN where union is 0
        for name, value in zip(self.dataset_meta["classes"], iou):
            metrics[f"IoU.{name}"] = float(np.round(value * 100, 2))
        self.confusion = sum(r[4] for r in results).numpy()
        return metrics


@METRICS.register_module()
class PropertyMetric(BaseMetric):
    """Args:
        label_space: the label space directory the model was trained with (its multi-hot
            says which properties each ground-truth class has).
        threshold: p above it counts as the property being predicted.
    """

    default_prefix = "prop"

    def __init__(self, label_space: str | Path | None = None, threshold: float = 0.5, ignore_index: int = 255,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if label_space is None:
            raise ValueError("PropertyMetric: label_space is not set")
        space = load_label_space(label_space)
        self.multi_hot = torch.tensor(space.multi_hot).bool()
        self.property_names = space.property_names
        self.threshold = threshold
        self.ignore_index = ignore_index

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        num_classes = self.multi_hot.shape[0]
        for sample in data_samples:
            label, valid = _valid_pixels(sample, num_classes, self.ignore_index)
            predicted = sample["pred_properties"]["data"].flatten(1)[:, valid.to(sample["pred_properties"]["data"].device)]
            predicted = (predicted > self.threshold).cpu()  # (K, V)
            target = self.multi_hot[label[valid].cpu()].T  # (K, V)
            self.results.append(torch.stack([
                (predicted & target).sum(1),  # true positives
                (predicted & ~target).sum(1),  # false positives
                (~predicted & target).sum(1),  # false negatives
            ]))

    def compute_metrics(self, results: list) -> dict[str, float]:
        tp, fp, fn = sum(results).double()
        precision = (tp / (tp + fp)).numpy() * 100  # NaN: never predicted
        recall = (tp / (tp + fn)).numpy() * 100  # NaN: no ground-truth pixel has it
        metrics = {"mPrecision": float(np.round(np.nanmean(precision), 2)),
                   "mRecall": float(np.round(np.nanmean(recall), 2))}
        for i, name in enumerate(self.property_names):
            metrics[f"precision.{i:03d}"] = float(np.round(precision[i], 2))
            metrics[f"recall.{i:03d}"] = float(np.round(recall[i], 2))
        return metrics


@METRICS.register_module()
class CalibrationSweepMetric(BaseMetric):
    """The counts behind calibrated stacking's sweep (``tasks.model.calibration``): per pixel, the
    best seen and the best unseen class by score (``seg_logits``, the raw cosines, whatever
    calibration the prediction used) and the cell of d = (seen score) - (unseen score) on
    ``grid`` (k = how many grid points are <= d); per cell, how many pixels each class would be
    predicted on, and correctly, from either side. Kept in ``counts``; returns no figure.

    Args:
        unseen: the indices of the unseen classes (the rest are seen).
        grid: the γ values of the sweep, ascending.
    """

    default_prefix = "calibration"

    def __init__(self, unseen: Sequence[int] = (), grid: Sequence[float] = (), ignore_index: int = 255,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not unseen or not grid:
            raise ValueError("CalibrationSweepMetric: give the unseen classes' indices and the grid of γ")
        self.unseen = sorted(int(i) for i in unseen)
        self.grid = torch.tensor(sorted(float(g) for g in grid), dtype=torch.float64)
        self.ignore_index = ignore_index
        self.counts: dict[str, np.ndarray] | None = None

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            scores = sample["seg_logits"]["data"].flatten(1).cpu().double()  # (C, pixels)
            num_classes = scores.shape[0]
            label, valid = _valid_pixels(sample, num_classes, self.ignore_index)
            label, scores = label[valid].cpu(), scores[:, valid.cpu()]
            is_unseen = torch.zeros(num_classes, dtype=torch.bool)
            is_unseen[self.unseen] = True
            seen_ids, unseen_ids = torch.nonzero(~is_unseen).flatten(), torch.nonzero(is_unseen).flatten()
            seen_score, seen_best = scores[seen_ids].max(0)
            unseen_score, unseen_best = scores[unseen_ids].max(0)
            seen_best, unseen_best = seen_ids[seen_best], unseen_ids[unseen_best]
            cell = torch.searchsorted(self.grid, seen_score - unseen_score, right=True)
            cells = len(self.grid) + 1

            def count(predicted: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
                index = cell[where] * num_classes + predicted[where]
                return torch.bincount(index, minlength=cells * num_classes).reshape(cells, num_classes)

            everywhere = torch.ones_like(label, dtype=torch.bool)
            self.results.append({
                "seen_pred": count(seen_best, everywhere), "seen_hit": count(seen_best, seen_best == label),
                "unseen_pred": count(unseen_best, everywhere), "unseen_hit": count(unseen_best, unseen_best == label),
                "truth": torch.bincount(label, minlength=num_classes)})

    def compute_metrics(self, results: list) -> dict[str, float]:
        self.counts = {name: sum(r[name] for r in results).numpy() for name in results[0]}
        return {}
