"""The generated demo dataset: deterministic, in CamVid's SegNet layout, regenerated only when asked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.demo import (
    CLASSES_FILE,
    DEMO_CLASSES,
    DEMO_PALETTE,
    IGNORE_INDEX,
    generate_demo_dataset,
    main,
    render_scene,
)

SMALL = dict(n_train=3, n_val=2, n_test=1, size=(48, 64))


def _files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*.png"))}


def test_same_seed_gives_the_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    first = _files(generate_demo_dataset(tmp_path / "a", seed=3, **SMALL))
    again = _files(generate_demo_dataset(tmp_path / "b", seed=3, **SMALL))
    other = _files(generate_demo_dataset(tmp_path / "c", seed=4, **SMALL))
    assert first == again
    assert first.keys() == other.keys()
    assert all(first[name] != other[name] for name in first)


def test_resizing_one_split_keeps_the_images_of_the_others(tmp_path: Path) -> None:
    small = _files(generate_demo_dataset(tmp_path / "a", seed=0, **SMALL))
    larger = _files(generate_demo_dataset(tmp_path / "b", seed=0, **{**SMALL, "n_train": 5}))
    assert {name: data for name, data in larger.items() if not name.startswith("train")} == \
        {name: data for name, data in small.items() if not name.startswith("train")}


def test_layout_is_camvid_segnet_with_paired_rgb_images_and_label_maps(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "demo", seed=0, **SMALL)
    counts = {"train": 3, "val": 2, "test": 1}
    assert sorted(path.name for path in root.iterdir()) == sorted(
        [CLASSES_FILE, *counts, *(f"{split}annot" for split in counts)])
    for split, count in counts.items():
        images = sorted(path.name for path in (root / split).iterdir())
        assert images == sorted(path.name for path in (root / f"{split}annot").iterdir())
        assert len(images) == count
        for name in images:
            with Image.open(root / split / name) as image, Image.open(root / f"{split}annot" / name) as label:
                assert (image.format, image.mode, image.size) == ("PNG", "RGB", (64, 48))
                assert (label.format, label.mode, label.size) == ("PNG", "L", (64, 48))
                values = set(np.unique(np.asarray(label)).tolist())
            assert values <= set(range(len(DEMO_CLASSES))) | {IGNORE_INDEX}
    classes = json.loads((root / CLASSES_FILE).read_text())
    assert classes["classes"] == list(DEMO_CLASSES)
    assert classes["palette"] == [list(colour) for colour in DEMO_PALETTE]
    assert classes["ignore_index"] == IGNORE_INDEX


def test_every_class_and_the_ignore_value_occur_across_scenes() -> None:
    seen: set[int] = set()
    for index in range(12):
        _, label = render_scene(np.random.default_rng([0, 0, index]), 128, 160)
        seen |= set(np.unique(label).tolist())
    assert seen == set(range(len(DEMO_CLASSES))) | {IGNORE_INDEX}


def test_a_complete_dataset_is_not_rewritten_but_other_parameters_rewrite_it(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "demo", seed=0, **SMALL)
    stamp = (root / "train" / "train_0000.png").stat().st_mtime_ns
    generate_demo_dataset(root, seed=0, **SMALL)
    assert (root / "train" / "train_0000.png").stat().st_mtime_ns == stamp

    generate_demo_dataset(root, seed=1, **SMALL)
    assert json.loads((root / CLASSES_FILE).read_text())["generator"]["seed"] == 1
    assert [path.name for path in tmp_path.iterdir()] == ["demo"], "no staging folder is left behind"


def test_an_incomplete_dataset_is_regenerated(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "demo", seed=0, **SMALL)
    (root / "valannot" / "val_0001.png").unlink()
    generate_demo_dataset(root, seed=0, **SMALL)
    assert (root / "valannot" / "val_0001.png").is_file()


def test_a_folder_it_did_not_write_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="mine"):
        generate_demo_dataset(tmp_path / "mine", seed=0, **SMALL)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("bad", [dict(n_val=0), dict(size=(16, 64)), dict(seed=-1)])
def test_bad_parameters_are_refused(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(ValueError):
        generate_demo_dataset(tmp_path / "demo", **{"seed": 0, **SMALL, **bad})


def test_cli_prints_the_root_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--seed", "0", "--n-train", "1", "--n-val", "1", "--n-test", "1",
                 "--size", "40", "48"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "trainannot" / "train_0000.png").is_file()
    assert main(["--out", str(out), "--n-val", "0"]) == 2
