"""The configs: short names resolve, every config parses, the schedules are the paper's, and each
ProLab config differs from its one-hot twin in its heads alone."""

from __future__ import annotations

import functools
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.hub import get_config
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample

from prolab_models.configs import (
    CONFIGS,
    check_buildable,
    check_overrides,
    check_sections,
    load_config,
    one_hot_twin,
    resolve_config,
)
from prolab_models.errors import InvalidConfigError, UnknownConfigError
from tests.helpers.label_space_factory import make_label_space


@functools.cache
def parse(name: str) -> Config:
    """Each config once a session: parsing resolves mmseg:: bases and imports the plugin."""
    return load_config(name)


PAPER = {"ade20k": 320_000, "coco-stuff": 160_000, "pascal-context-59": 160_000, "cityscapes": 160_000,
         "bdd100k": 160_000}


TWINS = sorted(name for name in CONFIGS if f"{name}_ce" in CONFIGS)
CPU = sorted(name for name in CONFIGS if parse(name).env_cfg.dist_cfg.backend == "gloo")
# the paper's other architectures: mmseg's own configs as one-hot twins
MMSEG_TWINS = {
    "ade20k_deeplabv3plus_ce": "deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py",
    "ade20k_segformer-b0_ce": "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
    "ade20k_segformer-b1_ce": "segformer/segformer_mit-b1_8xb2-160k_ade20k-512x512.py",
    "cityscapes_segformer-b0_ce": "segformer/segformer_mit-b0_8xb1-160k_cityscapes-1024x1024.py",
    "cityscapes_segformer-b1_ce": "segformer/segformer_mit-b1_8xb1-160k_cityscapes-1024x1024.py",
}
# what a property head has that its mmseg head has not, or sets otherwise
PROPERTY_SETTINGS = ("type", "label_space", "temperature", "loss_decode", "num_classes")


# the CPU defaults that add the class-discriminative term (issue 13, point 6) to the cosine loss
CLASS_TERM = {"demo", "camvid", "camvid_deeplabv3plus-d16", "demo_deeplabv3plus"}


def losses(head: dict) -> list[dict]:
    return list(head.loss_decode) if isinstance(head.loss_decode, (list, tuple)) else [head.loss_decode]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_short_name_resolves_to_a_config_that_parses(name: str) -> None:
    cfg = parse(name)
    check_sections(cfg, resolve_config(name))
    check_buildable(cfg, resolve_config(name))  # as shipped: pretrained init_cfg and all
    assert cfg.custom_imports["imports"] == ["prolab_models.register"]
    prolab = not name.endswith("_ce")
    assert cfg.model.type == ("PropertyEncoderDecoder" if prolab else "EncoderDecoder")
    for key in ("decode_head", "auxiliary_head"):
        if key not in cfg.model:
            continue
        head = cfg.model[key]
        assert head.type.startswith("Property") == prolab
        expected = ["CrossEntropyLoss"] if not prolab else ["PropertyCosineLoss"] + (
            ["PropertyClassLoss"] if name in CLASS_TERM and key == "decode_head" else [])
        assert [loss.type for loss in losses(head)] == expected
        assert ("label_space" in head) == prolab


def _without_property_settings(cfg: Config) -> dict:
    config = cfg.to_dict()
    config.pop("label_space", None)
    model = config["model"]
    model.pop("type")
    for key in ("decode_head", "auxiliary_head"):
        if key in model:
            model[key] = {k: v for k, v in model[key].items() if k not in PROPERTY_SETTINGS}
    return config


def test_every_prolab_config_but_the_paper_s_has_a_one_hot_twin() -> None:
    """``prolab demo --baseline`` and the benchmarks train the twin that ``one_hot_twin`` names."""
    prolab = [name for name in CONFIGS if not name.endswith("_ce")]
    assert {name: one_hot_twin(name) for name in prolab if name not in PAPER} == {
        name: f"{name}_ce" for name in prolab if name not in PAPER}
    assert [name for name in prolab if one_hot_twin(name) is None] == list(PAPER)
    assert one_hot_twin("camvid_ce") is None


@pytest.mark.parametrize("name", TWINS)
def test_prolab_config_differs_from_its_one_hot_twin_in_its_heads_alone(name: str) -> None:
    """Same backbone, data, schedule and budget; the heads are the twin's with properties out."""
    prolab, twin = parse(name), parse(f"{name}_ce")
    assert _without_property_settings(prolab) == _without_property_settings(twin)
    for key in ("decode_head", "auxiliary_head"):
        if key in twin.model:
            assert prolab.model[key].type == f"Property{twin.model[key].type}"
            assert losses(prolab.model[key])[0].loss_weight == twin.model[key].loss_decode.loss_weight
            assert prolab.model[key].temperature == 0.04


@pytest.mark.parametrize("name", sorted(n for n in CONFIGS if parse(n).model.backbone.type != "ViTAdapter"))
def test_cnn_and_segformer_configs_build_at_full_size_and_train(name: str, tmp_path) -> None:
    """The model as the config states it (pretrained weights are loaded later, by init_weights),
    with a label space of the dataset's classes, gives a finite training loss on two 64x64 images
    (tests/flows/test_cli_configs.py runs each through the CLI narrowed; this is its full width)."""
    cfg = load_config(name)  # a copy of its own: building sets backbone.pretrained in the dict it is given
    classes = DATASETS.get(cfg.train_dataloader.dataset.type).METAINFO["classes"]
    space = make_label_space(tmp_path / "ls", list(classes), k=16)
    for head in ("decode_head", "auxiliary_head"):
        if "label_space" in cfg.model.get(head, {}):
            cfg.model[head].label_space = str(space)
    init_default_scope("mmseg")
    model = MODELS.build(cfg.model)
    assert model.decode_head.num_classes == len(classes)
    assert type(model.decode_head).__name__ == cfg.model.decode_head.type
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):  # ASPP's image pooling branch needs two images for BatchNorm
        label = torch.randint(0, len(classes), (1, 64, 64), generator=generator)
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo({"img_shape": (64, 64), "pad_shape": (64, 64), "ori_shape": (64, 64)})
        samples.append(sample)
    losses = model.train().loss(torch.randn(2, 3, 64, 64, generator=generator), samples)
    total = sum(value for key, value in losses.items() if "loss" in key)
    assert torch.isfinite(total) and total > 0


def _unscoped(node: object) -> object:
    """A config tree without the ``_scope_`` marks mmengine leaves on what a package base set."""
    if isinstance(node, dict):
        return {key: _unscoped(value) for key, value in node.items() if key != "_scope_"}
    if isinstance(node, (list, tuple)):
        return type(node)(_unscoped(item) for item in node)
    return node


@pytest.mark.parametrize("name", sorted(MMSEG_TWINS))
def test_other_architectures_twins_are_mmsegs_own_configs(name: str) -> None:
    ours, mmseg = parse(name).to_dict(), get_config(f"mmseg::{MMSEG_TWINS[name]}").to_dict()
    ours.pop("custom_imports")
    assert _unscoped(ours) == _unscoped(mmseg)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs_follow_the_method(name: str) -> None:
    cfg = parse(name)
    assert cfg.model.backbone.arch == "base" and cfg.model.backbone.deform_ratio == 0.5
    assert cfg.train_cfg.max_iters == PAPER[name] and cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    assert cfg.optim_wrapper.optimizer == dict(type="AdamW", lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.95
    assert cfg.param_scheduler[0].end == 1500 and cfg.param_scheduler[1].end == PAPER[name]
    crop = 768 if name in ("cityscapes", "bdd100k") else 512
    assert cfg.crop_size == (crop, crop) and cfg.model.test_cfg.mode == "slide"
    assert cfg.model.auxiliary_head.loss_decode.loss_weight == 0.4
    assert cfg.model.decode_head.temperature == 0.04


def test_cpu_configs_are_the_ones_we_train_on_a_cpu() -> None:
    assert {"demo", "demo_ce", "camvid", "camvid_ce", "camvid_vit-adapter", "demo_deeplabv3plus"} <= set(CPU)
    assert not set(CPU) & set(PAPER)


@pytest.mark.parametrize("name", CPU)
def test_cpu_configs_recompute_bn_statistics(name: str) -> None:
    cfg = parse(name)
    assert [h.type for h in cfg.custom_hooks] == ["PreciseBNHook"]
    assert cfg.custom_hooks[0].interval == cfg.default_hooks.checkpoint.interval == cfg.train_cfg.val_interval


def test_a_config_file_path_resolves_to_itself(tmp_path) -> None:
    path = tmp_path / "mine.py"
    path.write_text("x = 1\n")
    assert resolve_config(path) == path.resolve()


def test_loading_again_gives_a_fresh_copy_and_sees_edits(tmp_path) -> None:
    """Parses are cached by the files' mtime and size: a caller's change to its copy stays
    its own, and an edited base is read again."""
    base = tmp_path / "base.py"
    base.write_text("model = dict(channels=8)\n")
    path = tmp_path / "mine.py"
    path.write_text("_base_ = ['base.py']\nname = 'mine'\n")
    first = load_config(path)
    first.model.channels = 99
    assert load_config(path).model.channels == 8
    base.write_text("model = dict(channels=16)\n")  # another size: a new key even within one mtime tick
    assert load_config(path).model.channels == 16


def test_an_unknown_weight_initialiser_is_refused_by_its_registry() -> None:
    cfg, source = parse("ade20k_segformer-b0"), resolve_config("ade20k_segformer-b0")
    cfg.model.backbone.init_cfg.type = "Pretrianed"
    with pytest.raises(InvalidConfigError, match=re.escape(
            "model.backbone.init_cfg.type='Pretrianed' is not in mmseg's WEIGHT_INITIALIZERS registry")):
        check_buildable(cfg, source)


def test_unknown_config_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownConfigError, match="config 'camvd': not a known name .* camvid"):
        resolve_config("camvd")
    assert issubclass(UnknownConfigError, ValueError)


def test_overrides_keep_each_setting_s_kind_and_are_finite() -> None:
    cfg, source = parse("demo"), resolve_config("demo")
    check_overrides(cfg, {"optim_wrapper.optimizer.lr": 1, "train_cfg.max_iters": 40.0, "model.pretrained": None,
                          "custom_hooks.0.num_batches": 2, "train_dataloader.persistent_workers": False,
                          "custom_hooks": [], "a.new.setting": "anything"}, source)
    refused = {
        "train_cfg.max_iters": ("many", "sets a number there (300), got text"),
        "train_dataloader.persistent_workers": (1, "sets a flag (True/False) there (True), got a number"),
        "model.type": (3, "sets text there ('PropertyEncoderDecoder'), got a number"),
        "optim_wrapper.optimizer.lr": (float("inf"), "not a finite number"),
        "custom_hooks": ([{"type": "PreciseBNHook", "num_batches": float("nan")}], "not a finite number"),
    }
    for key, (value, message) in refused.items():
        with pytest.raises(InvalidConfigError, match=re.escape(f"cfg_options {key}={value!r}: ") + ".*" +
                           re.escape(message)):
            check_overrides(cfg, {key: value}, source)
