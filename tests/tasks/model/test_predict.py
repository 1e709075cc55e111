"""The predict stage on a handful of demo images: what it writes, that its label maps are
evaluate's inference, corrupt files, new classes from words, text queries, the cache and bad
input. One tiny run (``described_run``, 2 iterations) serves every test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmseg.registry import DATASETS, MODELS
from PIL import Image
from pydantic import ValidationError

from data.demo import DEMO_CLASSES, DEMO_PALETTE
from prolab_models.errors import LabelSpaceMismatchError
from tasks.label_space.embed import text_embedder
from tasks.label_space.transfer import TransferError
from tasks.model import predict as predict_stage
from tasks.model.predict import (
    LABEL_MAPS,
    OVERLAYS,
    PROPERTY_MAPS,
    SUMMARY,
    PredictInputError,
    PredictSummary,
    predict,
)
from tasks.model.checkpoints import last_checkpoint
from tasks.model.runs import build_config, select_test_split
from tasks.params import EndToEndParams
from tasks.registry import run_stages
from tasks.store import ArtifactStore
from tests.helpers.demo_runs import tiny_options
from tests.helpers.fake_llm import FakeLLM
from tests.helpers.transfer_runs import DEMO_DESCRIPTIONS

SPLIT = "val"  # 3 demo images


@pytest.fixture(scope="module")
def embed(transfer_store: ArtifactStore):
    return text_embedder("all-MiniLM-L6-v2", transfer_store.embedding_cache)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> Path:
    """The demo's val images, a corrupt PNG and a text file, in one directory."""
    folder = tmp_path_factory.mktemp("images")
    for path in sorted((demo_root / SPLIT).iterdir()):
        shutil.copy(path, folder / path.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def predicted(tmp_path_factory: pytest.TempPathFactory, described_run: Path, images: Path,
              embed) -> PredictSummary:
    out = tmp_path_factory.mktemp("predicted")
    return predict(described_run, [images], out, "demo", tiny_options(2), queries=["blue sky with clouds"],
                   top_properties=3, embed=embed, device="cpu")


def _label_maps(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.array(Image.open(p)) for p in sorted((out / LABEL_MAPS).glob("*.png"))}


def evaluate_inference(run: Path, demo_root: Path, described_label_space: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    """Each val image's prediction as evaluate's runner makes it: the test dataset (its
    pipeline, from the file) through the loaded model's ``test_step``."""
    cfg = build_config("demo", described_label_space, tmp_path, demo_root, tiny_options(2))
    select_test_split(cfg, "demo", SPLIT)
    init_default_scope("mmseg")
    model = MODELS.build(cfg.model).eval()
    load_checkpoint(model, str(last_checkpoint(run)), map_location="cpu", logger="silent")
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    found = {}
    with torch.no_grad():
        for index in range(len(dataset)):
            out = model.test_step(pseudo_collate([dataset[index]]))[0]
            found[Path(out.img_path).stem] = out.pred_sem_seg.data[0].numpy()
    return found


def test_predict_writes_a_label_map_an_overlay_and_property_maps_per_image(predicted: PredictSummary,
                                                                          demo_root: Path) -> None:
    out = predicted.out_dir
    names = sorted(p.stem for p in (demo_root / SPLIT).iterdir())
    assert predicted.images == names and predicted.classes == list(DEMO_CLASSES)
    for folder in (LABEL_MAPS, OVERLAYS, PROPERTY_MAPS, "queries/1-blue-sky-with-clouds"):
        assert sorted(p.stem for p in (out / folder).glob("*.png")) == names, folder
    label = Image.open(out / LABEL_MAPS / f"{names[0]}.png")
    assert label.mode == "P" and label.size == Image.open(demo_root / SPLIT / f"{names[0]}.png").size
    assert np.array(label.getpalette()[: 3 * len(DEMO_CLASSES)]).reshape(-1, 3).tolist() == \
        [list(c) for c in DEMO_PALETTE]
    summary = json.loads((out / SUMMARY).read_text())
    assert [r["name"] for r in summary["images"]] == names and summary["device"] == "cpu"
    assert all(len(r["top_properties"]) == 3 and abs(sum(r["classes"].values()) - 1) < 0.01
               for r in summary["images"])


def test_a_corrupt_file_and_a_non_image_are_named_and_skipped_and_the_rest_still_run(
        predicted: PredictSummary) -> None:
    skipped = {s["file"]: s["reason"] for s in predicted.skipped}
    assert set(skipped) == {"broken.png", "notes.txt"}
    assert "not an image OpenCV can decode" in skipped["broken.png"] and "not an image file" in skipped["notes.txt"]
    assert len(predicted.images) == 3


def test_label_maps_are_evaluates_inference_on_the_same_images(predicted: PredictSummary, described_run: Path,
                                                               demo_root: Path, described_label_space: Path,
                                                               tmp_path: Path) -> None:
    expected = evaluate_inference(described_run, demo_root, described_label_space, tmp_path)
    found = _label_maps(predicted.out_dir)
    assert set(found) == set(expected)
    for name, label in expected.items():
        np.testing.assert_array_equal(found[name], label, err_msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_by_default_with_the_cpu_label_maps(predicted: PredictSummary, described_run: Path, images: Path,
                                                    embed, tmp_path: Path) -> None:
    on_gpu = predict(described_run, [images], tmp_path, "demo", tiny_options(2), embed=embed)
    assert json.loads((tmp_path / SUMMARY).read_text())["device"] == "cuda"
    found, expected = _label_maps(tmp_path), _label_maps(predicted.out_dir)
    assert on_gpu.images == predicted.images and set(found) == set(expected)
    for name, label in expected.items():  # float sums in another order: a near-tie may flip a pixel
        assert (found[name] != label).mean() < 0.005, name


def test_a_query_draws_its_nearest_properties_best_first(predicted: PredictSummary) -> None:
    [query] = predicted.queries
    similarities = [p["similarity"] for p in query["properties"]]
    assert query["text"] == "blue sky with clouds" and len(similarities) == 3
    assert similarities == sorted(similarities, reverse=True) and similarities[0] > 0.5


def test_copies_of_the_trained_descriptions_predict_as_the_trained_classes(predicted: PredictSummary,
                                                                           described_run: Path, images: Path,
                                                                           embed, tmp_path: Path) -> None:
    copies = {f"{name} again": lines for name, lines in DEMO_DESCRIPTIONS.items()}
    found = predict(described_run, [images], tmp_path, "demo", tiny_options(2), classes=copies, embed=embed,
                    device="cpu")
    assert found.classes == list(copies)
    summary = json.loads((tmp_path / SUMMARY).read_text())
    trained = json.loads((predicted.out_dir / SUMMARY).read_text())
    assert [c["properties"] for c in summary["classes"]] == [c["properties"] for c in trained["classes"]]
    assert all(c["new"] for c in summary["classes"])
    before, after = _label_maps(predicted.out_dir), _label_maps(tmp_path)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_an_added_class_keeps_the_trained_predictions_where_it_does_not_win(predicted: PredictSummary,
                                                                           described_run: Path, images: Path,
                                                                           embed, tmp_path: Path) -> None:
    added = {"lawn": ["green leafy crown", "flat surface for cars to drive on"]}
    found = predict(described_run, [images], tmp_path, "demo", tiny_options(2), classes=added, add=True,
                    embed=embed, device="cpu")
    assert found.classes == [*DEMO_CLASSES, "lawn"]
    new = len(DEMO_CLASSES)
    before, after = _label_maps(predicted.out_dir), _label_maps(tmp_path)
    for name in before:
        kept = after[name] != new
        np.testing.assert_array_equal(after[name][kept], before[name][kept], err_msg=name)


def test_calibration_hands_an_added_class_the_pixels_the_trained_ones_win_by_less_than_gamma(
        described_run: Path, images: Path, embed, tmp_path: Path) -> None:
    """The trained classes' cosines, in [0, 1], are lowered by γ before the argmax: the added
    class keeps every pixel it had and gains more as γ grows, and at γ = 1 it has them all."""
    added = {"lawn": ["green leafy crown", "flat surface for cars to drive on"]}
    new = len(DEMO_CLASSES)
    maps = {}
    for gamma in (0.0, 0.1, 1.0):
        predict(described_run, [images], tmp_path / str(gamma), "demo", tiny_options(2), classes=added, add=True,
                embed=embed, device="cpu", calibration=gamma)
        maps[gamma] = _label_maps(tmp_path / str(gamma))
    lawn = {gamma: sum(int((m == new).sum()) for m in found.values()) for gamma, found in maps.items()}
    pixels = sum(m.size for m in maps[1.0].values())
    assert lawn[0.0] <= lawn[0.1] < lawn[1.0] == pixels, lawn
    for name, uncalibrated in maps[0.0].items():
        assert (maps[0.1][name][uncalibrated == new] == new).all(), f"{name}: a lawn pixel lost to calibration"


def test_a_new_class_none_of_whose_descriptions_reaches_the_floor_is_refused_by_name(
        described_run: Path, images: Path, embed, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="class 'pasta': none of its 1 descriptions reaches the similarity floor"):
        predict(described_run, [images], tmp_path, "demo", tiny_options(2), embed=embed,
                classes={"pasta": ["a plate of spaghetti"]})
    assert not (tmp_path / LABEL_MAPS).exists()


def test_an_unchanged_predict_rerun_computes_nothing_and_new_image_content_does(
        described_run: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    store = ArtifactStore(tmp_path / "store")
    params = EndToEndParams.model_validate({"train": {"config": "demo", "cfg_options": tiny_options(2)},
                                            "predict": {"images": [str(folder)]}})
    first = run_stages(params, store, ["predict"], given={"train": described_run})["predict"]
    assert (first / SUMMARY).is_file() and len(list((first / LABEL_MAPS).glob("*.png"))) == 3

    def no_compute(*args, **kwargs):
        raise AssertionError("an unchanged predict rerun computed")

    monkeypatch.setattr(predict_stage, "predict", no_compute)
    assert run_stages(params, store, ["predict"], given={"train": described_run})["predict"] == first
    monkeypatch.undo()

    picture = min(p for p in folder.glob("*.png") if p.name != "broken.png")
    Image.fromarray(255 - np.array(Image.open(picture))).save(picture)  # same name, other content
    second = run_stages(params, store, ["predict"], given={"train": described_run})["predict"]
    assert second != first and (first / SUMMARY).is_file()


def test_class_names_are_described_by_the_llm_verified_and_cached(described_run: Path, images: Path,
                                                                   tmp_path: Path) -> None:
    """``--classes names.json --llm URL``: the LLM is asked for exactly the new names, its answers
    are verified (the table kept beside the outputs) and cached, so a rerun asks nothing."""
    names = tmp_path / "new_classes.json"
    names.write_text(json.dumps(["lawn"]))
    store = ArtifactStore(tmp_path / "store")
    lawn = ["green leafy crown", "flat surface for cars to drive on"]
    with FakeLLM(reply=lambda name: "\n".join(f"- {line}" for line in lawn)) as llm:
        params = EndToEndParams.model_validate({
            "label_space": {"describe": {"llm": llm.base_url, "model": "fake-model"}},
            "train": {"config": "demo", "cfg_options": tiny_options(2)},
            "predict": {"images": [str(images)], "classes": str(names), "add": True}})
        out = run_stages(params, store, ["predict"], given={"train": described_run})["predict"]
        assert sorted({r.category for r in llm.asked()}) == ["lawn"]
    summary = json.loads((out / SUMMARY).read_text())
    assert [c["name"] for c in summary["classes"]] == [*DEMO_CLASSES, "lawn"]
    verification = pd.read_parquet(out / "new_classes_verification.parquet")
    assert verification["class"].tolist() == ["lawn", "lawn"] and verification["text"].tolist() == lawn

    shutil.rmtree(out)  # the stage computes again; the LLM, now gone, must not be needed
    assert run_stages(params, store, ["predict"], given={"train": described_run})["predict"] == out
    assert json.loads((out / SUMMARY).read_text())["classes"] == summary["classes"]


def test_bad_input_is_refused_by_name(described_run: Path, images: Path, trained_run: Path,
                                     described_label_space: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="query 2 is only whitespace"):
        EndToEndParams.model_validate({"predict": {"images": [str(images)], "query": ["fur", "  "]}})
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no pictures here")
    with pytest.raises(PredictInputError, match=r"empty: no images \(no file ending in .png"):
        predict(described_run, [tmp_path / "empty"], tmp_path / "out", "demo", tiny_options(2))
    with pytest.raises(PredictInputError, match="missing.png: no such image file or directory"):
        predict(described_run, [tmp_path / "missing.png"], tmp_path / "out", "demo", tiny_options(2))
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    shutil.copy(images / "broken.png", only_broken / "broken.png")
    with pytest.raises(PredictInputError, match="no image could be read: broken.png"):
        predict(described_run, [only_broken], tmp_path / "out", "demo", tiny_options(2))
    params = EndToEndParams.model_validate({"predict": {"images": [str(images)], "add": True}})
    with pytest.raises(PredictInputError, match="--add: give --classes"):
        predict_stage.plan(params, {"run": "train/0"})
    # a checkpoint trained on another label space than the one given
    with pytest.raises(LabelSpaceMismatchError, match=r"iter_2\.pth"):
        predict(trained_run, [images], tmp_path / "other", "demo", tiny_options(2), label_space=described_label_space)
