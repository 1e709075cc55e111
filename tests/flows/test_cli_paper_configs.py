"""The paper's five configs, run as a user runs them: ``prolab train`` then ``prolab evaluate`` on a
tiny dataset in each dataset's real mmseg layout.

Only ``--cfg-options`` make them CPU-sized, derived from the config itself so they follow it: every
resize scale, crop and the sliding window shrink by one factor (the paper's crop -> 64 pixels), so
inference still slides several windows over each image; the ViT-Adapter keeps the paper's adapter
settings (arch 'base': deform ratio 0.5, 4 points, cffn 0.25) at 48 wide and 2 blocks, and the
heads are thinned to match; 2 iterations of batch 2 (UPerNet's 1x1 pooling branch needs two images
for BatchNorm), validation and a checkpoint at iteration 2. Nothing else of the paper's settings
(datasets, pipelines, label conventions, schedule, layer decay, slide inference, metric) is changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS

from prolab_models.configs import resolve_config
from prolab_models.datasets import DatasetLayoutError
from prolab_models.datasets.check import main as check_dataset
from tasks.datasets import dataset_classes
from tests.helpers.cli import last_line, prolab
from tests.helpers.label_space_factory import make_label_space
from tests.helpers.paper_datasets import fabricate

pytestmark = pytest.mark.slow

# config name -> the dataset's name in ``python -m prolab_models.datasets.check``
PAPER_CONFIGS = {"ade20k": "ade20k", "coco-stuff": "coco_stuff164k", "pascal-context-59": "pascal_context59",
                 "cityscapes": "cityscapes", "bdd100k": "bdd100k"}
CROP = 64
WIDTH = 48


def _scaled(size: tuple[int, ...], factor: float) -> tuple[int, ...]:
    return tuple(max(1, round(s * factor)) for s in size)


def cpu_options(cfg: Config) -> list[str]:
    """``--cfg-options`` arguments that shrink the paper config ``cfg`` to CPU size."""
    factor = CROP / cfg.crop_size[0]
    options: dict[str, object] = {}
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for index, step in enumerate(cfg[loader].dataset.pipeline):
            for key in ("scale", "crop_size"):
                if key in step:
                    options[f"{loader}.dataset.pipeline.{index}.{key}"] = _scaled(step[key], factor)
        options[f"{loader}.num_workers"] = 0
        options[f"{loader}.persistent_workers"] = False
    options.update({
        "model.data_preprocessor.size": _scaled(cfg.model.data_preprocessor.size, factor),
        "model.test_cfg.crop_size": _scaled(cfg.model.test_cfg.crop_size, factor),
        "model.test_cfg.stride": _scaled(cfg.model.test_cfg.stride, factor),
        "model.backbone.pretrained": None,  # DeiT-B weights: a download, and the wrong width here
        "model.backbone.embed_dim": WIDTH,
        "model.backbone.depth": 2,
        "model.backbone.num_heads": 3,
        "model.backbone.interaction_indexes": [[0, 0], [1, 1]],
        "optim_wrapper.paramwise_cfg.num_layers": 2,
        "model.decode_head.in_channels": [WIDTH] * 4,
        "model.decode_head.channels": 16,
        "model.auxiliary_head.in_channels": WIDTH,
        "model.auxiliary_head.channels": 8,
        "train_dataloader.batch_size": 2,
        "train_cfg.max_iters": 2,
        "train_cfg.val_interval": 2,
        "default_hooks.checkpoint.interval": 2,
    })
    return ["--cfg-options", *(f"{key}={value}".replace(" ", "") for key, value in options.items())]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_trains_and_evaluates_through_the_cli(env: dict[str, str], tmp_path: Path, name: str) -> None:
    cfg = Config.fromfile(resolve_config(name))
    classes = list(DATASETS.get(cfg.val_dataloader.dataset.type).METAINFO["classes"])
    assert len(dataset_classes(name)) == len(classes)  # what `prolab label-space --dataset` names
    data_root = fabricate(name, tmp_path / name)
    assert check_dataset([PAPER_CONFIGS[name], str(data_root)]) == 0
    label_space = make_label_space(tmp_path / "label-space", dataset_classes(name), k=12)
    common = ["--config", name, "--data-root", str(data_root), "--label-space", str(label_space), *cpu_options(cfg)]

    run = last_line(prolab(env, "train", *common))
    assert run.parent.name == "train" and (run / "iter_2.pth").is_file()
    validation = json.loads(next(run.glob("*/vis_data/scalars.json")).read_text().splitlines()[-1])
    assert validation["step"] == 2 and 0 <= validation["mIoU"] <= 100

    out = last_line(prolab(env, "evaluate", *common, "--split", "val", "--checkpoint", str(run)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 1 and metrics["split"] == "val"
    assert 0 <= metrics["mIoU"] <= 100 and 0 <= metrics["aAcc"] <= 100
    assert list(metrics["per_class_iou"]) == classes
    # the fabricated val labels hold classes, so some have an IoU; absent classes have none
    assert any(iou is not None for iou in metrics["per_class_iou"].values())
    if name != "bdd100k":  # no public test labels: --split test is refused before any stage runs
        refused = prolab(env, "evaluate", *common, "--split", "test", "--checkpoint", str(run))
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert f"--split test: config {name} evaluates" in refused.stderr


def test_bdd100k_evaluates_the_split_it_is_given(tmp_path: Path) -> None:
    """BDD100K's config names its folders by split, so ``--split test`` looks for the test masks
    (BDD100K publishes none) instead of being refused as a data_prefix dataset."""
    dataset = Config.fromfile(resolve_config("bdd100k")).test_dataloader.dataset
    dataset.update(data_root=str(fabricate("bdd100k", tmp_path)), split="val")
    assert len(DATASETS.build(dataset)) == 1
    dataset.split = "test"
    with pytest.raises(DatasetLayoutError, match=str(tmp_path / "images" / "10k" / "test")):
        DATASETS.build(dataset)
