"""`python -m prolab_models.datasets.check`: one line a split on stdout when a dataset is laid out right; the
offending path on stderr and exit code 1 when it is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.demo import generate_demo_dataset
from prolab_models.datasets.check import main


def test_a_generated_demo_dataset_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = generate_demo_dataset(tmp_path / "demo", seed=0, n_train=2, n_val=1, n_test=1, size=(40, 48))
    assert main(["demo", str(root)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "demo train: 2 image/annotation pairs ok",
        "demo val: 1 image/annotation pairs ok",
        "demo test: 1 image/annotation pairs ok",
    ]


def test_an_mmseg_layout_is_checked_with_mmseg_dataset_class(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = tmp_path / "leftImg8bit" / "val" / "aachen", tmp_path / "gtFine" / "val" / "aachen"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(images / "aachen_000000_000019_leftImg8bit.png")
    label = np.full((16, 32), 18, np.uint8)
    Image.fromarray(label).save(labels / "aachen_000000_000019_gtFine_labelTrainIds.png")
    assert main(["cityscapes", str(tmp_path), "--split", "val"]) == 0
    assert capsys.readouterr().out.strip() == "cityscapes val: 1 image/annotation pairs ok"

    label[0, 0] = 19
    Image.fromarray(label).save(labels / "aachen_000000_000019_gtFine_labelTrainIds.png")
    assert main(["cityscapes", str(tmp_path), "--split", "val"]) == 1
    assert "aachen_000000_000019_gtFine_labelTrainIds.png: label values [19]" in capsys.readouterr().err
    assert main(["cityscapes", str(tmp_path), "--split", "val", "--headers-only"]) == 0


def test_a_missing_split_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ade20k", str(tmp_path)]) == 1
    assert f"{tmp_path / 'images' / 'training'}: not found" in capsys.readouterr().err
    assert main(["camvid", str(tmp_path / "absent")]) == 1
    assert f"{tmp_path / 'absent'}: data root not found" in capsys.readouterr().err
