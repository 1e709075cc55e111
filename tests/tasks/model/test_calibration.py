"""Calibrated stacking's sweep: the pixel counts of ``CalibrationSweepMetric`` and the curve, hIoU,
AUSUC and chosen γ of ``tasks.model.calibration``, on pixels whose figures are worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prolab_models.evaluation import CalibrationSweepMetric
from tasks.model.calibration import ausuc, choose, curve, harmonic, summary, sweep_ious

GRID = np.array([-0.5, 0.0, 0.5])
# Class 0 seen, class 1 unseen. Pixel A: ground truth 0, d = 0.9 - 0.5 = 0.4; B: truth 1, d = 0.1;
# C: truth 1, d = -0.2; D: ignored. The seen class wins where d >= γ.
SCORES = torch.tensor([[[0.9, 0.6, 0.3, 0.2]], [[0.5, 0.5, 0.5, 0.9]]])
TRUTH = torch.tensor([[[0, 1, 1, 255]]])


@pytest.fixture(scope="module")
def counts() -> dict[str, np.ndarray]:
    metric = CalibrationSweepMetric(unseen=[1], grid=list(GRID))
    metric.process({}, [{"seg_logits": {"data": SCORES}, "gt_sem_seg": {"data": TRUTH}}])
    metric.compute_metrics(metric.results)
    return metric.counts


def test_the_sweep_gives_each_classs_iou_at_every_gamma(counts: dict[str, np.ndarray]) -> None:
    # γ = -0.5: A, B, C all seen (class 0): IoU 1/3 and 0. γ = 0: A, B seen, C unseen: 1/2 and 1/2.
    # γ = 0.5: all unseen: class 0 has truth but no hit (0), class 1 hits 2 of 3 predicted.
    np.testing.assert_allclose(sweep_ious(counts, GRID), [[100 / 3, 0.0], [50.0, 50.0], [0.0, 200 / 3]])


def test_the_curve_has_seen_unseen_and_hiou_and_gamma_is_chosen_by_hiou(counts: dict[str, np.ndarray]) -> None:
    rows = curve(counts, np.array([False, True]), GRID)
    assert rows == [{"gamma": -0.5, "mIoU_seen": 33.33, "mIoU_unseen": 0.0, "hIoU": 0.0},
                    {"gamma": 0.0, "mIoU_seen": 50.0, "mIoU_unseen": 50.0, "hIoU": 50.0},
                    {"gamma": 0.5, "mIoU_seen": 0.0, "mIoU_unseen": 66.67, "hIoU": 0.0}]
    assert choose(rows) == 0.0
    assert choose([{"gamma": 0.2, "hIoU": 10.0}, {"gamma": 0.1, "hIoU": 10.0}, {"gamma": 0.3, "hIoU": None}]) == 0.1
    assert choose([{"gamma": 0.2, "hIoU": None}]) == 0.0


def test_ausuc_is_the_trapezoid_area_under_seen_over_unseen() -> None:
    # Points (unseen, seen) in percent: (0, 33.33), (50, 50), (66.67, 0):
    # 0.5 * (0.3333 + 0.5) / 2 + (0.6667 - 0.5) * 0.5 / 2 = 0.25 of the unit square.
    assert ausuc([100 / 3, 50.0, 0.0], [0.0, 50.0, 200 / 3]) == pytest.approx(25.0)
    assert ausuc([100.0, 100.0], [0.0, 100.0]) == pytest.approx(100.0)  # a perfect model
    assert ausuc([80.0], [0.0]) == 0.0  # unseen never found: no area


def test_the_summary_reports_the_gamma_chosen_on_another_curve(counts: dict[str, np.ndarray]) -> None:
    reported = curve(counts, np.array([False, True]), GRID)
    other = [dict(row, hIoU=h) for row, h in zip(reported, [1.0, 2.0, 3.0])]  # would choose 0.5
    assert summary(reported, other) == {"AUSUC": 25.0, "chosen_gamma": 0.5, "mIoU_seen": 0.0,
                                        "mIoU_unseen": 66.67, "hIoU": 0.0}
    assert summary(reported, None)["chosen_gamma"] is None


def test_hiou_is_zero_when_both_are_and_missing_when_either_is() -> None:
    assert harmonic(70.0, 20.0) == pytest.approx(2 * 70 * 20 / 90)
    assert harmonic(0.0, 0.0) == 0.0
    assert harmonic(None, 10.0) is None
