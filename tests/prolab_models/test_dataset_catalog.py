"""The dataset catalog: each entry agrees with its dataset class and its config, and the names users
type (``--dataset``, ``--config``, the layout check) are the catalog's."""

from __future__ import annotations

from pathlib import Path

import mmseg.datasets  # noqa: F401  (registers mmseg's dataset classes)
import pytest
from mmseg.registry import DATASETS

import prolab_models.datasets  # noqa: F401  (registers ours)
from prolab_models.configs import CONFIGS, load_config
from prolab_models.dataset_catalog import DATASET_CATALOG
from prolab_models.datasets.check import main as check_dataset
from tasks.datasets import UnknownDatasetError, dataset_classes
from tasks.params import DescribeParams


@pytest.mark.parametrize("name", list(DATASET_CATALOG))
def test_an_entry_names_the_classes_and_config_of_its_dataset_class(name: str) -> None:
    entry = DATASET_CATALOG[name]
    registered = [c.strip() for c in DATASETS.get(entry.dataset_type).METAINFO["classes"]]
    classes = dataset_classes(name)
    assert len(classes) == len(registered) == len(set(classes))
    assert [entry.renames.get(c, c) for c in registered] == classes
    cfg = load_config(name)  # the dataset's name is its default config
    assert CONFIGS[name] == entry.config
    for loader in ("train_dataloader", "test_dataloader"):
        assert cfg[loader].dataset.type == entry.dataset_type, f"{entry.config}: {loader} is not {entry.dataset_type}"


def test_a_split_config_fills_in_the_split() -> None:
    assert DATASET_CATALOG["camvid"].split_config("val") == {"type": "CamVidDataset", "split": "val"}
    assert DATASET_CATALOG["pascal-context-59"].split_config("train") == {
        "type": "PascalContextDataset59", "ann_file": "ImageSets/SegmentationContext/train.txt",
        "data_prefix": {"img_path": "JPEGImages", "seg_map_path": "SegmentationClassContext"}}


def test_the_paper_descriptors_name_for_an_ade20k_class_replaces_mmseg_shortened_one() -> None:
    assert "storage tank" in dataset_classes("ade20k") and "tank" not in dataset_classes("ade20k")


def test_a_name_outside_the_catalog_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'coco_stuff164k'; known: demo, camvid, ade20k"):
        dataset_classes("coco_stuff164k")


def test_the_commands_take_the_catalog_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    described = " ".join(DescribeParams.model_fields["dataset"].description.split())
    assert all(name in described for name in DATASET_CATALOG), described
    for name in DATASET_CATALOG:  # the layout check takes every name, and gets as far as the missing root
        assert check_dataset([name, str(tmp_path / "absent")]) == 1
        assert "data root not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        check_dataset(["coco_stuff164k", str(tmp_path)])  # the layout check's old name for coco-stuff
    assert "invalid choice: 'coco_stuff164k'" in capsys.readouterr().err
