"""Session fixtures for tests that train: a small demo dataset, a label space for it, a tiny
model configuration (``tiny_options``), and one short training run that several tests evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest

from data.demo import DEMO_CLASSES, generate_demo_dataset
from tests.helpers.label_space_factory import make_label_space

TINY_WIDTH = 48


def tiny_options(iters: int = 2, interval: int | None = None) -> dict:
    """cfg_options that shrink the demo/camvid model to seconds an iteration: a 2-block,
    48-wide ViT-Adapter, thin heads, batch 2, no worker processes."""
    interval = interval or iters
    loader = {"batch_size": 2, "num_workers": 0, "persistent_workers": False}
    options = {
        "model.backbone.embed_dim": TINY_WIDTH,
        "model.backbone.depth": 2,
        "model.backbone.interaction_indexes": [[0, 0], [1, 1]],
        "model.decode_head.in_channels": [TINY_WIDTH] * 4,
        "model.decode_head.channels": 16,
        "model.auxiliary_head.in_channels": TINY_WIDTH,
        "model.auxiliary_head.channels": 8,
        "train_cfg.max_iters": iters,
        "train_cfg.val_interval": interval,
        "default_hooks.checkpoint.interval": interval,
        "default_hooks.logger.interval": 1,
        "custom_hooks": [{"type": "PreciseBNHook", "num_batches": 2, "interval": interval}],
        "val_dataloader.batch_size": 1,
        "val_dataloader.num_workers": 0,
        "val_dataloader.persistent_workers": False,
        "test_dataloader.num_workers": 0,
        "test_dataloader.persistent_workers": False,
    }
    options.update({f"train_dataloader.{k}": v for k, v in loader.items()})
    return options


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", n_train=6, n_val=3, n_test=2,
                                 size=(64, 96))


@pytest.fixture(scope="session")
def demo_label_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_label_space(tmp_path_factory.mktemp("label_space") / "ls", DEMO_CLASSES, k=8, dim=16,
                            key="demo-ls")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, demo_root: Path, demo_label_space: Path) -> Path:
    """A work dir of 2 training iterations of the tiny demo model."""
    from tasks.model.train import train

    work_dir = tmp_path_factory.mktemp("run") / "work"
    train("demo", demo_label_space, work_dir, data_root=demo_root, cfg_options=tiny_options(2))
    return work_dir
