"""Datasets in mmseg's registry: they load through mmseg's pipeline, map unlabelled pixels to the
ignore value, and refuse a badly prepared dataset with an error that names the file."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from mmengine.registry import DefaultScope
from mmseg.registry import DATASETS
from PIL import Image

from data.demo import DEMO_CLASSES, generate_demo_dataset
from prolab_models.datasets import (
    DatasetLayoutError,
    ProLabDemoDataset,
    dataset_fingerprint,
    fingerprint,
    validate_dataset,
)

SHARED = Path(os.environ.get("PROLAB_SHARED", Path(__file__).resolve().parents[3] / "shared"))
CAMVID_CLASSES = 11
PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations"),
    dict(type="CheckLabelRange", num_classes=CAMVID_CLASSES),
    dict(type="PackSegInputs"),
]


@pytest.fixture(autouse=True)
def mmseg_scope() -> Iterator[None]:
    with DefaultScope.overwrite_default_scope("mmseg"):
        yield


@pytest.fixture(scope="module")
def camvid_root() -> Path:
    root = SHARED / "data" / "camvid_mini"
    if not root.is_dir():
        pytest.skip(f"{root} is absent: the CamVid tests need ../shared beside the project")
    return root


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "demo", seed=0, n_train=3, n_val=2,
                                 n_test=1, size=(48, 64))


@pytest.fixture
def demo_root(demo_template: Path, tmp_path: Path) -> Path:
    """A private copy that a test may break."""
    return Path(shutil.copytree(demo_template, tmp_path / "demo"))


def _demo(root: Path, split: str = "train", **kwargs) -> ProLabDemoDataset:
    return DATASETS.build(dict(type="ProLabDemoDataset", data_root=str(root), split=split, **kwargs))


def test_camvid_loads_through_mmseg_pipeline_and_maps_unlabelled_to_ignore(camvid_root: Path) -> None:
    train = DATASETS.build(dict(type="CamVidDataset", data_root=str(camvid_root), split="train",
                                pipeline=PIPELINE))
    val = DATASETS.build(dict(type="CamVidDataset", data_root=str(camvid_root), split="val", pipeline=PIPELINE))
    assert (len(train), len(val)) == (62, 21)
    assert len(train.metainfo["classes"]) == len(train.metainfo["palette"]) == CAMVID_CLASSES
    assert train.metainfo["classes"][6] == "sign symbol"

    raw = np.asarray(Image.open(train.get_data_info(0)["seg_map_path"]))
    assert (raw == 11).any(), "the first CamVid label map has unlabelled pixels"
    sample = train[0]
    label = sample["data_samples"].gt_sem_seg.data.numpy()[0]
    assert sample["inputs"].shape == (3, 360, 480)
    assert label.shape == raw.shape == (360, 480)
    assert np.array_equal(label == 255, raw == 11)
    assert np.array_equal(label[raw != 11], raw[raw != 11])


def test_validate_dataset_reads_every_camvid_pair(camvid_root: Path) -> None:
    val = DATASETS.build(dict(type="CamVidDataset", data_root=str(camvid_root), split="val"))
    assert validate_dataset(val) == 21


def test_demo_dataset_loads_every_split(demo_root: Path) -> None:
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        dataset = _demo(demo_root, split, pipeline=PIPELINE[:2] + [
            dict(type="CheckLabelRange", num_classes=len(DEMO_CLASSES)), PIPELINE[-1]])
        assert len(dataset) == count
        assert dataset.metainfo["classes"] == DEMO_CLASSES
        assert validate_dataset(dataset) == count
        assert dataset[0]["inputs"].shape == (3, 48, 64)


def test_split_and_data_prefix_exclude_each_other(demo_root: Path) -> None:
    with pytest.raises(ValueError, match="exactly one of split"):
        _demo(demo_root, data_prefix=dict(img_path="train", seg_map_path="trainannot"))
    dataset = DATASETS.build(dict(type="ProLabDemoDataset", data_root=str(demo_root),
                                  data_prefix=dict(img_path="val", seg_map_path="valannot")))
    assert len(dataset) == 2


def test_missing_data_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=f"{tmp_path / 'absent'}: data root not found"):
        _demo(tmp_path / "absent")


def test_missing_split_folder_is_named(demo_root: Path) -> None:
    shutil.rmtree(demo_root / "valannot")
    with pytest.raises(DatasetLayoutError, match=f"{demo_root / 'valannot'}: folder not found"):
        _demo(demo_root, "val")


def test_empty_split_folder_is_named(demo_root: Path) -> None:
    for image in (demo_root / "train").iterdir():
        image.unlink()
    with pytest.raises(DatasetLayoutError, match=f"{demo_root / 'train'}: no images"):
        _demo(demo_root)


def test_image_without_annotation_is_named(demo_root: Path) -> None:
    (demo_root / "trainannot" / "train_0001.png").unlink()
    with pytest.raises(DatasetLayoutError,
                       match=f"{demo_root / 'train' / 'train_0001.png'}: image without its annotation"):
        _demo(demo_root)


def test_annotation_of_another_size_is_named(demo_root: Path) -> None:
    path = demo_root / "trainannot" / "train_0002.png"
    Image.fromarray(np.zeros((40, 64), np.uint8)).save(path)
    dataset = _demo(demo_root, pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                                         dict(type="CheckLabelRange", num_classes=len(DEMO_CLASSES))])
    with pytest.raises(DatasetLayoutError, match=f"{path}: annotation is 40x64"):
        validate_dataset(dataset, check_values=False)
    with pytest.raises(DatasetLayoutError, match=f"{path}: annotation is 40x64"):
        dataset[2]


def test_label_values_outside_the_classes_are_named(demo_root: Path) -> None:
    path = demo_root / "valannot" / "val_0000.png"
    label = np.asarray(Image.open(path)).copy()
    label[0, :3] = (7, 9, 255)
    Image.fromarray(label).save(path)
    dataset = _demo(demo_root, "val", pipeline=[dict(type="LoadAnnotations"),
                                                dict(type="CheckLabelRange", num_classes=len(DEMO_CLASSES))])
    with pytest.raises(DatasetLayoutError, match=rf"{path}: label values \[7, 9\] outside the classes 0..6"):
        validate_dataset(dataset)
    with pytest.raises(DatasetLayoutError, match=str(path)):
        dataset[0]


def test_bdd100k_layout(tmp_path: Path) -> None:
    images, masks = tmp_path / "images" / "10k" / "val", tmp_path / "labels" / "sem_seg" / "masks" / "val"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for name in ("7d2f7975-e0c1c5a7", "7d4a9094-0455564b"):
        Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(images / f"{name}.jpg")
        Image.fromarray(np.full((24, 32), 18, np.uint8)).save(masks / f"{name}.png")
    dataset = DATASETS.build(dict(type="ProLabBDD100KDataset", data_root=str(tmp_path), split="val"))
    assert len(dataset.metainfo["classes"]) == 19
    assert validate_dataset(dataset) == 2
    with pytest.raises(DatasetLayoutError, match=str(tmp_path / "images" / "10k" / "train")):
        DATASETS.build(dict(type="ProLabBDD100KDataset", data_root=str(tmp_path), split="train"))


def test_fingerprint_changes_when_a_file_changes(demo_root: Path) -> None:
    before = dataset_fingerprint(demo_root)
    assert dataset_fingerprint(demo_root) == before
    path = demo_root / "valannot" / "val_0001.png"
    path.write_bytes(path.read_bytes() + b"\0")
    assert dataset_fingerprint(demo_root) != before


def test_fingerprint_covers_only_the_named_folders(demo_root: Path) -> None:
    train = ProLabDemoDataset.split_dirs("train")
    before = dataset_fingerprint(demo_root, train)
    (demo_root / "valannot" / "val_0001.png").unlink()
    assert dataset_fingerprint(demo_root, train) == before
    with pytest.raises(FileNotFoundError, match="nowhere"):
        dataset_fingerprint(demo_root, ["nowhere"])


def test_content_fingerprint_ignores_mtimes_and_location(demo_root: Path, tmp_path: Path) -> None:
    content = dataset_fingerprint(demo_root, content=True)
    stat = dataset_fingerprint(demo_root, content=False)
    path = demo_root / "train" / "train_0000.png"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert dataset_fingerprint(demo_root, content=False) != stat
    assert dataset_fingerprint(demo_root, content=True) == content
    moved = Path(shutil.move(demo_root, tmp_path / "moved"))
    assert dataset_fingerprint(moved, content=True) == content
    copied = Path(shutil.copytree(moved, tmp_path / "copied", copy_function=shutil.copyfile))  # new mtimes
    assert dataset_fingerprint(copied, content=True) == content


def test_small_datasets_are_hashed_by_content_large_ones_by_stat(demo_root: Path, monkeypatch) -> None:
    assert dataset_fingerprint(demo_root) == dataset_fingerprint(demo_root, content=True)
    size = sum(p.stat().st_size for p in demo_root.rglob("*") if p.is_file())
    monkeypatch.setattr(fingerprint, "CONTENT_LIMIT", size - 1)
    assert dataset_fingerprint(demo_root) == dataset_fingerprint(demo_root, content=False)
