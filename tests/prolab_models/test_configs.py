"""The configs: short names resolve, every config parses, and the schedules are the paper's."""

from __future__ import annotations

import functools
import re

import pytest
from mmengine.config import Config

from prolab_models.configs import CONFIGS, check_overrides, check_sections, load_config, resolve_config
from prolab_models.errors import InvalidConfigError, UnknownConfigError


@functools.cache
def parse(name: str) -> Config:
    """Each config once a session: parsing resolves mmseg:: bases and imports the plugin."""
    return load_config(name)


PAPER = {"ade20k": 320_000, "coco-stuff": 160_000, "pascal-context-59": 160_000, "cityscapes": 160_000,
         "bdd100k": 160_000}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_short_name_resolves_to_a_config_that_parses(name: str) -> None:
    cfg = parse(name)
    check_sections(cfg, resolve_config(name))
    assert cfg.custom_imports["imports"] == ["prolab_models.register"]
    assert cfg.model.backbone.type == "ViTAdapter"
    prolab = not name.endswith("_ce")
    assert cfg.model.type == ("PropertyEncoderDecoder" if prolab else "EncoderDecoder")
    assert cfg.model.decode_head.type == ("PropertyUPerHead" if prolab else "UPerHead")


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


@pytest.mark.parametrize("name", ["demo", "camvid"])
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
