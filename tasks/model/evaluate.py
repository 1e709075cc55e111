"""The evaluate stage: checkpoint + label space + dataset -> metrics.json and pictures.

Runs mmengine's test loop with two metrics: mmseg's IoU (per class too) and, for property
models, pixel-level property precision/recall (p > 0.5 against the ground-truth class's
multi-hot row). Then draws a few predictions, their property activations, the confusion
matrix and the per-class IoU with ``tasks.visualization``. In the store, an evaluation's key
hashes the training run's, the label space's, the split and the model's identity.

A run trained with classes held out (``tasks.model.train``) is scored as zero-shot segmentation
is: the held-out classes are added back to the model's class matrix from their descriptions
(``tasks.label_space.transfer``, ``PropertyEncoderDecoder.use_classes``), every class is scored,
and ``metrics.json`` adds the mIoU of the seen and of the unseen classes and their harmonic mean
(hIoU), beside two controls that score each unseen class with another class's descriptions and
with random words.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mmcv
import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmseg.registry import MODELS

from prolab_models.errors import LabelSpaceMismatchError, ProLabInputError
from prolab_models.label_space import LabelSpace, load_label_space
from prolab_models.segmentors import PropertyEncoderDecoder
from tasks.files import MANIFEST
from tasks.label_space.transfer import (
    ClassRows,
    EmbedFn,
    class_rows,
    label_space_descriptions,
    random_word_descriptions,
    require_expressed,
    scoring_rows,
    swapped_descriptions,
    write_scoring_label_space,
)
from tasks.model.checkpoints import last_checkpoint, loading_checkpoint
from tasks.model.runs import (
    RunRecord,
    build_config,
    check_held_out_run,
    check_inputs,
    logs_to_stderr,
    model_identity,
    resolve_data_root,
    select_test_split,
    use_label_space,
)
from tasks.params import SIMILARITY_FLOOR, EndToEndParams
from tasks.reports import Report, artifact_key, image, markdown_table, read_json
from tasks.stage import StagePlan, materialize
from tasks.store import ArtifactStore
from tasks.visualization import save_activation_maps, save_confusion_matrix, save_iou_bars, save_overlays

VERSION = "3"
METRICS_FILE = "metrics.json"
SCORING_LABEL_SPACE = "label_space"  # with held-out classes: every class's rows, the unseen ones from words
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


def _draw(out_dir: Path, runner: Runner, result: dict, confusion: np.ndarray, space: LabelSpace | None,
          num_pictures: int) -> None:
    meta = runner.test_dataloader.dataset.metainfo
    classes = list(meta["classes"])
    save_confusion_matrix(confusion, classes, out_dir / "confusion_matrix.png")
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


def transfer_metrics(per_class_iou: Mapping[str, float | None], unseen: Sequence[str]) -> dict[str, float | None]:
    """Zero-shot segmentation's summary of per-class IoUs (percent): the mean over the seen
    classes, over the unseen ones, and their harmonic mean hIoU = 2 S U / (S + U). A class
    without pixels in ground truth or prediction (None) counts in neither mean."""
    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    seen_mean = mean([v for name, v in per_class_iou.items() if name not in unseen and v is not None])
    unseen_mean = mean([v for name, v in per_class_iou.items() if name in unseen and v is not None])
    harmonic = None
    if seen_mean is not None and unseen_mean is not None:
        harmonic = 0.0 if seen_mean + unseen_mean == 0 else 2 * seen_mean * unseen_mean / (seen_mean + unseen_mean)
    return {"mIoU_seen": None if seen_mean is None else round(seen_mean, 2),
            "mIoU_unseen": None if unseen_mean is None else round(unseen_mean, 2),
            "hIoU": None if harmonic is None else round(harmonic, 2)}


@dataclass(frozen=True)
class Transfer:
    """How a held-out run is scored: the label space it trained on, the rows of every class with
    the unseen ones added back from their descriptions, and the controls' rows."""

    trained: LabelSpace
    unseen: list[str]
    scoring: ClassRows
    controls: dict[str, ClassRows]
    donors: dict[str, str]
    scoring_dir: Path


def _transfer(space: LabelSpace, checkpoint: Path, record: RunRecord, held_out: Sequence[str], embed: EmbedFn,
              floor: float, out_dir: Path) -> Transfer:
    """The held-out classes added back to the run's own label space from their descriptions in
    ``space`` (the one it was derived from), and the two controls: each unseen class with
    another class's descriptions, and with random words. The controls are not refused when a
    class ends up with no property: it scores 0 everywhere, which is what such words give."""
    if record.label_space is None or not record.label_space.is_dir():
        raise ProLabInputError(f"{checkpoint}: the label space it was trained on ({record.label_space}) is not found")
    trained = load_label_space(record.label_space)
    descriptions = label_space_descriptions(space.path)
    unseen = [name for name in space.classes if name in held_out]
    own = class_rows({name: descriptions[name] for name in unseen}, trained.centres, embed, floor)
    require_expressed(own, floor)
    donors = swapped_descriptions(descriptions, unseen, embed)
    controls = {
        "swapped": class_rows({name: descriptions[donors[name]] for name in unseen}, trained.centres, embed, floor),
        "random_words": class_rows(random_word_descriptions(descriptions, unseen), trained.centres, embed, floor),
    }
    scoring = scoring_rows(trained, own, space.classes)
    return Transfer(trained, unseen, scoring, {name: scoring_rows(trained, rows, space.classes)
                                               for name, rows in controls.items()},
                    donors, write_scoring_label_space(out_dir / SCORING_LABEL_SPACE, trained, scoring))


def _transfer_summary(transfer: Transfer, result: dict[str, Any], control_metrics: dict[str, dict]) -> dict[str, Any]:
    names = transfer.trained.property_names
    summary: dict[str, Any] = {
        "held_out": transfer.unseen,
        **transfer_metrics(result["per_class_iou"], transfer.unseen),
        "unseen_properties": {name: [names[i] for i in np.flatnonzero(transfer.scoring.row(name))]
                              for name in transfer.unseen},
        "controls": {},
    }
    for control, metrics in control_metrics.items():
        per_class = {c: _finite(metrics[f"IoU.{c}"]) for c in transfer.scoring.classes}
        rows = transfer.controls[control]
        summary["controls"][control] = {
            "mIoU": _finite(metrics["mIoU"]), **transfer_metrics(per_class, transfer.unseen),
            "per_class_iou": {name: per_class[name] for name in transfer.unseen},
            "unexpressed_descriptions": {name: int((rows.assignments.loc[rows.assignments["class_name"] == name,
                                                                         "property_id"] < 0).sum())
                                         for name in transfer.unseen},
        }
    summary["controls"]["swapped"]["descriptions_of"] = transfer.donors
    return summary


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if is_model_wrapper(model) else model


def evaluate(
    config: str | Path,
    label_space: Path,
    checkpoint: Path,
    out_dir: Path,
    data_root: Path | None = None,
    split: str = "val",
    cfg_options: dict | None = None,
    num_pictures: int = 4,
    held_out: Sequence[str] = (),
    embed: EmbedFn | None = None,
    floor: float = SIMILARITY_FLOOR,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (a .pth file, or a work dir: its last checkpoint) on ``split``;
    write ``metrics.json`` (mIoU, aAcc and per-class IoU in percent, property precision and
    recall, seconds per image) and pictures into ``out_dir``; return the metrics.

    ``held_out``: the classes the run was trained without (``label_space`` is the one it was
    derived from). They are added back from their descriptions (``tasks.label_space.transfer``;
    ``embed`` embeds them, by default with the label space's embedder through the default
    store's cache) and every class is scored; ``metrics.json`` adds ``mIoU_seen``,
    ``mIoU_unseen``, ``hIoU`` and the same for the two controls."""
    out_dir = Path(out_dir)
    space = load_label_space(label_space)
    checkpoint_file = last_checkpoint(Path(checkpoint))
    record = check_held_out_run(Path(checkpoint), held_out)
    model_space, transfer = space, None
    cfg = build_config(config, space.path, out_dir, data_root, cfg_options)
    select_test_split(cfg, config, split)
    check_inputs(cfg, space, "test_dataloader")
    property_model = issubclass(MODELS.get(cfg.model.type), PropertyEncoderDecoder)
    if held_out:
        if not property_model:
            raise ProLabInputError(f"config {config}: --held-out needs a property model (ProLab's heads); "
                                   f"{cfg.model.type} scores only the classes it was trained on")
        from tasks.label_space.embed import text_embedder

        out_dir.mkdir(parents=True, exist_ok=True)
        transfer = _transfer(space, Path(checkpoint), record, held_out, embed or text_embedder(space.embedder), floor,
                             out_dir)
        model_space = transfer.trained
        use_label_space(cfg, model_space.path, model_space.num_classes)
    cfg.test_evaluator = [dict(type="PerClassIoUMetric", iou_metrics=["mIoU"])]
    if property_model:
        scored = transfer.scoring_dir if transfer is not None else space.path
        cfg.test_evaluator.append(dict(type="PropertyMetric", label_space=str(scored)))
    cfg.load_from = str(checkpoint_file)

    out_dir.mkdir(parents=True, exist_ok=True)
    with logs_to_stderr():
        runner = Runner.from_cfg(cfg)
        try:
            with loading_checkpoint(checkpoint_file):
                runner.load_or_resume()
        except LabelSpaceMismatchError as error:
            raise LabelSpaceMismatchError(f"{checkpoint_file}: {error}") from None
        model = _unwrapped(runner.model)
        if transfer is not None:
            model.use_classes(torch.from_numpy(transfer.scoring.multi_hot))
        start = time.perf_counter()
        metrics = runner.test()
        seconds = time.perf_counter() - start
        confusion = runner.test_evaluator.metrics[0].confusion
        control_metrics = {}
        if transfer is not None:
            for name, rows in transfer.controls.items():
                model.use_classes(torch.from_numpy(rows.multi_hot))
                control_metrics[name] = runner.test()
            model.use_classes(torch.from_numpy(transfer.scoring.multi_hot))  # the pictures show the own rows
        classes = list(runner.test_dataloader.dataset.metainfo["classes"])
        num_images = len(runner.test_dataloader.dataset)
        scored_space = load_label_space(transfer.scoring_dir) if transfer is not None else space
        result = _summarise(metrics, classes, scored_space if property_model else None)
        result.update(checkpoint=str(checkpoint_file), label_space_key=model_space.key, split=split,
                      num_images=num_images, seconds_per_image=round(seconds / max(num_images, 1), 4))
        if transfer is not None:
            result.update(_transfer_summary(transfer, result, control_metrics))
        (out_dir / METRICS_FILE).write_text(json.dumps(result, indent=2, allow_nan=False))
        _draw(out_dir, runner, result, confusion, scored_space if property_model else None, num_pictures)
    return result



def plan(params: EndToEndParams, inputs: Mapping[str, str]) -> StagePlan:
    """``inputs``: the training run's and the label space's references. Held-out classes (and
    the similarity floor that adds them back) are named in the key."""
    identity = model_identity(params.train)
    select_test_split(identity.config, params.train.config, params.evaluate.split)  # refused here, before any stage runs
    settings: dict[str, Any] = {"split": params.evaluate.split, "config_sha256": identity.config_sha256}
    if params.train.held_out:
        settings.update(held_out=list(params.train.held_out), floor=SIMILARITY_FLOOR)
    return StagePlan("evaluate", VERSION, settings,
                     {"run": inputs["run"], "label_space": inputs["label_space"], "dataset": identity.dataset},
                     identity.sources)


def run(plan: StagePlan, params: EndToEndParams, inputs: Mapping[str, Path], store: ArtifactStore) -> Path:
    """``metrics.json`` (mIoU in percent, aAcc, per-class IoU, property precision/recall; seen,
    unseen and hIoU with held-out classes) and pictures."""
    settings = params.train

    def build(out: Path) -> None:
        embed = None
        if settings.held_out:
            from tasks.label_space.embed import text_embedder

            embed = text_embedder(load_label_space(inputs["label_space"]).embedder, store.root / ".cache" / "embeddings")
        evaluate(settings.config, inputs["label_space"], inputs["run"], out, resolve_data_root(settings),
                 params.evaluate.split, settings.cfg_options, held_out=settings.held_out, embed=embed)

    return materialize(store, plan, build)


def run_name(params: EndToEndParams) -> str:
    held_out = params.train.held_out
    return f"evaluate {params.evaluate.split}" + (f", {', '.join(held_out)} held out" if held_out else "")


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
        if metrics.get("held_out"):
            found.append(_transfer_report(metrics))
    for picture in sorted(directory.glob("*.png")):
        found.append(image(artifact_key("evaluate", picture.stem), picture, _caption(picture.stem)))
    return found


def _transfer_report(metrics: dict[str, Any]) -> Report:
    """Seen, unseen and harmonic mIoU with each unseen class's own descriptions and with the two
    controls, and the IoU of every unseen class under each."""
    controls = metrics["controls"]
    rows = [{"unseen class": name, "own descriptions": metrics["per_class_iou"].get(name),
             f"descriptions of {controls['swapped']['descriptions_of'][name]}": controls["swapped"]["per_class_iou"][name],
             "random words": controls["random_words"]["per_class_iou"][name],
             "properties": ", ".join(metrics["unseen_properties"][name])} for name in metrics["held_out"]]
    summary = {"": "mIoU seen / unseen / hIoU (percent)",
               "own descriptions": " / ".join(_percent(metrics[k]) for k in ("mIoU_seen", "mIoU_unseen", "hIoU"))}
    for name, label in (("swapped", "another class's descriptions"), ("random_words", "random-word descriptors")):
        summary[label] = " / ".join(_percent(controls[name][k]) for k in ("mIoU_seen", "mIoU_unseen", "hIoU"))
    headline = (f"**held out {', '.join(metrics['held_out'])}: mIoU seen {_percent(metrics['mIoU_seen'])}, "
                f"unseen {_percent(metrics['mIoU_unseen'])}, hIoU {_percent(metrics['hIoU'])}**")
    return Report("evaluate-transfer", "table", rows, headline + "\n\n" + markdown_table(summary))


def _caption(stem: str) -> str:
    """What the evaluate stage's pictures show (``tasks.evaluate``); other names as they are."""
    if match := re.fullmatch(r"properties_(\d+)", stem):
        return f"image {match.group(1)}: its most active properties"
    return PICTURE_CAPTIONS.get(stem, stem.replace("_", " "))
