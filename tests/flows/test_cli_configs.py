"""Every config run as a user runs it: ``prolab train`` then ``prolab evaluate`` on a tiny dataset
in that dataset's real mmseg layout (the generated demo scenes for the demo configs). The paper's
five, the paper's other architectures (DeepLabV3+, SegFormer-B0/B1), the CPU configs, and each
one-hot twin.

The command's ``main`` runs in this process against the session's Prefect server
(``prolab_connected_in_process``): a ``prolab`` process would add ~8 s of imports to each of the
48 commands. The ``prolab`` process itself trains and evaluates in
tests/flows/test_cli_train_evaluate.py, and refuses ``--split test`` once here.

Only ``--cfg-options`` make them CPU-sized, derived from the config itself so they follow it: every
resize scale, crop and the sliding window shrink by one factor (the config's crop -> 64 pixels), so
inference still slides several windows over each image; each backbone keeps its architecture at a
few channels and blocks (the ViT-Adapter the config's adapter settings at 48 wide and 2 blocks;
ResNets 8 base channels; MiT 8 wide, one block a stage), the heads thinned to match, no pretrained
weights; 2 iterations of batch 2 (the 1x1 pooling branches of UPerNet and ASPP need two images for
BatchNorm), validation and a checkpoint at iteration 2. Nothing else of a config's settings
(datasets, pipelines, label conventions, schedule, layer decay, slide inference, metric) is changed.
SegFormer-B1 narrowed is B0 narrowed: its run proves its own file, datasets and pipelines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS

from prolab_models.configs import CONFIGS, one_hot_twin, resolve_config
from prolab_models.datasets import DatasetLayoutError
from prolab_models.datasets.check import main as check_dataset
from prolab_models.errors import ProLabInputError
from tasks.datasets import dataset_classes
from tasks.model.runs import select_test_split
from tests.helpers.cli import last_line, prolab, prolab_connected_in_process
from tests.helpers.label_space_factory import make_label_space
from tests.helpers.paper_datasets import LAYOUTS, fabricate

pytestmark = pytest.mark.slow

PAPER_CONFIGS = ("ade20k", "coco-stuff", "pascal-context-59", "cityscapes", "bdd100k")
ONE_HOT_TWINS = {twin for name in CONFIGS if (twin := one_hot_twin(name))}
Datasets = Callable[[str], tuple[Path, Path]]  # a dataset's name -> its root and a label space of its classes
CROP = 64
WIDTH = 48
K = 12
REFUSED_THROUGH_THE_CLI = "ade20k"  # `prolab evaluate --split test` refused as a process, once


def _scaled(size: tuple[int, ...], factor: float) -> tuple[int, ...]:
    return tuple(max(1, round(s * factor)) for s in size)


def narrow_backbone(cfg: Config) -> dict[str, object]:
    """Options that keep the backbone's architecture at a few channels and blocks, its heads to match."""
    backbone = cfg.model.backbone
    if backbone.type == "ViTAdapter":
        options = {"model.backbone.pretrained": None,  # DeiT-B weights: a download, and the wrong width here
                   "model.backbone.embed_dim": WIDTH, "model.backbone.depth": 2, "model.backbone.num_heads": 3,
                   "model.backbone.interaction_indexes": [[0, 0], [1, 1]],
                   "model.decode_head.in_channels": [WIDTH] * 4, "model.decode_head.channels": 16,
                   "model.auxiliary_head.in_channels": WIDTH, "model.auxiliary_head.channels": 8}
        if cfg.optim_wrapper.get("paramwise_cfg", {}).get("num_layers"):  # layer decay over the blocks
            options["optim_wrapper.paramwise_cfg.num_layers"] = 2
        return options
    if backbone.type == "ResNetV1c":  # DeepLabV3+: ASPP on the last stage, the decoder on the first
        stages = [8 * (4 if backbone.depth >= 50 else 1) * 2**i for i in range(4)]
        return {"model.pretrained": None, "model.backbone.stem_channels": 8, "model.backbone.base_channels": 8,
                "model.decode_head.in_channels": stages[3], "model.decode_head.c1_in_channels": stages[0],
                "model.decode_head.channels": 16, "model.decode_head.c1_channels": 4,
                "model.auxiliary_head.in_channels": stages[2], "model.auxiliary_head.channels": 8}
    if backbone.type == "MixVisionTransformer":  # SegFormer
        return {"model.pretrained": None, "model.backbone.init_cfg": None, "model.backbone.embed_dims": 8,
                "model.backbone.num_layers": [1, 1, 1, 1],
                "model.decode_head.in_channels": [8 * heads for heads in backbone.num_heads],
                "model.decode_head.channels": 16}
    if backbone.type == "TimmFeatures":  # EfficientNet-Lite0 is CPU-sized: it trains from its packaged weights
        return {}
    raise AssertionError(f"no narrow settings for {backbone.type}")


def cpu_options(cfg: Config) -> list[str]:
    """``--cfg-options`` arguments that shrink the config ``cfg`` to CPU size."""
    factor = CROP / cfg.crop_size[0]
    options: dict[str, object] = {}
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for index, step in enumerate(cfg[loader].dataset.pipeline):
            for key in ("scale", "crop_size"):
                if key in step:
                    options[f"{loader}.dataset.pipeline.{index}.{key}"] = _scaled(step[key], factor)
        options[f"{loader}.num_workers"] = 0
        options[f"{loader}.persistent_workers"] = False
    options["model.data_preprocessor.size"] = _scaled(cfg.model.data_preprocessor.size, factor)
    if cfg.model.test_cfg.mode == "slide":
        options["model.test_cfg.crop_size"] = _scaled(cfg.model.test_cfg.crop_size, factor)
        options["model.test_cfg.stride"] = _scaled(cfg.model.test_cfg.stride, factor)
    options.update(narrow_backbone(cfg))
    options.update({
        "train_dataloader.batch_size": 2,
        "train_cfg.max_iters": 2,
        "train_cfg.val_interval": 2,
        "default_hooks.checkpoint.interval": 2,
    })
    for index, hook in enumerate(cfg.get("custom_hooks", [])):
        if hook.type == "PreciseBNHook":
            options.update({f"custom_hooks.{index}.num_batches": 1, f"custom_hooks.{index}.interval": 2})
    return ["--cfg-options", *(f"{key}={value}".replace(" ", "") for key, value in options.items())]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> Datasets:
    """Each dataset's root, fabricated (and checked as a user checks theirs) on first use, with a
    label space of its classes: shared by a config and its one-hot twin."""
    made: dict[str, tuple[Path, Path]] = {}

    def dataset(name: str) -> tuple[Path, Path]:
        if name not in made:
            base = tmp_path_factory.mktemp(name)
            if name == "demo":
                root = demo_root
            else:
                root = fabricate(name, base / name)  # a config's dataset: its short name's first part
                splits = (f"--split={split}" for split in LAYOUTS[name].splits)
                assert check_dataset([name, str(root), *splits]) == 0
            made[name] = root, make_label_space(base / "label-space", dataset_classes(name), k=K)
        return made[name]

    return dataset


def train_through_the_cli(env: dict[str, str], cfg: Config, name: str, data_root: Path,
                          label_space: Path) -> tuple[Path, list[str]]:
    """``prolab train`` of config ``name`` (parsed: ``cfg``) on ``data_root`` -> the run, and the
    arguments that name the config, data and label space."""
    common = ["--config", name, "--data-root", str(data_root), "--label-space", str(label_space), *cpu_options(cfg)]
    run = last_line(prolab_connected_in_process(env, "train", *common))
    assert run.parent.name == "train" and (run / "iter_2.pth").is_file()
    validation = json.loads(next(run.glob("*/vis_data/scalars.json")).read_text().splitlines()[-1])
    assert validation["step"] == 2 and 0 <= validation["mIoU"] <= 100
    return run, common


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_trains_and_evaluates_through_the_cli(env: dict[str, str], datasets: Datasets, name: str) -> None:
    cfg = Config.fromfile(resolve_config(name))
    val = cfg.val_dataloader.dataset
    classes = list(DATASETS.get(val.type).METAINFO["classes"])
    dataset = name.split("_")[0]
    # `prolab label-space --dataset` names a class per label, in label order (stripped, unshortened)
    assert len(dataset_classes(dataset)) == len(classes)
    data_root, label_space = datasets(dataset)
    run, common = train_through_the_cli(env, cfg, name, data_root, label_space)

    out = last_line(prolab_connected_in_process(env, "evaluate", *common, "--split", "val", "--checkpoint", str(run)))
    metrics = json.loads((out / "metrics.json").read_text())
    val.data_root = str(data_root)
    assert metrics["split"] == "val" and metrics["num_images"] == len(DATASETS.build(val))
    assert 0 <= metrics["mIoU"] <= 100 and 0 <= metrics["aAcc"] <= 100
    assert list(metrics["per_class_iou"]) == classes
    # the val labels hold classes, so some have an IoU; absent classes have none
    assert any(iou is not None for iou in metrics["per_class_iou"].values())
    if name in ONE_HOT_TWINS:
        assert not metrics.get("properties"), "a one-hot model has no properties to score"
    else:
        assert len(metrics["properties"]) == K  # a property model: precision and recall per property
    if name == REFUSED_THROUGH_THE_CLI:
        refused = prolab(env, "evaluate", *common, "--split", "test", "--checkpoint", str(run))
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert f"--split test: config {name} evaluates" in refused.stderr


@pytest.mark.parametrize("name", [name for name in PAPER_CONFIGS if name != "bdd100k"])
def test_a_config_without_public_test_labels_refuses_the_test_split(name: str) -> None:
    """ADE20K, COCO-Stuff, Pascal Context and Cityscapes fix their folders by data_prefix and
    publish no test labels: ``--split test`` is refused naming the config (through the CLI for
    one of them, above; the check is the same function for all)."""
    cfg = Config.fromfile(resolve_config(name))
    with pytest.raises(ProLabInputError, match=f"--split test: config {name} evaluates"):
        select_test_split(cfg, name, "test")
    select_test_split(cfg, name, "val")  # --split val is taken: its validation set is what it evaluates
    assert cfg.test_dataloader.dataset == cfg.val_dataloader.dataset


def test_bdd100k_evaluates_the_split_it_is_given(tmp_path: Path) -> None:
    """BDD100K's config names its folders by split, so ``--split test`` looks for the test masks
    (BDD100K publishes none) instead of being refused as a data_prefix dataset."""
    dataset = Config.fromfile(resolve_config("bdd100k")).test_dataloader.dataset
    dataset.update(data_root=str(fabricate("bdd100k", tmp_path)), split="val")
    assert len(DATASETS.build(dataset)) == 1
    dataset.split = "test"
    with pytest.raises(DatasetLayoutError, match=str(tmp_path / "images" / "10k" / "test")):
        DATASETS.build(dataset)
