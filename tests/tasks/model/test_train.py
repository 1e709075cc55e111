"""The train stage: real (tiny) runs on the demo data, resume, distributed, and bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.demo import DEMO_CLASSES
from prolab_models.datasets import DatasetLayoutError
from prolab_models.errors import LabelSpaceMismatchError, UnknownConfigError
from tasks.model.checkpoints import last_checkpoint
from tasks.model.runs import RUN_RECORD
from tasks.model.train import train
from tasks.processes import free_port
from tests.helpers.demo_runs import tiny_options
from tests.helpers.label_space_factory import make_label_space
from tests.helpers.cli import PROJECT_ROOT as PROJECT


def logged_steps(work_dir: Path) -> list[int]:
    """Training steps logged in a work dir, by all its runs, oldest first."""
    return [record["step"] for path in sorted(work_dir.glob("*/vis_data/scalars.json"))
            for record in map(json.loads, path.read_text().splitlines()) if "loss" in record]


def test_a_short_run_writes_a_checkpoint_and_its_label_space(trained_run: Path) -> None:
    checkpoint = last_checkpoint(trained_run)
    assert checkpoint.name == "iter_2.pth"
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["meta"]["iter"] == 2
    assert b"demo-ls" in bytes(state["state_dict"]["decode_head._extra_state"].tolist())
    assert json.loads((trained_run / RUN_RECORD).read_text())["key"] == "demo-ls"


def test_a_stopped_run_resumes_from_its_checkpoint(tmp_path: Path, demo_root: Path, demo_label_space: Path) -> None:
    work_dir = tmp_path / "work"
    first = train("demo", demo_label_space, work_dir, demo_root, tiny_options(2))
    second = train("demo", demo_label_space, work_dir, demo_root, tiny_options(4, interval=2))
    assert first.name == "iter_2.pth" and second.name == "iter_4.pth"
    assert logged_steps(work_dir) == [1, 2, 3, 4]  # the second run started at 3, not at 1 again


def test_two_processes_train_with_gloo(tmp_path: Path, demo_root: Path, demo_label_space: Path) -> None:
    # key=value as mmengine's DictAction reads them (lists, not dicts: keep the config's hooks)
    options = [f"{k}={json.dumps(v).replace(' ', '')}" for k, v in tiny_options(2).items() if k != "custom_hooks"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT)}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "tasks.model.train", "--config", "demo", "--label-space", str(demo_label_space),
         "--work-dir", str(tmp_path / "work"), "--data-root", str(demo_root), "--launcher", "pytorch",
         "--cfg-options", *options],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(tmp_path / "work" / "iter_2.pth")  # printed once, by rank 0
    assert "Distributed training: True" in result.stderr
    assert "GPU number: 2" in result.stderr  # mmengine's name for the world size


def test_unknown_config_name(tmp_path: Path, demo_label_space: Path) -> None:
    with pytest.raises(UnknownConfigError, match="known names: demo, camvid, ade20k"):
        train("camvd", demo_label_space, tmp_path / "work")


def test_missing_data_root(tmp_path: Path, demo_label_space: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=f"{tmp_path / 'nowhere'}: data root not found"):
        train("demo", demo_label_space, tmp_path / "work", tmp_path / "nowhere", tiny_options(1))


def test_label_space_with_another_class_count(tmp_path: Path, demo_root: Path) -> None:
    space = make_label_space(tmp_path / "ls", ["a", "b", "c"], k=4, dim=8)
    with pytest.raises(LabelSpaceMismatchError, match="label space has 3 classes but the dataset ProLabDemoDataset has 7"):
        train("demo", space, tmp_path / "work", demo_root, tiny_options(1))


def test_resuming_with_another_label_space_is_refused(tmp_path: Path, trained_run: Path, demo_root: Path) -> None:
    other = make_label_space(tmp_path / "ls", DEMO_CLASSES, k=8, dim=16, seed=1, key="other-ls")
    with pytest.raises(LabelSpaceMismatchError, match="trained with label space 'demo-ls'"):
        train("demo", other, trained_run, demo_root, tiny_options(2))


def corrupted_copy(demo_root: Path, tmp_path: Path, corrupt) -> Path:
    root = tmp_path / "demo"
    shutil.copytree(demo_root, root)
    label_path = sorted((root / "trainannot").glob("*.png"))[0]
    Image.fromarray(corrupt(np.array(Image.open(label_path)))).save(label_path)
    return root


def test_label_values_outside_the_classes(tmp_path: Path, demo_root: Path, demo_label_space: Path) -> None:
    def add_class_9(label: np.ndarray) -> np.ndarray:
        label[0, 0] = 9
        return label

    root = corrupted_copy(demo_root, tmp_path, add_class_9)
    with pytest.raises(DatasetLayoutError, match=r"trainannot/.*\.png: label values \[9\] outside the classes 0..6"):
        train("demo", demo_label_space, tmp_path / "work", root,
              {**tiny_options(6), "train_dataloader.batch_size": 6})


def test_annotation_size_differs_from_image(tmp_path: Path, demo_root: Path, demo_label_space: Path) -> None:
    root = corrupted_copy(demo_root, tmp_path, lambda label: label[:32])
    with pytest.raises(DatasetLayoutError, match=r"trainannot/.*\.png: annotation is 32x96 \(HxW\) but its image"):
        train("demo", demo_label_space, tmp_path / "work", root,
              {**tiny_options(6), "train_dataloader.batch_size": 6})
