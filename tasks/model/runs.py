"""What the model stages share: an mmengine run's config, its data root, its checkpoints.

``build_config`` resolves a config by short name or path, merges overrides and points every
``label_space`` and ``data_root`` field at the given paths; ``model_identity`` is what a
train or evaluate key hashes about the model and the data (the resolved config and the
dataset's fingerprint), computed before any work so that bad input is refused while planning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mmengine.config import Config

from prolab_models.configs import (
    check_buildable,
    check_overrides,
    check_sections,
    config_files,
    load_config,
    reads_environment,
    resolve_config,
)
from prolab_models.errors import DatasetLayoutError, LabelSpaceMismatchError, ProLabInputError
from prolab_models.label_space import LabelSpace
from tasks.files import canonical_json, sha256_text
from tasks.params import TrainParams

log = logging.getLogger(__name__)

DEMO_DATASET = "ProLabDemoDataset"
# A work dir's record of the run: its label space (key, path, classes, K), held-out classes, config.
RUN_RECORD = "label_space.json"


def _dicts_with(node: Any, key: str) -> Iterator[Any]:
    """Every dict of a config tree that has ``key`` (heads, metrics, datasets...), outermost first."""
    if hasattr(node, "items"):  # ConfigDict, dict, and the Config itself
        if key in node:
            yield node
        for k, v in list(node.items()):
            if k != key:
                yield from _dicts_with(v, key)
    elif isinstance(node, (list, tuple)):
        for item in node:
            yield from _dicts_with(item, key)


def _set_everywhere(node: Any, key: str, value: Any) -> None:
    """Set ``key`` in every dict of a config tree that has it."""
    for owner in list(_dicts_with(node, key)):
        owner[key] = value


def use_label_space(cfg: Config, label_space: Path, num_classes: int | None = None) -> None:
    """Point every ``label_space`` field of a config (heads, metrics) at ``label_space``.

    ``num_classes``: the label space's class count, where it is not the dataset's (a run with
    held-out classes), for the property heads that name one: the DeepLabV3+ and SegFormer
    configs keep their one-hot twin's ``num_classes``, which the head checks against its label
    space."""
    for owner in list(_dicts_with(cfg, "label_space")):
        owner["label_space"] = str(label_space)
        if num_classes is not None and owner.get("num_classes") is not None:
            owner["num_classes"] = num_classes


def build_config(
    config: str | Path,
    label_space: Path,
    work_dir: Path,
    data_root: Path | None = None,
    cfg_options: dict | None = None,
    num_classes: int | None = None,
) -> Config:
    """The config of a run: resolved by name or path, ``cfg_options`` merged, the label space
    and data root set wherever the config names them, the work dir set. A config or override
    that cannot run is refused here, naming the file or the setting. ``num_classes``: see
    ``use_label_space``."""
    source = resolve_config(config)
    cfg = load_config(source)
    if cfg_options:
        check_overrides(cfg, cfg_options, source)
        cfg.merge_from_dict(cfg_options)
    check_sections(cfg, source)
    check_buildable(cfg, source)
    use_label_space(cfg, label_space, num_classes)
    if data_root is not None:
        _set_everywhere(cfg, "data_root", str(data_root))
    cfg.work_dir = str(work_dir)
    # mmseg's runtime names its visualizer 'visualizer', and mmengine hands every later Runner of the
    # process that first instance, still writing into the first run's work dir: let each run name its own.
    if "visualizer" in cfg:
        cfg.visualizer.pop("name", None)
    return cfg


def select_test_split(cfg: Config, config: str | Path, split: str) -> None:
    """Point the test dataset at ``split``. Split-named datasets (demo, CamVid, BDD100K) take
    any split; the others fix their folders by ``data_prefix`` and have only their validation
    set (ADE20K, COCO-Stuff, Pascal Context and Cityscapes publish no test labels), so another
    split is refused, naming the config."""
    dataset = cfg.test_dataloader.dataset
    if "split" in dataset:
        dataset.split = split
    elif split != "val":
        raise ProLabInputError(
            f"--split {split}: config {config} evaluates {dataset['type']}, whose folders are fixed by "
            f"data_prefix (its validation set); only split-named datasets (demo, CamVid, BDD100K) take "
            f"--split test")


def config_dataset_classes(dataset_cfg: dict) -> list[str]:
    """The classes of a dataset config: its ``metainfo`` override, else its class's."""
    from mmseg.registry import DATASETS

    metainfo = dataset_cfg.get("metainfo") or {}
    if "classes" in metainfo:
        return list(metainfo["classes"])
    return list(DATASETS.get(dataset_cfg["type"]).METAINFO["classes"])


def config_dataset_palette(dataset_cfg: dict) -> list[list[int]]:
    """The colours of a dataset config's classes: its ``metainfo`` override, else its class's."""
    from mmseg.registry import DATASETS

    metainfo = dataset_cfg.get("metainfo") or {}
    palette = metainfo.get("palette") or DATASETS.get(dataset_cfg["type"]).METAINFO.get("palette") or []
    return [list(map(int, colour)) for colour in palette]


def hold_out_classes(cfg: Config, held_out: list[str], source: str | Path) -> None:
    """Train, and validate while training, on the classes not held out: the datasets of the train
    and val loaders get ``metainfo.classes`` without them, and mmseg maps a class outside that
    list to the ignore value as it loads a label map (``BaseSegDataset.get_label_map``), so a
    held-out pixel counts for nothing and the other classes are numbered in their new order."""
    from tasks.label_space.transfer import check_held_out

    for loader in ("train_dataloader", "val_dataloader"):
        if cfg.get(loader) is None:
            continue
        dataset = cfg[loader]["dataset"]
        classes = config_dataset_classes(dataset)
        check_held_out(held_out, classes, f"the {dataset['type']} of config {source}")
        dataset["metainfo"] = {**(dataset.get("metainfo") or {}), "classes": [c for c in classes if c not in held_out]}


def images_holding(dataset_cfg: dict, wanted: Sequence[str], classes: Sequence[str]) -> tuple[list[int], int]:
    """The indices of the images of a dataset config whose label map holds any of ``wanted``,
    read as mmseg loads them (its ``LoadAnnotations``: ``reduce_zero_label`` applies) with the
    dataset's full class list ``classes``, and how many images it has."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    labels = [list(classes).index(name) for name in wanted]
    load = next((dict(step) for step in dataset_cfg.get("pipeline", []) if step.get("type") == "LoadAnnotations"),
                dict(type="LoadAnnotations"))
    init_default_scope("mmseg")
    dataset = DATASETS.build({**dataset_cfg, "pipeline": [load], "metainfo": {"classes": list(classes)},
                              "indices": None})
    found = [index for index in range(len(dataset)) if np.isin(dataset[index]["gt_seg_map"], labels).any()]
    return found, len(dataset)


def drop_images_holding(cfg: Config, held_out: Sequence[str], classes: Sequence[str],
                        source: str | Path) -> tuple[int, int]:
    """ZS3Net's protocol: leave every training image that holds a held-out class out of the train
    loader's dataset (mmengine's ``indices``). ``classes``: the dataset's own class list (before
    ``hold_out_classes`` shortened it). Returns (images dropped, images before); refuses a
    dataset left with none."""
    dataset = cfg.train_dataloader.dataset
    holding, total = images_holding(dataset, held_out, classes)
    if len(holding) == total:
        raise ProLabInputError(f"--held-out {','.join(held_out)} --held-out-images drop: every one of the {total} "
                               f"training images of config {source} holds a held-out class, none is left to train "
                               f"on; use --held-out-images ignore")
    dropped = set(holding)
    dataset["indices"] = [index for index in range(total) if index not in dropped]
    log.warning("held-out images: %d of %d training images hold %s and are left out of training", len(holding),
                total, ", ".join(held_out))
    return len(holding), total


def check_classes(space_classes: Sequence[str], dataset_cfg: dict, where: str | Path) -> list[str]:
    """Refuse a label space (``where``: its directory, or what its classes come from) whose
    classes are not the dataset's: another count, or the same names in another label order.
    Returns the dataset's classes."""
    classes = config_dataset_classes(dataset_cfg)
    if len(classes) != len(space_classes):
        raise LabelSpaceMismatchError(
            f"{where}: label space has {len(space_classes)} classes but the dataset "
            f"{dataset_cfg['type']} has {len(classes)} ({', '.join(classes)})")
    if classes != list(space_classes) and sorted(classes) == sorted(space_classes):
        label = next(i for i, (a, b) in enumerate(zip(classes, space_classes)) if a != b)
        raise LabelSpaceMismatchError(
            f"{where}: the same classes as the dataset {dataset_cfg['type']} in another order (label {label} is "
            f"{classes[label]!r} in the dataset, {space_classes[label]!r} in the label space): every pixel would be "
            f"trained as another class; build the label space with --dataset for the dataset's order")
    return classes


def check_inputs(cfg: Config, space: LabelSpace, dataloader: str) -> None:
    """Fail before any work when the data root is missing or the label space does not fit."""
    dataset = cfg[dataloader]["dataset"]
    root = dataset.get("data_root")
    if root is not None and not Path(root).is_dir():
        raise DatasetLayoutError(f"{root}: data root not found (the {dataset['type']} of {dataloader})")
    classes = check_classes(space.classes, dataset, space.path)
    if classes != space.classes:
        log.warning("%s: label space classes %s differ in name from the dataset's %s", space.path, space.classes,
                    classes)


@dataclass(frozen=True)
class RunRecord:
    """What a training run says of itself (``RUN_RECORD`` in its work dir)."""

    label_space: Path | None  # the label space it trained on (a held-out run's own, inside it)
    label_space_key: str | None
    held_out: list[str]
    config: str | None
    cfg_options: dict[str, Any]
    held_out_images: dict[str, Any] = field(default_factory=dict)  # its rule, and how many images it dropped


def run_record(run: Path) -> RunRecord:
    """The record of a run directory, or of the work dir holding a checkpoint file; empty for a
    run without one (a checkpoint from elsewhere)."""
    directory = run if run.is_dir() else run.parent
    record = directory / RUN_RECORD
    if not record.is_file():
        return RunRecord(None, None, [], None, {})
    data = json.loads(record.read_text())
    path = Path(data["path"]) if data.get("path") else None
    return RunRecord(None if path is None else directory / path if not path.is_absolute() else path,
                     data.get("key"), list(data.get("held_out", [])), data.get("config"),
                     dict(data.get("cfg_options") or {}), dict(data.get("held_out_images") or {}))


def check_held_out_run(run: Path, held_out: Sequence[str]) -> RunRecord:
    """A run trained holding out classes is evaluated holding out the same ones, and only it."""
    record = run_record(run)
    if sorted(record.held_out) != sorted(held_out):
        trained = ", ".join(record.held_out) or "no class"
        fix = f"--held-out {','.join(record.held_out)}" if record.held_out else "no --held-out"
        raise ProLabInputError(f"{run}: trained holding out {trained}, evaluated with --held-out "
                               f"{','.join(held_out) or '(none)'}; evaluate it with {fix}")
    return record


@contextlib.contextmanager
def logs_to_stderr() -> Iterator[None]:
    """mmengine's logger writes to the stdout of its creation time: make that stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def resolve_data_root(params: TrainParams) -> Path:
    """The dataset root: the given one, the config's own, or the demo (generated on first use)."""
    if params.data_root is not None:
        return params.data_root.expanduser().resolve()
    dataset = _config(params, None).train_dataloader.dataset
    if dataset["type"] == DEMO_DATASET:
        from data.demo import DEFAULT_ROOT, generate_demo_dataset

        return generate_demo_dataset(DEFAULT_ROOT)
    return Path(dataset["data_root"]).expanduser().resolve()


def _config(params: TrainParams, data_root: Path | None) -> Config:
    # Placeholders: the config's identity must not depend on where the store or data live.
    cfg = build_config(params.config, Path("<label-space>"), Path("<work-dir>"), data_root, params.cfg_options)
    if params.held_out:
        hold_out_classes(cfg, params.held_out, params.config)
    return cfg


@dataclass(frozen=True)
class ModelIdentity:
    """What train and evaluate keys hash about the model and its data."""

    config: Config  # resolved, with placeholders for the label space and work dir
    config_sha256: str
    dataset: str  # the dataset's fingerprint
    data_root: Path
    # What the identity was read from (the config's files, the data root), for ``StagePlan.sources``;
    # None when the config reads the environment.
    sources: tuple[str, ...] | None


def config_sha256(params: TrainParams) -> str:
    """The hash of the resolved config alone, for a stage that reads no dataset (predict);
    a config that cannot run is refused here."""
    return sha256_text(canonical_json(_config(params, params.data_root).to_dict()))


def model_identity(params: TrainParams) -> ModelIdentity:
    """The resolved config, its hash and the dataset's fingerprint; bad input fails here."""
    from prolab_models.datasets.fingerprint import dataset_fingerprint

    data_root = resolve_data_root(params)
    cfg = _config(params, data_root)
    # By content up to 1 GiB: a regenerated demo, or CamVid copied again to the same place, keeps its key.
    fingerprint = dataset_fingerprint(data_root)
    files = config_files(params.config)
    sources = None if reads_environment(files) else (*map(str, files), str(data_root))
    return ModelIdentity(cfg, sha256_text(canonical_json(cfg.to_dict())), fingerprint, data_root, sources)
