"""The UI reports of each stage: built from real stage outputs, robust to what a stage did not
write, small enough for the server's database, and readable back from a real Prefect server."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data.demo import DEMO_CLASSES
from tasks.label_space.cluster import reports as cluster_reports
from tasks.label_space.describe import reports as describe_reports
from tasks.label_space.embed import reports as embed_reports
from tasks.model.evaluate import reports as evaluate_reports
from tasks.model.train import reports as train_reports
from tasks.params import ClusterParams, DescribeParams, EndToEndParams, LabelSpaceParams
from tasks.registry import LABEL_SPACE_STAGES, run_stages
from tasks.reports import MAX_IMAGE_BYTES, Report, artifact_key, publish, publish_reports
from tasks.store import ArtifactStore
from tests.helpers.label_space_factory import make_label_space


def by_key(reports: list[Report]) -> dict[str, Report]:
    keys = [report.key for report in reports]
    assert len(keys) == len(set(keys)), f"duplicate keys {keys}"
    return {report.key: report for report in reports}


def decoded_png(report: Report) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert report.kind == "image" and report.data.startswith(prefix)
    data = base64.b64decode(report.data[len(prefix):])
    assert len(data) <= MAX_IMAGE_BYTES
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """describe (import) -> embed -> cluster on the demo classes, as the pipeline runs them."""
    root = tmp_path_factory.mktemp("reports")
    descriptors = root / "demo.json"
    descriptors.write_text(json.dumps({name: [f"{name} part {i}" for i in range(3)] for name in DEMO_CLASSES}))
    store = ArtifactStore(root / "artifacts")
    params = LabelSpaceParams(describe=DescribeParams(dataset="demo", descriptors=descriptors),
                              cluster=ClusterParams(k=5))
    return run_stages(EndToEndParams(label_space=params), store, LABEL_SPACE_STAGES)


def test_describe_lists_every_class_with_its_descriptions(stages: dict[str, Path]) -> None:
    (table,) = describe_reports(stages["describe"])
    assert table.key == "describe" and table.kind == "table"
    assert [row["class"] for row in table.data] == list(DEMO_CLASSES)
    assert table.data[0]["descriptions"] == 3 and "sky part 2" in table.data[0]["text"]
    assert "7 classes, 21 descriptions" in table.description and "LLM" not in table.description


def test_describe_reports_llm_calls_cache_hits_retries_and_tokens(tmp_path: Path) -> None:
    (tmp_path / "descriptions.json").write_text(json.dumps({"car": ["wheels", "metal"], "sky": ["blue"]}))
    (tmp_path / "describe_report.json").write_text(json.dumps({
        "model": "gemma-3-270m", "calls_made": 1, "cached": 1, "retried": 2, "prompt_tokens": 120,
        "completion_tokens": 40}))
    (tmp_path / "manifest.json").write_text(json.dumps({"params": {"backend": "llm"}}))
    (table,) = describe_reports(tmp_path)
    for expected in ("source: llm", "| LLM calls made | 1 |", "| answers from the cache | 1 |",
                     "| calls retried | 2 |", "| prompt tokens | 120 |", "| completion tokens | 40 |"):
        assert expected in table.description


def test_embed_reports_model_dimension_and_reuse(stages: dict[str, Path]) -> None:
    (report,) = embed_reports(stages["embed"])
    assert report.key == "embed" and report.kind == "markdown"
    assert "| dimension | 384 |" in report.data and "| texts | 21 |" in report.data
    assert "| reused from the cache |" in report.data


def test_cluster_reports_the_label_space_table_pictures_and_quality(stages: dict[str, Path]) -> None:
    reports = by_key(cluster_reports(stages["cluster"]))
    assert set(reports) == {"label-space", "label-space-matrix", "label-space-similarity", "label-space-sizes",
                            "label-space-quality"}
    table = reports["label-space"]
    assert [row["property"] for row in table.data] == list(range(5))
    assert sum(row["descriptions"] for row in table.data) == 21
    assert all(row["name"] and ": " in row["members"] for row in table.data)
    assert "7 classes, 5 properties" in table.description
    matrix = decoded_png(reports["label-space-matrix"])
    assert matrix.width > 100 and matrix.height > 100
    decoded_png(reports["label-space-sizes"])
    decoded_png(reports["label-space-similarity"])
    assert reports["label-space-quality"].data.startswith("# Label-space quality")


def test_cluster_report_skips_what_the_directory_lacks(tmp_path: Path) -> None:
    space = make_label_space(tmp_path / "space", ["a", "b", "c"], k=4)  # no quality.json, no quality.md
    assert set(by_key(cluster_reports(space))) == {"label-space", "label-space-matrix", "label-space-similarity"}
    assert cluster_reports(tmp_path / "empty") == []


def test_long_member_lists_are_clipped_and_counted(tmp_path: Path) -> None:
    classes = [f"class {i}" for i in range(20)]
    space = make_label_space(tmp_path / "space", classes, multi_hot=np.ones((20, 2)))
    members = by_key(cluster_reports(space))["label-space"].data[0]["members"]
    assert members.count("; ") == 12 and members.endswith("(+8)")


def write_training_run(run: Path, resumed: bool = False) -> None:
    """A work dir as mmengine leaves it: scalars per timestamp, a dumped config, checkpoints."""
    runs = [("20250101_000000", range(1, 4))] + ([("20250101_010000", range(4, 6))] if resumed else [])
    for stamp, steps in runs:
        vis = run / stamp / "vis_data"
        vis.mkdir(parents=True)
        lines = [json.dumps({"lr": 1e-3 / step, "loss": 2.0 / step, "decode.loss_ce": 1.5 / step, "time": 0.5,
                             "data_time": 0.1, "iter": step, "step": step}) for step in steps]
        (vis / "scalars.json").write_text("\n".join(lines) + "\n")
        (vis / "config.py").write_text("model = dict(type='PropertyEncoderDecoder')\n")
    (run / "prolab-demo.py").write_text("model = dict(type='PropertyEncoderDecoder')\ntrain_cfg = dict(max_iters=5)\n")
    (run / "iter_5.pth").write_bytes(b"weights")
    (run / "manifest.json").write_text(json.dumps({"params": {"train.config": "demo", "train.cfg_options": {
        "train_cfg.max_iters": 5}}, "seconds": 12.5}))


def test_train_reports_curves_time_per_iteration_and_config(tmp_path: Path) -> None:
    write_training_run(tmp_path, resumed=True)
    reports = by_key(train_reports(tmp_path))
    assert set(reports) == {"train-curves", "train"}
    decoded_png(reports["train-curves"])
    text = reports["train"].data
    for expected in ("| config | demo |", '`{"train_cfg.max_iters": 5}`', "| iterations | 5 |",
                     "| seconds per iteration | 0.500 |", "| last loss | 0.4000 |", "| checkpoints | iter_5.pth |",
                     "| processes | 1 |", "| stage time (s) | 12.5 |", "train_cfg = dict(max_iters=5)"):
        assert expected in text, expected
    assert reports["train"].description == "demo: 5 iterations, last loss 0.4000"


def test_train_report_without_logs_still_names_the_run(tmp_path: Path) -> None:
    reports = by_key(train_reports(tmp_path))
    assert set(reports) == {"train"} and "| checkpoints | none |" in reports["train"].data


def write_evaluation(directory: Path) -> None:
    from tasks.visualization import save_iou_bars

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_text(json.dumps({
        "mIoU": 41.5, "aAcc": 80.25, "mAcc": 50.0, "per_class_iou": {"sky": 90.0, "road": 33.0, "person": None},
        "property_precision_mean": 60.0, "property_recall_mean": 55.5,
        "properties": [{"id": 0, "name": "blue", "precision": 60.0, "recall": 55.5}],
        "split": "val", "num_images": 4}))
    save_iou_bars({"sky": 90.0, "road": 33.0}, directory / "iou_per_class.png")
    save_iou_bars({"sky": 90.0}, directory / "properties_0.png")


def hold_out_road(directory: Path) -> None:
    """The evaluation written by ``write_evaluation``, as if road had been held out in training."""
    metrics = json.loads((directory / "metrics.json").read_text())
    control = {"mIoU": 45.0, "mIoU_seen": 90.0, "mIoU_unseen": 0.0, "hIoU": 0.0, "per_class_iou": {"road": 0.0},
               "unexpressed_descriptions": {"road": 1}}
    metrics |= {"held_out": ["road"], "mIoU_seen": 90.0, "mIoU_unseen": 33.0, "hIoU": 48.29,
                "unseen_properties": {"road": ["flat", "grey"]},
                "controls": {"swapped": control | {"descriptions_of": {"road": "sky"}}, "random_words": control}}
    (directory / "metrics.json").write_text(json.dumps(metrics))


def test_evaluate_reports_miou_per_class_iou_properties_and_every_picture(tmp_path: Path) -> None:
    write_evaluation(tmp_path)
    reports = by_key(evaluate_reports(tmp_path))
    assert set(reports) == {"evaluate", "evaluate-properties", "evaluate-iou-per-class", "evaluate-properties-0"}
    table = reports["evaluate"]
    assert table.data == [{"class": "sky", "IoU (%)": 90.0}, {"class": "road", "IoU (%)": 33.0},
                          {"class": "person", "IoU (%)": None}]
    for expected in ("**mIoU 41.50**, aAcc 80.25", "| mIoU | 41.50 |", "| aAcc | 80.25 |",
                     "| property recall | 55.50 |", "| images | 4 |"):
        assert expected in table.description
    decoded_png(reports["evaluate-iou-per-class"])
    assert reports["evaluate-properties-0"].description == "image 0: its most active properties"


def test_artifact_keys_are_what_prefect_accepts() -> None:
    assert artifact_key("evaluate", "Confusion_Matrix v2") == "evaluate-confusion-matrix-v2"


def test_a_report_that_cannot_be_read_is_a_warning_not_a_failed_stage(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "metrics.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        publish_reports("evaluate", evaluate_reports, tmp_path)
    assert "evaluate: no UI report" in caplog.text and "JSONDecodeError" in caplog.text


def test_published_reports_are_read_back_from_a_real_server(prefect_server: dict[str, str], tmp_path: Path,
                                                            stages: dict[str, Path]) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    write_evaluation(tmp_path)
    hold_out_road(tmp_path)

    @flow(name="reports-test")
    def reporting() -> None:
        publish(cluster_reports(stages["cluster"]) + evaluate_reports(tmp_path))

    # Logs stay local: shipped in the background, they could outlive the session's server.
    settings = {PREFECT_API_URL: prefect_server["PREFECT_API_URL"], PREFECT_LOGGING_TO_API_ENABLED: False}
    with temporary_settings(settings):
        state = reporting(return_state=True)
        with get_client(sync_client=True) as client:
            found = {artifact.key: artifact for artifact in client.read_latest_artifacts()
                     if artifact.flow_run_id == state.state_details.flow_run_id}
    assert {"label-space", "label-space-matrix", "evaluate", "evaluate-transfer", "evaluate-iou-per-class"} <= set(found)
    assert json.loads(found["evaluate-transfer"].data) == [
        {"unseen class": "road", "own descriptions": 33.0, "descriptions of sky": 0.0, "random words": 0.0,
         "properties": "flat, grey"}]
    assert "held out road: mIoU seen 90.00, unseen 33.00, hIoU 48.29" in found["evaluate-transfer"].description
    assert found["label-space"].type == "table" and found["label-space-matrix"].type == "image"
    rows = json.loads(found["label-space"].data)
    assert len(rows) == 5 and {"property", "name", "descriptions", "classes", "members"} == set(rows[0])
    assert found["label-space-matrix"].data.startswith("data:image/png;base64,")
