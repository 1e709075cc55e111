"""The evaluate stage: metrics.json against a hand computation, pictures, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.registry import DATASETS, MODELS

from data.demo import DEMO_CLASSES
from prolab_models.errors import LabelSpaceMismatchError
from tasks.model.evaluate import METRICS_FILE, evaluate
from tasks.model.runs import build_config
from tests.helpers.demo_runs import tiny_options
from tests.helpers.label_space_factory import make_label_space


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, trained_run: Path, demo_root: Path,
              demo_label_space: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("eval")
    metrics = evaluate("demo", demo_label_space, trained_run, out, demo_root, cfg_options=tiny_options(2),
                       num_pictures=2)
    return out, metrics


def hand_miou(config, checkpoint: Path, num_classes: int) -> float:
    """mIoU recomputed from the model's predictions with numpy, as the mean over the classes
    present in ground truth or prediction of |pred & gt| / |pred | gt|."""
    init_default_scope("mmseg")
    model = MODELS.build(config.model).eval()
    load_checkpoint(model, str(checkpoint), map_location="cpu")
    dataset = DATASETS.build(config.test_dataloader.dataset)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    with torch.no_grad():
        for index in range(len(dataset)):
            out = model.test_step(pseudo_collate([dataset[index]]))[0]
            gt = out.gt_sem_seg.data.numpy().ravel()
            pred = out.pred_sem_seg.data.numpy().ravel()
            valid = gt != 255
            np.add.at(confusion, (gt[valid], pred[valid]), 1)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    return float(np.mean(intersection[union > 0] / union[union > 0]) * 100)


def test_metrics_json_holds_miou_per_class_iou_and_properties(evaluated: tuple[Path, dict]) -> None:
    out, metrics = evaluated
    written = json.loads((out / METRICS_FILE).read_text())
    assert written == metrics
    assert set(written["per_class_iou"]) == set(DEMO_CLASSES)
    assert 0 <= written["mIoU"] <= 100 and 0 <= written["aAcc"] <= 100
    assert len(written["properties"]) == 8 and {"precision", "recall", "name"} <= set(written["properties"][0])
    assert written["label_space_key"] == "demo-ls" and written["checkpoint"].endswith("iter_2.pth")
    for picture in ("overlays.png", "confusion_matrix.png", "iou_per_class.png", "properties_0.png"):
        assert (out / picture).stat().st_size > 0


def test_miou_equals_a_hand_computation(evaluated: tuple[Path, dict], trained_run: Path, demo_root: Path,
                                        demo_label_space: Path) -> None:
    out, metrics = evaluated
    config = build_config("demo", demo_label_space, out, demo_root, tiny_options(2))
    assert metrics["mIoU"] == pytest.approx(hand_miou(config, trained_run / "iter_2.pth", 7), abs=0.01)
    ious = [v for v in metrics["per_class_iou"].values() if v is not None]
    assert metrics["mIoU"] == pytest.approx(np.mean(ious), abs=0.01)


def test_a_checkpoint_from_another_label_space_is_refused(tmp_path: Path, trained_run: Path, demo_root: Path) -> None:
    other = make_label_space(tmp_path / "ls", DEMO_CLASSES, k=8, dim=16, seed=3, key="other-ls")
    with pytest.raises(LabelSpaceMismatchError, match=r"iter_2\.pth: the weights were trained with label space 'demo-ls'"):
        evaluate("demo", other, trained_run / "iter_2.pth", tmp_path / "out", demo_root, cfg_options=tiny_options(2))


def test_missing_checkpoint(tmp_path: Path, demo_label_space: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        evaluate("demo", demo_label_space, tmp_path, tmp_path / "out")
