"""The evaluate stage: checkpoint + label space + dataset -> metrics.json and pictures.

Runs mmengine's test loop with two metrics: mmseg's IoU (per class too) and, for property
models, pixel-level property precision/recall (p > 0.5 against the ground-truth class's
multi-hot row). Then draws a few predictions, their property activations, the confusion
matrix and the per-class IoU with ``tasks.visualization``. In the store, an evaluation's key
hashes the training run's, the label space's, the split and the model's identity.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mmcv
import torch
from mmengine.dataset import pseudo_collate
from mmengine.runner import Runner
from mmseg.registry import MODELS

from prolab_models.errors import LabelSpaceMismatchError, ProLabInputError
from prolab_models.label_space import LabelSpace, load_label_space
from prolab_models.segmentors import PropertyEncoderDecoder
from tasks.files import MANIFEST
from tasks.model.checkpoints import last_checkpoint
from tasks.model.runs import (
    build_config,
    check_inputs,
    logs_to_stderr,
    model_identity,
    resolve_data_root,
    select_test_split,
)
from tasks.params import EndToEndParams
from tasks.reports import Report, artifact_key, image, markdown_table, read_json
from tasks.stage import StagePlan, materialize
from tasks.store import ArtifactStore
from tasks.visualization import save_activation_maps, save_confusion_matrix, save_iou_bars, save_overlays

VERSION = "2"
METRICS_FILE = "metrics.json"
PICTURE_CAPTIONS = {
    "overlays": "image | ground truth | prediction",
    "confusion_matrix": "confusion matrix, rows normalised: where each class's pixels went",
    "iou_per_class": "IoU per class, best first",
}


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



def plan(params: EndToEndParams, inputs: Mapping[str, str]) -> StagePlan:
    """``inputs``: the training run's and the label space's references."""
    identity = model_identity(params.train)
    select_test_split(identity.config, params.train.config, params.evaluate.split)  # refused here, before any stage runs
    return StagePlan("evaluate", VERSION, {"split": params.evaluate.split, "config_sha256": identity.config_sha256},
                     {"run": inputs["run"], "label_space": inputs["label_space"], "dataset": identity.dataset},
                     identity.sources)


def run(plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path], store: ArtifactStore) -> Path:
    """``metrics.json`` (mIoU in percent, aAcc, per-class IoU, property precision/recall) and pictures."""
    settings = params.train

    def build(out: Path) -> None:
        evaluate(settings.config, inputs["label_space"], inputs["run"], out, resolve_data_root(settings),
                 params.evaluate.split, settings.cfg_options)

    return materialize(store, plan, build)


def run_name(params: EndToEndParams) -> str:
    return f"evaluate {params.evaluate.split}"


def twin_evaluation(store: ArtifactStore, plan: StagePlan, twin_config: str) -> Path | None:
    """The newest evaluation in ``store`` of a run of ``twin_config`` (the one-hot twin of the
    planned run's config) on the same dataset and split as ``plan``: the figure to compare with."""
    found = []
    for directory in store.iter_artifacts():
        if directory.parent.name != "evaluate":
            continue
        manifest = read_json(directory / MANIFEST) or {}
        inputs, settings = manifest.get("inputs", {}), manifest.get("params", {})
        if inputs.get("dataset") != plan.inputs["dataset"] or settings.get("split") != plan.params["split"]:
            continue
        run = str(inputs.get("run", ""))
        trained = read_json(store.root / run / MANIFEST) if run.startswith("train/") else None
        if trained is not None and trained.get("params", {}).get("config") == twin_config:
            found.append((str(manifest.get("created", "")), directory))
    return max(found)[1] if found else None


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2f}"


def reports(directory: Path) -> list[Report]:
    """mIoU and per-class IoU, property precision/recall, and every picture the stage drew."""
    found = []
    metrics = read_json(directory / "metrics.json")
    if metrics is not None:
        rows = [{"class": name, "IoU (%)": value} for name, value in metrics.get("per_class_iou", {}).items()]
        summary = {"mIoU": _percent(metrics.get("mIoU")), "aAcc": _percent(metrics.get("aAcc")),
                   "mAcc": _percent(metrics.get("mAcc"))}
        if "property_precision_mean" in metrics:
            summary["property precision"] = _percent(metrics["property_precision_mean"])
            summary["property recall"] = _percent(metrics["property_recall_mean"])
        summary.update({"split": metrics.get("split"), "images": metrics.get("num_images")})
        headline = f"**mIoU {summary['mIoU']}**, aAcc {summary['aAcc']} (percent)"
        found.append(Report("evaluate", "table", rows, headline + "\n\n" + markdown_table(summary)))
        if metrics.get("properties"):
            found.append(Report("evaluate-properties", "table", metrics["properties"],
                                  "pixel precision and recall of each property (percent; p > 0.5)"))
    for picture in sorted(directory.glob("*.png")):
        found.append(image(artifact_key("evaluate", picture.stem), picture, _caption(picture.stem)))
    return found


def _caption(stem: str) -> str:
    """What the evaluate stage's pictures show (``tasks.evaluate``); other names as they are."""
    if match := re.fullmatch(r"properties_(\d+)", stem):
        return f"image {match.group(1)}: its most active properties"
    return PICTURE_CAPTIONS.get(stem, stem.replace("_", " "))
