"""What each stage shows in the Prefect UI: tables, markdown and pictures under stable keys.

A builder reads a finished artifact directory and returns ``Report`` items; ``publish``
turns them into Prefect artifacts. Builders never write into the directory (its files are
hashed in its manifest) and skip what a stage did not write (no LLM report for an import, no
pictures for a plain model), so they are plain functions, tested without a server. Pictures
go inline as ``data:`` URIs, kept small: each one is stored in the server's database.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from tasks.label_space import CLASS_PROPERTIES, META, PROPERTIES, property_column
from tasks.store import MANIFEST

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 80_000
MAX_MEMBERS = 12  # per property row of the label-space table; the rest are counted
MAX_CONFIG_CHARS = 20_000
PICTURE_CAPTIONS = {
    "overlays": "image | ground truth | prediction",
    "confusion_matrix": "confusion matrix, rows normalised: where each class's pixels went",
    "iou_per_class": "IoU per class, best first",
}


@dataclass(frozen=True)
class Report:
    """One Prefect artifact: ``data`` is rows (table), text (markdown) or a URL (image)."""

    key: str
    kind: Literal["table", "markdown", "image"]
    data: Any
    description: str = ""


def artifact_key(*parts: str) -> str:
    """A key Prefect accepts (lowercase letters, numbers, dashes) made of ``parts``."""
    return "-".join(re.sub(r"[^a-z0-9]+", "-", part.lower()).strip("-") for part in parts if part)


def _json(path: Path) -> Any | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _params(directory: Path) -> dict[str, Any]:
    manifest = _json(directory / MANIFEST) or {}
    return manifest.get("params", {})


def _image(key: str, picture: Path, description: str) -> Report:
    from prolab_models.visualization import png_data_uri

    return Report(key, "image", png_data_uri(picture, MAX_IMAGE_BYTES), description)


def _markdown_table(rows: dict[str, Any]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows.items()]
    return "\n".join(lines)


def describe_reports(directory: Path) -> list[Report]:
    """The classes and their descriptions; for the LLM backend, calls, cache hits, retries, tokens."""
    descriptions: dict[str, list[str]] | None = _json(directory / "descriptions.json")
    if descriptions is None:
        return []
    rows = [{"class": name, "descriptions": len(texts), "text": " · ".join(texts)}
            for name, texts in descriptions.items()]
    total = sum(row["descriptions"] for row in rows)
    backend = _params(directory).get("backend", "import")
    summary = f"**{len(rows)} classes, {total} descriptions** (source: {backend})"
    llm = _json(directory / "describe_report.json")
    if llm is not None:
        summary += "\n\n" + _markdown_table({
            "model": llm.get("model"),
            "LLM calls made": llm.get("calls_made"),
            "answers from the cache": llm.get("cached"),
            "calls retried": llm.get("retried"),
            "prompt tokens": llm.get("prompt_tokens"),
            "completion tokens": llm.get("completion_tokens"),
        })
    return [Report("describe", "table", rows, summary)]


def embed_reports(directory: Path) -> list[Report]:
    """Model, dimension, pooling, and how many texts were embedded now or reused from the cache."""
    report = _json(directory / "embed_report.json")
    if report is None:
        return []
    text = "# Embeddings\n\n" + _markdown_table({
        "model": report.get("model"),
        "dimension": report.get("dimension"),
        "pooling": report.get("pooling"),
        "texts": report.get("texts"),
        "embedded in this run": report.get("encoded"),
        "reused from the cache": report.get("reused"),
    })
    return [Report("embed", "markdown", text, f"embed stage, {report.get('texts')} texts")]


def _members(members: Any) -> str:
    members = list(members)
    shown = "; ".join(members[:MAX_MEMBERS])
    return shown + (f"; ... (+{len(members) - MAX_MEMBERS})" if len(members) > MAX_MEMBERS else "")


def cluster_reports(directory: Path) -> list[Report]:
    """The label space: properties (name, size, members), the class x property matrix,
    the cluster sizes, and collisions (classes the label space cannot tell apart)."""
    from prolab_models.visualization import save_cluster_size_histogram, save_label_space_matrix

    reports = []
    quality = _json(directory / "quality.json") or {}
    if (directory / PROPERTIES).is_file():
        properties = pd.read_parquet(directory / PROPERTIES, columns=["property_id", "name", "size", "n_classes",
                                                                     "members"])
        rows = [{"property": int(row.property_id), "name": row.name, "descriptions": int(row.size),
                 "classes": int(row.n_classes), "members": _members(row.members)}
                for row in properties.sort_values("property_id").itertuples()]
        reports.append(Report("label-space", "table", rows, _quality_summary(quality, len(rows))))
    meta = _json(directory / META)
    with tempfile.TemporaryDirectory(prefix="prolab-report-") as scratch:
        if meta is not None and (directory / CLASS_PROPERTIES).is_file():
            matrix = pd.read_parquet(directory / CLASS_PROPERTIES).sort_values("class_index")
            columns = [property_column(i) for i in range(int(meta["k"]))]
            picture = save_label_space_matrix(matrix[columns].to_numpy(), list(matrix["class_name"]),
                                              Path(scratch) / "matrix.png")
            reports.append(_image("label-space-matrix", picture,
                                  "class x property matrix; colliding classes in red"))
        sizes = quality.get("cluster_sizes", {}).get("all")
        if sizes:
            picture = save_cluster_size_histogram(sizes, Path(scratch) / "sizes.png")
            reports.append(_image("label-space-sizes", picture, "descriptions per property"))
    if (directory / "quality.md").is_file():
        reports.append(Report("label-space-quality", "markdown", (directory / "quality.md").read_text(),
                              "collisions, cluster sizes, properties per class"))
    return reports


def _quality_summary(quality: dict[str, Any], k: int) -> str:
    if not quality:
        return f"**{k} properties**"
    sizes = quality.get("cluster_sizes", {})
    collisions = quality.get("collisions", [])
    text = (f"**{quality.get('classes')} classes, {k} properties**; descriptions per property: "
            f"min {sizes.get('min')}, median {sizes.get('median')}, max {sizes.get('max')}; "
            f"collisions: {len(collisions)}")
    return text + "".join(f"\n- {', '.join(group)}" for group in collisions)


def _scalar_files(directory: Path) -> list[Path]:
    """mmengine's ``<timestamp>/vis_data/scalars.json``, oldest first (a resumed run adds one)."""
    return sorted(directory.glob("*/vis_data/scalars.json"), key=lambda p: p.parts[-3])


def _config_text(directory: Path) -> str | None:
    """The config mmengine dumped for the run: ``<work_dir>/<name>.py``, else the latest
    ``<timestamp>/vis_data/config.py``."""
    candidates = sorted(directory.glob("*.py")) + sorted(directory.glob("*/vis_data/config.py"), reverse=True)
    return candidates[0].read_text() if candidates else None


def _training_facts(training: list[dict[str, Any]]) -> dict[str, str]:
    """Iterations, mean seconds per iteration and the last loss of mmengine's training records."""
    facts = {"iterations": str(int(max(r.get("step", r.get("iter", 0)) for r in training)))}
    times = [float(r["time"]) for r in training if "time" in r]
    if times:
        facts["seconds per iteration"] = f"{np.mean(times):.3f}"
    losses = [float(r["loss"]) for r in training if "loss" in r]
    if losses:
        facts["last loss"] = f"{losses[-1]:.4f}"
    return facts


def train_reports(directory: Path) -> list[Report]:
    """Loss and learning-rate curves, time per iteration, and the run's full config."""
    from prolab_models.visualization import read_scalars, save_curves

    records = [record for path in _scalar_files(directory) for record in read_scalars(path)]
    training = [r for r in records if "lr" in r or any("loss" in key for key in r)]
    reports = []
    if training:
        with tempfile.TemporaryDirectory(prefix="prolab-report-") as scratch:
            picture = save_curves(records, Path(scratch) / "curves.png")
            reports.append(_image("train-curves", picture, "losses, learning rate and validation metrics"))
    params = _params(directory)
    overrides = params.get("cfg_options")
    facts: dict[str, Any] = {"config": params.get("config"),
                             "overrides": f"`{json.dumps(overrides)}`" if overrides else "none"}
    facts.update(_training_facts(training) if training else {})
    manifest = _json(directory / MANIFEST) or {}
    if "seconds" in manifest:
        facts["stage time (s)"] = manifest["seconds"]
    facts["checkpoints"] = ", ".join(sorted(p.name for p in directory.glob("*.pth"))) or "none"
    text = "# Training run\n\n" + _markdown_table(facts)
    config = _config_text(directory)
    if config is not None:
        clipped = config[:MAX_CONFIG_CHARS] + ("\n# ... (clipped)" if len(config) > MAX_CONFIG_CHARS else "")
        text += f"\n\n## Config\n\n```python\n{clipped}\n```\n"
    summary = (f"{facts['config']}: {facts.get('iterations', 'no')} iterations, "
               f"last loss {facts.get('last loss', 'n/a')}")
    reports.append(Report("train", "markdown", text, summary))
    return reports


def _percent(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.2f}"


def evaluate_reports(directory: Path) -> list[Report]:
    """mIoU and per-class IoU, property precision/recall, and every picture the stage drew."""
    reports = []
    metrics = _json(directory / "metrics.json")
    if metrics is not None:
        rows = [{"class": name, "IoU (%)": value} for name, value in metrics.get("per_class_iou", {}).items()]
        summary = {"mIoU": _percent(metrics.get("mIoU")), "aAcc": _percent(metrics.get("aAcc")),
                   "mAcc": _percent(metrics.get("mAcc"))}
        if "property_precision_mean" in metrics:
            summary["property precision"] = _percent(metrics["property_precision_mean"])
            summary["property recall"] = _percent(metrics["property_recall_mean"])
        summary.update({"split": metrics.get("split"), "images": metrics.get("num_images")})
        headline = f"**mIoU {summary['mIoU']}**, aAcc {summary['aAcc']} (percent)"
        reports.append(Report("evaluate", "table", rows, headline + "\n\n" + _markdown_table(summary)))
        if metrics.get("properties"):
            reports.append(Report("evaluate-properties", "table", metrics["properties"],
                                  "pixel precision and recall of each property (percent; p > 0.5)"))
    for picture in sorted(directory.glob("*.png")):
        reports.append(_image(artifact_key("evaluate", picture.stem), picture, _caption(picture.stem)))
    return reports


def _caption(stem: str) -> str:
    """What the evaluate stage's pictures show (``tasks.evaluate``); other names as they are."""
    if match := re.fullmatch(r"properties_(\d+)", stem):
        return f"image {match.group(1)}: its most active properties"
    return PICTURE_CAPTIONS.get(stem, stem.replace("_", " "))


BUILDERS: dict[str, Callable[[Path], list[Report]]] = {
    "describe": describe_reports,
    "embed": embed_reports,
    "cluster": cluster_reports,
    "train": train_reports,
    "evaluate": evaluate_reports,
}


def publish(reports: list[Report]) -> None:
    """Create the Prefect artifacts (linked to the current flow and task run)."""
    from prefect.artifacts import create_image_artifact, create_markdown_artifact, create_table_artifact

    for report in reports:
        if report.kind == "table":
            create_table_artifact(report.data, key=report.key, description=report.description)
        elif report.kind == "markdown":
            create_markdown_artifact(report.data, key=report.key, description=report.description)
        else:
            create_image_artifact(report.data, key=report.key, description=report.description)


def report_stage(stage: str, directory: Path) -> None:
    """Publish a stage's reports. A report that cannot be built is a warning in the run's
    logs, not a failed stage: the artifact itself is complete and stored."""
    try:
        reports = BUILDERS[stage](directory)
    except Exception as error:  # noqa: BLE001 - any reader error: the stage's result stands
        _run_logger().warning("%s: no UI report for %s (%s: %s)", stage, directory, type(error).__name__, error)
        return
    publish(reports)


def _run_logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log
