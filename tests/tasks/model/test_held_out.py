"""The held-out protocol: the training images holding a held-out class dropped (or its pixels
ignored), the class absent from the training label space, present again in evaluation
(seen/unseen mIoU, hIoU and the two controls; calibrated stacking's sweep over γ)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS
from PIL import Image

from data.demo import DEMO_CLASSES
from prolab_models.errors import ProLabInputError
from prolab_models.label_space import load_label_space
from tasks.label_space.embed import text_embedder
from tasks.label_space.transfer import TransferError, held_out_key
from tasks.model.evaluate import METRICS_FILE, SCORING_LABEL_SPACE, evaluate, reports, transfer_metrics
from tasks.model.checkpoints import last_checkpoint
from tasks.model.calibration import GRID
from tasks.model.runs import RUN_RECORD, build_config, config_dataset_classes, drop_images_holding, hold_out_classes
from tasks.model.train import train
from tasks.store import ArtifactStore
from tests.helpers.demo_runs import tiny_options
from tests.helpers.transfer_runs import HELD_OUT

PERSON = DEMO_CLASSES.index("person")


@pytest.fixture(scope="module")
def embed(transfer_store: ArtifactStore):
    return text_embedder("all-MiniLM-L6-v2", transfer_store.embedding_cache)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, held_out_run: Path, demo_root: Path,
              described_label_space: Path, embed) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("held-out-eval")
    metrics = evaluate("demo", described_label_space, held_out_run, out, demo_root, "test", tiny_options(2),
                       num_pictures=1, held_out=HELD_OUT, embed=embed)
    return out, metrics


def test_held_out_pixels_are_ignored_in_the_label_stack(demo_root: Path, described_label_space: Path,
                                                        tmp_path: Path) -> None:
    """What the loss sees: the training dataset (its label map, as mmseg loads it) stacked by the head."""
    cfg = build_config("demo", described_label_space, tmp_path, demo_root, tiny_options(2))
    hold_out_classes(cfg, ["car"], "demo")
    init_default_scope("mmseg")
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    dataset = DATASETS.build(dataset_cfg)
    head = MODELS.build(cfg.model).decode_head
    seen = [c for c in DEMO_CLASSES if c != "car"]
    assert list(dataset.metainfo["classes"]) == seen
    samples = [dataset[i]["data_samples"] for i in range(len(dataset))]
    stacked = head._stack_batch_gt(samples)[:, 0].numpy()
    raw = np.stack([np.array(Image.open(dataset.get_data_info(i)["seg_map_path"])) for i in range(len(dataset))])
    car = DEMO_CLASSES.index("car")
    assert (raw == car).any() and (stacked[raw == car] == 255).all()
    for index, name in enumerate(DEMO_CLASSES):
        if name != "car":
            assert (stacked[raw == index] == seen.index(name)).all(), name
    assert ((stacked == 255) == ((raw == car) | (raw == 255))).all()


def test_a_config_that_names_its_class_count_trains_evaluates_and_predicts_holding_out(
        demo_root: Path, described_label_space: Path, embed, tmp_path: Path) -> None:
    """The DeepLabV3+ configs keep their one-hot twin's ``num_classes`` (7 on the demo): a run
    holding person out builds its heads with the 6 kept classes, and is scored with 7 again."""
    from tasks.model.predict import predict

    options = {k: v for k, v in tiny_options(2).items() if not k.startswith("model.")} | {
        "model.decode_head.channels": 16, "model.decode_head.c1_channels": 8, "model.auxiliary_head.channels": 8}
    run = tmp_path / "run"
    train("demo_deeplabv3plus", described_label_space, run, demo_root, options, held_out=HELD_OUT, embed=embed)
    state = torch.load(last_checkpoint(run), map_location="cpu", weights_only=True)["state_dict"]
    assert state["decode_head.multi_hot"].shape[0] == state["auxiliary_head.multi_hot"].shape[0] == 6
    metrics = evaluate("demo_deeplabv3plus", described_label_space, run, tmp_path / "eval", demo_root, "val",
                       options, num_pictures=0, held_out=HELD_OUT, embed=embed)
    assert set(metrics["per_class_iou"]) == set(DEMO_CLASSES) and metrics["mIoU_unseen"] is not None
    predicted = predict(run, [demo_root / "val"], tmp_path / "predict", "demo_deeplabv3plus", options, embed=embed,
                        device="cpu")
    assert predicted.classes == [c for c in DEMO_CLASSES if c not in HELD_OUT] and predicted.images


def test_the_held_out_class_is_absent_from_the_training_label_space(held_out_run: Path,
                                                                    described_label_space: Path) -> None:
    record = json.loads((held_out_run / RUN_RECORD).read_text())
    own = load_label_space(held_out_run / record["path"])
    source = load_label_space(described_label_space)
    assert record["held_out"] == HELD_OUT and record["path"] == "label_space"
    assert own.classes == [c for c in DEMO_CLASSES if c != "person"] and own.key == held_out_key(source.key, HELD_OUT)
    state = torch.load(last_checkpoint(held_out_run), map_location="cpu", weights_only=True)["state_dict"]
    assert state["decode_head.multi_hot"].shape == (6, source.num_properties)
    assert own.key.encode() in bytes(state["decode_head._extra_state"].tolist())


def test_evaluation_scores_the_held_out_class_from_its_descriptions(evaluated: tuple[Path, dict],
                                                                    held_out_run: Path) -> None:
    out, metrics = evaluated
    assert json.loads((out / METRICS_FILE).read_text()) == metrics
    assert set(metrics["per_class_iou"]) == set(DEMO_CLASSES) and metrics["held_out"] == HELD_OUT
    assert metrics == metrics | transfer_metrics(metrics["per_class_iou"], HELD_OUT)
    scoring = load_label_space(out / SCORING_LABEL_SPACE)
    own = load_label_space(held_out_run / "label_space")
    assert scoring.classes == list(DEMO_CLASSES) and scoring.key.startswith(own.key)
    np.testing.assert_array_equal(np.delete(scoring.multi_hot, PERSON, axis=0), own.multi_hot)
    assert scoring.multi_hot[PERSON].any()
    assert metrics["unseen_properties"]["person"] == [own.property_names[i]
                                                      for i in np.flatnonzero(scoring.multi_hot[PERSON])]
    for control in ("swapped", "random_words"):
        found = metrics["controls"][control]
        assert set(found) >= {"mIoU", "mIoU_seen", "mIoU_unseen", "hIoU", "per_class_iou"}
        assert set(found["per_class_iou"]) == {"person"}
    assert metrics["controls"]["swapped"]["descriptions_of"]["person"] in DEMO_CLASSES
    assert metrics["seconds_per_image"] > 0 and (out / "overlays.png").is_file()


def test_the_ui_shows_seen_unseen_and_hiou_beside_the_two_controls(evaluated: tuple[Path, dict]) -> None:
    out, metrics = evaluated
    (table,) = [report for report in reports(out) if report.key == "evaluate-transfer"]
    swapped, random_words = metrics["controls"]["swapped"], metrics["controls"]["random_words"]
    donor = swapped["descriptions_of"]["person"]
    assert table.kind == "table" and table.data == [{
        "unseen class": "person", "own descriptions": metrics["per_class_iou"]["person"],
        f"descriptions of {donor}": swapped["per_class_iou"]["person"],
        "random words": random_words["per_class_iou"]["person"],
        "properties": ", ".join(metrics["unseen_properties"]["person"])}]

    def triple(found: dict) -> str:
        return " / ".join("n/a" if found[k] is None else f"{found[k]:.2f}" for k in ("mIoU_seen", "mIoU_unseen", "hIoU"))

    assert table.description.startswith(f"**held out person: mIoU seen {triple(metrics).split(' / ')[0]}")
    for label, found in (("own descriptions", metrics), ("another class's descriptions", swapped),
                         ("random-word descriptors", random_words)):
        assert f"| {label} | {triple(found)} |" in table.description


def test_hiou_is_the_harmonic_mean_of_seen_and_unseen_miou() -> None:
    per_class = {"sky": 80.0, "road": 60.0, "car": None, "person": 30.0, "tree": 10.0}
    found = transfer_metrics(per_class, ["person", "tree"])
    assert found == {"mIoU_seen": 70.0, "mIoU_unseen": 20.0, "hIoU": round(2 * 70 * 20 / 90, 2)}
    assert transfer_metrics({"sky": 50.0, "person": 0.0}, ["person"])["hIoU"] == 0.0
    assert transfer_metrics({"sky": 0.0, "person": 0.0}, ["person"])["hIoU"] == 0.0
    assert transfer_metrics({"sky": 50.0, "person": None}, ["person"])["hIoU"] is None


def test_a_held_out_run_is_evaluated_holding_out_the_same_classes(held_out_run: Path, described_run: Path,
                                                                  demo_root: Path, described_label_space: Path,
                                                                  tmp_path: Path) -> None:
    with pytest.raises(ProLabInputError, match=r"trained holding out person, evaluated with --held-out \(none\); "
                                               r"evaluate it with --held-out person"):
        evaluate("demo", described_label_space, held_out_run, tmp_path, demo_root, "test", tiny_options(2))
    with pytest.raises(ProLabInputError, match="trained holding out no class, evaluated with --held-out car"):
        evaluate("demo", described_label_space, described_run, tmp_path, demo_root, "test", tiny_options(2),
                 held_out=["car"])


@pytest.mark.parametrize("held_out, message", [
    (["pedestrian"], "--held-out 'pedestrian': not a class of the ProLabDemoDataset of config demo"),
    (list(DEMO_CLASSES), "every class of the ProLabDemoDataset of config demo is held out"),
])
def test_bad_held_out_classes_are_refused_before_training(held_out: list[str], message: str, demo_root: Path,
                                                          described_label_space: Path, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match=message):
        train("demo", described_label_space, tmp_path / "work", demo_root, tiny_options(2), held_out=held_out)
    assert not (tmp_path / "work").exists()


def test_drop_leaves_out_every_training_image_holding_a_held_out_class(demo_root: Path, described_label_space: Path,
                                                                       tmp_path: Path) -> None:
    """Of the six training images, only the first has no person."""
    cfg = build_config("demo", described_label_space, tmp_path, demo_root, tiny_options(2))
    classes = config_dataset_classes(cfg.train_dataloader.dataset)
    assert drop_images_holding(cfg, ["person"], classes, "demo") == (5, 6)
    assert cfg.train_dataloader.dataset.indices == [0]
    with pytest.raises(ProLabInputError, match="every one of the 6 training images of config demo holds a held-out "
                                               "class, none is left to train on; use --held-out-images ignore"):
        drop_images_holding(build_config("demo", described_label_space, tmp_path, demo_root, tiny_options(2)),
                            ["sky"], classes, "demo")


def test_the_run_records_how_many_images_it_dropped(held_out_run: Path) -> None:
    record = json.loads((held_out_run / RUN_RECORD).read_text())
    assert record["held_out_images"] == {"rule": "drop", "dropped": 5, "of": 6}


def test_the_image_rule_is_in_a_held_out_runs_key_only(demo_root: Path) -> None:
    from tasks.model.train import plan
    from tasks.params import EndToEndParams

    def key(**train: object) -> str:
        params = EndToEndParams.model_validate({"train": {"data_root": str(demo_root), **train}})
        return plan(params, {"label_space": "repair/abc"}).key

    assert key() == key(held_out_images="ignore")
    assert key(held_out=["person"]) != key(held_out=["person"], held_out_images="ignore")


def test_evaluation_sweeps_gamma_and_reports_the_gamma_chosen_on_training_images(evaluated: tuple[Path, dict]) -> None:
    out, metrics = evaluated
    found = metrics["calibration"]
    assert found["gamma"] == 0.0 and found["chosen_on_images"] == 5 and "training split" in found["rule"]
    assert [row["gamma"] for row in found["curve"]] == list(GRID)
    at_zero = next(row for row in found["curve"] if row["gamma"] == 0.0)
    assert {k: at_zero[k] for k in ("mIoU_seen", "mIoU_unseen", "hIoU")} == {
        k: metrics[k] for k in ("mIoU_seen", "mIoU_unseen", "hIoU")}, "the sweep at 0 is the uncalibrated argmax"
    assert found["curve"][0]["mIoU_unseen"] == 0.0, "at γ = -1 no unseen class is predicted"
    assert found["chosen_gamma"] in GRID and 0 <= found["AUSUC"] <= 100
    assert {k: next(r for r in found["curve"] if r["gamma"] == found["chosen_gamma"])[k]
            for k in ("mIoU_seen", "mIoU_unseen", "hIoU")} == {k: found[k] for k in ("mIoU_seen", "mIoU_unseen", "hIoU")}
    for control in ("swapped", "random_words"):
        assert set(metrics["controls"][control]["calibration"]) == {"AUSUC", "chosen_gamma", "mIoU_seen",
                                                                     "mIoU_unseen", "hIoU"}
    assert metrics["held_out_images"] == {"rule": "drop", "dropped": 5, "of": 6}
    assert (out / "seen_unseen_curve.png").is_file()
    (table,) = [report for report in reports(out) if report.key == "evaluate-transfer"]
    assert "Training images holding a held-out class: **drop** (5 of 6 training images dropped)" in table.description
    assert f"| own descriptions | {found['chosen_gamma']:g} / " in table.description
    assert any(report.key == "evaluate-seen-unseen-curve" for report in reports(out))


def test_a_calibrated_evaluation_predicts_as_the_sweep_says(evaluated: tuple[Path, dict], held_out_run: Path,
                                                            demo_root: Path, described_label_space: Path, embed,
                                                            tmp_path: Path) -> None:
    """The argmax with the seen scores lowered by γ (``PropertyEncoderDecoder.calibrate``) gives the
    figures the sweep computed for that γ from the raw scores."""
    curve = evaluated[1]["calibration"]["curve"]
    gamma = 0.05
    metrics = evaluate("demo", described_label_space, held_out_run, tmp_path, demo_root, "test", tiny_options(2),
                       num_pictures=0, held_out=HELD_OUT, embed=embed, calibration=gamma)
    row = next(r for r in curve if r["gamma"] == gamma)
    for key in ("mIoU_seen", "mIoU_unseen", "hIoU"):
        assert metrics[key] == pytest.approx(row[key], abs=0.02), key
    assert metrics["calibration"]["gamma"] == gamma


def test_calibration_without_held_out_classes_is_refused(described_run: Path, demo_root: Path,
                                                         described_label_space: Path, tmp_path: Path) -> None:
    with pytest.raises(ProLabInputError, match="--calibration 0.1: it lowers the trained classes' scores"):
        evaluate("demo", described_label_space, described_run, tmp_path, demo_root, "test", tiny_options(2),
                 calibration=0.1)
