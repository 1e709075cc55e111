"""The train stage: label space + dataset + model config -> an mmengine work dir (resumable).

A plain function over mmengine's Runner: it resolves the config, points every ``label_space``
and ``data_root`` field of it at the given paths, checks that the label space fits the
dataset, and runs. A work dir that already holds checkpoints is resumed, not restarted.
Logs and progress (iteration, losses, ETA) go to stderr; nothing is printed on stdout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.runner import Runner

from prolab_models.configs import check_overrides, check_sections, load_config, resolve_config
from prolab_models.datasets import DatasetLayoutError
from prolab_models.errors import LabelSpaceMismatchError, ProLabInputError
from tasks.label_space import LabelSpace, load_label_space

LABEL_SPACE_RECORD = "label_space.json"


def _set_everywhere(node: Any, key: str, value: Any) -> None:
    """Set ``key`` in every dict of a config tree that has it (heads, metrics, datasets...)."""
    if hasattr(node, "items"):  # ConfigDict, dict, and the Config itself
        for k, v in list(node.items()):
            if k == key:
                node[k] = value
            else:
                _set_everywhere(v, key, value)
    elif isinstance(node, (list, tuple)):
        for item in node:
            _set_everywhere(item, key, value)


def build_config(
    config: str | Path,
    label_space: Path,
    work_dir: Path,
    data_root: Path | None = None,
    cfg_options: dict | None = None,
) -> Config:
    """The config of a run: resolved by name or path, ``cfg_options`` merged, the label space
    and data root set wherever the config names them, the work dir set. A config or override
    that cannot run is refused here, naming the file or the setting."""
    source = resolve_config(config)
    cfg = load_config(source)
    if cfg_options:
        check_overrides(cfg, cfg_options, source)
        cfg.merge_from_dict(cfg_options)
    check_sections(cfg, source)
    _set_everywhere(cfg, "label_space", str(label_space))
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


def dataset_classes(dataset_cfg: dict) -> list[str]:
    """The classes of a dataset config: its ``metainfo`` override, else its class's."""
    from mmseg.registry import DATASETS

    metainfo = dataset_cfg.get("metainfo") or {}
    if "classes" in metainfo:
        return list(metainfo["classes"])
    return list(DATASETS.get(dataset_cfg["type"]).METAINFO["classes"])


def check_inputs(cfg: Config, space: LabelSpace, dataloader: str) -> None:
    """Fail before any work when the data root is missing or the label space does not fit."""
    dataset = cfg[dataloader]["dataset"]
    root = dataset.get("data_root")
    if root is not None and not Path(root).is_dir():
        raise DatasetLayoutError(f"{root}: data root not found (the {dataset['type']} of {dataloader})")
    classes = dataset_classes(dataset)
    if len(classes) != space.num_classes:
        raise LabelSpaceMismatchError(
            f"{space.path}: label space has {space.num_classes} classes but the dataset "
            f"{dataset['type']} has {len(classes)} ({', '.join(classes)})")
    if classes != space.classes:
        logging.getLogger(__name__).warning(
            "%s: label space classes %s differ in name from the dataset's %s", space.path, space.classes, classes)


def _record_label_space(work_dir: Path, space: LabelSpace) -> None:
    """Remember which label space a work dir was trained with; refuse to resume with another."""
    record = work_dir / LABEL_SPACE_RECORD
    if record.is_file():
        previous = json.loads(record.read_text())
        if previous["key"] != space.key:
            raise LabelSpaceMismatchError(
                f"{work_dir}: trained with label space {previous['key']!r} ({previous['path']}), "
                f"cannot resume with {space.key!r} ({space.path}); use a new work dir")
        return
    if is_main_process():
        work_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({
            "key": space.key,
            "path": str(space.path),
            "classes": space.classes,
            "num_properties": space.num_properties,
        }, indent=2))


def last_checkpoint(run: Path) -> Path:
    """A checkpoint file, or a work dir's latest (mmengine's ``last_checkpoint`` record)."""
    if run.is_file():
        return run
    record = run / "last_checkpoint"
    if record.is_file():
        path = Path(record.read_text().strip())
        if path.is_file():
            return path
    found = sorted(run.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    if not found:
        raise FileNotFoundError(f"{run}: no checkpoint (neither a .pth file nor a work dir holding one)")
    return found[-1]


def _prepare_cpu_distributed(cfg: Config) -> None:
    """mmengine's ``pytorch`` launcher assumes one CUDA device per process (it pins one and
    gives DDP ``device_ids``), which fails on a CPU machine. There the process group is created
    here (from torchrun's environment, with the config's backend: gloo for the CPU configs),
    which mmengine then uses as it is, and DDP gets no device ids."""
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        return
    if not dist.is_initialized():
        # gloo reports its connections on the C++ stdout: keep stdout for the result
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(2, 1)
        try:
            dist.init_process_group(backend=cfg.env_cfg.get("dist_cfg", {}).get("backend", "gloo"))
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    if cfg.get("model_wrapper_cfg") is None:
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False)


@contextlib.contextmanager
def logs_to_stderr() -> Iterator[None]:
    """mmengine's logger writes to the stdout of its creation time: make that stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def train(
    config: str | Path,
    label_space: Path,
    work_dir: Path,
    data_root: Path | None = None,
    cfg_options: dict | None = None,
    launcher: str = "none",
) -> Path:
    """Train (or resume) a model; return its final checkpoint.

    ``config``: a short name (``demo``, ``camvid``, ``ade20k``...) or a config file;
    ``cfg_options``: mmengine overrides, e.g. ``{"train_cfg.max_iters": 400}``;
    ``launcher``: ``none``, or ``pytorch``/``slurm``/``mpi`` for distributed runs.
    """
    work_dir = Path(work_dir)
    space = load_label_space(label_space)
    cfg = build_config(config, space.path, work_dir, data_root, cfg_options)
    check_inputs(cfg, space, "train_dataloader")
    cfg.launcher = launcher
    if launcher == "pytorch":
        _prepare_cpu_distributed(cfg)
    cfg.resume = any(work_dir.glob("iter_*.pth"))
    _record_label_space(work_dir, space)
    with logs_to_stderr():
        runner = Runner.from_cfg(cfg)
        runner.train()
    return last_checkpoint(work_dir)
