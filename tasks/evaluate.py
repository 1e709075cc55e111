"""The evaluate stage: checkpoint + label space + dataset -> metrics.json and pictures.

Runs mmengine's test loop with two metrics: mmseg's IoU (per class too) and, for property
models, pixel-level property precision/recall (p > 0.5 against the ground-truth class's
multi-hot row). Then draws a few predictions, their property activations, the confusion
matrix and the per-class IoU with ``prolab_models.visualization``.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import mmcv
import torch
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner
from mmseg.registry import MODELS

from prolab_models.errors import LabelSpaceMismatchError, ProLabInputError
from prolab_models.segmentors import PropertyEncoderDecoder
from prolab_models.visualization import save_activation_maps, save_confusion_matrix, save_iou_bars, save_overlays
from tasks.label_space import LabelSpace, load_label_space
from tasks.train import build_config, check_inputs, last_checkpoint, logs_to_stderr, select_test_split

METRICS_FILE = "metrics.json"


def _finite(value: float) -> float | None:
    """A plain float to 2 decimals (mmseg gives float32 scalars); None for NaN, which JSON lacks: a class or
    property without pixels has no score."""
    value = float(value)
    return None if math.isnan(value) else round(value, 2)


def _summarise(metrics: dict[str, float], classes: list[str], space: LabelSpace | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "mIoU": _finite(metrics["mIoU"]),
        "aAcc": _finite(metrics["aAcc"]),
        "mAcc": _finite(metrics["mAcc"]),
        "per_class_iou": {c: _finite(metrics[f"IoU.{c}"]) for c in classes},
    }
    if space is not None:
        result["property_precision_mean"] = _finite(metrics["prop/mPrecision"])
        result["property_recall_mean"] = _finite(metrics["prop/mRecall"])
        result["properties"] = [
            {"id": i, "name": name, "precision": _finite(metrics[f"prop/precision.{i:03d}"]),
             "recall": _finite(metrics[f"prop/recall.{i:03d}"])}
            for i, name in enumerate(space.property_names)
        ]
    return result


@torch.no_grad()
def _predictions(runner: Runner, count: int) -> list[dict[str, Any]]:
    """The first ``count`` test images: RGB image, ground truth, prediction, properties."""
    dataset = runner.test_dataloader.dataset
    model = runner.model
    model.eval()
    samples = []
    for index in range(min(count, len(dataset))):
        out = model.test_step(pseudo_collate([dataset[index]]))[0]
        samples.append({
            "image": mmcv.imread(out.img_path, channel_order="rgb"),
            "gt": out.gt_sem_seg.data[0].cpu().numpy(),
            "pred": out.pred_sem_seg.data[0].cpu().numpy(),
            "properties": out.pred_properties.data.cpu().numpy() if "pred_properties" in out else None,
        })
    return samples


def _draw(out_dir: Path, runner: Runner, result: dict, space: LabelSpace | None, num_pictures: int) -> None:
    meta = runner.test_dataloader.dataset.metainfo
    classes = list(meta["classes"])
    save_confusion_matrix(runner.test_evaluator.metrics[0].confusion, classes, out_dir / "confusion_matrix.png")
    save_iou_bars({c: math.nan if v is None else v for c, v in result["per_class_iou"].items()},
                  out_dir / "iou_per_class.png")
    samples = _predictions(runner, num_pictures)
    if not samples:
        return
    save_overlays([s["image"] for s in samples], [s["gt"] for s in samples], [s["pred"] for s in samples],
                  meta["palette"], classes, out_dir / "overlays.png")
    if space is not None:
        for i, sample in enumerate(samples):
            save_activation_maps(sample["image"], sample["properties"], space.property_names,
                                 out_dir / f"properties_{i}.png")


def evaluate(
    config: str | Path,
    label_space: Path,
    checkpoint: Path,
    out_dir: Path,
    data_root: Path | None = None,
    split: str = "val",
    cfg_options: dict | None = None,
    num_pictures: int = 4,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (a .pth file, or a work dir: its last checkpoint) on ``split``;
    write ``metrics.json`` (mIoU, aAcc and per-class IoU in percent, property precision and
    recall) and pictures into ``out_dir``; return the metrics."""
    out_dir = Path(out_dir)
    space = load_label_space(label_space)
    checkpoint_file = last_checkpoint(Path(checkpoint))
    cfg = build_config(config, space.path, out_dir, data_root, cfg_options)
    select_test_split(cfg, config, split)
    check_inputs(cfg, space, "test_dataloader")
    property_model = issubclass(MODELS.get(cfg.model.type), PropertyEncoderDecoder)
    cfg.test_evaluator = [dict(type="PerClassIoUMetric", iou_metrics=["mIoU"])]
    if property_model:
        cfg.test_evaluator.append(dict(type="PropertyMetric", label_space=str(space.path)))
    cfg.load_from = str(checkpoint_file)

    out_dir.mkdir(parents=True, exist_ok=True)
    with logs_to_stderr():
        runner = Runner.from_cfg(cfg)
        try:
            metrics = runner.test()
        except LabelSpaceMismatchError as error:
            raise LabelSpaceMismatchError(f"{checkpoint_file}: {error}") from None
        except pickle.UnpicklingError as error:
            # torch.load(weights_only=True) refused an object outside the allowed globals: a file
            # that would run code when unpickled. Say so in one line; never retry without the guard.
            reason = next((line for line in str(error).splitlines() if "GLOBAL" in line), str(error).splitlines()[0])
            raise ProLabInputError(f"{checkpoint_file}: refused to load this checkpoint, it holds more than "
                                   f"weights ({reason.strip()})") from None
        classes = list(runner.test_dataloader.dataset.metainfo["classes"])
        result = _summarise(metrics, classes, space if property_model else None)
        result.update(checkpoint=str(checkpoint_file), label_space_key=space.key, split=split,
                      num_images=len(runner.test_dataloader.dataset))
        (out_dir / METRICS_FILE).write_text(json.dumps(result, indent=2, allow_nan=False))
        _draw(out_dir, runner, result, space if property_model else None, num_pictures)
    return result


__all__ = ["METRICS_FILE", "evaluate"]
