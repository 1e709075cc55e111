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
with random words. With held-out classes, ``calibration`` γ lowers the seen classes' scores
before the argmax (``tasks.model.calibration``), and every evaluation also sweeps γ: the
seen-unseen curve (a picture), its area (AUSUC), and seen, unseen and hIoU at the γ chosen on
the training images that hold a held-out class (never on the split reported).
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
from tasks.model import calibration as calibrated
from tasks.model.checkpoints import last_checkpoint, loading_checkpoint
from tasks.model.runs import (
    RunRecord,
    build_config,
    check_held_out_run,
    check_inputs,
    images_holding,
    logs_to_stderr,
    model_identity,
    resolve_data_root,
    select_test_split,
    use_label_space,
)
from tasks.params import SIMILARITY_FLOOR, EndToEndParams
from tasks.reports import Report, artifact_key, image, markdown_table, read_json
from tasks.stage import StagePlan, declared_params, materialize
from tasks.store import ArtifactStore
from tasks.visualization import (
    save_activation_maps,
    save_confusion_matrix,
    save_iou_bars,
    save_overlays,
    save_seen_unseen_curve,
)

VERSION = "4"  # 4: the key holds the declared parameters (READS), by name
# What evaluate's key reads besides its inputs (the run and the label space): its own section,
# and the classes held out of training, which it adds back from their words.
READS = ("evaluate", "train.held_out")
METRICS_FILE = "metrics.json"
SCORING_LABEL_SPACE = "label_space"  # with held-out classes: every class's rows, the unseen ones from words
PICTURE_CAPTIONS = {
    "overlays": "image | ground truth | prediction",
    "confusion_matrix": "confusion matrix, rows normalised: where each class's pixels went",
    "iou_per_class": "IoU per class, best first",
    "seen_unseen_curve": "seen vs unseen mIoU as the seen classes' scores are lowered by γ (calibrated stacking)",
}
SWEEP = "CalibrationSweepMetric"


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


def _sweep_metric(unseen: Sequence[int]) -> dict[str, Any]:
    return dict(type=SWEEP, unseen=list(unseen), grid=[float(g) for g in calibrated.GRID])


def _sweep_counts(evaluator: Any) -> dict[str, np.ndarray]:
    return next(metric for metric in evaluator.metrics if type(metric).__name__ == SWEEP).counts


def _calibration_loader(cfg: Any, held_out: Sequence[str], classes: Sequence[str]) -> tuple[dict | None, int]:
    """A test loader (the test pipeline) over the training split's images that hold a held-out
    class, where γ is chosen: never the split reported, and the images ZS3Net's protocol leaves
    out of training. None when no training image holds one."""
    dataset = cfg.train_dataloader.dataset
    holding, _ = images_holding(dataset, held_out, classes)
    if not holding:
        return None, 0
    loader = cfg.test_dataloader.to_dict()
    loader["dataset"] = {**dataset.to_dict(), "pipeline": loader["dataset"]["pipeline"], "indices": holding}
    return loader, len(holding)


def check_calibration(gamma: float, held_out: Sequence[str]) -> None:
    """γ lowers the trained classes' scores against classes scored from words: it needs held-out classes."""
    if gamma and not held_out:
        raise ProLabInputError(f"--calibration {gamma}: it lowers the trained classes' scores against classes "
                               f"scored from words; give --held-out, or leave it at 0")


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
    calibration: float = 0.0,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (a .pth file, or a work dir: its last checkpoint) on ``split``;
    write ``metrics.json`` (mIoU, aAcc and per-class IoU in percent, property precision and
    recall, seconds per image) and pictures into ``out_dir``; return the metrics.

    ``held_out``: the classes the run was trained without (``label_space`` is the one it was
    derived from). They are added back from their descriptions (``tasks.label_space.transfer``;
    ``embed`` embeds them, by default with the label space's embedder through the default
    store's cache) and every class is scored; ``metrics.json`` adds ``mIoU_seen``,
    ``mIoU_unseen``, ``hIoU`` and the same for the two controls, at ``calibration`` γ (the seen
    classes' scores lowered by it before the argmax), and under ``calibration`` the sweep over γ:
    the curve, AUSUC, and the figures at the γ chosen by ``calibration.CHOICE_RULE``."""
    out_dir = Path(out_dir)
    check_calibration(calibration, held_out)
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
        seen = torch.tensor([name not in transfer.unseen for name in space.classes])
    cfg.test_evaluator = [dict(type="PerClassIoUMetric", iou_metrics=["mIoU"])]
    if transfer is not None:
        cfg.test_evaluator.append(_sweep_metric([space.classes.index(name) for name in transfer.unseen]))
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
            _score_with(model, transfer.scoring, seen, calibration)
        start = time.perf_counter()
        metrics = runner.test()
        seconds = time.perf_counter() - start
        confusion = runner.test_evaluator.metrics[0].confusion
        control_metrics = {}
        if transfer is not None:
            counts = {"own": _sweep_counts(runner.test_evaluator)}
            for name, rows in transfer.controls.items():
                _score_with(model, rows, seen, calibration)
                control_metrics[name] = runner.test()
                counts[name] = _sweep_counts(runner.test_evaluator)
            sweeps = _sweeps(runner, cfg, transfer, model, seen, counts)
            _score_with(model, transfer.scoring, seen, calibration)  # the pictures show the own rows
        classes = list(runner.test_dataloader.dataset.metainfo["classes"])
        num_images = len(runner.test_dataloader.dataset)
        scored_space = load_label_space(transfer.scoring_dir) if transfer is not None else space
        result = _summarise(metrics, classes, scored_space if property_model else None)
        result.update(checkpoint=str(checkpoint_file), label_space_key=model_space.key, split=split,
                      num_images=num_images, seconds_per_image=round(seconds / max(num_images, 1), 4))
        if transfer is not None:
            result.update(_transfer_summary(transfer, result, control_metrics))
            result["held_out_images"] = record.held_out_images or {"rule": "ignore"}
            _add_calibration(result, sweeps, calibration, out_dir)
        (out_dir / METRICS_FILE).write_text(json.dumps(result, indent=2, allow_nan=False))
        _draw(out_dir, runner, result, confusion, scored_space if property_model else None, num_pictures)
    return result



def _score_with(model: torch.nn.Module, rows: ClassRows, seen: torch.Tensor, gamma: float) -> None:
    model.use_classes(torch.from_numpy(rows.multi_hot))
    model.calibrate(seen, gamma)


def _sweeps(runner: Runner, cfg: Any, transfer: Transfer, model: torch.nn.Module, seen: torch.Tensor,
            counts: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """The sweep's curve on the reported split for the own rows and each control (``counts``), and
    the curve each is chosen on: the same rows scored on the calibration images."""
    from mmengine.runner import TestLoop

    unseen = ~seen.numpy()
    loader, images = _calibration_loader(cfg, transfer.unseen, transfer.scoring.classes)
    found: dict[str, Any] = {"images": images, "curves": {}, "chosen_on": {}}
    for name, rows in {"own": transfer.scoring, **transfer.controls}.items():
        found["curves"][name] = calibrated.curve(counts[name], unseen)
        found["chosen_on"][name] = None
        if loader is not None:
            _score_with(model, rows, seen, 0.0)
            loop = TestLoop(runner, loader, [_sweep_metric(list(np.flatnonzero(unseen)))])
            loop.run()
            found["chosen_on"][name] = calibrated.curve(_sweep_counts(loop.evaluator), unseen)
    return found


def _add_calibration(result: dict[str, Any], sweeps: dict[str, Any], gamma: float, out_dir: Path) -> None:
    """``calibration`` in metrics.json (the own rows' curve, AUSUC, the chosen γ and the figures
    at it; each control's the same without its curve) and the curves' picture."""
    own = calibrated.summary(sweeps["curves"]["own"], sweeps["chosen_on"]["own"])
    result["calibration"] = {"gamma": gamma, "rule": calibrated.CHOICE_RULE, "chosen_on_images": sweeps["images"],
                             **own, "curve": sweeps["curves"]["own"]}
    for name in result["controls"]:
        result["controls"][name]["calibration"] = calibrated.summary(sweeps["curves"][name],
                                                                     sweeps["chosen_on"][name])
    labels = {"own": "own descriptions", "swapped": "another class's descriptions", "random_words": "random words"}
    save_seen_unseen_curve({labels[name]: rows for name, rows in sweeps["curves"].items()},
                           out_dir / "seen_unseen_curve.png", own["chosen_gamma"])


def plan(params: EndToEndParams, inputs: Mapping[str, str]) -> StagePlan:
    """``inputs``: the training run's and the label space's references. Held-out classes (and
    the similarity floor that adds them back, and the calibration γ) are named in the key; a γ
    without them is refused here."""
    identity = model_identity(params.train)
    select_test_split(identity.config, params.train.config, params.evaluate.split)  # refused here, before any stage runs
    settings: dict[str, Any] = {**declared_params(params, READS), "config_sha256": identity.config_sha256}
    check_calibration(params.evaluate.calibration, params.train.held_out)
    if params.train.held_out:
        settings["floor"] = SIMILARITY_FLOOR
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

            embed = text_embedder(load_label_space(inputs["label_space"]).embedder, store.embedding_cache)
        evaluate(settings.config, inputs["label_space"], inputs["run"], out, resolve_data_root(settings),
                 params.evaluate.split, settings.cfg_options, held_out=settings.held_out, embed=embed,
                 calibration=params.evaluate.calibration)

    return materialize(store, plan, build)


def run_name(params: EndToEndParams) -> str:
    held_out, gamma = params.train.held_out, params.evaluate.calibration
    return (f"evaluate {params.evaluate.split}" + (f", {', '.join(held_out)} held out" if held_out else "")
            + (f", γ {gamma:g}" if gamma else ""))


def twin_evaluation(store: ArtifactStore, plan: StagePlan, twin_config: str) -> Path | None:
    """The newest evaluation in ``store`` of a run of ``twin_config`` (the one-hot twin of the
    planned run's config) on the same dataset and split as ``plan``: the figure to compare with."""
    found = []
    for directory in store.iter_artifacts():
        if directory.parent.name != "evaluate":
            continue
        manifest = read_json(directory / MANIFEST) or {}
        inputs, settings = manifest.get("inputs", {}), manifest.get("params", {})
        split = settings.get("evaluate.split")
        if inputs.get("dataset") != plan.inputs["dataset"] or split != plan.params["evaluate.split"]:
            continue
        run = str(inputs.get("run", ""))
        trained = read_json(store.root / run / MANIFEST) if run.startswith("train/") else None
        if trained is not None and trained.get("params", {}).get("train.config") == twin_config:
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
    text = headline + "\n\n" + markdown_table(summary)
    if "calibration" in metrics:
        text += "\n\n" + _calibration_text(metrics)
    return Report("evaluate-transfer", "table", rows, text)


def _calibration_text(metrics: dict[str, Any]) -> str:
    """Which protocol and γ the figures above are at, and the calibrated ones: at the chosen γ and
    the area under the seen-unseen curve, for the own descriptions and each control."""
    found, images = metrics["calibration"], metrics.get("held_out_images", {})
    rule = images.get("rule", "ignore")
    dropped = f" ({images['dropped']} of {images['of']} training images dropped)" if rule == "drop" else ""
    lines = [f"Training images holding a held-out class: **{rule}**{dropped}. Figures above at "
             f"γ = {found['gamma']:g}. γ chosen as {found['rule']} ({found['chosen_on_images']} images)."]
    table = {"": "chosen γ / mIoU seen / unseen / hIoU / AUSUC (percent)"}
    for label, entry in (("own descriptions", found), ("another class's descriptions",
                                                       metrics["controls"]["swapped"].get("calibration")),
                         ("random-word descriptors", metrics["controls"]["random_words"].get("calibration"))):
        if entry is not None:
            gamma = "n/a" if entry["chosen_gamma"] is None else f"{entry['chosen_gamma']:g}"
            table[label] = " / ".join([gamma, *(_percent(entry[k]) for k in ("mIoU_seen", "mIoU_unseen", "hIoU",
                                                                              "AUSUC"))])
    return "\n\n".join([*lines, markdown_table(table)])


def _caption(stem: str) -> str:
    """What the evaluate stage's pictures show (``tasks.evaluate``); other names as they are."""
    if match := re.fullmatch(r"properties_(\d+)", stem):
        return f"image {match.group(1)}: its most active properties"
    return PICTURE_CAPTIONS.get(stem, stem.replace("_", " "))
