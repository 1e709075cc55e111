"""Pictures for the Prefect UI: valid PNGs, small enough to show inline as data URIs."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.visualization import (
    MAX_PNG_BYTES,
    png_data_uri,
    read_scalars,
    save_activation_maps,
    save_cluster_size_histogram,
    save_confusion_matrix,
    save_curves,
    save_iou_bars,
    save_label_space_matrix,
    save_overlays,
)

NAMES = ["sky", "building", "road", "sidewalk", "tree", "car", "person"]
PALETTE = [[70, 130, 180], [70, 70, 70], [128, 64, 128], [244, 35, 232], [107, 142, 35], [0, 0, 142],
           [220, 20, 60]]
RNG = np.random.default_rng(0)


def _assert_small_png(path: Path) -> None:
    data = path.read_bytes()
    assert 0 < len(data) <= MAX_PNG_BYTES
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.verify()


def _scalars() -> list[dict]:
    records = []
    for step in range(10, 210, 10):
        records.append({"lr": 6e-5 * (1 - step / 200), "loss": 1 / step, "decode.loss_prop": 0.8 / step,
                        "time": 0.2, "data_time": 0.01, "memory": 90, "iter": step, "step": step})
        if step % 100 == 0:
            records.append({"aAcc": 50.0 + step / 10, "mIoU": 20.0 + step / 20, "time": 0.1, "step": step})
    return records


def test_overlays_of_noisy_photos_stay_small(tmp_path: Path) -> None:
    images = [RNG.integers(0, 256, (360, 480, 3), dtype=np.uint8) for _ in range(4)]
    gts = [RNG.integers(0, len(NAMES), (360, 480)).astype(np.uint8) for _ in range(4)]
    gts[0][:20] = 255
    preds = [RNG.integers(0, len(NAMES), (360, 480)) for _ in range(4)]
    _assert_small_png(save_overlays(images, gts, preds, PALETTE, NAMES, tmp_path / "overlays.png"))


def test_overlays_refuse_mismatched_sizes(tmp_path: Path) -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="row 0"):
        save_overlays([image], [np.zeros((8, 8))], [np.zeros((4, 8))], PALETTE, NAMES, tmp_path / "x.png")


def test_activation_maps_of_low_resolution_properties(tmp_path: Path) -> None:
    image = RNG.integers(0, 256, (128, 160, 3), dtype=np.uint8)
    activations = RNG.random((32, 32, 40))
    names = [f"property {index}: smooth painted metal surface with reflections" for index in range(32)]
    _assert_small_png(save_activation_maps(image, activations, names, tmp_path / "maps.png", top=8))
    with pytest.raises(ValueError, match="property names"):
        save_activation_maps(image, activations, names[:5], tmp_path / "bad.png")


@pytest.mark.parametrize("classes", [7, 150])
def test_confusion_matrix_from_small_to_ade20k_size(tmp_path: Path, classes: int) -> None:
    conf = RNG.integers(0, 50, (classes, classes)) + np.eye(classes, dtype=np.int64) * 500
    conf[1] = 0  # a class absent from the ground truth
    names = [f"class {index}" for index in range(classes)]
    _assert_small_png(save_confusion_matrix(conf, names, tmp_path / "confusion.png"))


def test_iou_bars_accept_fractions_percentages_and_absent_classes(tmp_path: Path) -> None:
    _assert_small_png(save_iou_bars({"sky": 0.9, "car": 0.4, "person": float("nan")}, tmp_path / "a.png"))
    _assert_small_png(save_iou_bars({name: 100 * RNG.random() for name in NAMES}, tmp_path / "b.png"))
    with pytest.raises(ValueError):
        save_iou_bars({}, tmp_path / "c.png")


def test_label_space_pictures(tmp_path: Path) -> None:
    multi_hot = RNG.random((len(NAMES), 32)) < 0.2
    multi_hot[3] = multi_hot[2]
    _assert_small_png(save_label_space_matrix(multi_hot, NAMES, tmp_path / "matrix.png"))
    _assert_small_png(save_cluster_size_histogram(RNG.integers(1, 20, 256), tmp_path / "sizes.png"))
    with pytest.raises(ValueError, match="one per class"):
        save_label_space_matrix(multi_hot, NAMES[:3], tmp_path / "bad.png")


def test_curves_from_an_mmengine_scalars_file(tmp_path: Path) -> None:
    scalars = tmp_path / "scalars.json"
    scalars.write_text("".join(json.dumps(record) + "\n" for record in _scalars()))
    records = read_scalars(scalars)
    assert records == _scalars()
    _assert_small_png(save_curves(records, tmp_path / "curves.png"))
    with pytest.raises(ValueError, match="no losses"):
        save_curves([{"time": 0.1, "step": 1}], tmp_path / "empty.png")
    scalars.write_text('{"loss": 1.0, "step": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2"):
        read_scalars(scalars)


def test_data_uri_shrinks_a_large_png_below_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    Image.fromarray(RNG.integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(path)
    assert path.stat().st_size > 200_000
    uri = png_data_uri(path, max_bytes=40_000)
    assert uri.startswith("data:image/png;base64,")
    data = base64.b64decode(uri.split(",", 1)[1])
    assert len(data) <= 40_000
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"

    small = save_iou_bars({"sky": 0.5}, tmp_path / "small.png")
    assert base64.b64decode(png_data_uri(small).split(",", 1)[1]) == small.read_bytes()
